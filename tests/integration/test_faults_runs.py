"""Runs under faults: real second processes (racing on one run key, or killed with SIGKILL
at a moment chosen by watching the database), real mongod. After each fault the dataset
is in the state before the call or after a complete call, never a mix, and a rerun
completes the work. See docs/reliability.md."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk import leases, runs, scores, storage
from tests.conftest import REPO_ROOT, unique_name

N = 6000
DIM = 16
LEASE_S = 2.0  # lease time of the worker processes: how long a killed one blocks


@pytest.fixture(scope="module")
def vectors_dataset():
    """N clustered vectors with class labels; persistent so that worker processes can
    load it (deleted at the end)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, DIM))
    which = rng.integers(0, 4, size=N)
    x = (centers[which] + 0.4 * rng.normal(size=(N, DIM))).astype(np.float32)
    dataset = fo.Dataset(unique_name("faults"), persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.png", emb=x[i],
                                   ground_truth=fo.Classification(label=f"c{which[i]}"))
                         for i in range(N)])
    fop.compute_prototype_scores(dataset, "emb", run_key="base", num_clusters=4)
    yield dataset
    fo.delete_dataset(dataset.name)


SCORE = dict(embeddings_field="emb", num_clusters=4, max_points_per_centroid=100)
#: what the worker processes run, by start signal: the calls started together at that
#: signal, each ``(call, kwargs, write batch size)``. A task that gets killed is its
#: worker's last; any idle worker takes any task, so each test stands alone.
TASKS = {
    "race-score": [("score", dict(SCORE, run_key="race", seed=1), 64),
                   ("score", dict(SCORE, run_key="race", seed=2), 64)],
    "race-select": [("select", dict(run_key="base", name="both", keep=0.5,
                                    strategy="hard", overwrite=True), 200),
                    ("select", dict(run_key="base", name="both", keep=0.5,
                                    strategy="easy", overwrite=True), 200)],
    "kill-select": [("select", dict(run_key="base", name="sel", keep=0.3,
                                    strategy="easy", overwrite=True), 20)],
    "kill-overwrite": [("score", dict(SCORE, run_key="ow", num_clusters=6,
                                      overwrite=True), 64)],
    "kill-fresh": [("score", dict(SCORE, run_key="fresh"), 64)],
}
#: workers started with the module, importing while its first tests run: each import of
#: FiftyOne costs seconds on a busy 2-core machine. More start when a test needs them.
NUM_WORKERS = 3


class Workers:
    """A pool of worker processes (``runs_worker.py``) on ``dataset``: idle ones take
    tasks, killed ones are replaced when a later test needs more."""

    def __init__(self, dataset, folder, num_workers=NUM_WORKERS):
        self.dataset, self.folder = dataset, folder
        self.all = []
        self.idle = [self._spawn() for _ in range(num_workers)]

    def _spawn(self):
        env = dict(os.environ, FIFTYONE_PRUNE_LEASE_SECONDS=str(LEASE_S))
        # output to a file: a pipe nobody reads blocks a long-lived worker once it is full
        with open(self.folder / f"worker-{len(self.all)}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.runs_worker",
                 json.dumps(dict(dataset=self.dataset.name, folder=str(self.folder)))],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log = log.name
        self.all.append(proc)
        return proc

    @staticmethod
    def ended(proc):
        """What a worker that ended by itself said."""
        proc.wait(30)
        with open(proc.log) as f:
            return f"worker pid {proc.pid} ended with {proc.returncode}: {f.read()[-3000:]}"

    def start(self, signal_name):
        """Hands each task of ``signal_name`` to an idle worker and starts them all at
        the same instant (once they are all ready); returns ``{pid: (process, kwargs)}``.
        The workers are busy until :meth:`outcomes` has read their results."""
        tasks = TASKS[signal_name]
        self.idle = [p for p in self.idle if p.poll() is None]
        while len(self.idle) < len(tasks):
            self.idle.append(self._spawn())
        procs, self.idle = self.idle[:len(tasks)], self.idle[len(tasks):]
        (self.folder / signal_name).unlink(missing_ok=True)  # left by a killed task
        for proc, (call, kwargs, batch) in zip(procs, tasks):
            path = self.folder / f"task-{proc.pid}.json"
            path.with_suffix(".part").write_text(json.dumps(
                dict(call=call, kwargs=kwargs, batch=batch, signal=signal_name)))
            path.with_suffix(".part").replace(path)
        deadline = time.time() + 300
        while not all((self.folder / f"ready-{p.pid}").exists() for p in procs):
            ended = [p for p in procs if p.poll() is not None]
            assert not ended, [self.ended(p) for p in ended]
            assert time.time() < deadline, "workers did not start"
            time.sleep(0.01)
        (self.folder / signal_name).touch()
        return {p.pid: (p, t[1]) for p, t in zip(procs, tasks)}

    def outcomes(self, signal_name, started):
        """``{pid: error text or None}`` once each started task has ended; the workers
        are idle again."""
        out = {}
        deadline = time.time() + 120
        for pid, (proc, _) in started.items():
            path = self.folder / f"{signal_name}-{pid}.json"
            while not path.exists():
                assert proc.poll() is None, self.ended(proc)
                assert time.time() < deadline, f"task {signal_name} of {pid} did not end"
                time.sleep(0.01)
            out[pid] = json.loads(path.read_text())["error"]  # written whole, renamed
            path.unlink()
        self.idle.extend(proc for proc, _ in started.values())
        return out

    def start_one(self, signal_name):
        """Starts the single task of ``signal_name``; returns its process."""
        (proc, _), = self.start(signal_name).values()
        return proc

    def stop(self):
        for proc in self.all:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def workers(vectors_dataset, tmp_path_factory):
    pool = Workers(vectors_dataset, tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop()


def kill_when(proc, condition, what):
    """SIGKILLs ``proc`` as soon as ``condition()`` holds (polled on the database)."""
    deadline = time.time() + 120
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the worker ended before {what}: {Workers.ended(proc)}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def tag_sets(dataset, name):
    return {kind: set(dataset.match_tags(f"{name}:{kind}").values("id"))
            for kind in ("kept", "pruned", "unscored")}


def normalized(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_scores_describe_run(dataset, key):
    """The fields hold exactly what the registered run's centroids give."""
    centroids = fop.load_centroids(dataset, key).astype(np.float64)
    sims = normalized(dataset.values("emb")) @ centroids.T
    np.testing.assert_array_equal(dataset.values(f"{key}_cluster"), sims.argmax(1))
    np.testing.assert_allclose(dataset.values(f"{key}_distance"), 1 - sims.max(1), atol=1e-5)
    assert fop.get_run_info(dataset, key).config.num_scored == len(dataset)


def wait_lease_expiry():
    time.sleep(LEASE_S + 0.5)


def test_incomplete_mismatched_and_stale_selections_are_refused(vectors_dataset, tmp_path,
                                                                workers):
    # (``workers``: the worker processes of the tests below import while this one runs)
    from fiftyone_prune.sdk.export import export_kept_samples
    from fiftyone_prune.sdk.selection import apply_plan

    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="st", num_clusters=4)
    kept_view = fop.select_samples(vectors_dataset, "st", keep=0.5, strategy="hard")
    key = "st_selection"
    assert runs.run_status(vectors_dataset, key) == runs.COMPLETE
    # tags changed by hand after the selection: the counts no longer match the run
    one = kept_view.first()
    one.tags.remove("st:kept")
    one.save()
    assert "tag counts do not match" in runs.run_status(vectors_dataset, key)
    with pytest.raises(ValueError, match=r"st:kept: .* tagged, .* recorded\): .*select again"):
        runs.check_selection_usable(vectors_dataset, key)
    one.tags.append("st:kept")
    one.save()
    # a selection left in progress (what a kill during its tag switch leaves)
    runs.set_state(vectors_dataset, key, runs.IN_PROGRESS)
    with pytest.raises(ValueError, match="interrupted.*rerun it"):
        export_kept_samples(kept_view, str(tmp_path / "out1"), dataset_type="media",
                            export_media=False, selection="st")
    fop.select_samples(vectors_dataset, "st", keep=0.5, strategy="hard",
                       overwrite=True)  # rerun completes
    assert runs.run_status(vectors_dataset, key) == runs.COMPLETE
    # the scores recomputed after the selection: stale, refused unless asked
    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="st", num_clusters=3,
                                 overwrite=True)
    assert runs.run_status(vectors_dataset, key).startswith("stale")
    with pytest.raises(ValueError, match="stale: .*recomputed.*allow_stale=True"):
        export_kept_samples(kept_view, str(tmp_path / "out2"), dataset_type="media",
                            export_media=False, selection="st")
    # a scoring run left in progress (a kill during its switch) is refused by readers
    runs.set_state(vectors_dataset, "st", runs.IN_PROGRESS)
    with pytest.raises(ValueError, match="interrupted"):
        fop.plan_selection(vectors_dataset, "st")
    with pytest.raises(ValueError, match="interrupted"):
        fop.evaluate_pruning(vectors_dataset, "ground_truth", run_key="st", fractions=[0.5],
                             seeds=1)
    runs.set_state(vectors_dataset, "st", runs.COMPLETE)
    # a plan previewed before the scores were recomputed is not applied
    plan = fop.plan_selection(vectors_dataset, "st", keep=0.5, strategy="hard")
    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="st", num_clusters=4,
                                 overwrite=True)
    with pytest.raises(ValueError, match="recomputed after this selection was planned"):
        apply_plan(vectors_dataset, plan, overwrite=True)
    # the scoring run deleted: the selection is stale
    fop.delete_run(vectors_dataset, "st")
    assert runs.run_status(vectors_dataset, key) == "stale: its scoring run 'st' was deleted"
    fop.delete_run(vectors_dataset, key)


def test_a_run_key_checked_free_then_taken_is_not_silently_replaced(vectors_dataset):
    """Two evaluations (or any runs) on one new key: both checked the key before either
    registered; the second registration re-checks under the lease and fails clearly."""
    runs.check_key_free(vectors_dataset, "ev", False, "evaluation")  # both pass this
    runs.register(vectors_dataset, "ev", "evaluation", dict(seed=1), {})
    with pytest.raises(ValueError, match="'ev' is already used .*overwrite=True"):
        runs.register(vectors_dataset, "ev", "evaluation", dict(seed=2), {})
    assert fop.get_run_info(vectors_dataset, "ev").config.seed == 1
    fop.delete_run(vectors_dataset, "ev")


def test_a_lease_whose_dataset_reload_fails_is_released():
    """The dataset is deleted by another process; the lease is acquired, the reload
    under it fails: the lease is released (no heartbeat left renewing it for the rest of
    this process's life; one leaked this way kept a pytest process from exiting)."""
    dataset = fo.Dataset(unique_name("reload"))
    dataset.add_sample(fo.Sample(filepath="/nowhere/x.png"))
    subprocess.run([sys.executable, "-c",
                    f"import fiftyone as fo; fo.delete_dataset({dataset.name!r})"],
                   check=True, cwd=REPO_ROOT, env=os.environ.copy(), timeout=300)
    with pytest.raises(Exception, match="not found"):
        with leases.hold(dataset, "reload_key"):
            pass
    assert not [t for t in threading.enumerate() if t.name == "lease reload_key"]
    assert leases.current(dataset, "reload_key") is None


def test_lease_between_threads_expiry_and_takeover(vectors_dataset, monkeypatch):
    monkeypatch.setenv("FIFTYONE_PRUNE_LEASE_SECONDS", "1")
    errors = []
    with leases.hold(vectors_dataset, "base") as lease:
        def other():
            try:
                fop.delete_run(vectors_dataset, "base")
            except ValueError as e:
                errors.append(str(e))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        time.sleep(1.5)  # past the lease time: the heartbeat kept it
        lease.check()
    assert len(errors) == 1 and f"pid {os.getpid()}" in errors[0] and " since " in errors[0]
    assert "base" in vectors_dataset.list_runs()
    # a holder that stopped renewing (as a killed or stopped process does) loses the
    # lease for good once it expires, even before anyone takes it over: its renewal and
    # its fenced writes are refused by the database, and nothing is written
    vectors_dataset.add_sample_field("fenced", fo.FloatField)
    dead = leases.Lease(vectors_dataset, "base", 1.0)
    dead.acquire(vectors_dataset)
    fence = storage.Fence.of(dead)
    storage.write_scalars(vectors_dataset, {"fenced": [1.0]}, vectors_dataset.values("id")[:1],
                          fence=fence)  # while it holds (renewed): written
    dead.heartbeat.stop()
    with pytest.raises(leases.RunLockedError):
        leases.Lease(vectors_dataset, "base", 1.0).acquire(vectors_dataset)
    deadline = time.time() + 120
    while leases.current(vectors_dataset, "base") is not None:  # expires on server time
        assert time.time() < deadline
        time.sleep(0.05)
    assert not dead.renew()
    ids = vectors_dataset.values("id")[:3]
    with pytest.raises(leases.LeaseLostError, match="wrote nothing more"):
        storage.write_scalars(vectors_dataset, {"fenced": [2.0] * 3}, ids, fence=fence)
    with pytest.raises(leases.LeaseLostError):
        storage.add_tag(vectors_dataset, ids, "fenced-tag", fence=fence)
    assert vectors_dataset.count_values("fenced") == {1.0: 1, None: N - 1}
    assert "fenced-tag" not in vectors_dataset.count_sample_tags()
    # and after a short grace past the expiry, the next writer takes the key over
    while True:
        try:
            with leases.hold(vectors_dataset, "base"):
                with pytest.raises(leases.LeaseLostError, match="nothing was committed"):
                    dead.check()
            break
        except leases.RunLockedError:
            assert time.time() < deadline
            time.sleep(0.05)
    vectors_dataset.delete_sample_field("fenced")
    monkeypatch.setenv("FIFTYONE_PRUNE_LEASE_SECONDS", "0")
    with pytest.raises(ValueError, match="FIFTYONE_PRUNE_LEASE_SECONDS"):
        leases.lease_seconds()


def test_two_processes_scoring_one_new_key_exactly_one_wins(vectors_dataset, workers):
    started = workers.start("race-score")
    errors = workers.outcomes("race-score", started)
    assert sorted(e is None for e in errors.values()) == [False, True], errors
    winner = next(n for n, e in errors.items() if e is None)
    loser_error = next(e for e in errors.values() if e is not None)
    pid = started[winner][0].pid
    assert f"is being written by {socket.gethostname()}/pid {pid}" in loser_error
    assert "overwrite=True after it ends" in loser_error
    vectors_dataset.reload()  # runs registered by another process
    assert fop.get_run_info(vectors_dataset, "race").config.seed == started[winner][1]["seed"]
    assert_scores_describe_run(vectors_dataset, "race")
    assert leases.current(vectors_dataset, "race") is None  # released
    fop.delete_run(vectors_dataset, "race")


def test_two_processes_selecting_one_name_never_mix(vectors_dataset, workers):
    started = workers.start("race-select")
    errors = workers.outcomes("race-select", started)
    assert sorted(e is None for e in errors.values()) == [False, True], errors
    winner = next(n for n, e in errors.items() if e is None)
    assert "is being written by" in next(e for e in errors.values() if e is not None)
    vectors_dataset.reload()
    tags = tag_sets(vectors_dataset, "both")
    assert not tags["kept"] & tags["pruned"]
    plan = fop.plan_selection(vectors_dataset, **{k: v for k, v in started[winner][1].items()
                                                  if k != "overwrite"})
    assert tags["kept"] == set(plan.kept_ids) and tags["pruned"] == set(plan.pruned_ids)
    assert runs.run_status(vectors_dataset, "both_selection") == runs.COMPLETE
    assert not any(":staging" in t for t in vectors_dataset.count_sample_tags())
    fop.delete_run(vectors_dataset, "both_selection")


def test_selection_killed_between_tag_batches_leaves_the_old_one_whole(vectors_dataset,
                                                                       workers):
    fop.select_samples(vectors_dataset, "base", keep=0.5, strategy="hard", name="sel")
    old = tag_sets(vectors_dataset, "sel")
    proc = workers.start_one("kill-select")

    def partly_staged():
        n = sum(c for t, c in vectors_dataset.count_sample_tags().items()
                if t.startswith("sel:kept:staging:"))  # the writer's own staging tag
        return 0 < n < 0.3 * N

    kill_when(proc, partly_staged, "the first staged tag batches")
    vectors_dataset.reload()
    # readers see the old selection, whole and still described by its run
    assert tag_sets(vectors_dataset, "sel") == old
    config = fop.get_run_info(vectors_dataset, "sel_selection").config
    assert (config.strategy, config.state, config.num_kept) == ("hard", "complete",
                                                                len(old["kept"]))
    # the dead worker's lease blocks a new writer until it expires, naming the worker
    with pytest.raises(ValueError, match=f"being written by .*pid {proc.pid}"):
        fop.select_samples(vectors_dataset, "base", keep=0.3, strategy="easy", name="sel",
                           overwrite=True)
    wait_lease_expiry()
    assert runs.run_status(vectors_dataset, "sel_selection") == runs.COMPLETE
    fop.select_samples(vectors_dataset, "base", keep=0.3, strategy="easy", name="sel",
                       overwrite=True)
    plan = fop.plan_selection(vectors_dataset, "base", keep=0.3, strategy="easy", name="sel")
    new = tag_sets(vectors_dataset, "sel")
    assert new["kept"] == set(plan.kept_ids) and new["pruned"] == set(plan.pruned_ids)
    assert not any(":staging" in t for t in vectors_dataset.count_sample_tags())
    assert runs.run_status(vectors_dataset, "sel_selection") == runs.COMPLETE
    fop.delete_run(vectors_dataset, "sel_selection")


def test_scoring_overwrite_killed_midway_keeps_old_scores_and_its_lease_expires(
        vectors_dataset, workers):
    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="ow", num_clusters=4)
    old_values = vectors_dataset.values(["ow_distance", "ow_cluster"])
    old_version = fop.get_run_info(vectors_dataset, "ow").config.version
    proc = workers.start_one("kill-overwrite")
    seen = {}

    def staging_written():
        vectors_dataset.reload()
        seen["staged"] = scores.staging_fields(vectors_dataset, "ow")
        return bool(seen["staged"]) and vectors_dataset.count(seen["staged"][0]) > 0

    kill_when(proc, staging_written, "staged scores")
    # the killed worker's lease still blocks a second writer and delete_run, naming it
    with pytest.raises(ValueError, match=f"being written by .*pid {proc.pid}"):
        fop.compute_prototype_scores(vectors_dataset, "emb", run_key="ow", overwrite=True)
    with pytest.raises(ValueError, match="being written by"):
        fop.delete_run(vectors_dataset, "ow")
    vectors_dataset.reload()
    assert vectors_dataset.values(["ow_distance", "ow_cluster"]) == old_values
    config = fop.get_run_info(vectors_dataset, "ow").config
    assert (config.version, config.num_clusters, config.state) == (old_version, [4],
                                                                   "complete")
    with pytest.raises(ValueError, match="being written by"):  # until the lease expires
        fop.plan_selection(vectors_dataset, "ow", keep=0.5, strategy="hard")
    wait_lease_expiry()
    assert fop.plan_selection(vectors_dataset, "ow", keep=0.5, strategy="hard").kept_ids
    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="ow", num_clusters=6,
                                 max_points_per_centroid=100, overwrite=True)
    vectors_dataset.reload()
    assert not scores.staging_fields(vectors_dataset, "ow")
    assert all(vectors_dataset.get_field(f) is None for f in seen["staged"])
    new_staged = {f"ow_{k}_staging_" for k in ("distance", "cluster")}
    assert not any(any(k.startswith(p) for p in new_staged)  # no value left anywhere
                   for doc in vectors_dataset._sample_collection.find({}) for k in doc)
    assert len(list(vectors_dataset.iter_samples())) == N  # every sample loads
    assert fop.get_run_info(vectors_dataset, "ow").config.num_clusters == [6]
    assert_scores_describe_run(vectors_dataset, "ow")
    fop.delete_run(vectors_dataset, "ow")


def test_delete_run_removes_what_a_killed_overwrite_staged(vectors_dataset):
    """Staging fields left by a killed overwrite (declared like the real writer declares
    them) go with the run."""
    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="left", num_clusters=4)
    from fiftyone_prune.sdk import run_configs

    token = leases.Lease(vectors_dataset, "left", 1).token
    for final, ftype in (("left_distance", fo.FloatField), ("left_cluster", fo.IntField)):
        vectors_dataset.add_sample_field(run_configs.staging_field(final, token), ftype)
    staged = scores.staging_fields(vectors_dataset, "left")
    assert len(staged) == 2
    assert sorted(fop.delete_run(vectors_dataset, "left")) == sorted(
        ["left_distance", "left_cluster"] + staged)
    assert not scores.staging_fields(vectors_dataset, "left")


def test_new_scoring_run_killed_midway_then_rerun(vectors_dataset, workers):
    proc = workers.start_one("kill-fresh")

    def scores_written():
        vectors_dataset.reload()
        return (vectors_dataset.get_field("fresh_distance") is not None
                and vectors_dataset.count("fresh_distance") > 0)

    kill_when(proc, scores_written, "the first written scores")
    vectors_dataset.reload()
    assert "fresh" not in vectors_dataset.list_runs()  # no run describes partial scores
    with pytest.raises(ValueError, match="No prototype-score run 'fresh'"):
        fop.plan_selection(vectors_dataset, "fresh")
    wait_lease_expiry()
    with pytest.raises(ValueError, match="killed before it finished.*overwrite=True"):
        fop.compute_prototype_scores(vectors_dataset, "emb", run_key="fresh")
    fop.compute_prototype_scores(vectors_dataset, "emb", run_key="fresh", num_clusters=4,
                                 max_points_per_centroid=100, overwrite=True)
    assert_scores_describe_run(vectors_dataset, "fresh")
    fop.delete_run(vectors_dataset, "fresh")


@pytest.mark.parametrize("streamed", [False, True])
def test_all_zero_vectors_are_left_unscored_with_a_warning(streamed, caplog):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[[3, 100, 250]] = 0
    dataset = fo.Dataset(unique_name("zeros"))
    try:
        dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.png", emb=v)
                             for i, v in enumerate(x)])
        ids = dataset.values("id")
        zero_ids = [ids[i] for i in (3, 100, 250)]
        kwargs = dict(max_points_per_centroid=20) if streamed else {}
        result = fop.compute_prototype_scores(dataset, "emb", run_key="z", num_clusters=3,
                                              **kwargs)
        assert sorted(result.skipped_ids) == sorted(zero_ids)
        assert "3 sample(s) have an all-zero embedding" in caplog.text
        distances = dict(zip(ids, dataset.values("z_distance")))
        assert all(distances[i] is None for i in zero_ids)
        assert sum(d is not None for d in distances.values()) == 297
        assert fop.get_run_info(dataset, "z").config.num_zero_vectors == 3
    finally:
        fo.delete_dataset(dataset.name)


def test_an_evaluation_holds_its_lease_from_the_first_check_to_its_registration(
        vectors_dataset):
    """Every probe fit happens under the evaluation's lease (before: only the
    registration), so a second writer of the key is refused for the whole run."""
    seen = []

    def progress(pb):  # called by FiftyOne's progress bar during the fits
        seen.append((leases.current(vectors_dataset, "held_eval") is not None,
                     leases.held_here(vectors_dataset, "held_eval") is not None))

    fop.evaluate_pruning(vectors_dataset.take(600, seed=0), "ground_truth", run_key="base",
                         eval_key="held_eval", fractions=[0.5], seeds=1, progress=progress)
    assert seen and all(live and mine for live, mine in seen)
    assert leases.current(vectors_dataset, "held_eval") is None  # released at the end
    fop.delete_run(vectors_dataset, "held_eval")
