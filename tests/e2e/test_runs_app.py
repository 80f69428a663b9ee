"""The panel's plots and the run-management operators in the real App.

The dataset is the session's 120 real digits with a small, real embedding (each image
downscaled to 8x8 pixels: digits of a class cluster, unlike random vectors), class
prototype scores, a selection and a quick evaluation, all made from Python. The panel
is checked at 1400x900 and in a 1000 px window: every plot has a legend and axis titles,
the per-class chart labels every class, the buttons sit above the plots, the pruning
curve is on screen without scrolling, and no control or button is clipped or broken over
two lines. ``panel.png`` (the README's picture) is saved with the other screenshots.
Then run info, load a run's samples, rename and delete (behind its tick) are used from
their forms, and the database is checked.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e import helpers
from tests.e2e.test_panel_app import _delete, _persistent_dataset

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(helpers.missing_browser_reason() is not None,
                       reason=helpers.missing_browser_reason() or ""),
]

KEEP = 0.5


@pytest.fixture(scope="module")
def runs_dataset(digits_images, app_server):
    import numpy as np
    from PIL import Image

    import fiftyone_prune
    from fiftyone_prune.sdk.evaluation import evaluate_pruning

    dataset = _persistent_dataset("e2e-runs", digits_images)
    try:
        pixels = [np.asarray(Image.open(p).convert("L").resize((8, 8)), dtype="float32")
                  .ravel() / 255.0 for p in dataset.values("filepath")]
        dataset.set_values("pixels", pixels)
        fiftyone_prune.compute_prototype_scores(dataset, "pixels", run_key="prototypes",
                                                method="supervised",
                                                label_field="ground_truth")
        fiftyone_prune.select_samples(dataset, run_key="prototypes", keep=KEEP,
                                      strategy="hard", balance="class",
                                      label_field="ground_truth")
        evaluate_pruning(dataset, "ground_truth", run_key="prototypes",
                         fractions=[0.3, 0.6, 0.9], strategies=["random", "easy", "hard"],
                         seeds=1, balance="class", scaling=False)  # its plot: test_scaling_app
        yield dataset
    finally:
        _delete(dataset)


@pytest.fixture()
def runs_dataset_copy(runs_dataset):
    """A copy of ``runs_dataset`` with its runs, for a test that renames and deletes
    them (the module's dataset stays as the other tests expect it, in any order)."""
    copy = runs_dataset.clone(f"{runs_dataset.name}-copy", persistent=True)
    try:
        yield copy
    finally:
        _delete(copy)


def _texts(plot, selector):
    # SVG text has no innerText
    return [t.strip() for t in plot.locator(selector).evaluate_all(
        "els => els.map(e => e.textContent)")]


def _legend(plot):
    return _texts(plot, "g.legend text.legendtext")


def _axis_titles(plot):
    return _texts(plot, "text.xtitle") + _texts(plot, "text.ytitle")


@pytest.mark.slow  # over 20 s on 2 cores (--durations in CI)
def test_panel_plots_have_legends_axes_and_fit(page, app_server, runs_dataset, shoot):
    from playwright.sync_api import expect

    n = len(runs_dataset)
    helpers.open_dataset(page, app_server.url, runs_dataset.name, n)
    helpers.open_panel(page, "Data pruning")
    plots = page.locator(".js-plotly-plot")
    expect(plots).to_have_count(3, timeout=60_000)
    histogram = plots.filter(has_text="prototypes_distance")
    groups = plots.filter(has_text="kept per class")
    curve = plots.filter(has_text="pruning curve")
    expect(groups).to_have_count(1, timeout=30_000)
    expect(histogram.locator("g.legend")).to_have_count(1)
    # the cut line is drawn (and named) where the strategy cuts the scores
    cut = [] if page.get_by_text(re.compile(r"^random keeps")).count() else ["cut"]
    assert _legend(histogram) == ["kept", "pruned"] + cut, _legend(histogram)
    assert _axis_titles(histogram) == ["cosine distance to prototype (hard →)", "samples"]
    assert _legend(groups) == ["kept", "pruned"]
    assert _axis_titles(groups) == ["class", "samples"]
    # a categorical axis labelling every class
    ticks = _texts(groups, "g.xtick text")
    assert ticks == [str(d) for d in range(10)], ticks
    assert _legend(curve) == ["random", "easy", "hard", "all data"], _legend(curve)
    assert _axis_titles(curve) == ["fraction kept", "held-out accuracy"]
    # the buttons sit above the plots, and the curve first among them: at 1400x900 the
    # whole curve is on screen without scrolling
    boxes = _panel_boxes(page)
    assert boxes["Apply selection"][3] < boxes["plot:pruning curve"][1], boxes
    assert boxes["plot:pruning curve"][1] < boxes["plot:prototypes_distance"][1], boxes
    assert boxes["plot:pruning curve"][3] <= 900, boxes
    _try_shoot(shoot, page, "panel")
    _assert_controls_fit(boxes, 1400)

    # the App opened in a 1000 px window (the panel stays open): beside the grid it is
    # ~350 px wide; still no control or button clipped or broken over two lines. (A live
    # resize keeps the panel's old width in FiftyOne 1.22's split layout: reload.)
    page.set_viewport_size({"width": 1000, "height": 900})
    page.reload()
    expect(plots).to_have_count(3, timeout=60_000)
    helpers.wait_until(lambda: _panel_boxes(page)["plot:pruning curve"][2] <= 1001, 30,
                       what="the panel to fit the narrower window", page=page)
    boxes = _panel_boxes(page)
    _assert_controls_fit(boxes, 1000)
    _try_shoot(shoot, page, "panel_1000px")
    page.set_viewport_size({"width": 1400, "height": 900})
    _no_page_errors_but_recoil_loading(page)


#: what the panel lays out, by label
_CONTROLS = ("Scoring run", "Keep", "Strategy", "Balance", "Group")
_BUTTONS = ("Show easiest", "Show hardest", "Apply selection", "Export kept")

#: [left, top, right, bottom] of each control's label and its input or dropdown, each
#: button, each plot (``plot:<its title>``) and the panel's tab, in one round trip
_PANEL_BOXES_JS = """([controls, buttons]) => {
    const box = e => { const b = e.getBoundingClientRect();
                       return [b.left, b.top, b.right, b.bottom]; };
    const out = {};
    for (const p of document.querySelectorAll('p')) {
        const label = p.textContent.trim();
        if (!controls.includes(label) || out[label]) continue;
        out[label] = box(p);
        // the input or dropdown that follows the label
        const all = [...document.querySelectorAll('input:not([type=hidden]):not([aria-hidden=true]), [role=combobox]')];
        const input = all.find(i => p.compareDocumentPosition(i) & Node.DOCUMENT_POSITION_FOLLOWING);
        out[label + ':input'] = box(input);
    }
    for (const b of document.querySelectorAll('button')) {
        const label = b.textContent.trim();
        if (buttons.includes(label)) out[label] = box(b);
    }
    for (const plot of document.querySelectorAll('.js-plotly-plot')) {
        const title = plot.querySelector('.gtitle');
        if (title) out['plot:' + title.textContent.split(' (')[0]] = box(plot);
    }
    const tab = [...document.querySelectorAll('[data-cy^=panel-tab-]')]
        .find(t => t.textContent.includes('Data pruning'));
    out.tab = box(tab);
    return out;
}"""


def _panel_boxes(page):
    return page.evaluate(_PANEL_BOXES_JS, [list(_CONTROLS), list(_BUTTONS)])


def _assert_controls_fit(boxes, width):
    """Every control (label and input) and button lies inside the panel, which runs from
    its tab's left edge to the window's right edge; labels and button texts are on one
    line; the controls form their two rows."""
    left = boxes["tab"][0] - 1
    for name in _CONTROLS + tuple(f"{c}:input" for c in _CONTROLS) + _BUTTONS:
        x0, _, x1, _ = boxes[name]
        assert left <= x0 and x1 <= width, (width, name, boxes[name], left)
    for name in _CONTROLS:  # one line of text: ~21 px
        assert boxes[name][3] - boxes[name][1] < 30, (width, name, boxes[name])
    for name in _BUTTONS:  # one line: ~33 px, two lines (a broken label): ~54 px
        assert boxes[name][3] - boxes[name][1] < 45, (width, name, boxes[name])
    tops = sorted({round(boxes[c][1]) for c in _CONTROLS})
    assert len(tops) == 2, (width, tops)
    for plot in ("plot:pruning curve", "plot:prototypes_distance", "plot:kept per class"):
        assert left <= boxes[plot][0] and boxes[plot][2] <= width + 1, (width, plot, boxes)


def _try_shoot(shoot, page, name):
    """A screenshot of the panel, when the browser gives one: on a loaded 2-core machine
    Chromium's wait for fonts sometimes outlasts the timeout with three plots on screen
    (the checks above are what the test asserts)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        shoot(page, name, timeout=20_000)
    except PlaywrightTimeout:
        pass


def _no_page_errors_but_recoil_loading(page):
    """FiftyOne 1.22's App throws Recoil's "entry is loading" (uncaught) while the grid
    reloads after a view change or a resize; the App recovers by itself. Any other page
    or console error fails the test."""
    page.page_errors = [e for e in page.page_errors if "entry is loading" not in e]
    helpers.assert_no_page_errors(page, allowed=("entry is loading",))


def _dialog(page):
    return page.get_by_role("dialog").first


@pytest.mark.slow  # over 20 s on 2 cores (--durations in CI)
def test_run_info_load_rename_and_delete_from_forms(page, app_server, runs_dataset_copy,
                                                   shoot):
    from playwright.sync_api import expect

    from fiftyone_prune.sdk import runs

    runs_dataset = runs_dataset_copy
    n = len(runs_dataset)
    kept = runs_dataset.count_sample_tags()["prototypes:kept"]
    helpers.open_dataset(page, app_server.url, runs_dataset.name, n)

    # info: the newest run first, its parameters and what it created
    helpers.open_operator(page, "Prune: run info")
    dialog = _dialog(page)
    expect(dialog.get_by_text("Status").first).to_be_visible(timeout=30_000)
    helpers.choose(page, "Run", "prototypes_selection (selection)")
    expect(dialog.get_by_text("prototypes-kept").first).to_be_visible(timeout=30_000)
    expect(dialog.get_by_text("prototypes:kept").first).to_be_visible()
    shoot(page, "form_run_info")
    page.get_by_role("button", name="Cancel", exact=True).click()

    # load: the selection's kept samples, by its saved view
    execute = helpers.open_operator(page, "Prune: load a run's samples")
    helpers.choose(page, "Run", "prototypes_selection (selection)")
    expect(helpers.form_select(page, "Show")).to_have_text(
        "its kept samples (the saved view)", timeout=30_000)
    shoot(page, "form_load_run_view")
    execute.click()
    expect(helpers.sample_count(page)).to_have_text(
        re.compile(rf"^\s*{kept}\s+samples?\b"), timeout=30_000)
    page.locator("[data-cy=btn-clear-view-bar]").click()
    expect(helpers.sample_count(page)).to_have_text(re.compile(rf"^\s*{n}\s+samples?\b"),
                                                    timeout=30_000)

    # rename the scoring run: its selection and evaluation follow it
    execute = helpers.open_operator(page, "Prune: rename a run")
    helpers.choose(page, "Run", "prototypes (prototypes)")
    new = helpers.form_input(page, "New run key")
    helpers.fill_and_resolve(page, new, "prototypes_selection")
    expect(dialog.get_by_text("already used")).to_be_visible()
    expect(execute).to_be_disabled()
    helpers.fill_and_resolve(page, new, "digits_pixels")
    expect(execute).to_be_enabled()
    shoot(page, "form_rename_run")
    execute.click()
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=30_000)
    runs_dataset.reload()
    assert "digits_pixels" in runs.list_runs(runs_dataset, "prototypes")
    assert runs.run_status(runs_dataset, "prototypes_selection") == "complete"

    # delete the selection: Execute waits for the tick; then tags and saved view go
    execute = helpers.open_operator(page, "Prune: delete a run")
    helpers.choose(page, "Run", "prototypes_selection (selection)")
    expect(dialog.get_by_text("Samples are never deleted")).to_be_visible(timeout=30_000)
    expect(execute).to_be_disabled()
    shoot(page, "form_delete_run")
    dialog.get_by_text("Yes, delete this run and what it created", exact=True).click()
    expect(execute).to_be_enabled(timeout=30_000)
    execute.click()
    expect(dialog.get_by_text("Deleted run")).to_be_visible(timeout=30_000)
    expect(dialog).to_contain_text("prototypes_selection")
    shoot(page, "run_deleted")
    dialog.get_by_role("button", name="Close", exact=True).click()
    runs_dataset.reload()
    assert "prototypes_selection" not in runs_dataset.list_runs()
    assert not runs_dataset.has_saved_view("prototypes-kept")
    assert not [t for t in runs_dataset.count_sample_tags() if t.startswith("prototypes:")]
    assert len(runs_dataset) == n
    _no_page_errors_but_recoil_loading(page)
