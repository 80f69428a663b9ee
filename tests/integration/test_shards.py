"""Sharded runs (``num_shards``): the same results as one process, resumable shards, and
real ``fiftyone delegated launch`` workers sharing the queue, one of them killed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk import shard_plans, shards, storage
from tests.conftest import REPO_ROOT, unique_name


def vectors_dataset(n, dim=16, seed=0, clusters=5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = (centers[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim)))
    dataset = fo.Dataset(unique_name("shards"))
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(n)])
    storage.write_vectors(dataset, "emb", dataset.values("id"), x.astype(np.float32))
    dataset.add_sample_field("emb", fo.VectorField)
    return dataset


@pytest.fixture()
def vectors():
    dataset = vectors_dataset(300)
    yield dataset
    fo.delete_dataset(dataset.name)


def scores_of(dataset, key):
    ids, d, c = dataset.values(["id", f"{key}_distance", f"{key}_cluster"])
    order = np.argsort(ids)
    return np.array(ids)[order], np.array(d, dtype=float)[order], np.array(c)[order]


def assert_same_scores(dataset, key, reference):
    ids, d, c = scores_of(dataset, key)
    rids, rd, rc = scores_of(dataset, reference)
    assert list(ids) == list(rids)
    np.testing.assert_array_equal(c, rc)  # the same assignments
    np.testing.assert_allclose(d, rd, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fop.load_centroids(dataset, key),
                                  fop.load_centroids(dataset, reference))


@pytest.mark.parametrize("max_points", [256, 10])  # trains on all / on the seeded subsample
def test_sharded_scores_equal_the_single_process_run(vectors, max_points):
    single = fop.compute_prototype_scores(vectors, "emb", run_key="one", num_clusters=4,
                                          seed=7, max_points_per_centroid=max_points)
    assert single.num_scored == 300
    result = fop.compute_prototype_scores(vectors, "emb", run_key="six", num_clusters=4,
                                          seed=7, max_points_per_centroid=max_points,
                                          num_shards=6)
    assert result.num_scored == 300 and result.num_skipped == 0
    assert_same_scores(vectors, "six", "one")
    status = shards.shard_status(vectors, "six")
    assert status["complete"] and status["counts"] == {"done": 6}
    assert status["samples_done"] == status["total"] == 300
    assert [s["samples_total"] for s in status["shards"]] == [50] * 6
    from fiftyone_prune.sdk import runs

    assert runs.run_status(vectors, "six") == "complete"
    assert vectors.get_run_info("six").config.num_shards == 6


def test_shards_are_disjoint_and_cover_the_view(vectors):
    view = vectors.skip(10).limit(250)
    fop.compute_prototype_scores(view, "emb", run_key="v", num_clusters=3, num_shards=4)
    plan = storage.get_shard_plan(shards.plan_id(vectors, "v"))
    seen = []
    for i in range(4):
        seen += shard_plans.shard_view(vectors, plan, i).values("id")
    assert sorted(seen) == sorted(view.values("id")) and len(set(seen)) == 250
    assert vectors.count("v_distance") == 250  # nothing outside the view


def test_a_failed_shard_keeps_the_run_unusable_until_it_is_rerun(vectors):
    # a NaN in the slice of shard 2 only: the shards before it finish, shard 2 fails
    plan_ids = sorted(vectors.values("id"))
    bad = plan_ids[120]
    sample = vectors[bad]
    good = np.array(sample["emb"])
    vec = good.copy()
    vec[0] = np.nan
    storage.write_vectors(vectors, "emb", [bad], vec[None].astype(np.float32))
    # trained on the subsample that leaves row 120 out, so planning succeeds
    with pytest.raises(ValueError, match="NaN"):
        fop.compute_prototype_scores(vectors, "emb", run_key="f", num_clusters=3,
                                     max_points_per_centroid=10, seed=1, num_shards=3)
    status = shards.shard_status(vectors, "f")
    assert [s["state"] for s in status["shards"]] == ["done", "failed", "queued"]
    assert "NaN" in status["shards"][1]["error"]
    from fiftyone_prune.sdk import runs

    assert runs.run_status(vectors, "f") != "complete"
    with pytest.raises(ValueError, match="cannot be used|sharded"):
        fop.select_samples(vectors, run_key="f", keep=0.5, name="k")
    storage.write_vectors(vectors, "emb", [bad], good[None].astype(np.float32))
    assert shards.requeue_stale_shards(vectors, "f", delegate=False,
                                       include_failed=True) == [1]
    # the call again resumes: shard 2 runs, shard 0 and 1 are not recomputed
    result = fop.compute_prototype_scores(vectors, "emb", run_key="f", num_clusters=3,
                                          max_points_per_centroid=10, seed=1, num_shards=3)
    assert result.num_scored == 300
    assert runs.run_status(vectors, "f") == "complete"
    fop.compute_prototype_scores(vectors, "emb", run_key="f1", num_clusters=3,
                                 max_points_per_centroid=10, seed=1)
    assert_same_scores(vectors, "f", "f1")


def test_bad_sharded_inputs_fail_before_any_write(vectors):
    before = sorted(vectors.get_field_schema())
    from fiftyone_prune.core.params import ParameterError
    from fiftyone_prune.sdk.scores import check_scoring_inputs

    for kwargs, match, param in [
            (dict(num_shards=0), "num_shards", "num_shards"),
            (dict(num_shards=301), "exceeds", "num_shards"),
            (dict(num_shards=2, method="supervised"), "needs label_field", "label_field"),
            (dict(num_shards=2, overwrite=True), "does not replace", "overwrite"),
            (dict(num_shards=2, num_clusters=301), "exceeds the number of samples with",
             "num_clusters"),
            (dict(num_shards=2, embeddings_field="nope"), "does not exist",
             "embeddings_field")]:
        kwargs = dict(dict(embeddings_field="emb", run_key="bad"), **kwargs)
        with pytest.raises(ParameterError, match=match) as info:
            fop.compute_prototype_scores(vectors, **kwargs)
        assert info.value.param == param
        # the App form's check says the same, before anything is read
        with pytest.raises(ParameterError, match=match):
            check_scoring_inputs(vectors, **kwargs)
    assert sorted(vectors.get_field_schema()) == before
    assert "bad" not in vectors.list_runs()


@pytest.mark.slow  # ~30 s: four model loads at 32 px on 2 cores
def test_sharded_embeddings_equal_the_single_process_run(digits_dataset):
    view = digits_dataset.limit(40)
    fop.compute_embeddings(view, model="efficientnet_lite0", image_size=32,
                           embeddings_field="one", num_workers=0)
    result = fop.compute_embeddings(view, model="efficientnet_lite0", image_size=32,
                                    embeddings_field="three", num_workers=0, num_shards=3)
    assert result.num_embedded == 40 and result.num_failed == 0
    a, b = np.array(view.values("one")), np.array(view.values("three"))
    assert a.shape == b.shape == (40, 1280)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    status = shards.shard_status(digits_dataset, "three")
    assert status["complete"] and status["samples_done"] == 40
    assert digits_dataset.count("three") == 40  # nothing outside the view
    from fiftyone_prune.sdk import runs

    assert runs.run_status(digits_dataset, "three") == "complete"
    assert digits_dataset.load_run_view("three").count() == 40  # the run's view, not a shard
    # a rerun skips everything: every shard is done
    again = fop.compute_embeddings(view, model="efficientnet_lite0", image_size=32,
                                   embeddings_field="three", num_workers=0, num_shards=3)
    assert again.num_embedded == 0


def start_workers(tmp_path, lease_seconds="3", delay="0.2"):
    """Three real workers; each scoring step is 5 samples, each write slowed by
    ``delay`` seconds."""
    # one OpenMP thread per worker: three workers' spinning thread pools on 2 cores made
    # one 32 px forward pass take seconds
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=REPO_ROOT,
               FIFTYONE_PRUNE_LEASE_SECONDS=lease_seconds,
               FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS="true", OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, "-m", "tests.integration.shard_worker",
                              delay, "5"], cwd=REPO_ROOT, env=env,
                             stdout=open(tmp_path / f"worker{i}.log", "w"),
                             stderr=subprocess.STDOUT)
            for i in range(3)]


def stop_workers(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture()
def workers(tmp_path):
    procs = start_workers(tmp_path)
    yield procs
    stop_workers(procs)


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow  # ~40 s: three worker processes start on 2 cores
def test_delegated_shards_on_three_workers_one_killed_then_requeued(vectors, workers):
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone_prune.sdk import runs

    fop.compute_prototype_scores(vectors, "emb", run_key="ref", num_clusters=4, seed=7,
                                 max_points_per_centroid=20)
    queued = fop.compute_prototype_scores(vectors, "emb", run_key="d", num_clusters=4, seed=7,
                                          max_points_per_centroid=20, num_shards=6,
                                          delegate=True)
    assert len(queued["queued_operations"]) == 6 and not queued["complete"]
    # the centroids exist before any shard runs: trained by the queueing call
    np.testing.assert_array_equal(fop.load_centroids(vectors, "d"),
                                  fop.load_centroids(vectors, "ref"))
    assert runs.run_status(vectors, "d") != "complete"
    pids = {p.pid: p for p in workers}
    pid_id = shards.plan_id(vectors, "d")

    def shard_mid_write():
        plan = storage.get_shard_plan(pid_id)
        for s in plan["shards"]:
            if s["state"] == "running" and 10 <= s["samples_done"] <= 35:
                pid = int(s["owner"].split("/pid ")[1].split("/")[0])
                if pid in pids:
                    return s["index"], pid, s["samples_done"]
        return None

    index, pid, done_at_kill = wait_for(shard_mid_write, 120, "a shard half written")
    os.kill(pid, signal.SIGKILL)
    pids[pid].wait()

    # no requeue by hand: the live workers requeue the dead worker's shard (#21)
    wait_for(lambda: shards.shard_status(vectors, "d")["complete"], 120, "the requeued shard")
    wait_for(lambda: vectors.reload() or runs.run_status(vectors, "d") == "complete", 30,
             "the run's completion")
    plan = storage.get_shard_plan(pid_id)
    # the rerun continued where the killed worker stopped
    assert plan["shards"][index]["result"]["num_scored"] <= 50 - done_at_kill
    assert sum(s["result"]["num_scored"] for s in plan["shards"]) < 300 + 1
    vectors.reload()
    assert vectors.count("d_distance") == 300
    assert_same_scores(vectors, "d", "ref")
    status = shards.shard_status(vectors, "d")
    assert status["samples_done"] == 300 and status["counts"] == {"done": 6}
    service = DelegatedOperationService()
    for op_id in queued["queued_operations"]:
        service.delete_operation(op_id)


def test_cli_sharded_score_runs_progress_and_requeue(vectors, capsys):
    from fiftyone_prune import cli

    assert cli.main(["score", vectors.name, "--embeddings-field", "emb", "--run-key", "c",
                     "--num-clusters", "3", "--shards", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["num_scored"] == 300
    assert cli.main(["runs", vectors.name]) == 0
    out = capsys.readouterr().out
    assert "c\tprototypes" in out and "shards: 300/300 samples; 3 done (of 3)" in out
    assert cli.main(["requeue", vectors.name, "c"]) == 0
    assert "none (no stale shard)" in capsys.readouterr().out
    assert cli.main(["score", vectors.name, "--embeddings-field", "emb", "--run-key", "e",
                     "--delegate"]) == 2
    assert "--shards M" in capsys.readouterr().err
    assert cli.main(["requeue", vectors.name, "nope"]) == 2
    assert "no sharded run 'nope'" in capsys.readouterr().err
    # a deleted sharded run is gone from the listing, and its key can be sharded again
    fop.delete_run(vectors, "c")
    assert cli.main(["runs", vectors.name]) == 0
    assert "shards:" not in capsys.readouterr().out
    assert cli.main(["score", vectors.name, "--embeddings-field", "emb", "--run-key", "c",
                     "--num-clusters", "2", "--shards", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["num_clusters"] == [2]
    assert shards.shard_status(vectors, "c")["num_shards"] == 2


def test_a_shard_held_by_another_writer_is_refused_and_left_alone(vectors):
    import threading

    from fiftyone_prune.sdk import leases

    queued_fields = sorted(vectors.get_field_schema())
    plan_status = {}
    fop.compute_prototype_scores(vectors, "emb", run_key="h", num_clusters=3, num_shards=2)
    # as if shard 0 were being rerun by a worker that holds its lease
    storage.update_shard(shards.plan_id(vectors, "h"), 0, {"state": "running"})
    errors = []
    with leases.hold(vectors, shards.shard_lease_key("h", 0)):  # another worker's shard
        def second_writer():
            try:
                shards.run_shard(vectors.name, "h", 0)
            except leases.RunLockedError as e:
                errors.append(str(e))
        t = threading.Thread(target=second_writer)
        t.start()
        t.join()
        plan_status = shards.shard_status(vectors, "h")
    assert errors and "is being written by" in errors[0]
    assert plan_status["shards"][0]["state"] == "running"  # not stale: its lease is live
    assert sorted(vectors.get_field_schema()) == sorted(queued_fields + ["h_distance",
                                                                         "h_cluster"])


def test_deleting_a_sharded_run_removes_its_coordinating_record(vectors):
    fop.compute_prototype_scores(vectors, "emb", run_key="gone", num_clusters=3, num_shards=2)
    assert storage.get_shard_plan(shards.plan_id(vectors, "gone")) is not None
    fop.delete_run(vectors, "gone")
    assert storage.get_shard_plan(shards.plan_id(vectors, "gone")) is None
    assert "gone" not in shards.list_sharded_runs(vectors)
    assert not vectors.has_field("gone_distance")


@pytest.mark.slow  # ~50 s: three worker processes, each loading the model per shard
def test_delegated_embedding_shards_on_three_workers_one_killed_then_requeued(
        digits_dataset, workers):
    """Six embedding shards of 120 real digits on three ``fiftyone delegated launch``
    workers, one SIGKILLed between two writes of its shard. Nothing is written twice:
    every vector present when the dead worker's shard shows stale keeps its stored
    bytes and its ``last_modified_at`` (every vector write stamps it), and the shards'
    own write counts (``num_embedded``, counted as chunks are written) add up to exactly
    the number of samples."""
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = digits_dataset
    common = dict(model="efficientnet_lite0", image_size=32, num_workers=0, batch_size=2,
                  chunk_size=2)
    fop.compute_embeddings(dataset, embeddings_field="one", **common)
    queued = fop.compute_embeddings(dataset, embeddings_field="d", num_shards=6,
                                    delegate=True, **common)
    assert len(queued["queued_operations"]) == 6 and not queued["complete"]
    pids = {p.pid: p for p in workers}
    pid_id = shards.plan_id(dataset, "d")

    def shard_mid_write():
        plan = storage.get_shard_plan(pid_id)
        for s in plan["shards"]:
            if s["state"] == "running" and s["owner"]:
                pid = int(s["owner"].split("/pid ")[1].split("/")[0])
                view = shard_plans.shard_view(dataset, plan, s["index"])
                if pid in pids and 2 <= view.exists("d").count() <= 14:  # of 20
                    return s["index"], pid
        return None

    index, pid = wait_for(shard_mid_write, 120, "a shard partly written")
    os.kill(pid, signal.SIGKILL)
    pids[pid].wait()

    # what was written when the worker died; the live workers requeue its shard by
    # themselves (#21), and nothing written is written again
    before = {i: (v, t) for i, v, t in zip(*dataset.values(["id", "d", "last_modified_at"]))
              if v is not None}
    plan = storage.get_shard_plan(pid_id)
    killed_slice = shard_plans.shard_view(dataset, plan, index)
    written_by_killed = len(set(killed_slice.values("id")) & set(before))
    assert 2 <= written_by_killed < 20  # the killed worker left its shard half done

    wait_for(lambda: shards.shard_status(dataset, "d")["complete"], 120, "the requeued shard")
    plan = storage.get_shard_plan(pid_id)
    results = [s["result"] for s in plan["shards"]]
    assert [r["num_embedded"] for i, r in enumerate(results) if i != index] == [20] * 5
    # the rerun embedded only what the killed worker had not written
    assert results[index]["num_embedded"] == 20 - written_by_killed
    assert sum(r["num_embedded"] for r in results) + written_by_killed == 120
    dataset.reload()
    after = dict(zip(*dataset.values(["id", "last_modified_at"])))
    assert {i: after[i] for i in before} == {i: t for i, (_, t) in before.items()}
    ids, one, d = dataset.values(["id", "one", "d"])
    assert dataset.count("d") == 120 and all(v is not None for v in d)
    for i, v in zip(ids, d):
        if i in before:
            np.testing.assert_array_equal(v, before[i][0])
    np.testing.assert_allclose(np.array(d), np.array(one), rtol=1e-4, atol=1e-5)
    status = shards.shard_status(dataset, "d")
    assert status["samples_done"] == 120 and status["counts"] == {"done": 6}
    # registered once, on the whole view, by the worker that finished the last shard
    from fiftyone_prune.sdk import runs

    wait_for(lambda: dataset.reload() or "d" in dataset.list_runs(), 30, "the registration")
    # the registering worker still holds the run's lease for a moment after registering:
    # until it lets go, readers are told the run is being written
    wait_for(lambda: runs.run_status(dataset, "d") == "complete", 30, "the lease's release")
    assert dataset.load_run_view("d").count() == 120
    service = DelegatedOperationService()
    for op_id in queued["queued_operations"]:
        service.delete_operation(op_id)


@pytest.mark.slow  # ~25 s: a worker process loads the model and writes 14 slowed chunks
def test_an_embedding_shard_reports_its_writes_and_reads_its_slice_once(digits_dataset):
    """One embedding shard of 20 digits, 6 of them embedded before it runs, in a process
    of its own whose MongoDB commands are monitored from its first connection, with a
    short lease (a heartbeat beat every 0.5 s) and slowed writes (many beats). Its
    recorded count starts at what it found written and advances chunk by chunk to the
    slice's size, and the sample collection is read a fixed number of times whatever the
    number of beats (it used to be counted on every beat)."""
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = digits_dataset
    queued = fop.compute_embeddings(dataset, model="efficientnet_lite0", image_size=32,
                                    num_workers=0, batch_size=2, chunk_size=2,
                                    embeddings_field="w", num_shards=6, delegate=True)
    try:
        plan = storage.get_shard_plan(shards.plan_id(dataset, "w"))
        first = shard_plans.shard_view(dataset, plan, 0).values("id")
        assert len(first) == 20
        # vectors already there (an earlier try's): the shard skips them and counts them
        storage.write_vectors(dataset, "w", first[:6], np.ones((6, 1280), np.float32))
        env = dict(os.environ, FIFTYONE_PRUNE_LEASE_SECONDS="2", OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-m", "tests.integration.shard_worker",
                              "watch", "0.4", "5", dataset.name, "w", "0"], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        shard = storage.get_shard_plan(shards.plan_id(dataset, "w"))["shards"][0]
        assert shard["state"] == "done" and shard["samples_done"] == 20
        assert shard["result"]["num_embedded"] == 14
        assert seen["renewals"] >= 10, seen  # the beats the shard lived through
        # what its work needs (the plan's checks, the one read of what is left), no
        # count per beat
        assert sum(seen["reads"].values()) <= 5, seen
        done = seen["samples_done"]
        assert done[0] == 6 and done[-1] == 20, done
        assert sorted(set(done)) == list(range(6, 21, 2)), done  # each chunk as written
    finally:
        service = DelegatedOperationService()
        for op_id in queued["queued_operations"]:
            service.delete_operation(ObjectId(op_id))


@pytest.fixture()
def one_worker(tmp_path):
    # a long lease: the test freezes the worker for a while, and its shard must stay its
    # own (only the plan's token fences it out)
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=REPO_ROOT, FIFTYONE_PRUNE_LEASE_SECONDS="300",
               FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS="true", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.shard_worker", "0.2",
                             "5"], cwd=REPO_ROOT, env=env,
                            stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT)
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow  # ~40 s: a worker process and a second writer process
def test_overwriting_a_running_sharded_run_fences_out_its_shards(vectors, one_worker):
    """A sharded run (k=4) is being written by a worker, frozen (SIGSTOP) in the middle
    of a shard with its shard lease still valid; another process replaces the run with
    ``overwrite=True`` and k=3, which deletes the plan and its queued operations first.
    Thawed, the worker's next write is refused by the database (the plan's token is
    gone) and its shard stops. The run is complete with k=3 and no sample keeps a
    value of the old k."""
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    queued = fop.compute_prototype_scores(vectors, "emb", run_key="d", num_clusters=4,
                                          seed=7, max_points_per_centroid=20, num_shards=3,
                                          delegate=True)
    pid_id = shards.plan_id(vectors, "d")

    def a_shard_mid_write():
        plan = storage.get_shard_plan(pid_id)
        return any(s["state"] == "running" and 10 <= s["samples_done"] <= 60
                   for s in plan["shards"])

    wait_for(a_shard_mid_write, 120, "a shard half written")
    os.kill(one_worker.pid, signal.SIGSTOP)
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        other = subprocess.run([sys.executable, "-m", "tests.integration.pipeline_child",
                                "score", vectors.name, "d", "3", "--overwrite"],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=300)
        assert json.loads(other.stdout.strip().splitlines()[-1])["ok"] is True, other.stdout
        replaced = scores_of(vectors, "d")
    finally:
        os.kill(one_worker.pid, signal.SIGCONT)
    service = DelegatedOperationService()

    def every_operation_ended():
        ops = []
        for op_id in queued["queued_operations"]:
            try:
                op = service.get(ObjectId(op_id))
            except ValueError:  # still queued when the run was replaced: deleted with it
                continue
            if op.run_state not in ("completed", "failed"):
                return None
            ops.append(op)
        return ops or None

    ops = wait_for(every_operation_ended, 120, "the old shards to stop")
    # the frozen one was fenced out at its next write; the queued ones were deleted with
    # the plan they belonged to, so no worker claims them later
    assert len(ops) == 1 and ops[0].run_state == "failed", [op.run_state for op in ops]
    messages = " ".join(str(getattr(op.result, "error", "")) for op in ops)
    assert "lost its lease" in messages or "replaced or deleted" in messages, messages
    vectors.reload()
    from fiftyone_prune.sdk import runs

    assert runs.run_status(vectors, "d") == "complete"
    assert vectors.get_run_info("d").config.num_clusters == [3]
    assert storage.get_shard_plan(pid_id) is None
    ids, d, c = scores_of(vectors, "d")
    np.testing.assert_array_equal(c, replaced[2])  # the thawed worker changed nothing
    np.testing.assert_array_equal(d, replaced[1])
    fop.compute_prototype_scores(vectors, "emb", run_key="ref3", num_clusters=3,
                                 max_points_per_centroid=10, seed=3)
    _, rd, rc = scores_of(vectors, "ref3")
    np.testing.assert_array_equal(c, rc)  # every sample: the new k's cluster...
    np.testing.assert_array_equal(d, rd)  # ...and distance, bit for bit
    assert len(ids) == 300 and set(c.tolist()) == {0, 1, 2}
    for op_id in queued["queued_operations"]:
        service.delete_operation(ObjectId(op_id))


def test_a_shard_claimed_by_a_worker_that_died_before_starting_it_is_requeued(
        vectors, monkeypatch):
    """A worker killed right after claiming a shard's delegated operation (FiftyOne's
    launcher marks it running with ``set_running``, then the process is gone) leaves the
    shard queued with no lease: once the claim is older than the lease time the shard is
    reported stale, and requeue runs it."""
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone_prune.sdk import runs

    monkeypatch.setenv("FIFTYONE_PRUNE_LEASE_SECONDS", "1")
    queued = fop.compute_prototype_scores(vectors, "emb", run_key="c", num_clusters=3,
                                          num_shards=2, delegate=True)
    service = DelegatedOperationService()
    claimed = queued["queued_operations"][0]
    assert service.set_running(ObjectId(claimed), required_state="queued") is not None
    plan = storage.get_shard_plan(shards.plan_id(vectors, "c"))
    (index,) = [s["index"] for s in plan["shards"] if s.get("operation") == claimed]

    def claimed_one_stale():
        states = [s["state"] for s in shards.shard_status(vectors, "c")["shards"]]
        return states if states[index] == "stale" else None

    states = wait_for(claimed_one_stale, 30, "the abandoned claim to show stale")
    assert states[1 - index] == "queued"  # its operation is still waiting for a worker
    assert shards.requeue_stale_shards(vectors, "c", delegate=False) == [index]
    status = shards.shard_status(vectors, "c")
    assert status["shards"][index]["state"] == "done"
    assert runs.run_status(vectors, "c") != "complete"  # the other shard is still queued
    for op_id in queued["queued_operations"]:
        service.delete_operation(ObjectId(op_id))


@pytest.mark.slow  # ~40 s: a worker process runs six shards
def test_deleting_a_running_sharded_run_then_sharding_it_again_keeps_no_old_value(
        vectors, one_worker):
    """A sharded run (k=4) is deleted while its worker is frozen in the middle of a
    shard, and a new sharded run (k=3) is queued under the same key. The deletion
    removes the plan before the fields, so the thawed worker's next write is refused;
    the new run's shards, which skip samples that already have a score, find none of the
    old run's, and the complete run equals the single-process one bit for bit."""
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone_prune.sdk import runs

    old = fop.compute_prototype_scores(vectors, "emb", run_key="d", num_clusters=4, seed=7,
                                       max_points_per_centroid=20, num_shards=3,
                                       delegate=True)
    pid_id = shards.plan_id(vectors, "d")

    def a_shard_mid_write():
        plan = storage.get_shard_plan(pid_id)
        return any(s["state"] == "running" and 10 <= s["samples_done"] <= 60
                   for s in plan["shards"])

    wait_for(a_shard_mid_write, 120, "a shard half written")
    os.kill(one_worker.pid, signal.SIGSTOP)
    try:
        fop.delete_run(vectors, "d")
        new = fop.compute_prototype_scores(vectors, "emb", run_key="d", num_clusters=3,
                                           seed=3, max_points_per_centroid=10,
                                           num_shards=3, delegate=True)
    finally:
        os.kill(one_worker.pid, signal.SIGCONT)
    wait_for(lambda: shards.shard_status(vectors, "d")["complete"], 180, "the new shards")
    wait_for(lambda: vectors.reload() or runs.run_status(vectors, "d") == "complete", 60,
             "the new run's completion")
    assert vectors.get_run_info("d").config.num_clusters == [3]
    fop.compute_prototype_scores(vectors, "emb", run_key="ref3", num_clusters=3,
                                 max_points_per_centroid=10, seed=3)
    ids, d, c = scores_of(vectors, "d")
    _, rd, rc = scores_of(vectors, "ref3")
    np.testing.assert_array_equal(c, rc)
    np.testing.assert_allclose(d, rd, rtol=0, atol=1e-6)
    assert len(ids) == 300
    service = DelegatedOperationService()
    for op_id in old["queued_operations"] + new["queued_operations"]:
        service.delete_operation(ObjectId(op_id))
