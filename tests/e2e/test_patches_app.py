"""Object-level pruning from the real App, as a FiftyOne user with a detections field
does it: the embeddings form embeds each box (Patches field), the scores form scores
each object, the panel previews a selection of objects, shows them as patches hardest
first, and its Apply selection tags them;
each step checked in the database. 10 real digits with two boxes each."""

from __future__ import annotations

import re

import pytest

from tests.e2e import helpers
from tests.e2e.test_panel_app import _delete, _per_class, _persistent_dataset

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(helpers.missing_browser_reason() is not None,
                       reason=helpers.missing_browser_reason() or ""),
]

N = 10


@pytest.fixture(scope="module")
def boxes_dataset(digits_images, app_server):
    import fiftyone as fo

    dataset = _persistent_dataset("e2e-boxes", _per_class(digits_images, 1))
    try:
        for sample in dataset:
            sample["objects"] = fo.Detections(detections=[
                fo.Detection(label="top", bounding_box=[0.0, 0.0, 1.0, 0.6]),
                fo.Detection(label="bottom", bounding_box=[0.0, 0.4, 1.0, 0.6])])
            sample.save()
        yield dataset
    finally:
        _delete(dataset)


@pytest.mark.slow  # three forms executed and the panel (over 20 s on 2 cores)
def test_objects_embedded_scored_and_selected_from_the_forms_and_the_panel(
        page, app_server, boxes_dataset, shoot):
    from playwright.sync_api import expect

    helpers.open_dataset(page, app_server.url, boxes_dataset.name, N)

    # 1. each box's crop embedded onto its label
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_embeddings"])
    page.get_by_role("radio", name="EfficientNet-Lite0 (ImageNet, offline)").check()
    field = helpers.form_input(page, "Embeddings field")
    expect(field).to_have_value("efficientnet_lite0_embedding")
    helpers.choose(page, "Patches field", "objects: embed each object's crop")
    helpers.fill_and_resolve(page, helpers.form_input(page, "Embeddings field"), "box_emb")
    expect(execute).to_be_enabled()
    execute.click()
    helpers.close_output(page, "Embeddings computed", timeout=180_000)
    boxes_dataset.reload()
    assert boxes_dataset.count("objects.detections.box_emb") == 2 * N
    assert not boxes_dataset.has_field("box_emb")

    # 2. each object scored: the form offers the boxes and their vector attribute
    execute = helpers.open_operator(page, helpers.OPERATOR_LABELS["compute_prototype_scores"])
    helpers.choose(page, "Patches field", "objects: score each object")
    expect(helpers.form_select(page, "Embeddings field")).to_have_text("box_emb")
    helpers.fill_and_resolve(page, helpers.form_input(page, "Run key"), "boxes")
    helpers.fill_and_resolve(page, helpers.form_input(page, "Number of prototypes k (optional)"),
                             "2")
    expect(execute).to_be_enabled()
    shoot(page, "patches_scores_form")
    execute.click()
    output = helpers.close_output(page, "Prototype scores computed")
    assert re.search(rf"\b{2 * N}\b", output), output
    boxes_dataset.reload()
    assert boxes_dataset.count("objects.detections.boxes_distance") == 2 * N
    assert fop_config(boxes_dataset).patches_field == "objects"

    # 3. the panel on the object run: counts of objects, class = the boxes' labels
    helpers.open_panel(page, "Data pruning")
    expect(page.get_by_text(re.compile(r"keeps\s+16\b.*objects of 'objects'"))).to_be_visible(
        timeout=60_000)
    # the histogram of the objects' distances (its title is the label attribute)
    expect(page.get_by_text("objects.detections.boxes_distance").first).to_be_visible(
        timeout=60_000)
    shoot(page, "patches_panel")
    # "Show hardest": the objects themselves, as patches, hardest first; the panel and
    # the select form keep working on their source's labels
    bar = helpers.view_bar(page)
    page.get_by_role("button", name="Show hardest", exact=True).click()
    expect(bar).to_contain_text("ToPatches", timeout=30_000)
    expect(bar).to_contain_text("SortBy")
    expect(helpers.sample_count(page)).to_have_text(re.compile(rf"^\s*{2 * N}\s+patches\b"))
    expect(page.get_by_text(re.compile(r"shown as patches"))).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"keeps\s+16\b.*objects of 'objects'"))).to_be_visible(
        timeout=60_000)
    shoot(page, "patches_show_hardest")
    apply = page.get_by_role("button", name="Apply selection", exact=True)
    expect(apply).to_be_enabled()
    apply.click()
    execute = helpers.execute_button(page)
    expect(execute).to_be_visible(timeout=30_000)
    expect(page.get_by_role("dialog").get_by_text(
        re.compile(rf"Preview.*on {2 * N} scored objects of 'objects'"))).to_be_visible()
    expect(execute).to_be_enabled()
    execute.click()
    helpers.close_output(page, "Selection applied")
    boxes_dataset.reload()
    assert boxes_dataset.count_label_tags() == {"boxes:kept": 16, "boxes:pruned": 4}
    assert boxes_dataset.count_sample_tags() == {}
    kept = boxes_dataset.load_saved_view("boxes-kept")
    assert kept.count("objects.detections") == 16
    helpers.assert_no_page_errors(page)


def fop_config(dataset):
    import fiftyone_prune as fop

    return fop.get_run_info(dataset, "boxes").config
