"""The scaling view in the real App: the evaluate form, executed in Chromium, stores the
worth rows and learning-curve laws with its run (checked in the database); the panel
draws the learning curves on log-log axes right after the pruning curve, matches a
selection on the random curve, lists every selection's worth, and fits beside the
grid in a 1000 px window.

Two datasets: the session's 120 real digits with random 8-d embeddings for the form (the curve is
flat there, and the stored view says so), and 2,500 real MNIST digits whose pixels are
the features, evaluated from Python, where keep-easy is measurably worth less than
random data of its size (the panel's equivalence line is drawn from it).
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

PANEL_LABEL = "Data pruning"


@pytest.fixture(scope="module")
def small_dataset(digits_images, app_server):
    import numpy as np

    import fiftyone_prune

    dataset = _persistent_dataset("e2e-scaling-form", digits_images)
    try:
        rng = np.random.default_rng(2)
        dataset.set_values("emb", list(rng.normal(size=(len(dataset), 8)).astype("float32")))
        fiftyone_prune.compute_prototype_scores(dataset, "emb", run_key="prototypes",
                                                num_clusters=3)
        yield dataset
    finally:
        _delete(dataset)


@pytest.fixture(scope="module")
def mnist_dataset(tmp_path_factory, app_server):
    import numpy as np
    from PIL import Image

    import fiftyone_prune
    from fiftyone_prune.sdk.demo import write_demo_images

    items = write_demo_images(str(tmp_path_factory.mktemp("mnist-scaling")), "mnist",
                              max_samples=2500, seed=3)
    dataset = _persistent_dataset("e2e-scaling-panel", items)
    try:
        dataset.set_values("pixels", [np.asarray(Image.open(p), dtype=np.float32).ravel()
                                      / 255.0 + 0.01 for p, _ in items])
        fiftyone_prune.compute_prototype_scores(dataset, "pixels", run_key="proto",
                                                num_clusters=10)
        fiftyone_prune.evaluate_pruning(dataset, "ground_truth", "proto",
                                        fractions=(0.2, 0.5), strategies=("easy",), seeds=3,
                                        test_fraction=0.6)
        yield dataset
    finally:
        _delete(dataset)


def _dialog(page):
    return page.get_by_role("dialog").first


@pytest.mark.slow  # an evaluation run from the App's form
def test_evaluate_form_stores_the_scaling_view(page, app_server, small_dataset, shoot):
    from playwright.sync_api import expect

    import fiftyone_prune as fop

    helpers.open_dataset(page, app_server.url, small_dataset.name, len(small_dataset))
    helpers.open_operator(page, "Prune: evaluate pruning against random")
    fractions = helpers.form_input(page, "Kept fractions")
    expect(fractions).to_be_visible(timeout=30_000)
    helpers.fill_and_resolve(page, fractions, "0.5")
    helpers.fill_and_resolve(page, helpers.form_input(page, "Seeds per point"), "2",
                             sent='"seeds":2')
    # the form defaults to scheduling (evaluations are long): run it now instead
    execute = helpers.execute_button(page)
    if not execute.is_visible():
        _dialog(page).locator("button:has(svg)").last.click()
        page.get_by_text("Run this operation synchronously").click()
        execute = helpers.execute_button(page)
    expect(execute).to_be_enabled()
    execute.click()
    # the output lists the verdicts, the learning curve's among them
    # the line that starts with it (the worth line may name the curve too)
    expect(_dialog(page).get_by_text(re.compile(r"^Random learning curve"))).to_be_visible(
        timeout=180_000)
    shoot(page, "form_evaluate_scaling_output")
    helpers.close_output(page, "Pruning evaluated")

    small_dataset.reload()
    stored = fop.load_evaluation(small_dataset, "prototypes_evaluation")
    assert fop.get_run_info(small_dataset, "prototypes_evaluation").config.scaling is True
    assert [(w["strategy"], w["fraction"]) for w in stored.worth] == [
        ("easy", 0.5), ("hard", 0.5), ("ccs", 0.5)]
    for w in stored.worth:
        assert (w["ratio"] is None) == bool(w["reason"]), w
    assert [s["strategy"] for s in stored.scaling] == ["random", "easy", "hard", "ccs"]
    random = stored.scaling[0]
    pool = fop.get_run_info(small_dataset, "prototypes_evaluation").config.num_train
    assert len(random["points"]) >= 4 and random["points"][-1]["kept"] == pool
    # random embeddings: whatever the curve's status, a law or the reason there is none
    assert (random["status"] == "ok") == (random["reason"] is None), random
    helpers.assert_no_page_errors(page)


def _scaling_plot(page):
    return page.locator(".js-plotly-plot").filter(has_text="worth: error vs training")


def _legend(plot):
    return [t.strip() for t in plot.locator("g.legend text.legendtext").evaluate_all(
        "els => els.map(e => e.textContent)")]


@pytest.mark.slow  # 2,500 digits evaluated, then the App at two widths
def test_panel_draws_the_worth_next_to_the_pruning_curve(page, app_server, mnist_dataset,
                                                          shoot):
    from playwright.sync_api import expect

    import fiftyone_prune as fop

    stored = fop.load_evaluation(mnist_dataset, "proto_evaluation")
    best = max((w for w in stored.worth if w["ratio"] is not None), key=lambda w: w["ratio"])
    helpers.open_dataset(page, app_server.url, mnist_dataset.name, f"{len(mnist_dataset):,}")
    helpers.open_panel(page, PANEL_LABEL)
    plots = page.locator(".js-plotly-plot")
    # the pruning curve, the scaling view, the histogram, kept per cluster
    expect(plots).to_have_count(4, timeout=60_000)
    scaling = _scaling_plot(page)
    expect(scaling).to_have_count(1)
    expect(scaling.locator(".main-svg").first).to_be_visible()
    legend = _legend(scaling)
    assert legend[:2] == ["random", "easy"] and f"worth {best['ratio']:.2f}x" in legend, legend
    # log-log axes, titled
    titles = [t.strip() for t in scaling.locator("text.xtitle, text.ytitle").evaluate_all(
        "els => els.map(e => e.textContent)")]
    assert titles == ["training samples", "held-out error"], titles
    # the ratios under it, every selection with its interval or why it has none
    worth = page.get_by_text("Worth in random samples", exact=True)  # the list's heading
    expect(worth).to_be_visible()
    for w in stored.worth:
        expect(page.get_by_text(f"easy {w['fraction']:.0%} ({w['kept']:,}): "
                                f"{w['ratio']:.2f}x", exact=False)).to_be_visible()
    # right after the pruning curve, before the histogram
    curve = plots.filter(has_text="pruning curve")
    histogram = plots.filter(has_text="proto_distance")
    assert curve.bounding_box()["y"] < scaling.bounding_box()["y"] \
        < histogram.bounding_box()["y"]
    shoot(page, "panel_scaling")

    # a 1000 px window: the panel beside the grid is ~350 px wide; the plot fits it
    page.set_viewport_size({"width": 1000, "height": 900})
    page.reload()
    expect(plots).to_have_count(4, timeout=60_000)
    helpers.wait_until(lambda: _scaling_plot(page).bounding_box()["x"]
                       + _scaling_plot(page).bounding_box()["width"] <= 1001, 30,
                       what="the scaling plot to fit the narrower window", page=page)
    _scaling_plot(page).scroll_into_view_if_needed()
    box = _scaling_plot(page).bounding_box()
    assert box["width"] > 250, box  # not squeezed to nothing
    shoot(page, "panel_scaling_1000px")
    page.set_viewport_size({"width": 1400, "height": 900})
    helpers.assert_no_page_errors(page)
