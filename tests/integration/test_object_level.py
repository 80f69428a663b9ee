"""Object-level (patches) pruning: each box of a Detections (or Detection) field embedded
with a real torch model onto its label, scored against prototypes of all objects, selected
by label tags, exported and purged; the forms and the panel on such a run. Real FiftyOne
datasets on the real mongod, real images, real faiss."""

import csv
import json
import re

import numpy as np
import pytest
from bson import ObjectId
from PIL import Image

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone import ViewField as F
from fiftyone.operators.executor import ExecutionContext, Executor

import fiftyone_prune as fop
from fiftyone_prune.core import prototypes as core
from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.plugin.panels import PruningPanel
from fiftyone_prune.sdk.demo import write_demo_images
from fiftyone_prune.sdk.object_scores import read_labels
from tests.conftest import unique_name
from tests.integration.test_panel import plot_data, render, run_event

URI = "@fiftyone-prune/prune/"
NUM = 24


@pytest.fixture(scope="module")
def objects_dataset(tmp_path_factory, efficientnet_small):
    """24 real digit images with 1-3 boxes each ("objects", labelled by their quarter of
    the image) and one box per odd sample ("box"), every box embedded onto its label by
    the real EfficientNet-Lite0 (32 px)."""
    folder = tmp_path_factory.mktemp("objects")
    items = write_demo_images(str(folder), "digits", max_samples=NUM, seed=0)
    corners = [[0.0, 0.0, 0.6, 0.6], [0.4, 0.0, 0.6, 0.6], [0.0, 0.4, 0.6, 0.6]]
    dataset = fo.Dataset(unique_name("objects"))
    dataset.add_samples([fo.Sample(
        filepath=path, ground_truth=fo.Classification(label=label),
        objects=fo.Detections(detections=[
            fo.Detection(label=f"q{j}", bounding_box=corners[j]) for j in range(1 + i % 3)]),
        box=fo.Detection(label=label, bounding_box=[0.1, 0.1, 0.8, 0.8]) if i % 2 else None)
        for i, (path, label) in enumerate(items)])
    for field in ("objects", "box"):
        result = fop.compute_embeddings(dataset, model=efficientnet_small,
                                        embeddings_field="emb", patches_field=field,
                                        num_workers=0)
        assert result.num_failed == 0
    yield dataset
    fo.delete_dataset(dataset.name)


@pytest.fixture
def dataset(objects_dataset):
    """A copy per test: every test starts from the embedded boxes alone."""
    copy = objects_dataset.clone(unique_name("objects-copy"))
    yield copy
    if fo.dataset_exists(copy.name):
        fo.delete_dataset(copy.name)


def _vectors(dataset, path="objects.detections"):
    _, ids, columns = read_labels(dataset, path, path == "box", ["emb"])
    return ids, np.stack(columns["emb"]).astype(np.float32)


def _scores_by_label(dataset, path, run_key):
    _, ids, columns = read_labels(dataset, path, path == "box",
                                  [f"{run_key}_distance", f"{run_key}_cluster", "tags"])
    return {i: (d, c, t) for i, d, c, t in zip(
        ids, columns[f"{run_key}_distance"], columns[f"{run_key}_cluster"], columns["tags"])}


def test_each_object_is_scored_on_its_label_as_the_core_scores_its_vector(dataset):
    ids, x = _vectors(dataset)
    result = fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                          patches_field="objects")
    assert result.num_scored == len(ids) == 48  # 1 + 2 + 3 boxes per 3 samples
    assert result.distance_field == "objects.detections.obj_distance"
    # the same steps on the same vectors, in this process
    core.l2_normalize(x, out=x)
    centroids = core.spherical_kmeans(x, 3, niter=25, seed=51, max_points_per_centroid=256)
    cluster, distance = core.nearest_prototype(x, centroids)
    stored = _scores_by_label(dataset, "objects.detections", "obj")
    np.testing.assert_allclose([stored[i][0] for i in ids], distance, rtol=1e-5, atol=1e-6)
    assert [stored[i][1] for i in ids] == cluster.tolist()
    assert not dataset.has_field("obj_distance")  # on the labels, not the samples
    info = fop.get_run_info(dataset, "obj")
    assert info.config.patches_field == "objects" and fop.run_status(dataset, "obj") == "complete"
    assert info.config.check == {"count": 48, "sum": pytest.approx(float(distance.sum()))}

    # class prototypes from each object's own label; a Detection field too
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", method="supervised",
                                 patches_field="objects", overwrite=True)
    stored = _scores_by_label(dataset, "objects.detections", "obj")
    _, label_ids, columns = read_labels(dataset, "objects.detections", False, ["label"])
    labels = dict(zip(label_ids, columns["label"]))
    assert all(stored[i][1] == labels[i] for i in ids)
    assert isinstance(dataset.get_field("objects.detections.obj_cluster"), fo.StringField)
    single = fop.compute_prototype_scores(dataset, "emb", run_key="one", num_clusters=2,
                                          patches_field="box")
    assert single.num_scored == NUM // 2 == dataset.count("box.one_distance")


def test_an_object_without_a_vector_is_skipped_and_an_overwrite_keeps_the_old_values_on_failure(
        dataset):
    sample = dataset.first()
    sample.objects.detections.append(fo.Detection(label="new", bounding_box=[0.2, 0.2, 0.3, 0.3]))
    sample.save()
    new_id = sample.objects.detections[-1].id
    result = fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                          patches_field="objects")
    assert result.skipped_ids == [new_id] and result.num_scored == 48
    before = _scores_by_label(dataset, "objects.detections", "obj")
    # a NaN vector: refused before anything changes, the old run and values intact
    broken = dataset.skip(3).first()
    broken.objects.detections[0]["emb"] = np.full(len(broken.objects.detections[0]["emb"]),
                                                  np.nan, dtype=np.float32)
    broken.save()
    with pytest.raises(ValueError, match="NaN or inf"):
        fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=4,
                                     patches_field="objects", overwrite=True)
    assert _scores_by_label(dataset, "objects.detections", "obj") == before
    assert fop.get_run_info(dataset, "obj").config.num_clusters == [3]
    assert fop.run_status(dataset, "obj") == "complete"
    assert not [k for k in dataset.first().objects.detections[0].to_dict() if "staging" in k]
    # what a killed overwrite staged on the labels is removed by the next writer
    first = dataset.first().objects.detections[0].id
    dataset.set_label_values("objects.detections.obj_distance_staging_0a1b2c3d", {first: 0.5})
    broken.objects.detections[0]["emb"] = broken.objects.detections[1]["emb"] if len(
        broken.objects.detections) > 1 else np.ones(1280, dtype=np.float32)
    broken.save()
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=4,
                                 patches_field="objects", overwrite=True)
    assert "obj_distance_staging_0a1b2c3d" not in dataset._sample_collection.find_one(
        {"objects.detections._id": ObjectId(first)})["objects"]["detections"][0]
    assert fop.get_run_info(dataset, "obj").config.num_clusters == [4]


def test_a_selection_of_objects_tags_labels_and_saves_the_kept_objects(dataset):
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    kept = fop.select_samples(dataset, "obj", keep=0.5, strategy="hard", balance=None,
                              name="half")
    stored = _scores_by_label(dataset, "objects.detections", "obj")
    distances = sorted(d for d, _, _ in stored.values())
    hardest = {i for i, (d, _, _) in stored.items() if d >= distances[24]}
    tagged = {i for i, (_, _, tags) in stored.items() if "half:kept" in tags}
    assert tagged == hardest and len(tagged) == 24
    assert dataset.count_label_tags() == {"half:kept": 24, "half:pruned": 24}
    assert dataset.count_sample_tags() == {}  # the samples are untouched
    # the saved view: the images with a kept object, showing only their kept objects
    saved = dataset.load_saved_view("half-kept")
    assert set(saved.values("objects.detections.id", unwind=True)) == tagged
    assert set(kept.values("objects.detections.id", unwind=True)) == tagged
    assert fop.run_status(dataset, "half_selection") == "complete"

    # per class: the objects' own labels are the groups
    fop.select_samples(dataset, "obj", keep=12, strategy="easy", balance="class",
                       name="half", overwrite=True)
    kept_labels = dataset.filter_labels("objects", F("tags").contains("half:kept")).values(
        "objects.detections.label", unwind=True)
    # 24, 16 and 8 objects of q0, q1, q2: each keeps at least half its fair share (12 / 3)
    assert len(kept_labels) == 12 and all(kept_labels.count(q) >= 2 for q in ("q0", "q1", "q2"))
    plan = fop.get_run_info(dataset, "half_selection")
    assert fop.load_run_results(dataset, "half_selection").groups == {
        q: {"total": n, "kept": kept_labels.count(q)} for q, n in (("q0", 24), ("q1", 16),
                                                                   ("q2", 8))}
    assert plan.config.balance == "class"
    assert dataset.count_label_tags() == {"half:kept": 12, "half:pruned": 36}

    # FiftyOne's own rename and delete move and remove the label tags and the view
    dataset.rename_run("half_selection", "other_selection")
    assert dataset.count_label_tags() == {"other:kept": 12, "other:pruned": 36}
    assert dataset.list_saved_views() == ["other-kept"]
    assert dataset.load_saved_view("other-kept").count("objects.detections") == 12
    dataset.delete_run("other_selection")
    assert dataset.count_label_tags() == {} and dataset.list_saved_views() == []
    # a rename of the scoring run renames its label attributes
    dataset.rename_run("obj", "objs")
    assert dataset.has_field("objects.detections.objs_distance")
    assert not dataset.has_field("objects.detections.obj_distance")
    assert dataset.count("objects.detections.objs_distance") == 48


def test_tags_changed_by_hand_make_the_selection_mismatched(dataset):
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    fop.select_samples(dataset, "obj", keep=0.5, strategy="random", name="half")
    dataset.untag_labels("half:kept", label_fields=["objects"])
    assert "tag counts do not match" in fop.run_status(dataset, "half_selection")


def test_kept_objects_export_with_a_manifest_of_their_scores_and_purge_removes_all(
        dataset, tmp_path_factory):
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    kept = fop.select_samples(dataset, "obj", keep=0.5, strategy="hard", balance=None,
                              name="half")
    out = tmp_path_factory.mktemp("exports", numbered=True) / "coco"
    # outside the images' folder (the export refuses a folder inside it)
    result = fop.export_kept_samples(kept, str(out), dataset_type="coco",
                                     label_field="objects")
    manifest = json.loads(open(result["manifest"]).read())
    assert manifest["selection"]["name"] == "half"
    exported = json.loads(open(out / "labels.json").read())
    assert len(exported["annotations"]) == 24  # only the kept boxes
    rows = list(csv.DictReader(open(result["manifest_csv"])))
    assert len(rows) == len(kept)
    stored = _scores_by_label(dataset, "objects.detections", "obj")
    for row in rows:
        sample = dataset[row["id"]]
        distances = json.loads(row["objects.detections.obj_distance"])
        labels = json.loads(row["objects"])
        assert len(distances) == len(labels) >= 1
        kept_ids = [d.id for d in sample.objects.detections if "half:kept" in d.tags]
        assert distances == pytest.approx([stored[i][0] for i in kept_ids])
        assert labels == [d.label for d in sample.objects.detections if d.id in kept_ids]

    report = fop.purge(dataset)
    assert "objects.detections.obj_distance" not in dataset.get_field_schema(flat=True)
    assert dataset.count_label_tags() == {} and dataset.list_saved_views() == []
    assert set(report["runs"]) >= {"obj", "half_selection"}


def test_leftover_label_tags_of_a_killed_selection_writer_are_purged(dataset):
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    first = dataset.first().objects.detections[0].id
    dataset.set_label_values("objects.detections.tags", {first: ["half:kept:staging:0a1b2c3d",
                                                                 "mine"]})
    report = fop.purge(dataset, dry_run=True)
    assert report["label_tags"] == ["half:kept:staging:0a1b2c3d (labels of objects)"]
    fop.purge(dataset)
    assert dataset.count_label_tags() == {"mine": 1}


@pytest.mark.parametrize("kwargs, param, words", [
    (dict(num_shards=2), "num_shards", "shards samples, not objects"),
    (dict(label_field="ground_truth"), "label_field", "each object's own label"),
    (dict(embeddings_field="nope"), "embeddings_field", "vector attributes there: ['emb']"),
    (dict(patches_field="ground_truth"), "patches_field", "Detection or Detections"),
    (dict(num_clusters=1000), "num_clusters", "objects with a vector (48)"),
])
def test_object_scoring_refuses_before_work(dataset, kwargs, param, words):
    args = dict(embeddings_field="emb", run_key="obj", patches_field="objects")
    args.update(kwargs)
    before = sorted(dataset.get_field_schema(flat=True)), dataset.list_runs()
    with pytest.raises(ParameterError, match=re.escape(words)) as e:
        fop.compute_prototype_scores(dataset, **args)
    assert e.value.param == param
    assert (sorted(dataset.get_field_schema(flat=True)), dataset.list_runs()) == before


def test_an_overwrite_scores_what_the_run_it_replaces_scored(dataset):
    dataset.set_values("image_emb", [np.ones(4, dtype=np.float32) * (i + 1)
                                     for i in range(len(dataset))])
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    for kwargs, words in ((dict(embeddings_field="image_emb"), "would score samples"),
                          (dict(embeddings_field="emb", patches_field="box"),
                           "would score the objects of 'box'")):
        with pytest.raises(ParameterError, match=re.escape(words)) as e:
            fop.compute_prototype_scores(dataset, run_key="obj", num_clusters=2,
                                         overwrite=True, **kwargs)
        assert e.value.param == "run_key"
    assert fop.get_run_info(dataset, "obj").config.num_clusters == [3]


def test_patches_views_dedup_and_evaluation_are_refused_naming_the_fix(dataset):
    with pytest.raises(ParameterError, match="patches view") as e:
        fop.compute_prototype_scores(dataset.to_patches("objects"), "emb",
                                     patches_field="objects")
    assert e.value.param == "samples"
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    with pytest.raises(ParameterError, match="leave dedup_eps unset") as e:
        fop.select_samples(dataset, "obj", keep=0.5, dedup_eps=0.1)
    assert e.value.param == "dedup_eps"
    with pytest.raises(ParameterError, match="per-sample scoring runs only") as e:
        fop.evaluate_pruning(dataset, "ground_truth", run_key="obj")
    assert e.value.param == "run_key"


def _scores_form(dataset, params):
    ctx = ExecutionContext(request_params={
        "dataset_name": dataset.name, "view": dataset.view()._serialize(), "params": params})
    return foo.get_operator(URI + "compute_prototype_scores").resolve_input(ctx).type.properties


def test_the_scores_form_offers_the_objects_and_scores_them(dataset):
    props = _scores_form(dataset, {})
    # no image embeddings here: the form says so and offers the objects
    assert props["patches_field"].type.values == ["__images__", "objects", "box"]
    assert "no_image_vectors" in props
    props = _scores_form(dataset, {"patches_field": "objects"})
    assert props["embeddings_field"].type.values == ["emb"]
    assert props["method"].type.values == ["kmeans", "supervised"]
    assert "label_field" not in props and "num_shards" not in props
    props = _scores_form(dataset, {"patches_field": "objects", "embeddings_field": "emb",
                                   "run_key": "p", "num_clusters": "1000"})
    assert props["num_clusters"].invalid and "objects with a vector" in \
        props["num_clusters"].error_message
    result = foo.get_operator(URI + "compute_prototype_scores")(
        dataset, "emb", run_key="objs", num_clusters=3, patches_field="objects")
    assert result["num_scored"] == 48
    assert dataset.count("objects.detections.objs_distance") == 48


def test_the_select_form_and_the_panel_work_on_an_object_run(dataset):
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    ctx = ExecutionContext(request_params={
        "dataset_name": dataset.name, "view": dataset.view()._serialize(),
        "params": {"run_key": "obj", "keep": 0.5, "strategy": "hard"}})
    form = foo.get_operator(URI + "select_samples").resolve_input(ctx).type.properties
    assert form["balance"].type.values == ["cluster", "class", "none"]
    assert "dedup_eps" not in form and "label_field" not in form
    assert "48 scored objects of 'objects'" in form["preview"].default

    out = run_event(dataset, "on_load")
    assert out["state"]["error"] is None
    assert "(objects of 'objects')" in out["state"]["summary"]
    hist = plot_data(out, "histogram")
    assert sum(hist[0]["y"]) + sum(hist[1]["y"]) == 48
    assert out["state"]["histogram_layout"]["yaxis"]["title"]["text"] == "objects"
    out = run_event(dataset, "on_change_balance", state=out["state"], params={"value": "class"})
    assert out["state"]["error"] is None and set(out["state"]["groups"]) == {"q0", "q1", "q2"}
    controls = render(dataset, out["state"]).type.properties["controls"].type.properties
    assert "label_field" not in controls["groups"].type.properties
    # Apply opens the select form without a label field; Show hardest shows the patches
    prompt = run_event(dataset, "apply_selection", state=out["state"])["other"]
    assert "label_field" not in prompt[0]["params"]["params"]
    views = run_event(dataset, "show_hardest", state=out["state"])["other"]
    assert "ToPatches" in str(views[0]["params"]["view"])
    assert "objects.obj_distance" in str(views[0]["params"]["view"])


def test_load_a_runs_samples_shows_the_objects(dataset):
    """'Prune: load a run's samples' on an object run: its objects as patches, hardest
    first; on its selection, the pruned objects (label tags), not samples."""
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    fop.select_samples(dataset, "obj", keep=0.5, strategy="hard", name="half")

    def shown(params):
        result = foo.execute_operator(URI + "load_pruning_run_view",
                                      {"view": dataset.view()}, params=params)
        result.raise_exceptions()
        (uri, sent), = [(r["operator_uri"], r["params"])
                        for r in result.executor.to_json()["requests"]]
        assert uri == "set_view"
        return fo.DatasetView._build(dataset, sent["view"])

    hardest = shown({"run_key": "obj"})
    distances = hardest.values("objects.obj_distance")
    assert len(distances) == 48 and distances == sorted(distances, reverse=True)
    pruned = shown({"run_key": "half_selection", "part": "pruned"})
    assert pruned.count("objects.detections") == 24
    assert set(pruned.distinct("objects.detections.tags")) == {"half:pruned"}


def test_renaming_an_object_run_leaves_samples_without_labels_alone(dataset):
    """FiftyOne's rename of a label attribute writes an empty label into every sample
    whose label field is None: the run renames its attributes itself."""
    fop.compute_prototype_scores(dataset, "emb", run_key="one", num_clusters=2,
                                 patches_field="box")
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    with_box = len(dataset.exists("box"))
    assert with_box == NUM // 2
    before = _scores_by_label(dataset, "box", "one")
    dataset.rename_run("one", "two")
    dataset.rename_run("obj", "objs")
    assert len(dataset.exists("box")) == with_box
    assert dataset._sample_collection.count_documents({"box": {}}) == 0
    assert not dataset.has_field("box.one_distance") and dataset.has_field("box.two_distance")
    assert {i: v[:2] for i, v in _scores_by_label(dataset, "box", "two").items()} == {
        i: v[:2] for i, v in before.items()}
    assert dataset.count("objects.detections.objs_distance") == 48
    assert fop.run_status(dataset, "two") == "complete"
    # a Detection field's run shows its samples by their box's score
    result = foo.execute_operator(URI + "load_pruning_run_view", {"view": dataset.view()},
                                  params={"run_key": "two"})
    result.raise_exceptions()
    (_, sent), = [(r["operator_uri"], r["params"]) for r in result.executor.to_json()["requests"]]
    shown = fo.DatasetView._build(dataset, sent["view"])
    distances = shown.values("box.two_distance")
    assert len(distances) == with_box and distances == sorted(distances, reverse=True)


def test_attributes_left_by_a_killed_first_run_need_overwrite_and_staging_ones_are_purged(
        dataset):
    """A first object run killed mid-write leaves its declared attributes without a run:
    refused until overwrite=True, then replaced (even of another type). Staging
    attributes a killed overwrite left go with delete_run, rename and purge."""
    dataset.add_sample_field("objects.detections.killed_distance", fo.FloatField,
                             description="prototype distance, run killed")
    dataset.add_sample_field("objects.detections.killed_cluster", fo.StringField,
                             description="prototype (cluster/class), run killed")
    first = dataset.first().objects.detections[0].id
    dataset.set_label_values("objects.detections.killed_distance", {first: 0.5})
    with pytest.raises(ParameterError, match="killed before it finished.*overwrite=True"):
        fop.compute_prototype_scores(dataset, "emb", run_key="killed", num_clusters=3,
                                     patches_field="objects")
    fop.compute_prototype_scores(dataset, "emb", run_key="killed", num_clusters=3,
                                 patches_field="objects", overwrite=True)
    assert isinstance(dataset.get_field("objects.detections.killed_cluster"), fo.IntField)
    assert dataset.count("objects.detections.killed_distance") == 48

    def staged(key):
        return dataset._sample_collection.count_documents(
            {f"objects.detections.{key}_distance_staging_0a1b2c3d": {"$exists": True}})

    def stage(key):
        dataset._sample_collection.update_many(
            {"objects.detections.0": {"$exists": True}},
            {"$set": {f"objects.detections.$[].{key}_distance_staging_0a1b2c3d": 0.1}})
        assert staged(key) == NUM

    stage("killed")
    dataset.rename_run("killed", "renamed")
    assert staged("killed") == 0
    stage("renamed")
    dataset.delete_run("renamed")
    assert staged("renamed") == 0
    stage("gone")  # its run deleted without the package
    report = fop.purge(dataset, dry_run=True)
    assert "objects.detections.gone_distance_staging_0a1b2c3d" in report["fields"]
    fop.purge(dataset)
    assert staged("gone") == 0


def test_a_patches_view_is_refused_by_selection_and_mapped_back_by_the_panel(dataset):
    fop.compute_prototype_scores(dataset, "emb", run_key="obj", num_clusters=3,
                                 patches_field="objects")
    patches = dataset.to_patches("objects")
    with pytest.raises(ParameterError, match="patches view") as e:
        fop.select_samples(patches, "obj", keep=0.5)
    assert e.value.param == "samples"
    # the panel after Show hardest: the App's view is the objects as patches
    executor_ctx = ExecutionContext(request_params={
        "dataset_name": dataset.name, "view": patches._serialize(),
        "params": {"panel_id": "p1", "panel_state": {}}}, executor=Executor())
    PruningPanel().on_load(executor_ctx)
    sent = {}
    for r in executor_ctx.executor.to_json()["requests"]:
        if r["operator_uri"] == "patch_panel_state":
            sent.update(r["params"]["state"])
    assert sent["error"] is None and "keeps **38**" in sent["summary"]
    assert "shown as patches" in sent["target"]
