"""core.params.selection_spec_from_inputs: the one path from a front end's inputs (CLI
options, an App form's values, the panel's state) to a SelectionSpec; and
keep_shortfall, the warning for a selection that keeps fewer than asked."""

import argparse

import pytest

from fiftyone_prune.core.params import (
    ParameterError, SelectionSpec, keep_shortfall, selection_spec_from_inputs)


def test_the_three_front_ends_build_the_same_spec():
    cli = vars(argparse.Namespace(keep="30", strategy="hard", balance="none",
                                  label_field=None, balance_ratio=0.5, seed=7,
                                  dedup_eps=None, dataset="DS", command="select"))
    app = {"keep": 30.0, "strategy": "hard", "balance": "none", "label_field": "",
           "balance_ratio": 0.5, "seed": 7.0, "dedup_eps": 0, "run_key": "proto"}
    panel = {"keep": "30", "strategy": "hard", "balance": "none", "seed": 7}
    expected = SelectionSpec(keep=30, strategy="hard", balance=None, seed=7)
    for inputs in (cli, app, panel):
        spec = selection_spec_from_inputs(inputs)
        assert spec == expected, inputs
        assert isinstance(spec.keep, int) and isinstance(spec.seed, int)


def test_missing_none_and_empty_inputs_are_the_defaults():
    assert selection_spec_from_inputs({}) == SelectionSpec()
    assert selection_spec_from_inputs({k: None for k in (
        "keep", "strategy", "balance", "label_field", "balance_ratio", "seed",
        "dedup_eps")}) == SelectionSpec()
    assert selection_spec_from_inputs({"keep": "", "strategy": ""}) == SelectionSpec()
    # a fraction stays a fraction, a count a count, as in Python
    assert selection_spec_from_inputs({"keep": "1.0"}).keep == 1.0
    assert selection_spec_from_inputs({"keep": "1"}).keep == 1
    assert selection_spec_from_inputs({"dedup_eps": 0.05}).dedup_eps == 0.05


@pytest.mark.parametrize("inputs, param", [
    ({"keep": "most"}, "keep"), ({"keep": 1.5}, "keep"),
    ({"strategy": "best"}, "strategy"), ({"balance": "groups"}, "balance"),
    ({"balance_ratio": 2.0}, "balance_ratio"), ({"seed": 1.5}, "seed"),
    ({"dedup_eps": 1.0}, "dedup_eps"),
])
def test_a_wrong_input_is_named(inputs, param):
    with pytest.raises(ParameterError) as err:
        selection_spec_from_inputs(inputs)
    assert err.value.param == param


def test_keep_shortfall_says_why_and_the_fix():
    assert keep_shortfall(150, 150) is None and keep_shortfall(150, 160) is None
    message = keep_shortfall(150, 14, num_duplicates=286, dedup_eps=0.5)
    assert message.startswith("kept 14 of the 150 asked")
    assert "286 near-duplicates" in message and "lower dedup_eps" in message
    assert keep_shortfall(150, 14).startswith("kept 14 of the 150 asked")


# ------------------------------------------------------------- the App's words (#24)

@pytest.mark.parametrize("inputs, message", [
    ({"balance_ratio": None}, "Balance ratio is empty: enter a number"),
    ({"balance_ratio": 2.0}, "Balance ratio must be between 0 and 1 (got 2.0)"),
    ({"seed": -1}, "Seed must be at least 0 (got -1)"),
    ({"seed": "x"}, "Seed must be a whole number (got 'x')"),
    ({"dedup_eps": 1.5}, "SemDeDup eps must be more than 0 and less than 1 (got 1.5)"),
])
def test_sdk_checks_read_in_the_app_s_words(inputs, message):
    """What a form shows for an SDK check: the input by its label and what to enter,
    never Python's "must be Real, got None"; the SDK's own message keeps Python's words."""
    from fiftyone_prune.plugin.common import app_words

    labels = {"balance_ratio": "Balance ratio", "seed": "Seed",
              "dedup_eps": "SemDeDup eps (optional)"}
    spec = SelectionSpec(keep=0.5, **inputs)
    with pytest.raises(ParameterError) as info:
        spec.validate()
    param = info.value.param
    assert param in str(info.value)  # Python's words for Python users
    assert app_words(str(info.value), param=param, label=labels[param]) == message


def test_app_words_name_inputs_not_arguments():
    from fiftyone_prune.plugin.common import app_words

    assert app_words("num_shards=30 exceeds the 20 samples of the view; choose at most 20",
                     param="num_shards", label="Split into M tasks") == (
        "Split into M tasks 30 exceeds the 20 samples of the view; choose at most 20")
    assert app_words("Run 'x' exists: pass overwrite=True") == (
        "Run 'x' exists: tick 'Replace an existing run'")
    # a plain word is the argument only first or before "="
    assert app_words("keep must be a fraction; to keep 5 pass 5", param="keep",
                     label="Keep") == "Keep must be a fraction; to keep 5 pass 5"
    assert app_words("Choose another embeddings_field", param="embeddings_field",
                     label="Embeddings field") == "Choose another 'Embeddings field'"


def test_run_parameters_read_as_plain_values():
    from collections import OrderedDict

    from fiftyone_prune.plugin.operators import plain_value

    assert plain_value(OrderedDict([("a", 1), ("b", [2, 3])])) == "a: 1, b: 2, 3"
    assert plain_value(None) == "none" and plain_value([]) == "none"
    assert "OrderedDict" not in plain_value(OrderedDict(x=OrderedDict(y=1)))
