"""Fixtures for the browser tests: a real FiftyOne App server on a free port (same
database and plugins dir as the test session, see tests/conftest.py), a persistent
dataset of real digit images, and headless Chromium driven by Playwright.

Setup: ``scripts/install_browser.sh`` (Debian's Chromium + the playwright package; never
``playwright install``). Without them every test here is skipped with the reason.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid

import pytest

from tests.conftest import labelled_dataset
from tests.e2e import helpers

NUM_SAMPLES = 20

_MISSING = helpers.missing_browser_reason()


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)
            if _MISSING:
                item.add_marker(pytest.mark.skip(reason=_MISSING))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def e2e_dataset(digits_images):
    """20 real MNIST digits with ``ground_truth`` labels, persistent so that the App
    server process sees it; deleted at the end."""
    import fiftyone as fo

    # the same number of images of every digit (the fixture's list is sorted by class)
    by_label = {}
    for path, label in digits_images:
        by_label.setdefault(label, []).append(path)
    per_class = NUM_SAMPLES // len(by_label)
    items = [(p, l) for l in sorted(by_label) for p in by_label[l][:per_class]]
    assert len(items) == NUM_SAMPLES, (len(items), {l: len(v) for l, v in by_label.items()})

    name = f"e2e-{uuid.uuid4().hex[:10]}"
    dataset = labelled_dataset(name, items, persistent=True)
    yield dataset
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture()
def e2e_large_dataset(digits_images):
    """All 120 digits of the session (persistent, for the server process): embedding
    them takes seconds, so a progress bar has time to show."""
    import fiftyone as fo

    dataset = labelled_dataset(f"e2e-large-{uuid.uuid4().hex[:10]}", digits_images,
                               persistent=True)
    yield dataset
    if fo.dataset_exists(dataset.name):
        fo.delete_dataset(dataset.name)


@pytest.fixture(scope="session")
def app_server(e2e_dataset):
    """The real App server, started once the dataset exists (this process then holds
    the database service open for the server too). Its log: app_server.log next to
    the screenshots (``-X faulthandler``: a hung server dumps its threads on SIGABRT)."""
    # next to the screenshots, so that CI can keep both when a test fails
    log = os.path.join(helpers.screenshots_dir(), "app_server.log")
    server = helpers.AppServer(log).start()
    try:
        server.wait_ready(e2e_dataset.name)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser_context(app_server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="e2e-chromium-") as udd:
        # a fresh profile; Playwright takes --user-data-dir as this argument
        context = p.chromium.launch_persistent_context(
            udd, executable_path=helpers.CHROMIUM, args=helpers.CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 900},
        )
        # what FiftyOne's own Playwright suite sets: no analytics, no "Explore
        # Enterprise" popover (its backdrop swallows clicks), no query-performance toast
        context.add_init_script("window.IS_PLAYWRIGHT = true;")
        # offline: any http(s) request but the App server's fails at once instead of
        # waiting on DNS (Google fonts). A regex, not a Python callable: the driver
        # matches it, so requests to the App never wait on this (blocked) test thread.
        external = re.compile(rf"^https?://(?!127\.0\.0\.1:{app_server.port}/)")
        context.route(external, lambda route: route.abort())
        # one ceiling for every wait on a condition, actions and assertions alike
        # (assertions default to 5 s: less than the App takes to re-render after a
        # server round trip on a loaded 2-core machine)
        context.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        yield context
        context.close()


@pytest.fixture()
def page(browser_context, app_server, request):
    """A new tab on the App server's initial state (no dataset, view or open panels:
    nothing left by the previous test); console errors are collected in
    ``page.console_errors``. On failure a screenshot ``FAILED-<test>.png`` is written
    next to the others."""
    app_server.reset_state()
    page = browser_context.new_page()
    helpers.track_form_resolves(page)
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text)
            if m.type == "error" and "ERR_FAILED" not in m.text else None)
    # uncaught exceptions in the page (a form that crashes React lands here)
    page.page_errors = []
    page.on("pageerror", lambda e: page.page_errors.append(str(e)))
    yield page
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        try:
            page.screenshot(path=os.path.join(helpers.screenshots_dir(),
                                              f"FAILED-{request.node.name}.png"))
        except Exception:
            pass
    page.close()


@pytest.fixture()
def shoot():
    """``shoot(page, "name")`` saves ``<E2E_SCREENSHOTS>/name.png``; keyword arguments go
    to ``page.screenshot``."""

    def _shoot(page, name, **kwargs):
        path = os.path.join(helpers.screenshots_dir(), f"{name}.png")
        page.screenshot(path=path, **kwargs)
        return path

    return _shoot
