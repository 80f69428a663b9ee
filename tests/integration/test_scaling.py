"""The scaling view's known answers on real images, real FiftyOne datasets and the real
linear probe: a random "strategy" with other seeds is worth 1x random data, keeping one
copy of each duplicated image is worth more than random data of its size, and a law
fitted on the small half of the random curve predicts the full pool.

Features are the digits' own pixels (a real, if simple, feature space): no model to run.
"""

import json
import shutil

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.core import probe as core_probe
from fiftyone_prune.core import scaling
from fiftyone_prune.core.params import SelectionSpec
from fiftyone_prune.core.significance import HeldoutBootstrap, unpack_correct
from fiftyone_prune.sdk.advice import worth_of_selection
from fiftyone_prune.sdk.demo import write_demo_images
from fiftyone_prune.sdk.selection import selection_names
from fiftyone_prune.sdk.evaluation import BOOTSTRAP_SEED
from tests.conftest import unique_name

# 2,500 and 3,150 real digits evaluated with the scaling view: the fixture took 22 s and
# the duplicate test 27 s at load average 2 (--durations); the arithmetic is unit-tested
# (tests/unit/test_scaling_core.py) and the SDK path in the fast suite too
# (test_evaluation.py, test_panel_evaluation.py)
pytestmark = pytest.mark.slow


def _pixels(paths):
    from PIL import Image

    return [np.asarray(Image.open(p), dtype=np.float32).ravel() / 255.0 + 0.01 for p in paths]


def _dataset(items, tags=None):
    dataset = fo.Dataset(unique_name("scaling"))
    dataset.add_samples([fo.Sample(filepath=p, ground_truth=fo.Classification(label=l),
                                   tags=list(tags[i]) if tags else [])
                         for i, (p, l) in enumerate(items)])
    dataset.set_values("pixels", _pixels([p for p, _ in items]))
    fop.compute_prototype_scores(dataset, "pixels", run_key="proto", num_clusters=10)
    return dataset


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """2,500 real MNIST digits: 1,000 to train on, 1,500 held out (a held-out part
    large enough that a worth ratio is measurable)."""
    items = write_demo_images(str(tmp_path_factory.mktemp("mnist")), "mnist",
                              max_samples=2500, seed=3)
    dataset = _dataset(items)
    result = fop.evaluate_pruning(dataset, "ground_truth", "proto", fractions=(0.2, 0.5),
                                  strategies=("easy",), seeds=3, test_fraction=0.6,
                                  eval_key="scaled")
    yield dataset, result
    fo.delete_dataset(dataset.name)


def _split(dataset, eval_key):
    stored = fop.load_run_results(dataset, eval_key)
    x = dict(zip(*dataset.values(["id", "pixels"])))
    y = dict(zip(*dataset.values(["id", "ground_truth.label"])))
    train, test = list(stored.train_ids), list(stored.test_ids)
    return (np.stack([x[i] for i in train]), np.array([y[i] for i in train]),
            np.stack([x[i] for i in test]), np.array([y[i] for i in test]), stored)


def test_random_with_other_seeds_is_worth_one_random_sample_each(mnist):
    """Known answer 1: random subsets drawn with seeds the evaluation never used, fitted
    with the same probe, matched on the stored random curve: the ratio's 95 % interval
    contains 1."""
    dataset, result = mnist
    random = result.scaling[0]
    assert random["strategy"] == "random" and random["status"] == "ok", random["reason"]
    train_x, train_y, test_x, test_y, stored = _split(dataset, "scaled")
    kept = 200  # 20 % of the 1,000 training samples: the steep part of the curve
    correct = np.array([
        core_probe.probe_correctness("linear", train_x[rows], train_y[rows], test_x, test_y)
        for rows in (np.random.default_rng(100 + s).choice(len(train_x), kept, replace=False)
                     for s in range(3))])
    row = scaling.selection_worth(random, "random-other-seeds", 0.2, kept, correct,
                                  HeldoutBootstrap(len(test_x), seed=BOOTSTRAP_SEED),
                                  np.random.default_rng(0))
    assert row["ratio"] is not None, row["reason"]
    assert row["ratio_low"] < 1.0 < row["ratio_high"], row
    assert row["ratio_high"] / row["ratio_low"] < scaling.NOISY_SPAN


def test_scaling_view_is_stored_and_answers_the_interface(mnist):
    dataset, result = mnist
    loaded = fop.load_evaluation(dataset, "scaled")
    assert loaded.worth == result.worth and loaded.scaling == result.scaling
    # one worth row per evaluated selection other than random
    assert [(w["strategy"], w["fraction"]) for w in result.worth] == [("easy", 0.2),
                                                                      ("easy", 0.5)]
    for w in result.worth:
        assert set(w) >= {"strategy", "kept", "random_equivalent", "ratio", "ratio_low",
                          "ratio_high", "reason"}
        assert (w["ratio"] is None) == (w["reason"] is not None)
        if w["ratio"] is not None:
            assert w["ratio_low"] <= w["ratio"] <= w["ratio_high"]
            assert w["ratio"] == pytest.approx(w["random_equivalent"] / w["kept"], rel=0.01)
    assert [s["strategy"] for s in result.scaling] == ["random", "easy"]
    random = result.scaling[0]
    for name in "abc":
        assert random[f"{name}_low"] <= random[name] <= random[f"{name}_high"]
    assert random["form"] in scaling.FORMS and random["form_reason"]
    assert 0 <= random["misfit"] <= random["misfit_limit"] and random["rmse"] < 0.02
    # the curve reuses the table's random points and adds the small sizes it needs
    sizes = [p["kept"] for p in random["points"]]
    table_random = [r["kept"] for r in result.table if r["strategy"] == "random"]
    assert set(table_random) <= set(sizes) and sizes[-1] == 1000
    assert min(sizes) == 50 and len(sizes) >= 6  # 5 per class, 10 classes
    # the verdicts say it in words, the CLI's text too
    assert any(v.startswith("Random learning curve: random: error(n) = ") for v in
               result.verdicts)
    assert any(v.startswith("Worth in random samples: ") for v in result.verdicts)
    assert "worth of each selection in random samples" in result.format_worth()
    # inverse projection from the stored view, nothing refitted
    needed = {r["strategy"]: r for r in loaded.samples_needed(0.85)}
    assert set(needed) == {"random", "easy"}
    assert needed["random"]["samples"] is None or (
        needed["random"]["low"] <= needed["random"]["samples"] <= needed["random"]["high"])
    with pytest.raises(ValueError, match="target_accuracy"):
        loaded.samples_needed(1.2)


def test_a_selection_finds_the_worth_its_evaluation_measured(mnist, tmp_path):
    """What the export manifest records: the worth row of the evaluation that measured
    this very selection (scoring run and version, strategy, balance, kept fraction)."""
    dataset, result = mnist
    fop.select_samples(dataset, "proto", keep=0.5, strategy="easy", name="easy_half")
    fop.select_samples(dataset, "proto", keep=0.5, strategy="hard", name="hard_half")
    fop.select_samples(dataset, "proto", keep=0.5, strategy="random", name="random_half")
    fop.select_samples(dataset, "proto", keep=0.5, strategy="easy", balance="class",
                       label_field="ground_truth", name="easy_class")
    try:
        worth = worth_of_selection(dataset, "easy_half_selection")
        expected = next(w for w in result.worth if w["fraction"] == 0.5)
        assert worth["eval_key"] == "scaled" and worth["selection_fraction"] == 0.5
        assert {k: worth[k] for k in expected} == expected
        # not evaluated: hard; another balance: no match; random is the reference
        assert worth_of_selection(dataset, "hard_half_selection") is None
        assert worth_of_selection(dataset, "easy_class_selection") is None
        reference = worth_of_selection(dataset, "random_half_selection")
        assert reference["status"] == "reference" and reference["ratio"] is None
        with pytest.raises(ValueError, match="not a selection"):
            worth_of_selection(dataset, "scaled")
        # an export carries the evidence next to its files, or says why there is none
        for name, recorded in (("easy_half", worth), ("hard_half", None)):
            folder = tmp_path / name
            kept = dataset.match_tags(selection_names(name)["kept_tag"])
            fop.export_kept_samples(kept, str(folder),
                                    selection=name, export_media="manifest")
            with open(folder / "fiftyone_prune_manifest.json") as f:
                in_manifest = json.load(f)["worth"]
            if recorded is None:
                assert in_manifest["ratio"] is None
                assert "no evaluation with the scaling view" in in_manifest["reason"]
            else:
                assert in_manifest == json.loads(json.dumps(recorded, default=str))
    finally:
        for name in ("easy_half", "hard_half", "random_half", "easy_class"):
            fop.delete_run(dataset, f"{name}_selection")


def test_panel_draws_the_selection_it_shows_on_the_random_curve(mnist):
    """The panel's strategy and kept fraction pick the point whose equivalence it draws
    on the random curve (easy at 50 % here: measured worth less than random)."""
    from tests.integration.test_panel import plot_data, run_event

    dataset, result = mnist
    row = next(w for w in result.worth if w["fraction"] == 0.5)
    assert row["ratio"] is not None, row["reason"]
    out = run_event(dataset, "on_load", state={"run_key": "proto", "keep": "0.5",
                                               "strategy": "easy", "balance": "cluster"})
    traces = {t["name"]: t for t in plot_data(out, "scaling")}
    worth = traces[f"worth {row['ratio']:.2f}x"]
    assert worth["x"] == [row["kept"], row["random_equivalent"]]
    assert worth["y"] == [pytest.approx(row["error"])] * 2
    band = traces["equivalent interval"]
    assert band["x"] == [row["equivalent_low"], row["equivalent_high"]]
    assert f"easy at 50% ({row['kept']:,} kept) is worth" in worth["hovertext"]
    assert f"- easy 50% ({row['kept']:,}): {row['ratio']:.2f}x" in out["state"]["worth"]


def test_law_of_the_small_half_predicts_the_full_pool(mnist):
    """The projection check: the random curve's sizes up to half the pool, refitted
    from their stored per-sample correctness, predict the full pool's held-out error
    within the 95 % interval of the prediction."""
    dataset, result = mnist
    stored = fop.load_run_results(dataset, "scaled")
    num_test = result.num_test
    pool = len(stored.train_ids)
    points = [(p["kept"], np.array([unpack_correct(c, num_test) for c in p["correct"]]))
              for p in stored.learning_curve if p["kept"] <= pool / 2]
    assert len(points) >= scaling.MIN_SIZES and max(k for k, _ in points) <= pool / 2
    fit = scaling.fit_curve("random", points, HeldoutBootstrap(num_test, seed=BOOTSTRAP_SEED),
                            np.random.default_rng(0))
    assert fit["status"] == "ok", fit["reason"]
    predicted, low, high = scaling.predicted_error(fit, pool)
    measured = 1 - result.full_accuracy["mean"]
    assert low <= measured <= high, (predicted, low, high, measured)


def test_keeping_one_copy_of_each_duplicate_is_worth_more_than_random(tmp_path):
    """Known answer 2: every training image appears twice (two files, identical
    pixels). SemDeDup keeps one copy of each, then random; plain random keeps
    duplicates. Keeping 45 % (135 of 300), dedup trains on 135 distinct images where
    random has about 105: by coverage alone, random needs about 205 samples for 135
    distinct ones (1.52x). The ratio's interval must be above 1.

    Class balance and 5 seeds: subsets of 135 digits differ a lot in what they cover,
    and this keeps that noise below the effect (measured on three draws of the data:
    1.57x [1.22, 2.12], 1.69x [1.28, 2.55], 1.38x [1.07, 1.92]; with cluster balance
    and 3 seeds one of the three intervals reached below 1)."""
    items = write_demo_images(str(tmp_path / "mnist"), "mnist", max_samples=3150, seed=5)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(items))
    unique = [items[i] for i in order[:150]]
    held_out = [items[i] for i in order[150:]]
    copies = []
    for path, label in unique:
        copy = path.replace(".png", "_copy.png")
        shutil.copyfile(path, copy)
        copies.append((copy, label))
    data = unique + copies + held_out
    tags = [()] * 300 + [("heldout",)] * len(held_out)
    dataset = _dataset(data, tags)
    try:
        result = fop.evaluate_pruning(
            dataset, "ground_truth", "proto", fractions=(0.45,), strategies=("random",),
            seeds=5, test_tag="heldout",
            spec=SelectionSpec(dedup_eps=1e-4, balance="class"),
            scaling_plot_path=str(tmp_path / "dedup.png"))
        (row,) = result.worth
        assert row["strategy"] == "random+dedup" and row["kept"] == 135
        assert row["ratio"] is not None, row["reason"]
        assert row["ratio_low"] > 1.0, row
        assert result.scaling[0]["status"] == "ok"
        # dedup kept one copy of each image; plain random subsets keep pairs
        stored = fop.load_run_results(dataset, "proto_evaluation")
        order_ids = list(stored.train_ids) + list(stored.test_ids)
        paths = dict(zip(*dataset.values(["id", "filepath"])))
        for packed in stored.training_sets[0]:
            kept_ids = np.array(order_ids)[unpack_correct(packed, len(order_ids))]
            originals = {paths[i].replace("_copy.png", ".png") for i in kept_ids}
            assert len(originals) == len(kept_ids) == 135
        train = dataset.select(stored.train_ids)
        plain = fop.plan_selection(train, "proto", keep=135, strategy="random", seed=0,
                                   balance="class", label_field="ground_truth")
        originals = {paths[i].replace("_copy.png", ".png") for i in plain.kept_ids}
        assert len(originals) < 120  # about 105 expected
        assert (tmp_path / "dedup.png").stat().st_size > 10_000
    finally:
        fo.delete_dataset(dataset.name)
