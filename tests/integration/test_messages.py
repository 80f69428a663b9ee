"""Issue #23's "Unclear" sweep: every public SDK function called with the bad or odd
input a real user gives. Each message must name the problem and a safe fix, be raised
before any work (a ``ParameterError`` with ``.param`` where one argument is at fault),
and leave the dataset as it was. Real FiftyOne datasets on the real MongoDB, real
images; the SwAV case is really offline (an unreachable URL, an empty torch.hub cache).
The table in docs/reliability.md ("Messages") lists each case with its message."""

import os

import numpy as np
import pytest
from PIL import Image

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.core import models
from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import validation
from fiftyone_prune.sdk.demo import write_demo_images
from tests.conftest import unique_name

NUM = 40


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """40 real 8x8 digits (10 classes) with their pixels as a per-sample vector field,
    a scalar field, and one box per sample carrying an object-level vector (what
    ``compute_embeddings(patches_field=...)`` writes), scored once (run "proto")."""
    folder = tmp_path_factory.mktemp("messages")
    items = write_demo_images(str(folder), "digits", max_samples=NUM, seed=0)
    dataset = fo.Dataset(unique_name("messages"))
    rng = np.random.default_rng(0)
    samples = []
    for path, label in items:
        pixels = np.asarray(Image.open(path), dtype=np.float32).ravel() + 1.0
        samples.append(fo.Sample(
            filepath=path, ground_truth=fo.Classification(label=label), pixels=pixels,
            score_num=float(rng.random()),
            boxes=fo.Detections(detections=[fo.Detection(
                label=label, bounding_box=[0.1, 0.1, 0.5, 0.5],
                emb=rng.random(8).astype(np.float32))])))
    dataset.add_samples(samples)
    # declared as compute_embeddings(patches_field="boxes") declares its vectors
    dataset.add_sample_field("boxes.detections.emb", fo.VectorField)
    fop.compute_prototype_scores(dataset, "pixels", run_key="proto", num_clusters=3)
    yield dataset
    fo.delete_dataset(dataset.name)


def _state(dataset):
    """What a refused call must leave as it was."""
    dataset.reload()
    return (sorted(dataset.get_field_schema(flat=True)), sorted(dataset.list_runs()),
            dataset.count_sample_tags(), len(dataset), sorted(dataset.list_saved_views()))


def _offline_swav(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    monkeypatch.setattr(models, "SWAV_URL", "http://127.0.0.1:9/swav_800ep_pretrain.pth.tar")
    fop.compute_embeddings(ds, model="swav_resnet50", embeddings_field="swav_x",
                           num_workers=0)


# (id, call, param, key words of the problem and of the fix)
CASES = [
    ("swav-offline", _offline_swav, "checkpoint_path",
     ["not on this machine", "could not be downloaded", os.path.join("hub", "checkpoints"),
      "checkpoint_path=", "model='efficientnet_lite0'", "Nothing was written"]),
    ("swav-checkpoint-missing",
     lambda ds, t, m: fop.compute_embeddings(ds, checkpoint_path=str(t / "nope.pth.tar")),
     "checkpoint_path", ["nope.pth.tar", "does not exist", "swav_800ep_pretrain.pth.tar",
                         "efficientnet_lite0"]),
    ("checkpoint-with-another-model",
     lambda ds, t, m: fop.compute_embeddings(ds, model="efficientnet_lite0",
                                             embeddings_field="e",
                                             checkpoint_path=str(t / "x.pth")),
     "checkpoint_path", ["applies to model='swav_resnet50' only", "leave it unset"]),
    ("embed-not-a-dataset",
     lambda ds, t, m: fop.compute_embeddings(list(ds), model="efficientnet_lite0"),
     "samples", ["must be a FiftyOne dataset or view", "list"]),
    ("embed-into-a-label-field",
     lambda ds, t, m: fop.compute_embeddings(ds, model="efficientnet_lite0",
                                             embeddings_field="ground_truth"),
     "embeddings_field", ["already exists", "not a VectorField", "choose another",
                          "nothing is overwritten"]),
    ("embed-patches-of-a-classification",
     lambda ds, t, m: fop.compute_embeddings(ds, model="efficientnet_lite0",
                                             embeddings_field="e",
                                             patches_field="ground_truth"),
     "patches_field", ["must be a Detection or Detections field", "Classification"]),
    ("embed-unknown-model",
     lambda ds, t, m: fop.compute_embeddings(ds, model="resnet9000"),
     "model", ["Unknown model 'resnet9000'", "efficientnet_lite0", "zoo"]),
    ("embed-empty-batch-size",
     lambda ds, t, m: fop.compute_embeddings(ds, model="efficientnet_lite0", batch_size=0),
     "batch_size", ["batch_size", "positive integer"]),
    ("score-a-scalar-field",
     lambda ds, t, m: fop.compute_prototype_scores(ds, "score_num", run_key="s"),
     "embeddings_field", ["'score_num' is a FloatField, not a vector field", "pixels"]),
    ("score-a-missing-field",
     lambda ds, t, m: fop.compute_prototype_scores(ds, "nope", run_key="s"),
     "embeddings_field", ["'nope' does not exist", "compute_embeddings", "pixels"]),
    ("score-k-zero",
     lambda ds, t, m: fop.compute_prototype_scores(ds, "pixels", run_key="s",
                                                   num_clusters=0),
     "num_clusters", ["num_clusters", "positive integer"]),
    ("score-k-above-n",
     lambda ds, t, m: fop.compute_prototype_scores(ds, "pixels", run_key="s",
                                                   num_clusters=NUM + 1),
     "num_clusters", [f"exceeds the number of samples with embeddings ({NUM})",
                      f"at most {NUM}"]),
    ("score-an-empty-view",
     lambda ds, t, m: fop.compute_prototype_scores(ds.limit(0), "pixels", run_key="s"),
     "samples", ["The view is empty (0 samples)", "at least one sample"]),
    ("score-an-empty-dataset",
     lambda ds, t, m: fop.compute_prototype_scores(fo.Dataset(unique_name("empty")),
                                                   "pixels", run_key="s"),
     "samples", ["is empty (0 samples)", "add samples first"]),
    ("score-odd-run-key",
     lambda ds, t, m: fop.compute_prototype_scores(ds, "pixels", run_key="my run!"),
     "run_key", ["Invalid run key 'my run!'", "identifier", "e.g."]),
    ("score-taken-run-key",
     lambda ds, t, m: fop.compute_prototype_scores(ds, "pixels", run_key="proto"),
     "run_key", ["'proto' is already used", "overwrite=True", "another run key"]),
    ("select-keep-zero",
     lambda ds, t, m: fop.select_samples(ds, "proto", keep=0, name="m"),
     "keep", ["keep=0", "at least 1", "fraction such as 0.8"]),
    ("select-keep-n-plus-one",
     lambda ds, t, m: fop.select_samples(ds, "proto", keep=NUM + 1, name="m"),
     "keep", [str(NUM + 1), f"the view has {NUM} scored samples"]),
    ("select-keep-text",
     lambda ds, t, m: fop.select_samples(ds, "proto", keep="half", name="m"),
     "keep", ["keep must be a fraction in (0, 1]", "0.8", "integer count"]),
    ("select-unknown-run",
     lambda ds, t, m: fop.select_samples(ds, "nope", name="m"),
     "run_key", ["No prototype-score run 'nope'", "compute_prototype_scores", "proto"]),
    ("select-odd-name",
     lambda ds, t, m: fop.select_samples(ds, "proto", name="my selection"),
     "name", ["Invalid run key 'my selection'", "letters, digits, underscores"]),
    ("select-detections-as-labels",
     lambda ds, t, m: fop.select_samples(ds, "proto", balance="class", label_field="boxes",
                                         name="m"),
     "label_field", ["'boxes' is a Detections field, not a Classification field",
                     "ground_truth"]),
    ("select-an-empty-view",
     lambda ds, t, m: fop.select_samples(ds.limit(0), "proto", name="m"),
     "samples", ["empty", "0 samples"]),
    ("evaluate-single-class",
     lambda ds, t, m: fop.evaluate_pruning(ds.match(fo.ViewField("ground_truth.label") == "0"),
                                           "ground_truth", "proto", eval_key="m"),
     "label_field", ["single class ('0'", "1.00", "measure nothing",
                     "at least two classes"]),
    ("evaluate-object-level-vectors",
     lambda ds, t, m: fop.evaluate_pruning(ds, "ground_truth", "proto", eval_key="m",
                                           embeddings_field="emb"),
     "embeddings_field", ["object-level vectors", "'boxes.detections.emb'",
                          "patches_field='boxes'", "one vector per sample",
                          "fop.compute_embeddings(dataset, embeddings_field='emb_image')"]),
    ("evaluate-detections-as-labels",
     lambda ds, t, m: fop.evaluate_pruning(ds, "boxes", "proto", eval_key="m"),
     "label_field", ["'boxes' is a Detections field", "ground_truth"]),
    ("export-no-folder",
     lambda ds, t, m: fop.export_kept_samples(ds, None),
     "export_dir", ["export_dir must be the path of the folder to export to", "None",
                    "e.g."]),
    ("export-blank-folder",
     lambda ds, t, m: fop.export_kept_samples(ds, "  "),
     "export_dir", ["export_dir must be the path of the folder to export to", "e.g."]),
    ("export-missing-label-field",
     lambda ds, t, m: fop.export_kept_samples(ds, str(t / "out"), label_field="labels"),
     "label_field", ["'labels' does not exist", "ground_truth", "omit label_field"]),
    ("export-an-empty-view",
     lambda ds, t, m: fop.export_kept_samples(ds.limit(0), str(t / "out")),
     "view", ["empty", "0 samples"]),
    ("export-unknown-selection",
     lambda ds, t, m: fop.export_kept_samples(ds, str(t / "out"), selection="nope"),
     "selection", ["No selection named 'nope'", "fop.select_samples(..., name='nope')",
                   "omit selection"]),
    ("export-unknown-format",
     lambda ds, t, m: fop.export_kept_samples(ds, str(t / "out"), dataset_type="zip"),
     "dataset_type", ["Unknown dataset_type 'zip'", "use one of"]),
    ("load-evaluation-of-a-scoring-run",
     lambda ds, t, m: fop.load_evaluation(ds, "proto"),
     "eval_key", ["'proto' is not an evaluation run", "fop.evaluate_pruning()"]),
    ("evaluate-unknown-test-tag",
     lambda ds, t, m: fop.evaluate_pruning(ds, "ground_truth", "proto", eval_key="m",
                                           test_tag="heldout"),
     "test_tag", ["No sample of this view carries the test tag 'heldout'",
                  "omit test_tag"]),
    ("evaluate-fraction-zero",
     lambda ds, t, m: fop.evaluate_pruning(ds, "ground_truth", "proto", eval_key="m",
                                           fractions=[0, 0.5]),
     "fractions", ["fractions must be kept fractions in (0, 1]", "[0, 0.5]"]),
    ("select-unknown-strategy",
     lambda ds, t, m: fop.select_samples(ds, "proto", strategy="hardest", name="m"),
     "strategy", ["Unknown strategy 'hardest'", "'hard'"]),
    ("histogram-no-bins",
     lambda ds, t, m: fop.selection_histogram(ds, "proto", num_bins=0),
     "num_bins", ["num_bins must be a positive integer, got 0"]),
    ("export-unknown-media-mode",
     lambda ds, t, m: fop.export_kept_samples(ds, str(t / "out"), export_media="maybe"),
     "export_media", ["export_media='maybe' is not one of", "'symlink'"]),
    ("dedup-eps-zero",
     lambda ds, t, m: fop.deduplicate(ds, "proto", eps=0),
     "eps", ["eps=0 is outside (0, 1)"]),
    ("embed-tiny-image-size",
     lambda ds, t, m: fop.compute_embeddings(ds, model="efficientnet_lite0", image_size=4),
     "image_size", ["image_size=4", "[8, inf]"]),
    ("embed-unknown-device",
     lambda ds, t, m: fop.compute_embeddings(ds, model="efficientnet_lite0", device="tpu"),
     "device", ["device='tpu'", "'cpu'"]),
    ("rename-to-odd-key",
     lambda ds, t, m: fop.rename_run(ds, "proto", "new key"),
     "new_run_key", ["Invalid run key 'new key'", "identifier"]),
    ("delete-unknown-run",
     lambda ds, t, m: fop.delete_run(ds, "nope"),
     "run_key", ["No fiftyone-prune run with key 'nope'", "proto"]),
]


@pytest.mark.parametrize("call,param,words", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_names_the_problem_and_the_fix_before_any_work(ds, tmp_path, monkeypatch,
                                                                 call, param, words):
    before = _state(ds)
    with pytest.raises(ParameterError) as err:
        call(ds, tmp_path, monkeypatch)
    message = str(err.value)
    assert err.value.param == param, message
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message and "Traceback" not in message
    assert _state(ds) == before  # nothing written, nothing lost


def test_object_level_vectors_are_named_as_such_for_scoring(ds):
    """compute_prototype_scores on object-level vectors names them as such and the fix
    (not "compute embeddings first"), for the attribute's name and for its full path;
    nothing is written."""
    before = ds.count_values("tags"), sorted(ds.get_field_schema()), ds.list_runs()
    for given in ("emb", "boxes.detections.emb"):
        with pytest.raises(ParameterError) as err:
            fop.compute_prototype_scores(ds, given, run_key="objects", num_clusters=2)
        assert err.value.param == "embeddings_field"
        message = str(err.value)
        assert "object-level vectors ('boxes.detections.emb'" in message
        assert "scoring reads one vector per sample" in message and "'pixels'" in message
    assert (ds.count_values("tags"), sorted(ds.get_field_schema()), ds.list_runs()) == before
    assert validation.check_embeddings_field(ds, "pixels") == "pixels"


def test_a_dedup_that_keeps_fewer_than_asked_says_why_and_the_fix(ds, caplog):
    plan = fop.plan_selection(ds, "proto", keep=30, strategy="hard", balance=None,
                              dedup_eps=0.9, name="short")
    kept = len(plan.kept_ids)
    assert kept < 30 and len(plan.duplicate_ids) == NUM - kept
    warning = plan.summary()["warning"]
    assert warning.startswith(f"kept {kept} of the 30 asked")
    assert f"removed {NUM - kept} near-duplicates" in warning and "lower dedup_eps" in warning
    # the selection itself: logged, and kept in the run's results
    with caplog.at_level("WARNING"):
        fop.select_samples(ds, "proto", keep=30, strategy="hard", balance=None,
                           dedup_eps=0.9, name="short")
    try:
        assert warning in caplog.text
        assert fop.load_run_results(ds, "short_selection").warning == warning
        full = fop.plan_selection(ds, "proto", keep=30, strategy="hard", balance=None)
        assert full.summary()["warning"] is None and len(full.kept_ids) == 30
    finally:
        fop.delete_run(ds, "short_selection")


def test_a_deleted_field_behind_a_run_is_named_with_safe_fixes(ds):
    fop.compute_prototype_scores(ds, "pixels", run_key="gone", num_clusters=2)
    try:
        ds.delete_sample_field("gone_distance")
        before = _state(ds)
        with pytest.raises(ParameterError) as err:
            fop.select_samples(ds, "gone", name="g")
        message = str(err.value)
        assert err.value.param == "run_key"
        assert "'gone_distance'" in message and "no longer exist" in message
        assert "overwrite=True" in message and "fop.delete_run(dataset, 'gone')" in message
        assert _state(ds) == before
    finally:
        fop.delete_run(ds, "gone")


@pytest.mark.parametrize("bad", ["nan", "dims"])
def test_nan_and_mixed_size_vectors_name_a_sample_and_write_nothing(ds, bad):
    view = ds.limit(12)
    values = [np.ones(8, np.float32) * (i + 1) + np.arange(8) for i in range(12)]
    odd = view.values("id")[5]
    values[5] = (np.full(8, np.nan, np.float32) if bad == "nan"
                 else np.ones(5, np.float32))
    view.set_values("vec_" + bad, values)
    try:
        before = _state(ds)
        with pytest.raises(ValueError) as err:
            fop.compute_prototype_scores(view, "vec_" + bad, run_key="v", num_clusters=2)
        message = str(err.value)
        assert odd in message
        if bad == "nan":
            assert "NaN or inf" in message and "recompute them or exclude" in message
        else:
            assert "mixed dimensions" in message and "recompute them with one model" in message
        assert _state(ds) == before and "v" not in ds.list_runs()
    finally:
        ds.delete_sample_field("vec_" + bad)


def test_boxes_without_a_pixel_in_their_image_are_skipped_and_reported(
        tmp_path, efficientnet_small, caplog):
    """A box outside the image (or empty, or not finite) is skipped with its sample and
    label id and the fix, not embedded as a 1-pixel crop; a box partly outside is
    cropped to the part inside and embedded."""
    path = str(tmp_path / "img.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
                    ).save(path)
    boxes = {"inside": [0.1, 0.1, 0.5, 0.5], "partly": [0.8, 0.8, 0.5, 0.5],
             "outside": [1.2, 0.1, 0.3, 0.3], "empty": [0.2, 0.2, 0.0, 0.3],
             "negative": [-0.6, 0.1, 0.4, 0.4]}
    dataset = fo.Dataset(unique_name("boxes"))
    try:
        sample = fo.Sample(filepath=path, objects=fo.Detections(detections=[
            fo.Detection(label=name, bounding_box=box) for name, box in boxes.items()]))
        dataset.add_sample(sample)
        with caplog.at_level("WARNING"):
            result = fop.compute_embeddings(dataset, model=efficientnet_small,
                                            embeddings_field="emb", patches_field="objects",
                                            num_workers=0)
        ids = {d.label: d.id for d in dataset.first().objects.detections}
        bad = {ids[n] for n in ("outside", "empty", "negative")}
        assert set(result.invalid_boxes) == bad and result.num_embedded == 2
        assert result.failed_ids == []
        for label_id in bad:
            why = result.invalid_boxes[label_id]
            assert why.startswith(f"sample {sample.id}, label {label_id}: box [")
            assert "skipped" in why and "Fix its bounding_box" in why
        assert "lies outside the image" in result.invalid_boxes[ids["outside"]]
        assert "is empty" in result.invalid_boxes[ids["empty"]]
        labels, vectors = dataset.values(["objects.detections.label",
                                          "objects.detections.emb"])
        stored = dict(zip(labels[0], vectors[0]))  # read from the database
        assert stored["inside"] is not None and stored["partly"] is not None
        assert all(stored[n] is None for n in ("outside", "empty", "negative"))
        assert "3 box(es) of 'objects' have no pixel inside their image" in caplog.text
        run = fop.load_run_results(dataset, "objects_emb")
        assert run.num_invalid_boxes == 3 and set(run.invalid_boxes) == bad
    finally:
        fo.delete_dataset(dataset.name)


def test_odd_images_embed_and_unreadable_ones_are_named(tmp_path, efficientnet_small,
                                                        caplog):
    """Grayscale, CMYK and 16-bit images embed; a corrupt file and a missing one are
    listed by sample id with their error and the fix, the rest is written."""
    rng = np.random.default_rng(1)
    paths = {}
    for mode in ("L", "CMYK", "I;16"):
        paths[mode] = str(tmp_path / f"{mode.replace(';', '')}.{'tif' if mode != 'L' else 'png'}")
    Image.fromarray(rng.integers(0, 255, (40, 40), np.uint8), "L").save(paths["L"])
    Image.new("CMYK", (40, 40), (10, 200, 30, 5)).save(paths["CMYK"])
    Image.fromarray(rng.integers(0, 65535, (40, 40), np.uint16)).save(paths["I;16"])
    paths["corrupt"] = str(tmp_path / "corrupt.png")
    with open(paths["corrupt"], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    paths["missing"] = str(tmp_path / "missing.png")
    dataset = fo.Dataset(unique_name("modes"))
    try:
        dataset.add_samples([fo.Sample(filepath=p, kind=k) for k, p in paths.items()])
        with caplog.at_level("WARNING"):
            result = fop.compute_embeddings(dataset, model=efficientnet_small,
                                            embeddings_field="emb", num_workers=0)
        by_kind = dict(zip(*dataset.values(["kind", "id"])))
        assert set(result.failed_ids) == {by_kind["corrupt"], by_kind["missing"]}
        assert result.num_embedded == 3
        assert "No such file" in result.failures[by_kind["missing"]]
        assert "2 image(s) could not be read" in caplog.text
        assert "rerun" in caplog.text  # the fix: repair the files, rerun to embed them
        assert dataset.exists("emb").count() == 3
    finally:
        fo.delete_dataset(dataset.name)


def test_a_dataset_name_where_a_dataset_is_expected_says_how_to_load_it(ds):
    for call in (lambda: fop.purge(ds.name, dry_run=True),
                 lambda: fop.select_samples(ds.name, "proto", name="m")):
        with pytest.raises(TypeError) as err:
            call()
        assert "must be a FiftyOne dataset or view, got str" in str(err.value)
        assert f"fo.load_dataset({ds.name!r})" in str(err.value)
