"""Prototype scores on real embeddings (real digits, real model), checked against an
independent NumPy computation."""

import json

import numpy as np
import pytest

import fiftyone as fo
from fiftyone import ViewField as F
import fiftyone.core.utils as fou

import fiftyone_prune as fop
from fiftyone_prune.sdk import storage
from tests.conftest import unique_name


@pytest.fixture(scope="module")
def embedded(digits_images, efficientnet_small):
    dataset = fo.Dataset(unique_name("scores"))
    dataset.add_samples([fo.Sample(filepath=p, ground_truth=fo.Classification(label=l))
                         for p, l in digits_images])
    fop.compute_embeddings(dataset, model=efficientnet_small, embeddings_field="emb",
                           num_workers=0)
    yield dataset
    fo.delete_dataset(dataset.name)


def normalized(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def state(dataset):
    return (sorted(dataset.get_field_schema()), sorted(dataset.list_runs()))


def test_supervised_distances_match_numpy(embedded):
    fop.compute_prototype_scores(embedded, "emb", run_key="sup", method="supervised",
                                 label_field="ground_truth")
    x = normalized(embedded.values("emb"))
    labels = np.array(embedded.values("ground_truth.label"))
    expected = np.empty(len(x))
    for c in np.unique(labels):
        proto = x[labels == c].mean(axis=0)
        proto /= np.linalg.norm(proto)
        expected[labels == c] = 1 - x[labels == c] @ proto
    np.testing.assert_allclose(embedded.values("sup_distance"), expected, atol=1e-5)
    assert embedded.values("sup_cluster") == list(labels)
    fop.delete_run(embedded, "sup")


def test_ssp_distance_is_cosine_to_assigned_centroid_which_is_nearest(embedded):
    result = fop.compute_prototype_scores(embedded, "emb", run_key="ssp", num_clusters=6, seed=3)
    assert result.num_scored == len(embedded) and result.num_skipped == 0
    centroids = fop.load_centroids(embedded, "ssp").astype(np.float64)
    assert centroids.shape == (6, 1280)
    x = normalized(embedded.values("emb"))
    cluster = np.array(embedded.values("ssp_cluster"))
    dist = np.array(embedded.values("ssp_distance"))
    sims = x @ centroids.T
    np.testing.assert_allclose(dist, 1 - sims[np.arange(len(x)), cluster], atol=1e-5)
    assert (sims.max(axis=1) - sims[np.arange(len(x)), cluster] < 1e-5).all()
    assert len(set(cluster)) == 6
    # deterministic for a seed
    fop.compute_prototype_scores(embedded, "emb", run_key="ssp2", num_clusters=6, seed=3)
    assert embedded.values("ssp2_cluster") == list(cluster)
    np.testing.assert_array_equal(embedded.values("ssp2_distance"), dist)
    info = fop.get_run_info(embedded, "ssp").config
    assert info.embeddings_field == "emb" and info.num_clusters == [6] and info.seed == 3
    assert info.embeddings_model["model"] == "efficientnet_lite0"
    assert set(info.versions) >= {"fiftyone", "faiss", "fiftyone_prune"}
    for key in ("ssp", "ssp2"):
        assert fop.delete_run(embedded, key) == [f"{key}_distance", f"{key}_cluster"]


def test_default_k_is_the_number_of_classes_with_labels(embedded):
    result = fop.compute_prototype_scores(embedded, "emb", run_key="byclass",
                                          label_field="ground_truth")
    assert result.num_clusters == [len(embedded.distinct("ground_truth.label"))]
    fop.delete_run(embedded, "byclass")


def test_several_k_are_combined_by_mean_rank(embedded):
    fop.compute_prototype_scores(embedded, "emb", run_key="multi", num_clusters=[3, 8])
    for k in (3, 8):
        fop.compute_prototype_scores(embedded, "emb", run_key=f"k{k}", num_clusters=k)
    from scipy.stats import rankdata

    ranks = [(rankdata(embedded.values(f"k{k}_distance")) - 1) / (len(embedded) - 1)
             for k in (3, 8)]
    np.testing.assert_allclose(embedded.values("multi_distance"), np.mean(ranks, axis=0),
                               atol=1e-6)
    assert embedded.values("multi_cluster") == embedded.values("k3_cluster")
    for key in ("multi", "k3", "k8"):
        fop.delete_run(embedded, key)


def test_samples_without_embeddings_are_skipped_and_reported(embedded, tmp_path):
    extra = embedded.add_samples([fo.Sample(filepath=str(tmp_path / "x.png"))])
    try:
        result = fop.compute_prototype_scores(embedded, "emb", run_key="gap", num_clusters=4)
        assert result.skipped_ids == extra
        assert embedded.select(extra).first()["gap_distance"] is None
        assert fop.load_run_results(embedded, "gap").skipped_ids == extra
    finally:
        embedded.delete_samples(extra)
        fop.delete_run(embedded, "gap")


def test_overwrite_is_required_to_reuse_a_key(embedded):
    fop.compute_prototype_scores(embedded, "emb", run_key="again", num_clusters=3)
    with pytest.raises(ValueError, match="overwrite=True"):
        fop.compute_prototype_scores(embedded, "emb", run_key="again", num_clusters=5)
    assert fop.get_run_info(embedded, "again").config.num_clusters == [3]
    fop.compute_prototype_scores(embedded, "emb", run_key="again", num_clusters=5, overwrite=True)
    assert fop.get_run_info(embedded, "again").config.num_clusters == [5]
    assert max(embedded.values("again_cluster")) == 4
    fop.delete_run(embedded, "again")


@pytest.mark.parametrize("kwargs, message", [
    (dict(embeddings_field="nope"), "does not exist"),
    (dict(embeddings_field="filepath"), "not a vector field"),
    (dict(num_clusters=0), "positive integer"),
    (dict(num_clusters=10_000), "exceeds the number of samples"),
    (dict(label_field="nope"), "does not exist"),
    (dict(label_field="filepath"), "not a Classification"),
    (dict(method="supervised"), "needs label_field"),
    (dict(method="magic"), "Unknown method"),
    (dict(run_key="bad key"), "Invalid run key"),
])
def test_bad_input_fails_before_any_change(embedded, kwargs, message):
    before = state(embedded)
    args = dict(embeddings_field="emb", run_key="bad")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fop.compute_prototype_scores(embedded, **args)
    assert state(embedded) == before


def test_bad_vectors_and_labels_fail_before_any_change(embedded):
    ids = embedded.values("id")
    rng = np.random.default_rng(0)
    vecs = list(rng.normal(size=(len(ids), 8)).astype(np.float32))
    mixed = list(vecs)
    mixed[5] = np.ones(9, dtype=np.float32)
    with_nan = list(vecs)
    with_nan[7] = np.full(8, np.nan, dtype=np.float32)
    embedded.set_values("mixed", mixed)
    embedded.set_values("nan", with_nan)
    before = state(embedded)
    with pytest.raises(ValueError, match="mixed dimensions"):
        fop.compute_prototype_scores(embedded, "mixed", run_key="bad")
    with pytest.raises(ValueError, match=f"NaN or inf.*{ids[7]}"):
        fop.compute_prototype_scores(embedded, "nan", run_key="bad")
    with pytest.raises(ValueError, match="empty"):
        fop.compute_prototype_scores(embedded.limit(0), "emb", run_key="bad")
    lonely = embedded.limit(1).values("id")[0]
    sample = embedded[lonely]
    label = sample["ground_truth"]
    sample["ground_truth"] = fo.Classification(label="only-one")
    sample.save()
    try:
        with pytest.raises(ValueError, match="single sample"):
            fop.compute_prototype_scores(embedded, "emb", run_key="bad",
                                         method="supervised", label_field="ground_truth")
        assert state(embedded) == before
    finally:  # the module's dataset as the other tests expect it, in any order
        sample["ground_truth"] = label
        sample.save()
        embedded.delete_sample_fields(["mixed", "nan"])


def test_overwrite_in_place_leaves_no_stale_score(embedded):
    """Overwriting keeps the fields and rewrites them in place; samples the new run does
    not score (outside its view, or without an embedding) lose the old values."""
    fop.compute_prototype_scores(embedded, "emb", run_key="redo", num_clusters=3)
    view = embedded.skip(10)
    no_embedding = view.first().id
    saved = embedded.select(no_embedding).values("emb")
    embedded.select(no_embedding).set_values("emb", [None])
    try:
        result = fop.compute_prototype_scores(view, "emb", run_key="redo", num_clusters=5,
                                              overwrite=True)
        assert result.skipped_ids == [no_embedding]
        assert embedded.limit(10).values("redo_distance") == [None] * 10
        assert embedded.select(no_embedding).first()["redo_cluster"] is None
        scored = view.exists("emb")
        assert set(scored.values("redo_cluster")) == set(range(5))
        centroids = fop.load_centroids(embedded, "redo")
        x = normalized(np.stack(scored.values("emb")))
        sims = x @ centroids.T
        np.testing.assert_array_equal(scored.values("redo_cluster"), sims.argmax(1))
        np.testing.assert_allclose(scored.values("redo_distance"), 1 - sims.max(1), atol=1e-5)
        config = fop.get_run_info(embedded, "redo").config
        assert config.num_clusters == [5]
        assert json.loads(config.view)[0]["_cls"] == "fiftyone.core.stages.Skip"
        # a different cluster type (class names): the old run and its fields are replaced
        labelled = embedded.match(F("ground_truth.label") != "only-one")  # see above
        fop.compute_prototype_scores(labelled, "emb", run_key="redo", method="supervised",
                                     label_field="ground_truth", overwrite=True)
        assert isinstance(embedded.get_field("redo_cluster"), fo.StringField)
        assert embedded.count("redo_cluster") == len(labelled.exists("emb"))
    finally:
        embedded.select(no_embedding).set_values("emb", saved)
        fop.delete_run(embedded, "redo")


def _small_batches(monkeypatch, rows=16):
    """Several read batches on 120 samples, as on a large dataset (our own reader's
    batch size; FiftyOne and MongoDB are untouched)."""
    monkeypatch.setattr(storage, "READ_BATCH_SIZE", rows)


def test_streamed_kmeans_trains_on_a_seeded_subsample_and_assigns_every_sample(
        embedded, monkeypatch):
    """More samples than k x max_points_per_centroid: train on a subsample, then one
    streamed pass that assigns and writes batch by batch; the numbers still hold."""
    _small_batches(monkeypatch)
    try:
        result = fop.compute_prototype_scores(embedded, "emb", run_key="stream",
                                              num_clusters=4, max_points_per_centroid=10)
        assert "stream_s" in result.timings and "train_s" in result.timings
        assert result.num_scored == len(embedded)
        centroids = fop.load_centroids(embedded, "stream")
        x = normalized(np.stack(embedded.values("emb")))
        sims = x @ centroids.T
        np.testing.assert_array_equal(embedded.values("stream_cluster"), sims.argmax(1))
        np.testing.assert_allclose(embedded.values("stream_distance"), 1 - sims.max(1),
                                   atol=1e-5)
        again = fop.compute_prototype_scores(embedded, "emb", run_key="stream2",
                                             num_clusters=4, max_points_per_centroid=10)
        assert embedded.values("stream2_distance") == embedded.values("stream_distance")
        assert again.num_scored == result.num_scored
        # several k: ranks need every distance, so the scores are written after the pass
        fop.compute_prototype_scores(embedded, "emb", run_key="stream3", num_clusters=[3, 5],
                                     max_points_per_centroid=4)
        combined = np.array(embedded.values("stream3_distance"))
        assert combined.min() >= 0 and combined.max() <= 1 and len(set(combined)) > 10
    finally:
        for key in ("stream", "stream2", "stream3"):
            if key in fop.list_runs(embedded):
                fop.delete_run(embedded, key)


def test_a_bad_vector_late_in_a_streamed_run_leaves_the_dataset_as_it_was(
        embedded, monkeypatch):
    _small_batches(monkeypatch)
    from fiftyone_prune.core import prototypes as core

    ids = embedded.values("id")
    training = set(core.training_subsample(len(ids), 4, 10, 51).tolist())
    late = max(i for i in range(len(ids)) if i not in training)
    assert late > 32  # batches before it have been scored and written
    sample = embedded[ids[late]]
    saved = sample["emb"]
    fop.compute_prototype_scores(embedded, "emb", run_key="old", num_clusters=3,
                                 max_points_per_centroid=10)
    before = embedded.values("old_distance")
    bad = saved.copy()
    bad[0] = np.nan
    sample["emb"] = bad
    sample.save()
    try:
        with pytest.raises(ValueError, match=f"NaN or inf.*{ids[late]}"):
            fop.compute_prototype_scores(embedded, "emb", run_key="fresh", num_clusters=4,
                                         max_points_per_centroid=10)
        assert embedded.get_field("fresh_distance") is None
        assert embedded.get_field("fresh_cluster") is None
        assert "fresh" not in embedded.list_runs()
        # overwriting: the old run's scores survive a failure found during the pass
        with pytest.raises(ValueError, match="NaN or inf"):
            fop.compute_prototype_scores(embedded, "emb", run_key="old", num_clusters=4,
                                         max_points_per_centroid=10, overwrite=True)
        assert embedded.values("old_distance") == before
        assert fop.get_run_info(embedded, "old").config.num_clusters == [3]
    finally:
        sample["emb"] = saved
        sample.save()
        fop.delete_run(embedded, "old")


def test_fields_left_by_a_killed_run_need_overwrite_and_are_then_replaced(embedded):
    """A run killed mid-write (no chance to clean up) leaves its two fields without a run."""
    embedded.add_sample_field("killed_distance", fo.FloatField,
                              description="prototype distance, run killed")
    embedded.add_sample_field("killed_cluster", fo.StringField,  # another type, even
                              description="prototype (cluster/class), run killed")
    embedded.set_values("killed_distance", [0.5] * len(embedded))
    try:
        with pytest.raises(ValueError, match="killed before it finished.*overwrite=True"):
            fop.compute_prototype_scores(embedded, "emb", run_key="killed", num_clusters=3)
        fop.compute_prototype_scores(embedded, "emb", run_key="killed", num_clusters=3,
                                     overwrite=True)
        assert isinstance(embedded.get_field("killed_cluster"), fo.IntField)
        assert set(embedded.values("killed_cluster")) == {0, 1, 2}
        assert 0.5 not in embedded.values("killed_distance")
    finally:
        if "killed" in embedded.list_runs():
            fop.delete_run(embedded, "killed")
        else:
            embedded.delete_sample_fields(
                [f for f in ("killed_distance", "killed_cluster") if embedded.get_field(f)])


def test_a_view_with_object_ids_in_its_stages_is_recorded(embedded, monkeypatch):
    from bson import ObjectId

    _small_batches(monkeypatch)
    first = embedded.first().id
    view = embedded.match(F("_id") != ObjectId(first))
    try:
        result = fop.compute_prototype_scores(view, "emb", run_key="oid", num_clusters=3,
                                              max_points_per_centroid=10)  # streamed
        assert result.num_scored == len(embedded) - 1
        stages = json.loads(fop.get_run_info(embedded, "oid").config.view)
        assert stages[0]["_cls"] == "fiftyone.core.stages.Match"
        assert embedded[first]["oid_distance"] is None
    finally:
        fop.delete_run(embedded, "oid")


def test_a_first_streamed_batch_of_another_dimension_is_named(embedded, monkeypatch):
    """The training vectors are 1280-d; the first streamed batch holds vectors of another
    model: a named error, and nothing is left behind."""
    _small_batches(monkeypatch, rows=4)
    from fiftyone_prune.core import prototypes as core

    ids = embedded.values("id")
    seed = next(s for s in range(100)
                if not set(range(4)) & set(core.training_subsample(len(ids), 3, 10, s)))
    saved = embedded.select(ids[:4], ordered=True).values("emb")
    embedded.select(ids[:4], ordered=True).set_values("emb", [np.ones(7)] * 4)
    try:
        with pytest.raises(ValueError, match=f"mixed dimensions: sample {ids[0]} has 7"):
            fop.compute_prototype_scores(embedded, "emb", run_key="dims", num_clusters=3,
                                         max_points_per_centroid=10, seed=seed)
        assert embedded.get_field("dims_distance") is None
    finally:
        embedded.select(ids[:4], ordered=True).set_values("emb", saved)


@pytest.mark.parametrize("path", ["in_memory", "streamed", "several_k", "supervised",
                                  "overwrite"])
def test_the_recorded_check_is_what_the_fields_hold(embedded, monkeypatch, path):
    """The run records ``check`` (count and sum of its distances, which recognises values
    it did not write) from what the writer wrote, with no second pass over the dataset:
    it equals one aggregation over the field, on every path."""
    _small_batches(monkeypatch)
    kwargs = {"in_memory": dict(num_clusters=4),
              "streamed": dict(num_clusters=4, max_points_per_centroid=10),
              "several_k": dict(num_clusters=[3, 5], max_points_per_centroid=4),
              "supervised": dict(method="supervised", label_field="ground_truth"),
              "overwrite": dict(num_clusters=4, max_points_per_centroid=10)}[path]
    key = f"check_{path}"
    try:
        if path == "overwrite":
            fop.compute_prototype_scores(embedded, "emb", run_key=key, num_clusters=6)
            kwargs["overwrite"] = True
        fop.compute_prototype_scores(embedded, "emb", run_key=key, **kwargs)
        recorded = fop.get_run_info(embedded, key).config.check
        count, total = storage.count_and_sum(embedded, f"{key}_distance")
        assert recorded["count"] == count == len(embedded)
        assert recorded["sum"] == pytest.approx(total, rel=1e-12)
        assert fop.run_status(embedded, key) == "complete"
    finally:
        if key in fop.list_runs(embedded):
            fop.delete_run(embedded, key)
