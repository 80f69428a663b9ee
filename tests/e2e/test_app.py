"""The plugin in the real FiftyOne App, driven through headless Chromium: the operator
browser lists the operators, their forms validate, an immediate run shows its progress,
and the pipeline (embed, score, select) runs from the forms and shows up in the App.

Run: ``scripts/install_browser.sh`` once, then ``.venv/bin/python -m pytest tests/e2e``.
Screenshots go to ``$E2E_SCREENSHOTS`` (default ``test_output/screenshots``).
Every wait is on App or database state; the tests run in file order (the pipeline test
changes the dataset, so it comes last).
"""

from __future__ import annotations

import re

import pytest

from tests.e2e import helpers
from tests.e2e.conftest import NUM_SAMPLES

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(helpers.missing_browser_reason() is not None,
                       reason=helpers.missing_browser_reason() or ""),
]

EMB_FIELD = "emb_e2e"


def _operator_errors(page):
    return [e for e in page.console_errors if "Error executing operator" in e
            or "does not exist" in e]


def test_operator_browser_lists_the_plugin_operators(page, app_server, e2e_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, e2e_dataset.name, NUM_SAMPLES)
    expect(page.locator("[data-cy=looker]")).to_have_count(NUM_SAMPLES)

    search = helpers.open_operator_browser(page)
    search.fill("Prune")
    browser = helpers.operator_browser(page)
    for name, label in helpers.OPERATOR_LABELS.items():
        item = browser.get_by_text(label, exact=True)
        expect(item).to_be_visible()
        # each entry shows its label and its name
        expect(browser.get_by_text(name, exact=True)).to_be_visible()
    # the operators' icons (plugin assets served by the App) load
    icons = browser.locator("img")
    assert icons.count() >= len(helpers.OPERATOR_LABELS)
    for i in range(icons.count()):
        icon = icons.nth(i)
        loaded = icon.evaluate("img => img.complete && img.naturalWidth > 0")
        assert loaded, f"operator icon {icon.get_attribute('src')} did not load"
    shoot(page, "operator_browser")


def test_invalid_embeddings_field_disables_execute(page, app_server, e2e_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, e2e_dataset.name, NUM_SAMPLES)
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    expect(execute).to_be_enabled()

    field = helpers.form_input(page, "Embeddings field")
    helpers.fill_and_resolve(page, field, "filepath")
    error = page.get_by_role("dialog").get_by_text("already exists")
    expect(error).to_be_visible()
    expect(error).to_contain_text("filepath")
    expect(execute).to_be_disabled()
    shoot(page, "embeddings_invalid_field")

    # a valid name clears the error and enables Execute again; nothing was run
    helpers.fill_and_resolve(page, field, "emb_valid_name")
    expect(error).to_have_count(0)
    expect(execute).to_be_enabled()
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    e2e_dataset.reload()
    assert not e2e_dataset.has_field("emb_valid_name")


@pytest.mark.slow  # over 20 s on 2 cores (--durations in CI)
def test_immediate_run_shows_its_progress(page, app_server, e2e_large_dataset, shoot):
    """Embeddings run immediately (not scheduled): a progress bar with "Embedding k/N
    images" moves while the App server works, then the same dialog shows the output."""
    from playwright.sync_api import expect

    dataset = e2e_large_dataset
    n = len(dataset)
    helpers.open_dataset(page, app_server.url, dataset.name, n)
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    page.get_by_role("radio", name="EfficientNet-Lite0 (ImageNet, offline)").check()
    field = helpers.form_input(page, "Embeddings field")
    expect(field).to_have_value("efficientnet_lite0_embedding")
    helpers.fill_and_resolve(page, field, "emb_progress")
    # one image a batch: the bar (updated every 0.25 s) is part-way for seconds on a
    # CPU, and still several updates on a GPU
    helpers.fill_and_resolve(page, helpers.form_input(page, "Batch size"), "1",
                             sent='"batch_size":1')
    expect(execute).to_be_enabled()
    execute.click()

    # a fifth of the way: well inside the run, a screenshot that shows the bar
    # ceilings, not speed claims: 120 images one by one take minutes on a loaded 2-core CPU
    part_way = page.wait_for_function(helpers.PROGRESS_PART_WAY_JS, arg=20, timeout=420_000)
    # the bar eases to each new value: show where it is going, not mid-way
    shoot(page, "progress_embeddings", animations="disabled")
    state = part_way.json_value()
    match = re.search(r"Embedding (\d+)/(\d+) images", state["text"])
    assert match and int(match[2]) == n and 0 < int(match[1]) < n, state
    assert f"{state['value']}%" in state["text"], state

    # the output takes the bar's place
    done = helpers.operation_dialog(page).filter(has_text="Embeddings computed")
    expect(done).to_be_visible(timeout=420_000)
    expect(done.get_by_role("progressbar")).to_have_count(0)
    shoot(page, "progress_embeddings_output")
    output = helpers.close_output(page, "Embeddings computed")
    assert re.search(rf"Embedded:\s*{n}\b", output), output
    dataset.reload()
    assert dataset.count("emb_progress") == n
    assert not _operator_errors(page), page.console_errors


@pytest.mark.slow  # over 20 s on 2 cores (--durations in CI)
def test_prune_pipeline_from_the_app(page, app_server, e2e_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, e2e_dataset.name, NUM_SAMPLES)

    # 1. embeddings with the offline model
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    expect(execute).to_be_enabled()
    page.get_by_role("radio", name="EfficientNet-Lite0 (ImageNet, offline)").check()
    field = helpers.form_input(page, "Embeddings field")
    # the form re-resolves with the model's default field name before we type ours
    expect(field).to_have_value("efficientnet_lite0_embedding")
    helpers.fill_and_resolve(page, field, EMB_FIELD)
    expect(execute).to_be_enabled()
    shoot(page, "pipeline_1_embeddings_form")
    execute.click()

    def embedded():
        e2e_dataset.reload()
        return e2e_dataset.has_field(EMB_FIELD) and e2e_dataset.count(EMB_FIELD) == NUM_SAMPLES

    helpers.wait_until(embedded, timeout=180, what=f"{EMB_FIELD} on all samples", page=page)
    output = helpers.close_output(page, "Embeddings computed")
    assert re.search(rf"Embedded:\s*{NUM_SAMPLES}\b", output), output
    # vector fields go to the (collapsed) OTHER group of the sidebar
    helpers.show_sidebar_field(page, EMB_FIELD, group="OTHER")
    shoot(page, "pipeline_1_embeddings_done")
    assert not _operator_errors(page), page.console_errors

    # 2. prototype scores with the form's defaults
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_prototype_scores"])
    expect(execute).to_be_enabled()
    expect(helpers.form_select(page, "Embeddings field")).to_have_text(EMB_FIELD)
    expect(helpers.form_input(page, "Run key")).to_have_value("prototypes")
    shoot(page, "pipeline_2_scores_form")
    execute.click()
    output = helpers.close_output(page, "Prototype scores computed")
    assert re.search(rf"Scored:\s*{NUM_SAMPLES}\b", output), output
    helpers.show_sidebar_field(page, "prototypes_distance")
    e2e_dataset.reload()
    assert e2e_dataset.count("prototypes_distance") == NUM_SAMPLES
    shoot(page, "pipeline_2_scores_done")
    assert not _operator_errors(page), page.console_errors

    # 3. selection with the defaults (keep 0.8): the form previews the result
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["select_samples"])
    expect(execute).to_be_enabled()
    kept = int(round(0.8 * NUM_SAMPLES))
    expect(page.get_by_role("dialog").get_by_text(f"Keeps {kept}")).to_be_visible()
    shoot(page, "pipeline_3_select_form")
    execute.click()
    output = helpers.close_output(page, "Selection applied")
    assert re.search(rf"Kept:\s*{kept}\b", output), output
    e2e_dataset.reload()
    assert e2e_dataset.count_sample_tags().get("prototypes:kept") == kept
    assert "prototypes-kept" in e2e_dataset.list_saved_views()

    # the App switches to the kept samples
    try:
        expect(helpers.sample_count(page)).to_have_text(
            re.compile(rf"^\s*{kept}\s+samples?\b"), timeout=20_000)
        expect(page.locator("[data-cy=looker]")).to_have_count(kept)
    except AssertionError as e:
        raise AssertionError(
            f"the App did not switch to the {kept} kept samples after 'Execute'; "
            f"operator errors in the browser console: {_operator_errors(page)}\n{e}"
        ) from None
    finally:
        shoot(page, "pipeline_3_select_done")
    assert not _operator_errors(page), page.console_errors
