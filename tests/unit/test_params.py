"""core/params: one parser per textual input, check_scalar's boundaries, and
SelectionSpec.validate naming the wrong parameter (pure: no FiftyOne)."""

import numbers

import numpy as np
import pytest

from fiftyone_prune.core.params import (
    ParameterError, SelectionSpec, check_keep, check_scalar, parse_fractions, parse_keep,
    parse_num_clusters)


def test_parameter_error_is_a_value_error_with_the_param():
    with pytest.raises(ValueError) as info:
        raise ParameterError("keep is wrong", "keep")
    assert info.value.param == "keep" and str(info.value) == "keep is wrong"


# --- parse_keep ---------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0.8", 0.8), ("1.0", 1.0), ("1", 1), ("5000", 5000), (" 0.25 ", 0.25), ("80%", 0.8),
    ("1e-1", 0.1), (0.5, 0.5), (7, 7), (5000.0, 5000), (1.0, 1.0), (np.float64(0.3), 0.3),
])
def test_parse_keep_accepts(text, expected):
    value = parse_keep(text)
    assert value == expected
    # an integer literal is a count, a decimal a fraction: "1" keeps one sample, "1.0" all
    assert isinstance(value, int) == isinstance(expected, int)


@pytest.mark.parametrize("text", ["abc", "", "0", "0.0", "1.5", "-3", "-0.2", "150%",
                                  None, True, [0.5], float("nan")])
def test_parse_keep_rejects_with_param_keep(text):
    with pytest.raises(ParameterError) as info:
        parse_keep(text)
    assert info.value.param == "keep"


def test_check_keep_names_the_range_and_the_count_rule():
    with pytest.raises(ParameterError, match=r"outside \(0, 1\]"):
        check_keep(1.5)
    with pytest.raises(ParameterError, match="at least 1"):
        check_keep(0)
    assert check_keep(np.int64(3)) == 3


# --- parse_num_clusters -------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (None, None), ("", None), ("10", 10), ("100,500", [100, 500]), (" 3, 4 ,", [3, 4]),
    (7, 7), ([2, 3], [2, 3]), ((5,), 5), (np.int64(4), 4),
])
def test_parse_num_clusters_accepts(text, expected):
    assert parse_num_clusters(text) == expected


@pytest.mark.parametrize("text", ["ten", "1.5", "0", "3,-1", [], [2, 0], [2.5], 2.0, True])
def test_parse_num_clusters_rejects_with_param(text):
    with pytest.raises(ParameterError) as info:
        parse_num_clusters(text)
    assert info.value.param == "num_clusters"


# --- parse_fractions ----------------------------------------------------------------

def test_parse_fractions_text_and_sequences():
    assert parse_fractions("0.1,0.5, 0.9") == [0.1, 0.5, 0.9]
    assert parse_fractions((1, 0.5)) == [1.0, 0.5]
    assert all(isinstance(f, float) for f in parse_fractions([1]))


@pytest.mark.parametrize("text", ["0.1,x", "", [], [0.0], [1.2], "0.5,-0.1", 0.5, [True]])
def test_parse_fractions_rejects_with_param(text):
    with pytest.raises(ParameterError) as info:
        parse_fractions(text)
    assert info.value.param == "fractions"


# --- check_scalar -------------------------------------------------------------------

@pytest.mark.parametrize("bounds, ok, bad", [
    ("both", [0, 1], [-0.01, 1.01]),
    ("left", [0, 0.99], [1, -0.01]),
    ("right", [0.01, 1], [0, 1.01]),
    ("neither", [0.01, 0.99], [0, 1]),
])
def test_check_scalar_boundaries(bounds, ok, bad):
    for value in ok:
        assert check_scalar(value, "x", numbers.Real, 0, 1, bounds) == value
    for value in bad:
        with pytest.raises(ParameterError) as info:
            check_scalar(value, "x", numbers.Real, 0, 1, bounds)
        assert info.value.param == "x"
        interval = {"both": "[0, 1]", "left": "[0, 1)", "right": "(0, 1]",
                    "neither": "(0, 1)"}[bounds]
        assert interval in str(info.value)


def test_check_scalar_types():
    with pytest.raises(ParameterError, match="must be int"):
        check_scalar(True, "seeds", int)  # bool is never a number
    with pytest.raises(ParameterError, match="must be int"):
        check_scalar(2.0, "seeds", int)
    assert check_scalar(True, "flag", bool) is True
    with pytest.raises(ParameterError, match="must be a positive integer, got 0"):
        check_scalar(0, "seeds", int, min_val=1)
    assert check_scalar(2, "n", int, min_val=1, max_val=None) == 2
    with pytest.raises(ParameterError, match=r"outside \[-inf, 3\]"):
        check_scalar(4, "n", int, max_val=3)


# --- SelectionSpec ------------------------------------------------------------------

def test_default_spec_is_valid_and_replace_copies():
    spec = SelectionSpec().validate()
    other = spec.replace(keep=10, strategy="hard")
    assert (spec.keep, spec.strategy) == (0.8, "auto")
    assert (other.keep, other.strategy, other.balance) == (10, "hard", "cluster")
    assert other.to_dict()["keep"] == 10


@pytest.mark.parametrize("changes, param", [
    (dict(keep=0), "keep"), (dict(keep=1.5), "keep"), (dict(keep="0.5"), "keep"),
    (dict(strategy="hardest"), "strategy"), (dict(balance="genre"), "balance"),
    (dict(balance_ratio=1.5), "balance_ratio"), (dict(balance_ratio=-0.1), "balance_ratio"),
    (dict(seed=1.5), "seed"), (dict(dedup_eps=0), "dedup_eps"), (dict(dedup_eps=1), "dedup_eps"),
    (dict(ccs_beta=1.0), "ccs_beta"), (dict(ccs_bins=0), "ccs_bins"),
    (dict(density_temperature=0), "density_temperature"),
])
def test_validate_names_the_wrong_parameter(changes, param):
    with pytest.raises(ParameterError) as info:
        SelectionSpec(**changes).validate()
    assert info.value.param == param


@pytest.mark.parametrize("changes", [
    dict(keep=1), dict(keep=1.0), dict(balance=None), dict(balance="class"),
    dict(balance_ratio=0), dict(balance_ratio=1), dict(dedup_eps=0.05), dict(ccs_beta=0.0),
    dict(strategy="density", density_temperature=2.0),
])
def test_validate_accepts_the_boundaries(changes):
    assert SelectionSpec(**changes).validate() == SelectionSpec(**changes)
