"""Scheduling a long operator from its form in the real App, then running it with a real
``fiftyone delegated launch`` worker, as a user with a large dataset would.

The scoring form is filled in Chromium and "Schedule" is chosen in its execution
options; nothing runs until the worker (a subprocess of the ``fiftyone`` command, with
the test session's database and plugins folder) claims the operation. The checks are
on the database: the delegated operation's state, the run and its fields.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.e2e import helpers
from tests.e2e.test_panel_app import _delete, _per_class, _persistent_dataset

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(helpers.missing_browser_reason() is not None,
                       reason=helpers.missing_browser_reason() or ""),
]

N = 20
OPERATOR = "@h/fiftyone-prune/compute_prototype_scores"


@pytest.fixture(scope="module")
def embedded_dataset(digits_images, app_server):
    import numpy as np

    dataset = _persistent_dataset("e2e-schedule", _per_class(digits_images, 2))
    try:
        rng = np.random.default_rng(2)
        dataset.set_values("emb", list(rng.normal(size=(N, 8)).astype("float32")))
        yield dataset
    finally:
        _delete(dataset)


@pytest.fixture()
def launch_worker(tmp_path):
    """``start()`` runs ``fiftyone delegated launch`` (FiftyOne's local worker loop) in a
    subprocess that inherits the session's FIFTYONE_DATABASE_NAME and plugins folder;
    it is stopped at the end of the test."""
    procs = []

    def start():
        cli = os.path.join(os.path.dirname(sys.executable), "fiftyone")
        log = open(tmp_path / "worker.log", "w")
        procs.append(subprocess.Popen([cli, "delegated", "launch"], env=dict(os.environ),
                                      cwd=helpers.REPO_ROOT, stdout=log,
                                      stderr=subprocess.STDOUT))
        return procs[-1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _operations(dataset):
    from fiftyone.operators.delegated import DelegatedOperationService

    return [op for op in DelegatedOperationService().list_operations(
        dataset_name=dataset.name) if op.operator.endswith("/compute_prototype_scores")]


def test_schedule_scoring_from_the_form_then_delegated_launch(
        page, app_server, embedded_dataset, launch_worker, shoot, tmp_path):
    from fiftyone.operators.executor import ExecutionRunState
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, embedded_dataset.name, N)
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_prototype_scores"])
    dialog = page.get_by_role("dialog").first
    expect(helpers.form_input(page, "Run key")).to_have_value("prototypes")
    helpers.fill_and_resolve(page, helpers.form_input(page, "Number of prototypes k (optional)"), "3")
    expect(execute).to_be_enabled()
    # the execution options next to Execute: run it in the background instead
    dialog.locator("button:has(svg)").last.click()
    page.get_by_text("Run this operation in the background", exact=True).click()
    schedule = page.get_by_role("button", name="Schedule", exact=True)
    expect(schedule).to_be_enabled(timeout=30_000)
    shoot(page, "form_scores_schedule")
    schedule.click()
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=30_000)

    # queued, not run: the form returned without scoring anything
    ops = helpers.wait_until(lambda: _operations(embedded_dataset), 30,
                             what="the scheduled operation in the database", page=page)
    assert len(ops) == 1, ops
    assert ops[0].run_state == ExecutionRunState.QUEUED
    assert ops[0].context.request_params["params"]["num_clusters"] in (3, "3")
    embedded_dataset.reload()
    assert "prototypes" not in embedded_dataset.list_runs()
    assert not embedded_dataset.has_field("prototypes_distance")

    worker = launch_worker()

    def completed():
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        op = _operations(embedded_dataset)[0]
        assert op.run_state != ExecutionRunState.FAILED, op.run_state
        return op.run_state == ExecutionRunState.COMPLETED and op

    op = helpers.wait_until(completed, 180, interval=1, page=page,
                            what="the worker to complete the scheduled scoring")
    assert op.completed_at is not None
    embedded_dataset.reload()
    from fiftyone_prune.sdk import runs

    assert runs.run_status(embedded_dataset, "prototypes") == "complete"
    assert runs.get_run_info(embedded_dataset, "prototypes").config.num_clusters in (3, [3])
    assert embedded_dataset.count("prototypes_distance") == N
    assert len(set(embedded_dataset.values("prototypes_cluster"))) == 3

    # the App shows the worker's fields once reloaded
    page.reload()
    expect(helpers.sample_count(page)).to_have_text(re.compile(rf"^\s*{N}\s+samples?\b"),
                                                    timeout=60_000)
    helpers.show_sidebar_field(page, "prototypes_distance")
    helpers.assert_no_page_errors(page)
