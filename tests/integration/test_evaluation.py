"""evaluate_pruning on real labelled images (scikit-learn's 8x8 digits), real probes."""

import os

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk.demo import write_demo_images
from tests.conftest import unique_name


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """600 real digits; the 64 pixel values serve as the embedding (a real, if simple,
    feature space) so the test needs no model."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits8")
    items = write_demo_images(str(folder), "digits", max_samples=600, seed=0)
    dataset = fo.Dataset(unique_name("eval"))
    dataset.add_samples([fo.Sample(filepath=p, ground_truth=fo.Classification(label=l))
                         for p, l in items])
    pixels = [np.asarray(Image.open(p), dtype=np.float32).ravel() + 1.0 for p, _ in items]
    dataset.set_values("pixels", pixels)
    fop.compute_prototype_scores(dataset, "pixels", run_key="proto", num_clusters=10)
    yield dataset
    fo.delete_dataset(dataset.name)


def test_curve_is_deterministic_sane_and_stored(digits, tmp_path):
    plot = tmp_path / "curve.png"
    kwargs = dict(label_field="ground_truth", run_key="proto", fractions=(0.1, 0.5),
                  strategies=("easy", "hard"), seeds=2)
    result = fop.evaluate_pruning(digits, plot_path=str(plot), **kwargs)
    again = fop.evaluate_pruning(digits, eval_key="again", **kwargs)
    assert [r["accuracies"] for r in result.table] == [r["accuracies"] for r in again.table]
    strategies = {r["strategy"] for r in result.table}
    assert strategies == {"random", "easy", "hard"}
    info = fop.get_run_info(digits, "proto_evaluation").config
    num_train, num_test = info.num_train, info.num_test
    assert num_train + num_test == 600 and num_test == 120
    for r in result.table:
        assert r["kept"] == round(r["fraction"] * num_train)
    random = {r["fraction"]: r["mean"] for r in result.table if r["strategy"] == "random"}
    full = result.full_accuracy["mean"]
    assert full > 0.85  # a linear probe on digit pixels
    assert random[0.1] < full + 0.05 and random[0.1] <= random[0.5] + 0.05
    assert len(result.verdicts) == 2 and all("random" in v for v in result.verdicts)
    assert plot.exists() and plot.stat().st_size > 10_000
    loaded = fop.load_evaluation(digits, "proto_evaluation")
    assert loaded.table == result.table
    # the held-out part is never among the candidates
    test_ids = set(fop.load_run_results(digits, "proto_evaluation").test_ids)
    assert len(test_ids) == num_test
    # select_samples' auto strategy now follows the measurement
    plan = fop.plan_selection(digits, "proto", keep=0.5, strategy="auto")
    assert "evaluation" in plan.strategy_reason
    fop.delete_run(digits, "again")


def test_held_out_tag_is_never_kept(digits):
    digits.take(150, seed=1).tag_samples("heldout")
    try:
        fop.evaluate_pruning(digits, "ground_truth", "proto", fractions=(0.3,),
                             strategies=("hard",), seeds=1, test_tag="heldout",
                             eval_key="tagged")
        results = fop.load_run_results(digits, "tagged")
        assert set(results.test_ids) == set(digits.match_tags("heldout").values("id"))
        assert all(r["kept"] == round(0.3 * 450) for r in results.table)
    finally:
        digits.untag_samples("heldout")
        fop.delete_run(digits, "tagged")


def test_cnn_probe_on_images(digits):
    result = fop.evaluate_pruning(digits, "ground_truth", "proto", fractions=(0.5,),
                                  strategies=("hard",), seeds=1, probe="cnn", image_size=8,
                                  cnn_epochs=4, eval_key="cnn")
    assert result.full_accuracy["mean"] > 0.5
    fop.delete_run(digits, "cnn")


@pytest.mark.parametrize("kwargs, message", [
    (dict(label_field=None), "needs label_field"),
    (dict(label_field="nope"), "does not exist"),
    (dict(fractions=(0.0, 0.5)), r"in \(0, 1\]"),
    (dict(fractions=(1.5,)), r"in \(0, 1\]"),
    (dict(strategies=("best",)), "Unknown strategies"),
    (dict(seeds=0), "positive integer"),
    (dict(probe="svm"), "Unknown probe"),
    (dict(run_key="none_such"), "No prototype-score run"),
])
def test_bad_input_is_refused_before_work(digits, kwargs, message):
    before = sorted(digits.list_runs())
    args = dict(label_field="ground_truth", run_key="proto", eval_key="bad")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fop.evaluate_pruning(digits, **args)
    assert sorted(digits.list_runs()) == before


def test_class_without_held_out_sample_is_refused(digits):
    zeros = digits.match(fo.ViewField("ground_truth.label") != "0")
    zeros.take(100, seed=0).tag_samples("test_no_zero")
    try:
        with pytest.raises(ValueError, match=r"no held-out sample"):
            fop.evaluate_pruning(digits, "ground_truth", "proto", test_tag="test_no_zero",
                                 eval_key="bad")
    finally:
        digits.untag_samples("test_no_zero")
