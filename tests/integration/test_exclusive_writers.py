"""Every writer is exclusive and fenced, shown with real processes on one dataset: two
``compute_embeddings`` calls into one new field, and a scoring writer frozen (SIGSTOP)
past its lease while a second writer replaces its run. The other process is
``tests/integration/pipeline_child.py``; the tests coordinate with it through its
stdin/stdout (``HOLDING``, then a line to go on), not through sleeps."""

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.core import models
from fiftyone_prune.sdk import leases, storage
from tests.conftest import REPO_ROOT, labelled_dataset, unique_name


def start_child(*args, lease_seconds=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if lease_seconds is not None:
        env["FIFTYONE_PRUNE_LEASE_SECONDS"] = str(lease_seconds)
    return subprocess.Popen([sys.executable, "-m", "tests.integration.pipeline_child", *args],
                            cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def next_report(proc):
    """The child's next line that says where it is: ``"HOLDING"``, or its JSON outcome
    (other output, e.g. the model loader's, is skipped). Blocks until it comes."""
    for line in proc.stdout:
        line = line.strip()
        if line == "HOLDING":
            return line
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"child {proc.args} ended without a report (exit {proc.wait()})")


def outcome(proc, timeout=300):
    """The child's JSON outcome (it then exits)."""
    report = next_report(proc)
    proc.wait(timeout=timeout)
    return report


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture()
def digits(digits_images):
    dataset = labelled_dataset(unique_name("exclusive"), digits_images[:10], persistent=True)
    yield dataset
    fo.delete_dataset(dataset.name)


@pytest.mark.slow  # ~40 s: two processes each load the model on 2 cores
def test_two_processes_embedding_into_one_new_field_the_second_is_refused(digits):
    """Started together with different ``image_size``: whichever takes the field's lease
    first holds it (it stops at its first progress report until the test lets it go);
    the other is refused by name, writing nothing; the field and its run then describe
    one setting, and every vector is that setting's."""
    procs = {size: start_child("embed", digits.name, "emb", str(size), "--hold")
             for size in (32, 48)}
    # exactly one reaches its first progress report (and waits there, holding the
    # lease); the other, refused, reports its outcome and exits. Whichever reports first
    with selectors.DefaultSelector() as selector:
        for size, proc in procs.items():
            selector.register(proc.stdout, selectors.EVENT_READ, size)
        first = selector.select()[0][0].data
    report = next_report(procs[first])
    winner = first if report == "HOLDING" else (48 if first == 32 else 32)
    refused = 48 if winner == 32 else 32
    if report == "HOLDING":
        lost = next_report(procs[refused])
    else:
        lost = report
        assert next_report(procs[winner]) == "HOLDING"
    procs[refused].wait(timeout=60)
    assert lost["ok"] is False and lost["error"] == "RunLockedError"
    assert "Embeddings field 'emb'" in lost["message"]
    assert "being written by" in lost["message"] and "nothing was written" in lost["message"]
    procs[winner].stdin.write("\n")
    procs[winner].stdin.flush()
    won = outcome(procs[winner])
    assert won["ok"] is True and won["num_embedded"] == 10

    digits.reload()
    info = digits.get_field("emb").info["fiftyone_prune"]
    assert info["image_size"] == winner
    recorded = digits.get_run_info("emb").config.settings
    assert recorded == info  # field info and run record agree
    # every vector is the winner's: a bare forward pass at its size, not the other's
    model = models.efficientnet_lite0(image_size=winner)
    transform = model.transform()
    filepaths = digits.values("filepath")
    with torch.inference_mode():
        expected = model.module(torch.stack([transform(Image.open(p)) for p in filepaths]))
    np.testing.assert_allclose(np.stack(digits.values("emb")), expected.numpy(), rtol=1e-4,
                               atol=1e-4)


@pytest.fixture()
def vectors():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(6, 16))
    x = (centers[rng.integers(0, 6, 2000)] + 0.5 * rng.normal(size=(2000, 16)))
    dataset = fo.Dataset(unique_name("fenced"), persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(2000)])
    dataset.add_sample_field("emb", fo.VectorField)
    storage.write_vectors(dataset, "emb", dataset.values("id"), x.astype(np.float32))
    yield dataset
    fo.delete_dataset(dataset.name)


def scores_by_id(dataset, key):
    ids, d, c = dataset.values(["id", f"{key}_distance", f"{key}_cluster"])
    return {i: (dd, cc) for i, dd, cc in zip(ids, d, c)}


@pytest.mark.slow  # ~30 s: a child process and the lease expiry
def test_a_scoring_writer_frozen_past_its_lease_writes_and_deletes_nothing_after(vectors):
    """Writer A (a new run, writing its two fields directly, lease 2 s) is frozen with
    SIGSTOP in the middle of its writes; its lease expires; writer B replaces the run
    with ``overwrite=True`` (another k) and completes. A is thawed: its next write is
    refused by the database (fenced), it stops, and its roll-back deletes nothing: B's
    fields and run stay whole, with B's values."""
    a = start_child("score", vectors.name, "p", "4", "--hold", "--batch", "50",
                    lease_seconds=2)
    assert next_report(a) == "HOLDING"  # mid-write, its lease held
    vectors.reload()
    written_by_a = vectors.count("p_distance")
    assert 50 <= written_by_a < 2000
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: leases.current(vectors, "p") is None, 30, "A's lease to expire")

        def b_writes():
            try:
                return fop.compute_prototype_scores(
                    vectors, "emb", run_key="p", num_clusters=6, max_points_per_centroid=10,
                    seed=3, overwrite=True)
            except leases.RunLockedError:  # the takeover grace after the expiry
                return None

        b = wait_for(b_writes, 30, "B to take the run over")
        assert b.num_scored == 2000
    finally:
        os.kill(a.pid, signal.SIGCONT)
    b_values = scores_by_id(vectors, "p")
    a.stdin.write("\n")
    a.stdin.flush()
    stopped = outcome(a)
    assert stopped["ok"] is False and stopped["error"] == "LeaseLostError"
    assert "lost its lease" in stopped["message"]

    vectors.reload()
    assert fop.run_status(vectors, "p") == "complete"
    config = fop.get_run_info(vectors, "p").config
    assert config.num_clusters == [6] and config.num_scored == 2000
    assert vectors.has_field("p_distance") and vectors.has_field("p_cluster")
    assert scores_by_id(vectors, "p") == b_values  # A changed nothing after B
    # and they are B's: the same call again under another key gives the same values
    fop.compute_prototype_scores(vectors, "emb", run_key="ref", num_clusters=6,
                                 max_points_per_centroid=10, seed=3)
    ref = scores_by_id(vectors, "ref")
    assert b_values == ref
    assert max(c for _, c in b_values.values()) == 5
