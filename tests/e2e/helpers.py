"""What the browser tests share: finding Chromium and Playwright, starting the App
server, and locating things in the FiftyOne App's DOM.

The App build in the fiftyone wheel has no ``data-testid`` attributes; it does carry the
``data-cy`` attributes FiftyOne's own Cypress tests use (``entry-counts``, ``looker``,
``operators-browser``, ``sidebar-field-<path>``), and the operator forms are MUI, so the
rest is found by role, text and placeholder.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"

#: headless Chromium as root, offline, with no background traffic
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

OPERATOR_LABELS = {
    "compute_embeddings": "Prune: compute embeddings",
    "compute_prototype_scores": "Prune: compute prototype scores",
    "select_samples": "Prune: select samples to keep",
    "export_kept_samples": "Prune: export kept samples",
}

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def missing_browser_reason() -> str | None:
    """Why the browser tests can't run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: run scripts/install_browser.sh"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: run scripts/install_browser.sh"
    return None


def screenshots_dir() -> str:
    path = os.environ.get("E2E_SCREENSHOTS") or os.path.join(
        REPO_ROOT, "test_output", "screenshots")
    os.makedirs(path, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition",
               page=None):
    """Polls ``predicate`` until it returns a truthy value; fails after ``timeout`` s.

    Pass the ``page`` while a browser is open: Playwright's sync API only serves the
    browser's events (route handlers, dialogs) while the test calls into it, so a plain
    ``time.sleep`` between polls could stall the App's requests."""
    pause = (lambda: page.wait_for_timeout(interval * 1000)) if page is not None \
        else (lambda: time.sleep(interval))
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # keep polling; report the last error on timeout
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}"
                               + (f" (last error: {last_error!r})" if last_error else ""))
        pause()


class AppServer:
    """``python -m fiftyone.server.main`` in a subprocess with this process' environment
    (so it shares the session's FIFTYONE_DATABASE_NAME and FIFTYONE_PLUGINS_DIR)."""

    def __init__(self, log_path: str, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc = None

    def start(self):
        env = dict(os.environ, FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS="true")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "fiftyone.server.main", "--port", str(self.port)],
            env=env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )
        return self

    def graphql(self, query: str, timeout: float = 5.0) -> dict:
        req = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def reset_state(self):
        """Back to the server's state at start: no dataset, view, selection or panels.
        The server keeps the App's state (its spaces: which panels are open) for the
        next tab, so without this a test inherits the panels and view the previous test
        left on the same dataset (an open pruning panel then refreshes on every view
        change the next test makes)."""
        data = self.graphql('mutation { setDataset(subscription: "e2e-reset", '
                            'session: null, name: null, viewName: null) }')
        assert data.get("data", {}).get("setDataset") is True, data

    def wait_ready(self, dataset_name: str, timeout: float = 90.0):
        """Ready when /graphql answers a query that reads the database and sees the
        dataset (a bare /graphql answer can come before mongod is reachable)."""

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"App server exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                data = self.graphql(f'{{ dataset(name: "{dataset_name}") {{ name }} }}')
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                return False
            return (data.get("data") or {}).get("dataset", {}) and \
                data["data"]["dataset"]["name"] == dataset_name

        try:
            wait_until(ready, timeout, interval=0.25, what=f"{self.url}/graphql")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n--- server log ---\n{self.log_tail()}") from None
        return self

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()


# ---------------------------------------------------------------------------- App DOM

def open_dataset(page, server_url: str, dataset_name: str, num_samples: int,
                 timeout: float = 60_000):
    """Loads the dataset page and waits until the grid shows its sample count and tiles."""
    from playwright.sync_api import expect

    page.goto(f"{server_url}/datasets/{dataset_name}")
    expect(sample_count(page)).to_have_text(
        re.compile(rf"^\s*{num_samples}\s+samples?\b"), timeout=timeout)
    expect(page.locator("[data-cy=looker]").first).to_be_visible(timeout=timeout)


def sample_count(page):
    """The grid's 'N samples' text (top right of the Samples panel)."""
    return page.locator("[data-cy=entry-counts]")


def open_operator_browser(page, timeout: float = 30.0):
    """Presses the backtick until the operator browser's search box appears (the
    shortcut is only live once the App has mounted)."""
    search = page.get_by_placeholder("Search operations by name...")
    deadline = time.monotonic() + timeout
    while True:
        page.keyboard.press("`")
        try:
            search.wait_for(state="visible", timeout=1500)
            return search
        except Exception:
            if time.monotonic() > deadline:
                raise


def operator_browser(page):
    return page.locator("[data-cy=operators-browser]")


def open_operator(page, label: str, search: str = "Prune"):
    """Opens the operator browser, searches, and clicks the operator ``label``; returns
    the form's Execute button once the server has resolved the form (its dropdowns
    hold their options: a dropdown opened before that has none to click). A form that
    defaults to scheduling shows 'Schedule' instead: the caller switches it if needed."""
    from playwright.sync_api import expect

    box = open_operator_browser(page)
    box.fill(search)
    resolved = form_resolves(page)
    operator_browser(page).get_by_text(label, exact=True).click()
    execute = execute_button(page)
    schedule = page.get_by_role("button", name="Schedule", exact=True)
    expect(execute.or_(schedule).first).to_be_visible()
    wait_form_resolved(page, resolved)
    return execute


#: the request by which the App asks the server for an operator's form (its inputs)
RESOLVE_URL = "/operators/resolve-type"


def track_form_resolves(page):
    """Counts the page's form resolutions sent and answered (``page.form_resolves``):
    the App state a test waits on before it touches a form the server is re-making."""
    page.form_resolves = {"sent": 0, "done": 0}

    def count(key):
        def on(request):
            if RESOLVE_URL in request.url:
                page.form_resolves[key] += 1
        return on

    page.on("request", count("sent"))
    page.on("requestfinished", count("done"))
    page.on("requestfailed", count("done"))


def form_resolves(page) -> int:
    """How many form resolutions the page has had answered so far."""
    return page.form_resolves["done"]


def wait_form_resolved(page, since: int, timeout: float = 30.0):
    """Waits until a form resolution answered after ``since`` (a
    :func:`form_resolves` count) and none in flight: the form shows the server's
    latest version of it."""
    counts = page.form_resolves
    wait_until(lambda: counts["done"] > since and counts["sent"] == counts["done"],
               timeout, interval=0.05, what="the App to resolve the operator's form",
               page=page)
    # the answer is rendered in the next frames
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                  "requestAnimationFrame(r)))")


def choose(page, label: str, option: str):
    """Picks ``option`` in the form's dropdown ``label`` and waits for the form the
    server resolves with it (nothing to wait for when it was picked already)."""
    from playwright.sync_api import expect

    select = form_select(page, label)
    if select.inner_text().strip() == option:
        return
    resolved = form_resolves(page)
    select.click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(select).to_have_text(option)
    wait_form_resolved(page, resolved)


def execute_button(page):
    return page.get_by_role("button", name="Execute", exact=True)


def form_input(page, label: str):
    """The text/number input under a form property labelled ``label`` (the App renders
    the label as a <p> not tied to the input, so take the first input after it)."""
    return page.locator(
        f"xpath=//div[@role='dialog']//p[normalize-space()='{label}']/following::input[1]")


def form_select(page, label: str):
    """The dropdown (MUI select, role combobox) under the property labelled ``label``."""
    return page.locator(
        f"xpath=//div[@role='dialog']//p[normalize-space()='{label}']"
        "/following::*[@role='combobox'][1]")


def fill_and_resolve(page, locator, value: str, timeout: float = 30_000, sent=None):
    """Types ``value`` and waits until the server has re-resolved the form with it
    (``sent``: how the request shows it, e.g. ``'"batch_size":4'`` for a number field;
    default: the JSON string)."""
    sent = json.dumps(value) if sent is None else sent

    def is_resolve_with_value(response):
        if "/operators/resolve-type" not in response.url:
            return False
        body = response.request.post_data or ""
        return sent in body

    with page.expect_response(is_resolve_with_value, timeout=timeout):
        locator.fill(value)


def operation_dialog(page):
    """The dialog that shows a running operation's progress bar and then its output
    (FiftyOne's ``set_progress``/``show_output`` dialog, above the operator's form)."""
    return page.locator("[data-cy=operators-prompt-view-modal]")


#: a determinate progress bar in the operation dialog at ``arg`` % or more but not done:
#: its value and the dialog's text, else null. ``page.wait_for_function`` runs it on
#: every animation frame, so a bar on screen for a fraction of a second is still seen.
PROGRESS_PART_WAY_JS = """(atLeast) => {
    const dialog = document.querySelector('[data-cy=operators-prompt-view-modal]');
    const bar = dialog && dialog.querySelector('[role=progressbar][aria-valuenow]');
    if (!bar) return null;
    const value = Number(bar.getAttribute('aria-valuenow'));
    return value >= atLeast && value > 0 && value < 100 ?
        {value: value, text: dialog.innerText} : null;
}"""


def close_output(page, title: str, timeout: float = 30_000):
    """Waits for the operator's output titled ``title`` (it replaces the progress bar in
    the operation dialog), closes it, and checks that no dialog is left: the form closes
    by itself after a successful run."""
    from playwright.sync_api import expect

    dialog = operation_dialog(page).filter(has_text=title)
    expect(dialog).to_be_visible(timeout=timeout)
    text = dialog.inner_text()
    dialog.get_by_role("button", name="Done", exact=True).click()
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=10_000)
    return text


def show_sidebar_field(page, path: str, group: str | None = None, timeout=30_000):
    """Asserts that sidebar entry ``path`` is on screen, expanding its (collapsed)
    group first when given."""
    from playwright.sync_api import expect

    entry = page.locator(f"[data-cy='sidebar-field-{path}']")
    expect(entry).to_have_count(1, timeout=timeout)
    if group is not None:
        header = page.locator(f"[data-cy='sidebar-group-{group}']")
        if header.locator("svg[data-testid=AddIcon]").count():  # collapsed
            header.click()
    expect(entry).to_be_in_viewport(timeout=timeout)
    expect(entry).to_have_text(path)
    return entry


# ---------------------------------------------------------------------------- panels

def open_panel(page, label: str, timeout: float = 30_000):
    """Opens the panel ``label`` from the "+" (new panel) button next to the grid's
    "Samples" tab; returns the panel's tab once it is on screen. The option is found by
    its text: the menu lists every panel by label (data-cy ``new-panel-option-<name>``)."""
    from playwright.sync_api import expect

    button = page.locator("[data-cy=new-panel-btn]").first
    expect(button).to_be_visible(timeout=timeout)
    button.click()
    # the option holding an element whose text is exactly the label (matching the
    # option's whole text against the bare label found nothing in FiftyOne 1.22)
    option = page.locator("[data-cy^=new-panel-option-]").filter(
        has=page.get_by_text(label, exact=True))
    expect(option).to_have_count(1, timeout=timeout)
    option.click()
    tab = panel_tab(page, label)
    expect(tab).to_be_visible(timeout=timeout)
    return tab


def panel_tab(page, label: str):
    """The tab (data-cy ``panel-tab-<name>``) of an open panel, by its label."""
    return page.locator("[data-cy^=panel-tab-]").filter(has_text=label)


def view_bar(page):
    """The view bar above the grid; its stages show their names (``SortBy``, ...)."""
    return page.locator("[data-cy=view-bar]")


# FiftyOne 1.22's own App throws Recoil's "entry is loading" while the grid or a panel
# re-renders after a view change or a resize (thrown inside the App's own bundle);
# it is the App's, not ours, and the page keeps working.
APP_NOISE = ("entry is loading",)


def assert_no_page_errors(page, allowed=()):
    """Fails on any uncaught error in the page and on any console error (the App logs a
    failed operator or a crashed form there), except messages containing ``allowed``
    or the App's own known noise (``APP_NOISE``)."""
    allowed = tuple(allowed) + APP_NOISE
    errors = [e for e in list(getattr(page, "page_errors", [])) + list(page.console_errors)
              if not any(a in e for a in allowed)]
    assert not errors, errors
