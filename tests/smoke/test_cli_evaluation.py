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
                     r"\(about \d+ s[^)]*\) would tell whether a strategy beats random here: "
                     r"fiftyone-prune (evaluate .*); then select again", out)
    assert hint, out
    evaluated = run_cli(*hint.group(1).split()).stdout
    # progress bars are off in tests: evaluate still reports its fits, once at the end
    # (9 for the table; the scaling view, on by default, adds its learning curve's)
    # (a line every 10 s on a slow machine: the last one counts)
    done = re.findall(r"evaluating: probe fit (\d+)/(\d+)", evaluated)
    assert done and done[-1][0] == done[-1][1] and int(done[-1][0]) > 9, evaluated
    assert "worth of each selection in random samples" in evaluated
    assert re.search(r"held out: \d+ samples \(one sample = [\d.]+ points\)", evaluated)
    # selecting again under the same name replaces the first selection: --overwrite
    again = run_cli("select", name, "--keep", "0.5", "--strategy", "auto",
                    "--overwrite").stdout
    assert "evaluation 'prototypes_evaluation' at 50% kept" in again and "hint:" not in again


@pytest.mark.slow  # three CLI processes
def test_evaluate_prints_the_scaling_view_its_plot_and_projection(digits_dataset, tmp_path):
    digits_dataset.persistent = True  # visible to the subprocess
    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8))))
    name = digits_dataset.name
    run_cli("score", name, "--embeddings-field", "emb", "--num-clusters", "5")
    # the scaling options are checked before anything is evaluated
    for args, option in ((["--no-scaling", "--target-accuracy", "0.9"], "--target-accuracy"),
                         (["--target-accuracy", "1.5"], "--target-accuracy"),
                         (["--no-scaling", "--scaling-plot", "x.png"], "--scaling-plot")):
        out = run_cli("evaluate", name, "--label-field", "ground_truth", *args, check=False)
        assert out.returncode == 2 and out.stderr.startswith(f"error: {option}:"), out.stderr
    digits_dataset.reload()  # what the CLI processes wrote
    assert "prototypes" in digits_dataset.list_runs()
    assert "prototypes_evaluation" not in digits_dataset.list_runs()
    plot = tmp_path / "scaling.png"
    out = run_cli("evaluate", name, "--label-field", "ground_truth", "--fractions", "0.3,0.6",
                  "--strategies", "random,hard", "--seeds", "2", "--scaling-plot", str(plot),
                  "--target-accuracy", "0.9").stdout
    assert "learning curves, error(n) = a * n^(-b) + c" in out
    assert re.search(r"\n  hard at 30% \(\d+ kept\)", out), out
    assert "samples needed for held-out accuracy 0.9 (95 % intervals):" in out
    assert re.search(r"\n  random: accuracy 0\.900", out) and re.search(r"\n  hard: accuracy", out)
    assert f"scaling plot: {plot}" in out and plot.stat().st_size > 10_000
    import fiftyone_prune as fop

    digits_dataset.reload()
    stored = fop.load_evaluation(digits_dataset, "prototypes_evaluation")
    assert [w["strategy"] for w in stored.worth] == ["hard", "hard"]
