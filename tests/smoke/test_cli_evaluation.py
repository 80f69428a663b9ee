"""The CLI's auto advice: the quick-evaluation hint, and evaluate saying it is working."""

import re

import numpy as np
import pytest

from tests.smoke.test_cli import run_cli


@pytest.mark.slow  # four CLI processes
def test_auto_hints_a_quick_evaluation_which_it_then_follows(digits_dataset):
    digits_dataset.persistent = True  # visible to the subprocess
    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8))))
    name = digits_dataset.name
    run_cli("score", name, "--embeddings-field", "emb", "--num-clusters", "5")
    out = run_cli("select", name, "--keep", "0.5", "--strategy", "auto").stdout
    assert "strategy: random (random: no evaluation of your data fits" in out
    hint = re.search(r"hint: Labels found \('ground_truth'\): a quick evaluation at 50% kept "
                     r"\(about \d+ s\) would tell whether a strategy beats random here: "
                     r"fiftyone-prune (evaluate .*); then select again", out)
    assert hint, out
    evaluated = run_cli(*hint.group(1).split()).stdout
    # progress bars are off in tests: evaluate still reports its fits, once at the end
    assert re.search(r"evaluating: probe fit 9/9", evaluated), evaluated
    assert re.search(r"held out: \d+ samples \(one sample = [\d.]+ points\)", evaluated)
    again = run_cli("select", name, "--keep", "0.5", "--strategy", "auto").stdout
    assert "evaluation 'prototypes_evaluation' at 50% kept" in again and "hint:" not in again
