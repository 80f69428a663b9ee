"""What a FiftyOne user must be able to trust in the App (issue #24), in Chromium:
the panel survives a minute of concurrent events with an evaluation present, a failed
immediate run shows one dialog (the failure, never a success title), and bad input is
refused under its own input, in the App's words, before Execute.

The dataset is 20 real digits (2 per class) with random 8-d embeddings, a scoring run,
a selection and a quick evaluation, all made from Python. Any uncaught page error or
console error fails a test, except the App's own known noise (``helpers.APP_NOISE``).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e import helpers
from tests.e2e.test_panel_app import _delete, _per_class, _persistent_dataset

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(helpers.missing_browser_reason() is not None,
                       reason=helpers.missing_browser_reason() or ""),
]

N = 20
SELECTION = "sel"
EMPTY_VIEW = "nothing-here"


@pytest.fixture(scope="module")
def trust_dataset(digits_images, app_server):
    import numpy as np

    import fiftyone_prune
    from fiftyone_prune.sdk.evaluation import evaluate_pruning

    dataset = _persistent_dataset("e2e-trust", _per_class(digits_images, 2))
    try:
        rng = np.random.default_rng(2)
        dataset.set_values("emb", list(rng.normal(size=(N, 8)).astype("float32")))
        fiftyone_prune.compute_prototype_scores(dataset, "emb", run_key="prototypes",
                                                num_clusters=3, label_field="ground_truth")
        fiftyone_prune.select_samples(dataset, run_key="prototypes", keep=0.5,
                                      name=SELECTION)
        # its default key, "prototypes_evaluation", is now taken
        evaluate_pruning(dataset, "ground_truth", run_key="prototypes", fractions=[0.5],
                         strategies=["random", "hard"], seeds=1, scaling=False)
        dataset.save_view(EMPTY_VIEW, dataset.match_tags("no-such-tag"))
        yield dataset
    finally:
        _delete(dataset)


@pytest.fixture(scope="module")
def tiny_dataset(digits_images, app_server):
    """Three digits (two 0s and a 1) with embeddings and a scoring run: too few to
    evaluate (the 1 can't be both trained on and held out)."""
    import numpy as np

    import fiftyone_prune

    dataset = _persistent_dataset("e2e-tiny", _per_class(digits_images, 2)[:3])
    try:
        rng = np.random.default_rng(3)
        dataset.set_values("emb", list(rng.normal(size=(3, 8)).astype("float32")))
        fiftyone_prune.compute_prototype_scores(dataset, "emb", run_key="prototypes",
                                                num_clusters=1)
        yield dataset
    finally:
        _delete(dataset)


def _dialog(page):
    return page.get_by_role("dialog").first


def _run_button(page):
    """The form's Execute, or Schedule where the form defaults to scheduling."""
    return helpers.execute_button(page).or_(
        page.get_by_role("button", name="Schedule", exact=True)).first


def _assert_under(page, label, error, next_label):
    """The error text sits under the input labelled ``label`` and above the next
    input's label ``next_label``: under its own input, not at the top or bottom."""
    field = helpers.form_input(page, label).bounding_box()
    below = page.locator(f"xpath=//div[@role='dialog']//p[normalize-space()="
                         f"'{next_label}']").first.bounding_box()
    box = error.bounding_box()
    assert field["y"] + field["height"] <= box["y"] + 1, (field, box)
    assert box["y"] + box["height"] <= below["y"] + 1, (box, below)


def _fill(page, label, value, sent):
    helpers.fill_and_resolve(page, helpers.form_input(page, label), value, sent=sent)


def _cancel(page):
    from playwright.sync_api import expect

    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_form_checks_refuse_under_their_input_before_execute(page, app_server,
                                                             trust_dataset, tmp_path,
                                                             shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, trust_dataset.name, N)
    runs_before = set(trust_dataset.list_runs())

    # 1. "Split into M tasks" larger than the samples
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    page.get_by_role("radio", name="EfficientNet-Lite0 (ImageNet, offline)").check()
    _fill(page, "Split into M tasks", "30", '"num_shards":30')
    error = _dialog(page).get_by_text(re.compile(r"Split into M tasks.*at most 20"))
    expect(error).to_be_visible()
    expect(execute).to_be_disabled()
    assert "num_shards" not in error.inner_text()
    shoot(page, "trust_num_shards")
    _cancel(page)

    # 2. a negative Seed: under Seed, in the App's words
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["select_samples"])
    expect(_dialog(page).get_by_text("Keeps 16")).to_be_visible()
    expect(execute).to_be_enabled()
    _fill(page, "Seed", "-1", '"seed":-1')
    error = _dialog(page).get_by_text("Seed must be at least 0 (got -1)")
    expect(error).to_be_visible()
    expect(execute).to_be_disabled()
    _assert_under(page, "Seed", error, "Selection name (optional)")
    shoot(page, "trust_seed")
    _cancel(page)

    # 3. an export path typed, then emptied: Execute disabled again, said under the path
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["export_kept_samples"])
    path = helpers.form_input(page, "Export directory")
    out = str(tmp_path / "export")
    helpers.fill_and_resolve(page, path, out, sent=out)
    expect(execute).to_be_enabled()
    resolved = helpers.form_resolves(page)
    path.fill("")
    helpers.wait_form_resolved(page, resolved)
    error = _dialog(page).get_by_text("Type or choose the folder to export to")
    expect(error).to_be_visible()
    expect(execute).to_be_disabled()
    shoot(page, "trust_export_emptied")
    _cancel(page)

    # 4. the default evaluation key is taken: the form proposes a free one, opens valid
    helpers.open_operator(page, "Prune: evaluate pruning against random")
    expect(_dialog(page).get_by_text("default: prototypes_evaluation_2")).to_be_visible()
    expect(_dialog(page).get_by_text("already")).to_have_count(0)
    expect(_run_button(page)).to_be_enabled()
    shoot(page, "trust_eval_key")
    _cancel(page)

    trust_dataset.reload()
    assert set(trust_dataset.list_runs()) == runs_before
    helpers.assert_no_page_errors(page)


def test_too_few_samples_to_evaluate_are_refused_in_the_form(page, app_server,
                                                             tiny_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, tiny_dataset.name, 3)
    helpers.open_operator(page, "Prune: evaluate pruning against random")
    expect(_dialog(page).get_by_text("has fewer than 2 samples")).to_be_visible()
    expect(_run_button(page)).to_be_disabled()
    shoot(page, "trust_eval_tiny")
    _cancel(page)
    tiny_dataset.reload()
    assert not [k for k in tiny_dataset.list_runs() if "evaluation" in k]
    helpers.assert_no_page_errors(page)


def test_embedding_an_empty_view_is_refused(page, app_server, trust_dataset, shoot):
    from playwright.sync_api import expect

    page.goto(f"{app_server.url}/datasets/{trust_dataset.name}?view={EMPTY_VIEW}")
    expect(helpers.sample_count(page)).to_have_text(re.compile(r"^\s*0\b"), timeout=60_000)
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    page.get_by_role("radio", name="EfficientNet-Lite0 (ImageNet, offline)").check()
    # the target is the current (empty) view
    error = _dialog(page).get_by_text("The view is empty")
    expect(error).to_be_visible()
    expect(execute).to_be_disabled()
    shoot(page, "trust_empty_view")
    _cancel(page)
    trust_dataset.reload()
    assert not trust_dataset.has_field("efficientnet_lite0_embedding")
    helpers.assert_no_page_errors(page)


def test_a_failed_immediate_run_shows_one_dialog(page, app_server, trust_dataset, tmp_path,
                                                 shoot):
    from playwright.sync_api import expect

    bad = tmp_path / "swav.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    helpers.open_dataset(page, app_server.url, trust_dataset.name, N)
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    _fill(page, "SwAV checkpoint (optional)", str(bad), str(bad))
    helpers.fill_and_resolve(page, helpers.form_input(page, "Embeddings field"), "emb_bad")
    expect(execute).to_be_enabled()

    def asks_for_the_output(response):
        # after a run the App asks the server for the output's form, with the result
        return (helpers.RESOLVE_URL in response.url
                and '"target":"outputs"' in (response.request.post_data or ""))

    with page.expect_response(asks_for_the_output, timeout=180_000):
        execute.click()
        failed = helpers.operation_dialog(page).filter(
            has_text="Prune: compute embeddings failed")
        expect(failed).to_be_visible(timeout=120_000)
    expect(failed).to_contain_text("swav.pth.tar")
    # that answer is rendered in the next frames: a second dialog would be there now
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                  "requestAnimationFrame(r)))")
    expect(page.get_by_text("Embeddings computed")).to_have_count(0)
    expect(page.get_by_text("No value provided")).to_have_count(0)
    expect(helpers.operation_dialog(page)).to_have_count(1)
    shoot(page, "trust_failed_run")
    trust_dataset.reload()
    assert not trust_dataset.has_field("emb_bad")
    # the App logs the failed operator to the console: that is the failure, not a crash
    helpers.assert_no_page_errors(page, allowed=("Error executing operator", "swav.pth.tar",
                                                 "checkpoint"))


@pytest.mark.slow  # a minute of events, by design
def test_panel_survives_a_minute_of_concurrent_events(page, app_server, trust_dataset,
                                                      shoot):
    """Strategy and Keep changes fired without waiting for the panel, mixed with view
    changes (Show hardest / easiest, clearing the view), with an evaluation present:
    each is a panel event the server handles in a thread of its own while the others
    run. The panel never shows an operator error and ends showing the last choice."""
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, trust_dataset.name, N)
    helpers.open_panel(page, "Data pruning")
    expect(page.get_by_text(re.compile(r"keeps\s+\d+"))).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot").filter(has_text="pruning curve")).to_have_count(
        1, timeout=60_000)
    strategy = page.locator("xpath=//p[normalize-space()='Strategy']"
                            "/following::*[@role='combobox'][1]")
    keep = page.locator("xpath=//p[normalize-space()='Keep']/following::input[1]")
    buttons = [page.get_by_role("button", name=n, exact=True)
               for n in ("Show hardest", "Show easiest")]
    clear = page.locator("[data-cy=btn-clear-view-bar]")
    choices = ["hard", "easy", "auto", "random", "ccs", "density"]
    fired, i, missed = 0, 0, []
    end = time.monotonic() + 60  # the length of the exercise, not a timing claim
    while time.monotonic() < end:
        i += 1
        step = "strategy"
        try:  # a user clicking on: an action the busy panel does not take is skipped
            strategy.click(timeout=15_000)
            step = "option"
            page.get_by_role("option", name=choices[i % len(choices)], exact=True).click(
                timeout=15_000)
            fired += 1
            # then Keep and the view at once, without waiting for the panel
            step = "keep"
            keep.fill(["0.5", "0.3", "0.7", "12"][i % 4], timeout=15_000)
            fired += 1
            step = "view"
            buttons[i % 2].dispatch_event("click", timeout=15_000)
            fired += 1
            if i % 3 == 0 and clear.count():
                step = "clear view"
                clear.first.dispatch_event("click", timeout=15_000)
                fired += 1
        except Exception as e:  # noqa: BLE001 - see above
            missed.append(f"{step}: {str(e).splitlines()[0][:150]}")
            page.keyboard.press("Escape")
        assert page.get_by_text("Operator Error").count() == 0
    assert fired >= 10, (fired, missed[:5])  # events fired, each a panel event
    # settle on a known choice: the panel follows it
    page.keyboard.press("Escape")
    strategy.click()
    page.get_by_role("option", name="hard", exact=True).click()
    keep.fill("0.5")
    expect(page.get_by_text(re.compile(r"hard\s+keeps\s+10\b"))).to_be_visible(
        timeout=90_000)
    expect(page.get_by_text("Operator Error")).to_have_count(0)
    expect(page.get_by_text("Could not read")).to_have_count(0)
    shoot(page, "trust_panel_after_events")
    page.page_errors = [e for e in page.page_errors if "entry is loading" not in e]
    helpers.assert_no_page_errors(page)


def test_panel_re_lays_out_when_the_window_shrinks(page, app_server, trust_dataset, shoot):
    """The window shrunk live from 1400 to 1000 px (no reload): the panel's buttons and
    plots stay inside the window."""
    from playwright.sync_api import expect

    from tests.e2e.test_runs_app import _BUTTONS, _panel_boxes

    helpers.open_dataset(page, app_server.url, trust_dataset.name, N)
    helpers.open_panel(page, "Data pruning")
    plots = page.locator(".js-plotly-plot")
    expect(plots.filter(has_text="pruning curve")).to_have_count(1, timeout=60_000)
    try:
        page.set_viewport_size({"width": 1000, "height": 900})

        def inside():
            boxes = _panel_boxes(page)
            edges = [boxes[b][2] for b in _BUTTONS] + [
                box[2] for name, box in boxes.items() if name.startswith("plot:")]
            return max(edges) <= 1001 and boxes

        boxes = helpers.wait_until(inside, 30, what="the panel to fit 1000 px", page=page)
        for name in _BUTTONS:
            assert boxes[name][0] >= boxes["tab"][0] - 1, (name, boxes)
        shoot(page, "trust_panel_resized")
    finally:
        page.set_viewport_size({"width": 1400, "height": 900})
    page.page_errors = [e for e in page.page_errors if "entry is loading" not in e]
    helpers.assert_no_page_errors(page)
