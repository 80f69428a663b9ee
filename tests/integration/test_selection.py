"""select_samples / deduplicate / export on real FiftyOne datasets: invariants for every
strategy (property-based), bad input, and the export round trip."""

import csv
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.core.selection import kept_count
from tests.conftest import unique_name


@pytest.fixture(scope="module")
def scored(digits_images):
    """120 real digit images with real labels; random 16-d embeddings make the scoring
    fast while the selection code sees a realistic spread of groups and scores."""
    dataset = fo.Dataset(unique_name("select"))
    dataset.add_samples([fo.Sample(filepath=p, ground_truth=fo.Classification(label=l))
                         for p, l in digits_images])
    rng = np.random.default_rng(1)
    dataset.set_values("emb", list(rng.normal(size=(len(dataset), 16)).astype(np.float32)))
    fop.compute_prototype_scores(dataset, "emb", run_key="proto", num_clusters=6,
                                 label_field="ground_truth")
    yield dataset
    fo.delete_dataset(dataset.name)


def tagged(dataset, tag):
    return set(dataset.match_tags(tag).values("id"))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    keep=st.one_of(st.floats(0.01, 1.0), st.integers(1, 120)),
    strategy=st.sampled_from(["hard", "easy", "random", "ccs", "density", "auto"]),
    balance=st.sampled_from(["cluster", "class", None]),
    ratio=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 3),
)
def test_selection_invariants(scored, keep, strategy, balance, ratio, seed):
    n = len(scored)
    schema_before = sorted(scored.get_field_schema())
    kwargs = dict(run_key="proto", keep=keep, strategy=strategy, balance=balance,
                  balance_ratio=ratio, seed=seed)
    view = fop.select_samples(scored, **kwargs, overwrite=True)
    kept, pruned = tagged(scored, "proto:kept"), tagged(scored, "proto:pruned")
    all_ids = set(scored.values("id"))
    # exact count, partition, nothing deleted or added
    assert len(view) == len(kept) == kept_count(n, keep)
    assert kept | pruned == all_ids and not kept & pruned
    assert len(scored) == n and sorted(scored.get_field_schema()) == schema_before
    assert set(scored.load_saved_view("proto-kept").values("id")) == kept
    # floors respected (density has its own per-cluster floor with the same ratio)
    groups = None
    if strategy == "density":
        groups = scored.values("proto_cluster")
    elif balance == "class":
        groups = scored.values("ground_truth.label")
    elif balance == "cluster":
        groups = scored.values("proto_cluster")
    if groups is not None:
        ids = scored.values("id")
        labels, sizes = np.unique([str(g) for g in groups], return_counts=True)
        floors = guaranteed_floors(sizes, len(kept), ratio)
        for label, floor in zip(labels, floors):
            got = sum(1 for i, g in zip(ids, groups) if str(g) == label and i in kept)
            assert got >= floor, (label, got, floor)
    # deterministic for a seed
    again = fop.plan_selection(scored, **kwargs)
    assert set(again.kept_ids) == kept


def guaranteed_floors(sizes, budget, ratio):
    """What every group keeps at least, whatever the strategy breaks ties by.

    The floor is ``min(size, ceil(ratio * budget / groups))``. When ceil pushes the
    floors' sum past the budget, the largest are lowered one unit at a time; which group
    gives a unit back differs by strategy, but all end at the level ``L`` or ``L + 1``
    (``L`` the largest level whose floors fit the budget), so each keeps at least
    ``min(size, L)``."""
    sizes = np.asarray(sizes)
    share = math.ceil(ratio * budget / len(sizes) - 1e-9)
    floors = np.minimum(sizes, share)
    if floors.sum() <= budget:
        return floors
    level = max(v for v in range(share) if np.minimum(sizes, v).sum() <= budget)
    return np.minimum(sizes, level)


@pytest.mark.parametrize("strategy", ["hard", "easy", "ccs"])
@pytest.mark.parametrize("keep, over_budget, floor", [
    (30, False, 3),  # ceil(30 / 10) = 3 per class, 30 in all: the floors fit exactly
    (15, True, 1),   # ceil(15 / 10) = 2 per class is 20 > 15: lowered to 1 or 2 each
])
def test_class_floors_hold_in_both_regimes(scored, strategy, keep, over_budget, floor):
    """12 images per digit class, ratio 1 (an even split): every class keeps its floor,
    both where the floors fit the budget and where ceil pushes them past it."""
    labels, sizes = np.unique(scored.values("ground_truth.label"), return_counts=True)
    assert len(labels) == 10 and sizes.min() >= 3
    assert (np.minimum(sizes, math.ceil(keep / 10)).sum() > keep) == over_budget
    assert guaranteed_floors(sizes, keep, 1.0).min() == floor
    plan = fop.plan_selection(scored, "proto", keep=keep, strategy=strategy,
                              balance="class", balance_ratio=1.0)
    per_class = {g: c["kept"] for g, c in plan.groups.items()}
    assert len(plan.kept_ids) == keep and set(per_class) == set(labels)
    assert min(per_class.values()) >= floor, per_class
    if over_budget:  # lowered floors stay as even as possible: 1 or 2 each
        assert max(per_class.values()) == 2 and sum(per_class.values()) == keep
    else:
        assert set(per_class.values()) == {3}


def test_hard_unbalanced_keeps_exactly_the_top_scores(scored):
    fop.select_samples(scored, "proto", keep=30, strategy="hard", balance=None,
                       overwrite=True)
    ids, dist = scored.values(["id", "proto_distance"])
    top = {ids[i] for i in np.argsort(dist)[::-1][:30]}
    assert tagged(scored, "proto:kept") == top
    fop.select_samples(scored, "proto", keep=30, strategy="easy", balance=None,
                       overwrite=True)
    bottom = {ids[i] for i in np.argsort(dist)[:30]}
    assert tagged(scored, "proto:kept") == bottom


def test_rerun_replaces_only_its_own_tags_and_view(scored):
    scored.take(5, seed=0).tag_samples("mine")
    fop.select_samples(scored, "proto", keep=0.5, strategy="random", name="other",
                       overwrite=True)
    fop.select_samples(scored, "proto", keep=0.9, strategy="hard", overwrite=True)
    fop.select_samples(scored, "proto", keep=0.2, strategy="hard", overwrite=True)
    counts = scored.count_sample_tags()
    assert counts["mine"] == 5
    assert counts["other:kept"] == 60 and counts["other:pruned"] == 60
    assert counts["proto:kept"] == 24 and counts["proto:pruned"] == 96
    info = fop.get_run_info(scored, "proto_selection").config
    assert info.keep == 0.2 and info.chosen_strategy == "hard"
    groups = fop.load_run_results(scored, "proto_selection").groups
    assert sum(g["kept"] for g in groups.values()) == 24
    fop.delete_run(scored, "other_selection")
    assert "other:kept" not in scored.count_sample_tags()
    assert "other-kept" not in scored.list_saved_views()
    scored.untag_samples("mine")


def test_auto_reports_its_choice_and_follows_the_data_regime(scored):
    from fiftyone_prune.core import advice

    assert len(scored) == 120 and len(scored.distinct("ground_truth.label")) == 10

    def rule(plan):  # the regime's part of the reason, without the run-specific suffix
        assert plan.strategy == "random"
        text, _, why_no_evaluation = plan.strategy_reason.partition(
            " (no matching evaluation: ")
        assert why_no_evaluation.startswith("no evaluation of ")
        return text

    def quoted(kept, classes):
        setting, _, _, fraction, gaps = advice.nearest_measurement(
            advice.data_regime(kept, 120, classes))
        return f"{setting} at {fraction:.0%} kept: " + ", ".join(
            f"{s} {g:+.1f}" for s, g in sorted(gaps.items(), key=lambda x: x[1]))

    # the regime comes from the data: 60 of 120 kept, 10 labelled classes
    half = rule(fop.plan_selection(scored, "proto", keep=0.5, strategy="auto"))
    assert "Keeping 50% (60 of 120, about 6 per class)" in half
    assert quoted(60, 10) in half and "399 MNIST digits at 50% kept" in half
    # another kept fraction is another regime, answered from another measurement: random
    # even where one shows a strategy ahead (easy at 5 % of 399 digits: within the noise)
    few = rule(fop.plan_selection(scored, "proto", keep=6, strategy="auto"))
    assert "Keeping 5% (6 of 120, about 1 per class)" in few
    assert quoted(6, 10) in few and "399 MNIST digits at 5% kept" in few
    assert "easy +8.3" in few
    # per class, never per cluster: class balance, or another number of clusters, give
    # the same regime on the same data
    assert rule(fop.plan_selection(scored, "proto", keep=0.5, strategy="auto",
                                   balance="class")) == half
    fop.compute_prototype_scores(scored, "emb", run_key="proto3", num_clusters=3,
                                 label_field="ground_truth")
    unlabelled = "proto_nolabels"
    fop.compute_prototype_scores(scored, "emb", run_key=unlabelled, num_clusters=3)
    try:
        assert rule(fop.plan_selection(scored, "proto3", keep=0.5, strategy="auto")) == half
        # without labels the regime counts kept samples in total
        alone = rule(fop.plan_selection(scored, unlabelled, keep=0.5, strategy="auto"))
        assert "Keeping 50% (60 of 120, no labels to count per class)" in alone
        assert quoted(60, None) in alone and alone != half
    finally:
        fop.delete_run(scored, "proto3")
        fop.delete_run(scored, unlabelled)
    # the choice is reported with the selection run: asked auto, chose random, and why
    fop.select_samples(scored, "proto", keep=0.5, strategy="auto", name="auto_regime")
    try:
        config = fop.get_run_info(scored, "auto_regime_selection").config
        assert (config.strategy, config.chosen_strategy) == ("auto", "random")
        assert config.strategy_reason.startswith(half)
    finally:
        fop.delete_run(scored, "auto_regime_selection")


def test_semdedup_alone_and_as_a_first_step(scored):
    ids = scored.values("id")
    emb = scored.values("emb")
    # plant exact duplicates of 4 samples (a fresh sample per copy, same vector)
    dupes = scored.add_samples([
        fo.Sample(filepath=scored[i].filepath, ground_truth=scored[i].ground_truth,
                  emb=emb[k]) for k, i in enumerate(ids[:4])
    ])
    try:
        fop.compute_prototype_scores(scored, "emb", run_key="dd", num_clusters=6)
        view = fop.deduplicate(scored, "dd", eps=1e-4)
        pruned = tagged(scored, "dd_dedup:pruned")
        assert len(pruned) == 4 and len(view) == len(scored) - 4
        for original, copy in zip(ids[:4], dupes):
            assert len({original, copy} & pruned) == 1
        fop.select_samples(scored, "dd", keep=0.5, strategy="hard", dedup_eps=1e-4)
        assert fop.get_run_info(scored, "dd_selection").config.num_duplicates == 4
        assert not (tagged(scored, "dd:kept") & pruned)
    finally:
        scored.delete_samples(dupes)
        for key in ("dd_dedup_selection", "dd_selection", "dd"):
            fop.delete_run(scored, key)


@pytest.mark.parametrize("kwargs, message", [
    (dict(keep=0), "at least 1"),
    (dict(keep=1.5), r"outside \(0, 1\]"),
    (dict(keep=-0.2), r"outside \(0, 1\]"),
    (dict(keep=500), "exceeds|at most|more than"),
    (dict(strategy="hardest"), "Unknown strategy"),
    (dict(run_key="nope"), "No prototype-score run"),
    (dict(balance="class", label_field="no_such_field"), "does not exist"),
    (dict(dedup_eps=0), r"\(0, 1\)"),
    (dict(dedup_eps=1.0), r"\(0, 1\)"),
    (dict(balance="genre"), "Unknown balance"),
])
def test_bad_input_fails_before_any_change(scored, kwargs, message):
    fop.select_samples(scored, "proto", keep=0.5, strategy="hard", overwrite=True)
    before = (scored.count_sample_tags(), sorted(scored.list_runs()),
              scored.list_saved_views())
    args = dict(run_key="proto", keep=0.5, strategy="hard", overwrite=True)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fop.select_samples(scored, **args)
    assert (scored.count_sample_tags(), sorted(scored.list_runs()),
            scored.list_saved_views()) == before


def test_export_round_trip_classification_tree(scored, tmp_path):
    view = fop.select_samples(scored, "proto", keep=40, strategy="ccs", overwrite=True)
    out = tmp_path / "tree"
    report = fop.export_kept_samples(view, str(out), dataset_type="image_classification_tree",
                                     label_field="ground_truth")
    assert report["num_samples"] == 40
    back = fo.Dataset.from_dir(str(out), dataset_type=fo.types.ImageClassificationDirectoryTree,
                               label_field="ground_truth")
    try:
        expected = sorted((os.path.basename(p), l) for p, l in
                          zip(*view.values(["filepath", "ground_truth.label"])))
        got = sorted((os.path.basename(p), l) for p, l in
                     zip(*back.values(["filepath", "ground_truth.label"])))
        assert got == expected
        # the export is now that dataset's media, which a re-export must never touch
        with pytest.raises(ValueError, match=f"of dataset '{back.name}'"):
            fop.export_kept_samples(view, str(out), dataset_type="media", overwrite=True)
        fo.delete_dataset(back.name)
        manifest = json.load(open(report["manifest"]))
        assert manifest["selection"]["chosen_strategy"] == "ccs"
        assert manifest["scoring"]["num_clusters"] == [6]
        with open(report["manifest_csv"], newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 40
        assert {"id", "export_path", "filepath", "ground_truth", "proto_distance",
                "proto_cluster"} <= set(rows[0])
        assert sorted(r["id"] for r in rows) == sorted(view.values("id"))
        # a non-empty directory is refused, nothing touched
        before = sorted(os.listdir(out))
        with pytest.raises(ValueError, match="not empty"):
            fop.export_kept_samples(view, str(out), dataset_type="image_classification_tree",
                                    label_field="ground_truth")
        assert sorted(os.listdir(out)) == before
        fop.export_kept_samples(view.limit(3), str(out), dataset_type="media", overwrite=True)
        assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 3
    finally:
        if fo.dataset_exists(back.name):
            fo.delete_dataset(back.name)


def test_export_round_trip_fiftyone_format_keeps_scores(scored, tmp_path):
    view = fop.select_samples(scored, "proto", keep=25, strategy="hard", overwrite=True)
    fop.export_kept_samples(view, str(tmp_path / "fo"))
    back = fo.Dataset.from_dir(str(tmp_path / "fo"), dataset_type=fo.types.FiftyOneDataset)
    try:
        names = lambda c: sorted(os.path.basename(p) for p in c.values("filepath"))  # noqa
        assert names(back) == names(view)
        assert sorted(back.values("proto_distance")) == sorted(view.values("proto_distance"))
        assert sorted(back.values("ground_truth.label")) == sorted(view.values("ground_truth.label"))
    finally:
        fo.delete_dataset(back.name)


def test_export_bad_input(scored, tmp_path):
    view = scored.limit(3)
    with pytest.raises(ValueError, match="Unknown dataset_type"):
        fop.export_kept_samples(view, str(tmp_path / "a"), dataset_type="tiff-stack")
    with pytest.raises(ValueError, match="needs label_field"):
        fop.export_kept_samples(view, str(tmp_path / "a"), dataset_type="image_classification_tree")
    with pytest.raises(ValueError, match="empty"):
        fop.export_kept_samples(scored.limit(0), str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_score_field_deleted_by_hand_is_named_before_any_tag(digits_images):
    dataset = fo.Dataset(unique_name("select-gone"))
    try:
        dataset.add_samples([fo.Sample(filepath=p) for p, _ in digits_images[:30]])
        rng = np.random.default_rng(3)
        dataset.set_values("emb", list(rng.normal(size=(30, 8)).astype(np.float32)))
        fop.compute_prototype_scores(dataset, "emb", run_key="gone", num_clusters=3)
        dataset.delete_sample_field("gone_distance")
        with pytest.raises(ValueError, match=r"gone_distance.*no longer exist.*overwrite=True"):
            fop.select_samples(dataset, "gone", keep=0.5, strategy="random")
        assert dataset.count_sample_tags() == {}
        assert not dataset.list_saved_views()
    finally:
        fo.delete_dataset(dataset.name)


def test_a_taken_selection_name_needs_overwrite(scored):
    """The SDK's rule (the App form only shows it): a taken name is refused by name,
    before any change; overwrite=True replaces the selection."""
    fop.select_samples(scored, "proto", keep=0.5, strategy="hard", name="taken",
                       overwrite=True)
    before = (tagged(scored, "taken:kept"), scored.count_sample_tags(),
              scored.list_saved_views(), fop.get_run_info(scored, "taken_selection").config.version)
    with pytest.raises(fop.ParameterError, match="Selection 'taken' already exists.*overwrite=True"
                       ) as error:
        fop.select_samples(scored, "proto", keep=0.2, strategy="easy", name="taken")
    assert error.value.param == "name"
    with pytest.raises(fop.ParameterError, match="already exists") as error:
        fop.deduplicate(scored, "proto", eps=0.05, name="taken")
    assert error.value.param == "name"
    assert (tagged(scored, "taken:kept"), scored.count_sample_tags(), scored.list_saved_views(),
            fop.get_run_info(scored, "taken_selection").config.version) == before
    view = fop.select_samples(scored, "proto", keep=0.2, strategy="easy", name="taken",
                              overwrite=True)
    plan = fop.plan_selection(scored, "proto", keep=0.2, strategy="easy", name="taken")
    assert set(view.values("id")) == tagged(scored, "taken:kept") == set(plan.kept_ids)
    assert fop.get_run_info(scored, "taken_selection").config.strategy == "easy"
    assert not any(":staging" in t for t in scored.count_sample_tags())
    fop.delete_run(scored, "taken_selection")


def test_selecting_while_shards_compute_the_scoring_run_points_at_shard_status(scored):
    """A sharded scoring run queued (delegated) and not done: readers are told its shards
    are still computing it and where to see them, not to rerun with overwrite=True."""
    fop.compute_prototype_scores(scored, "emb", run_key="busy", num_clusters=3,
                                 num_shards=2, delegate=True)
    try:
        with pytest.raises(fop.ParameterError, match="still being computed by its shards"
                           ) as error:
            fop.select_samples(scored, "busy", keep=0.5, strategy="hard")
        assert error.value.param == "run_key"
        assert "fop.shard_status(dataset, 'busy')" in str(error.value)
        assert "overwrite=True" not in str(error.value)
        assert "busy_selection" not in scored.list_runs()
    finally:
        fop.delete_run(scored, "busy")
