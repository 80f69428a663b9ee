"""Sharded scoring beyond one k: planning that keeps only the shard bounds, centroids of
any size outside the coordinating record, several k ranked over all samples by a last
step; each equal to the single-process run."""

import os
import subprocess
import sys

import numpy as np
import pytest
from bson import BSON

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk import runs, shard_plans, shards, storage
from tests.conftest import REPO_ROOT
from tests.integration.test_shards import (assert_same_scores, scores_of, vectors_dataset,
                                           wait_for)


@pytest.fixture()
def vectors():
    dataset = vectors_dataset(300)
    yield dataset
    fo.delete_dataset(dataset.name)


def old_bounds(samples, num_shards):
    """The cut of every sorted id in memory (what planning did before streaming)."""
    ids = sorted(samples.values("_id"))
    return [str(ids[i * len(ids) // num_shards]) for i in range(num_shards)]


@pytest.mark.parametrize("num_shards", [1, 7, 300])
def test_streamed_bounds_equal_the_cut_of_every_sorted_id(vectors, num_shards):
    plan = shard_plans.plan_or_resume(vectors, "b", "prototypes", num_shards, {}, fresh=True)
    assert plan["bounds"] == old_bounds(vectors, num_shards)
    assert plan["total"] == 300
    # a view (stages: its pipeline, then a sort on _id)
    view = vectors.skip(17).limit(200).match(fo.ViewField("filepath") != "/nonexistent/20.jpg")
    plan = shard_plans.plan_or_resume(view, "b", "prototypes", 6, {}, fresh=True)
    assert plan["bounds"] == old_bounds(view, 6) and plan["total"] == 199
    sizes = [len(shard_plans.shard_view(vectors, plan, i)) for i in range(6)]
    assert sizes == [shard_plans.shard_size(plan, i) for i in range(6)]
    assert sum(sizes) == 199
    storage.delete_shard_plan(plan["_id"])


def test_whole_dataset_bounds_are_an_index_only_read(vectors):
    """The read planning does on a whole dataset fetches no document (a covered plan of
    the ``_id`` index), the count neither."""
    collection = vectors._sample_collection
    cursor = collection.find({}, {"_id": 1}, sort=[("_id", 1)], hint="_id_")
    stats = cursor.explain()["executionStats"]
    assert stats["totalDocsExamined"] == 0 and stats["nReturned"] == 300
    assert [str(i) for i in storage.iter_sorted_ids(vectors)] == sorted(vectors.values("id"))
    assert storage.count_samples(vectors) == 300
    assert storage.count_samples(vectors.limit(10)) == 10


def test_the_plan_holds_no_centroid_and_a_large_k_equals_the_single_process_run():
    dataset = vectors_dataset(600, dim=32, seed=3, clusters=40)
    try:
        single = fop.compute_prototype_scores(dataset, "emb", run_key="one",
                                              num_clusters=150, seed=5,
                                              max_points_per_centroid=3)
        sharded = fop.compute_prototype_scores(dataset, "emb", run_key="big",
                                               num_clusters=150, seed=5,
                                               max_points_per_centroid=3, num_shards=4)
        assert sharded.num_scored == single.num_scored == 600
        assert_same_scores(dataset, "big", "one")
        assert (fop.load_run_results(dataset, "big").cluster_sizes
                == fop.load_run_results(dataset, "one").cluster_sizes)
        big = storage.get_shard_plan(shards.plan_id(dataset, "big"))
        fop.compute_prototype_scores(dataset, "emb", run_key="small", num_clusters=2,
                                     seed=5, max_points_per_centroid=3, num_shards=4)
        small = storage.get_shard_plan(shards.plan_id(dataset, "small"))
        assert "centroids" not in big and "centroids" not in small
        # the record's size depends on the shards, not on k: only the key and k differ
        for plan in (big, small):
            for name in ("_id", "key", "token", "shards", "params", "ks", "train_s"):
                plan.pop(name)
        assert abs(len(BSON.encode(big)) - len(BSON.encode(small))) < 16
    finally:
        fo.delete_dataset(dataset.name)


def test_more_shards_than_a_record_holds_are_refused_before_training(vectors):
    from fiftyone_prune.core.params import ParameterError

    with pytest.raises(ParameterError, match="at most 10000") as info:
        fop.compute_prototype_scores(vectors, "emb", run_key="m",
                                     num_shards=shard_plans.MAX_SHARDS + 1)
    assert info.value.param == "num_shards" and "m" not in vectors.list_runs()


@pytest.mark.parametrize("max_points", [256, 10])  # trains on all / on the seeded subsample
def test_sharded_several_k_equal_the_single_process_run(max_points):
    dataset = vectors_dataset(300, seed=4)
    try:
        # a sample without an embedding and one all-zero vector: unscored by both
        ids = sorted(dataset.values("id"))
        storage.write_vectors(dataset, "emb", [ids[50]], np.zeros((1, 16), np.float32))
        dataset.add_sample(fo.Sample(filepath="/nonexistent/none.jpg"))
        ks = [3, 5, 8]
        single = fop.compute_prototype_scores(dataset, "emb", run_key="one", num_clusters=ks,
                                              seed=2, max_points_per_centroid=max_points)
        sharded = fop.compute_prototype_scores(dataset, "emb", run_key="five",
                                               num_clusters=ks, seed=2,
                                               max_points_per_centroid=max_points,
                                               num_shards=5)
        assert sharded.num_scored == single.num_scored == 299
        assert sharded.num_clusters == ks and sorted(sharded.skipped_ids) == sorted(
            single.skipped_ids)
        rids, rd, rc = scores_of(dataset, "one")
        sids, sd, sc = scores_of(dataset, "five")
        assert list(sids) == list(rids)
        np.testing.assert_array_equal(sd, rd)  # the combined ranks, bit for bit
        np.testing.assert_array_equal(sc, rc)
        np.testing.assert_array_equal(fop.load_centroids(dataset, "five"),
                                      fop.load_centroids(dataset, "one"))
        assert runs.run_status(dataset, "five") == "complete"
        assert dataset.get_run_info("five").config.score_type == "mean_normalized_rank"
        cfg = dataset.get_run_info("five").config
        assert (cfg.num_skipped, cfg.num_zero_vectors) == (2, 1)
        # the staged distances are gone: the run owns its two fields only
        assert sorted(f for f in dataset.get_field_schema() if f.startswith("five")) == [
            "five_cluster", "five_distance"]
        assert shards.shard_status(dataset, "five")["counts"] == {"done": 5}
    finally:
        fo.delete_dataset(dataset.name)


def test_a_sharded_several_k_run_deleted_midway_leaves_no_staged_field(vectors):
    queued = fop.compute_prototype_scores(vectors, "emb", run_key="d", num_clusters=[2, 4],
                                          num_shards=3, delegate=True)
    shards.run_shard(vectors, "d", 0)  # shard 0 (at least) staged its distances
    staged = [f for f in vectors.get_field_schema() if f.startswith("d_distance_staging_")]
    assert len(staged) == 1 and 100 <= vectors.count(staged[0]) < 300
    assert runs.run_status(vectors, "d") != "complete"
    fop.delete_run(vectors, "d")
    vectors.reload()
    assert not [f for f in vectors.get_field_schema() if f.startswith("d_")]
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    for op_id in queued["queued_operations"]:
        DelegatedOperationService().delete_operation(ObjectId(op_id))


def test_sharded_supervised_prototypes_equal_the_single_process_run():
    """Class sums per shard, added in one step, then a scoring pass: the prototypes of
    the single-process run (float64 sums added in another order: equal to float32
    rounding) and the same distances and classes."""
    dataset = vectors_dataset(300, seed=6)
    try:
        ids = sorted(dataset.values("id"))
        dataset.set_values("gt", {i: fo.Classification(label=f"c{n % 4}")
                                  for n, i in enumerate(ids) if n != 7}, key_field="id")
        storage.write_vectors(dataset, "emb", [ids[50]], np.zeros((1, 16), np.float32))
        single = fop.compute_prototype_scores(dataset, "emb", run_key="one",
                                              method="supervised", label_field="gt")
        sharded = fop.compute_prototype_scores(dataset, "emb", run_key="four",
                                               method="supervised", label_field="gt",
                                               num_shards=4)
        assert sharded.num_scored == single.num_scored == 298
        assert sharded.method == "supervised"
        assert sorted(sharded.skipped_ids) == sorted(single.skipped_ids)
        rids, rd, rc = scores_of(dataset, "one")
        sids, sd, sc = scores_of(dataset, "four")
        assert list(sids) == list(rids)
        np.testing.assert_array_equal(sc, rc)  # each sample's class
        np.testing.assert_allclose(sd, rd, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fop.load_centroids(dataset, "four"),
                                   fop.load_centroids(dataset, "one"), rtol=0, atol=1e-6)
        one, four = (fop.load_run_results(dataset, k) for k in ("one", "four"))
        assert four.classes == one.classes and four.class_counts == one.class_counts
        cfg, ref = (dataset.get_run_info(k).config for k in ("four", "one"))
        assert (cfg.num_clusters, cfg.num_skipped, cfg.num_zero_vectors) == (
            ref.num_clusters, ref.num_skipped, ref.num_zero_vectors) == ([4], 2, 1)
        assert runs.run_status(dataset, "four") == "complete"
        # the shards' class sums are gone with the run
        plan = storage.get_shard_plan(shards.plan_id(dataset, "four"))
        assert all(storage.get_shard_part(plan["_id"], plan["token"], i) for i in range(4))
        fop.delete_run(dataset, "four")
        assert not any(storage.get_shard_part(plan["_id"], plan["token"], i)
                       for i in range(4))
    finally:
        fo.delete_dataset(dataset.name)


def test_a_class_with_one_sample_is_refused_before_any_shard_runs(vectors):
    ids = sorted(vectors.values("id"))
    vectors.set_values("gt", {i: fo.Classification(label="lone" if n == 3 else "many")
                              for n, i in enumerate(ids)}, key_field="id")
    with pytest.raises(ValueError, match="single sample"):
        fop.compute_prototype_scores(vectors, "emb", run_key="s", method="supervised",
                                     label_field="gt", num_shards=3)
    assert "s" not in vectors.list_runs()
    assert storage.get_shard_plan(shards.plan_id(vectors, "s")) is None


def test_samples_added_after_planning_join_the_class_sums_and_are_scored():
    """A supervised sharded run queued, then 30 labelled samples added, then its shards
    run: the run's catch-up adds their class sums once (not into the last shard's part,
    whose slice also reaches them) and scores them; the whole equals the single-process
    run on all 330 samples."""
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = vectors_dataset(300, seed=8)
    try:
        ids = sorted(dataset.values("id"))
        dataset.set_values("gt", {i: fo.Classification(label=f"c{n % 3}")
                                  for n, i in enumerate(ids)}, key_field="id")
        queued = fop.compute_prototype_scores(dataset, "emb", run_key="late",
                                              method="supervised", label_field="gt",
                                              num_shards=3, delegate=True)
        late_ids = dataset.add_samples(
            [fo.Sample(filepath=f"/nonexistent/late{i}.jpg",
                       gt=fo.Classification(label=f"c{i % 3}")) for i in range(30)])
        rng = np.random.default_rng(1)
        storage.write_vectors(dataset, "emb", late_ids,
                              rng.normal(size=(30, 16)).astype(np.float32))
        for index in range(3):
            shards.run_shard(dataset, "late", index)
        dataset.reload()
        assert runs.run_status(dataset, "late") == "complete"
        fop.compute_prototype_scores(dataset, "emb", run_key="ref", method="supervised",
                                     label_field="gt")
        rids, rd, rc = scores_of(dataset, "ref")
        sids, sd, sc = scores_of(dataset, "late")
        assert list(sids) == list(rids) and dataset.count("late_distance") == 330
        np.testing.assert_array_equal(sc, rc)
        np.testing.assert_allclose(sd, rd, rtol=0, atol=1e-6)
        late, ref = (fop.load_run_results(dataset, k) for k in ("late", "ref"))
        assert late.class_counts == ref.class_counts == [110, 110, 110]
        for op_id in queued["queued_operations"]:
            DelegatedOperationService().delete_operation(ObjectId(op_id))
    finally:
        fo.delete_dataset(dataset.name)


@pytest.fixture()
def worker(tmp_path):
    """One real ``fiftyone delegated launch`` worker (a fresh process: it finds the
    centroids, the staged distances and the class sums only through the database)."""
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=REPO_ROOT,
               FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS="true", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.shard_worker", "0",
                             "50"], cwd=REPO_ROOT, env=env,
                            stdout=open(tmp_path / "worker.log", "w"),
                            stderr=subprocess.STDOUT)
    yield proc
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow  # ~30 s: a worker process runs six shards and two last steps
def test_delegated_several_k_and_supervised_runs_equal_the_single_process_runs(worker):
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = vectors_dataset(300, seed=9)
    try:
        ids = sorted(dataset.values("id"))
        dataset.set_values("gt", {i: fo.Classification(label=f"c{n % 3}")
                                  for n, i in enumerate(ids)}, key_field="id")
        ranked = fop.compute_prototype_scores(dataset, "emb", run_key="rk",
                                              num_clusters=[3, 6], seed=4, num_shards=3,
                                              delegate=True)
        classes = fop.compute_prototype_scores(dataset, "emb", run_key="cl",
                                               method="supervised", label_field="gt",
                                               num_shards=3, delegate=True)
        for key in ("rk", "cl"):
            wait_for(lambda: dataset.reload() or runs.run_status(dataset, key) == "complete",
                     180, f"run {key} completed by the worker")
        fop.compute_prototype_scores(dataset, "emb", run_key="rk1", num_clusters=[3, 6],
                                     seed=4)
        fop.compute_prototype_scores(dataset, "emb", run_key="cl1", method="supervised",
                                     label_field="gt")
        rids, rd, rc = scores_of(dataset, "rk1")
        sids, sd, sc = scores_of(dataset, "rk")
        assert list(sids) == list(rids)
        np.testing.assert_array_equal(sd, rd)
        np.testing.assert_array_equal(sc, rc)
        rids, rd, rc = scores_of(dataset, "cl1")
        sids, sd, sc = scores_of(dataset, "cl")
        np.testing.assert_array_equal(sc, rc)
        np.testing.assert_allclose(sd, rd, rtol=0, atol=1e-6)
        service = DelegatedOperationService()
        for op_id in ranked["queued_operations"] + classes["queued_operations"]:
            service.delete_operation(ObjectId(op_id))
    finally:
        fo.delete_dataset(dataset.name)
