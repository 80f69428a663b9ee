"""The "Data pruning" panel in the real FiftyOne App, driven through headless Chromium:
its empty state on a dataset without runs, the histogram of a scoring run, "Show
hardest" changing the App's view, and "Apply selection" prompting the select operator
whose Execute switches the App to the kept samples.

The scored dataset is prepared from Python (random embeddings, then
``compute_prototype_scores``), not through the App: test_app.py covers the operators'
forms. Every wait is on App or database state; screenshots go to ``$E2E_SCREENSHOTS``.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.e2e import helpers

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(helpers.missing_browser_reason() is not None,
                       reason=helpers.missing_browser_reason() or ""),
]

PANEL_LABEL = "Data pruning"
RUN_KEY = "prototypes"
PER_CLASS = 2
NUM_SCORED = 10 * PER_CLASS
KEEP = 0.8
NUM_KEPT = int(round(KEEP * NUM_SCORED))
NUM_EMPTY = 4


def _persistent_dataset(prefix, items):
    import fiftyone as fo

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples(
        [fo.Sample(filepath=p, ground_truth=fo.Classification(label=l)) for p, l in items])
    return dataset


def _delete(dataset):
    import fiftyone as fo

    if fo.dataset_exists(dataset.name):
        fo.delete_dataset(dataset.name)


def _per_class(digits_images, n):
    by_label = {}
    for path, label in digits_images:
        by_label.setdefault(label, []).append(path)
    items = [(p, l) for l in sorted(by_label) for p in by_label[l][:n]]
    assert len(items) == n * len(by_label), {l: len(v) for l, v in by_label.items()}
    return items


@pytest.fixture(scope="module")
def scored_dataset(digits_images, app_server):
    """20 real digits (2 per class) with random 8-d embeddings ``emb`` and a
    ``prototypes`` scoring run (3 clusters), persistent for the App server."""
    import numpy as np

    import fiftyone_prune

    dataset = _persistent_dataset("e2e-panel", _per_class(digits_images, PER_CLASS))
    try:
        rng = np.random.default_rng(0)
        dataset.set_values("emb", list(rng.normal(size=(len(dataset), 8)).astype("float32")))
        fiftyone_prune.compute_prototype_scores(dataset, "emb", run_key=RUN_KEY,
                                                num_clusters=3, label_field="ground_truth")
        assert dataset.count(f"{RUN_KEY}_distance") == NUM_SCORED
        yield dataset
    finally:
        _delete(dataset)


@pytest.fixture(scope="module")
def unscored_dataset(digits_images, app_server):
    """A few real digits and no runs at all."""
    dataset = _persistent_dataset("e2e-panel-empty", digits_images[:NUM_EMPTY])
    try:
        yield dataset
    finally:
        _delete(dataset)


def _panel_errors(page):
    return [e for e in page.console_errors if "Error executing operator" in e
            or "does not exist" in e or "pruning_panel" in e]


def test_panel_without_runs_explains_what_to_run(page, app_server, unscored_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, unscored_dataset.name, NUM_EMPTY)
    helpers.open_panel(page, PANEL_LABEL)

    expect(page.get_by_text("No prototype scores yet")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Compute embeddings", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Compute prototype scores",
                            exact=True)).to_be_visible()
    # no plots and no selection buttons without a run
    expect(page.locator(".js-plotly-plot")).to_have_count(0)
    expect(page.get_by_role("button", name="Apply selection", exact=True)).to_have_count(0)
    shoot(page, "panel_empty")
    assert not _panel_errors(page), page.console_errors


@pytest.mark.slow  # over 20 s on 2 cores (--durations in CI)
def test_panel_histogram_show_hardest_and_apply(page, app_server, scored_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, scored_dataset.name, NUM_SCORED)
    helpers.open_panel(page, PANEL_LABEL)

    # 1. the run's histogram and the selection summary render (not an error box)
    summary = page.get_by_text(re.compile(r"keeps\s+\d+"))
    expect(summary).to_be_visible(timeout=30_000)
    expect(summary).to_contain_text(re.compile(rf"keeps\s+{NUM_KEPT}\b"))
    expect(summary).to_contain_text(re.compile(rf"prunes\s+{NUM_SCORED - NUM_KEPT}\b"))
    plots = page.locator(".js-plotly-plot")
    expect(plots).to_have_count(2, timeout=30_000)  # histogram + kept per group
    histogram = plots.filter(has_text=f"{RUN_KEY}_distance")
    expect(histogram).to_have_count(1)
    expect(histogram.locator(".main-svg").first).to_be_visible()
    # plotly drew bars (kept and pruned traces), not just empty axes
    expect(histogram.locator("g.trace.bars")).to_have_count(2)
    expect(histogram.locator("g.point path").first).to_be_attached()
    expect(plots.filter(has_text="kept per cluster")).to_have_count(1)
    expect(page.get_by_role("alert")).to_have_count(0)
    shoot(page, "panel_histogram")
    assert not _panel_errors(page), page.console_errors

    # 2. "Show hardest": the App's view becomes the scored samples sorted by distance
    bar = helpers.view_bar(page)
    expect(bar).to_be_visible()
    expect(bar).not_to_contain_text("SortBy")
    page.get_by_role("button", name="Show hardest", exact=True).click()
    expect(bar).to_contain_text("Exists", timeout=30_000)
    expect(bar).to_contain_text("SortBy")
    expect(bar).to_contain_text(f"{RUN_KEY}_distance")
    expect(helpers.sample_count(page)).to_have_text(
        re.compile(rf"^\s*{NUM_SCORED}\s+samples?\b"))
    shoot(page, "panel_show_hardest")
    assert not _panel_errors(page), page.console_errors

    # 3. "Apply selection": the select operator's form, pre-filled from the panel
    page.get_by_role("button", name="Apply selection", exact=True).click()
    execute = helpers.execute_button(page)
    expect(execute).to_be_visible(timeout=30_000)
    dialog = page.get_by_role("dialog").filter(has_text="Select samples")
    keep_input = helpers.form_input(page, "Keep")
    expect(keep_input).to_have_value(str(KEEP))
    preview = dialog.get_by_text(f"Keeps {NUM_KEPT}")
    # the panel pre-fills a number the form accepts: the preview shows, Execute enabled
    expect(preview).to_be_visible(timeout=30_000)
    shoot(page, "panel_apply_form")
    expect(execute).to_be_enabled()
    shoot(page, "panel_apply_form_ready")
    execute.click()

    output = helpers.close_output(page, "Selection applied")
    assert re.search(rf"Kept:\s*{NUM_KEPT}\b", output), output
    scored_dataset.reload()
    assert scored_dataset.count_sample_tags().get(f"{RUN_KEY}:kept") == NUM_KEPT
    # the App switches to the kept samples
    try:
        expect(helpers.sample_count(page)).to_have_text(
            re.compile(rf"^\s*{NUM_KEPT}\s+samples?\b"), timeout=30_000)
        expect(page.locator("[data-cy=looker]")).to_have_count(NUM_KEPT)
    finally:
        shoot(page, "panel_apply_done")
    assert f"{RUN_KEY}-kept" in scored_dataset.list_saved_views()
    assert not _panel_errors(page), page.console_errors
