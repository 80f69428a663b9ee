"""Fenced writes with real processes: a writer paused (SIGSTOP) past its lease while a
second writer takes the run over resumes into writes the database refuses; it writes
nothing more, and the second writer's result stands whole. See docs/reliability.md."""

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
from fiftyone_prune.sdk import leases, runs
from tests.conftest import REPO_ROOT, unique_name

N = 3000
DIM = 8
LEASE_S = 2.0  # the paused worker's lease: it expires while the worker is stopped


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, DIM))
    x = (centers[rng.integers(0, 4, size=N)] + 0.4 * rng.normal(size=(N, DIM))).astype(
        np.float32)
    dataset = fo.Dataset(unique_name("fencing"), persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.png", emb=x[i])
                         for i in range(N)])
    fop.compute_prototype_scores(dataset, "emb", run_key="base", num_clusters=4)
    yield dataset
    fo.delete_dataset(dataset.name)


class Worker:
    """One ``runs_worker`` process running one task when told to (see its docstring)."""

    def __init__(self, dataset, folder, call, kwargs, batch):
        self.folder, self.signal = folder, f"go-{call}"
        env = dict(os.environ, FIFTYONE_PRUNE_LEASE_SECONDS=str(LEASE_S))
        self.log = open(folder / f"worker-{call}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.runs_worker",
             json.dumps(dict(dataset=dataset.name, folder=str(folder)))],
            cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        task = folder / f"task-{self.proc.pid}.json"
        task.with_suffix(".part").write_text(json.dumps(
            dict(call=call, kwargs=kwargs, batch=batch, signal=self.signal)))
        task.with_suffix(".part").replace(task)

    def start(self):
        self.wait_for(self.folder / f"ready-{self.proc.pid}", "the worker to start")
        (self.folder / self.signal).touch()

    def wait_for(self, path, what):
        deadline = time.time() + 300
        while not path.exists():
            assert self.proc.poll() is None, open(self.log.name).read()[-3000:]
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def outcome(self):
        path = self.folder / f"{self.signal}-{self.proc.pid}.json"
        self.wait_for(path, "the task's outcome")
        return json.loads(path.read_text())["error"]

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(30)
        self.log.close()


def poll(condition, what):
    deadline = time.time() + 300
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def staged(dataset, prefix):
    return sum(c for t, c in dataset.count_sample_tags().items() if t.startswith(prefix))


def test_a_selection_writer_paused_past_its_lease_writes_nothing_more(dataset, tmp_path):
    fop.select_samples(dataset, "base", keep=0.5, strategy="hard", name="fence")
    worker = Worker(dataset, tmp_path, "select", dict(run_key="base", name="fence", keep=0.3,
                                                      strategy="easy", overwrite=True), 10)
    try:
        worker.start()
        # pause it while it writes its staging tags (many fenced batches of 10)
        poll(lambda: 0 < staged(dataset, "fence:kept:staging:") < 0.2 * N,
             "the first staged tags")
        os.kill(worker.proc.pid, signal.SIGSTOP)
        # its lease expires (server time) and, after the grace, a second writer with
        # overwrite=True takes the selection over and completes it
        while True:
            try:
                fop.select_samples(dataset, "base", keep=0.6, strategy="random",
                                   name="fence", overwrite=True)
                break
            except leases.RunLockedError:
                time.sleep(0.05)
        second = fop.get_run_info(dataset, "fence_selection").config
        os.kill(worker.proc.pid, signal.SIGCONT)
        error = worker.outcome()
    finally:
        worker.stop()
    # the resumed writer's next fenced write was refused by the database: it stopped
    assert error is not None and "LeaseLostError" in error and "wrote nothing more" in error
    dataset.reload()
    kept = set(dataset.match_tags("fence:kept").values("id"))
    pruned = set(dataset.match_tags("fence:pruned").values("id"))
    assert not kept & pruned
    plan = fop.plan_selection(dataset, "base", keep=0.6, strategy="random", name="fence")
    assert kept == set(plan.kept_ids) and pruned == set(plan.pruned_ids)
    config = fop.get_run_info(dataset, "fence_selection").config
    assert (config.strategy, config.keep, config.version) == ("random", 0.6, second.version)
    assert runs.run_status(dataset, "fence_selection") == runs.COMPLETE
    assert not any(":staging" in t for t in dataset.count_sample_tags())
    fop.delete_run(dataset, "fence_selection")
