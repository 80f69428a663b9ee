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
