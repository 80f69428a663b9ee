"""compute_embeddings on real FiftyOne datasets (real mongod) with real torch models."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import fiftyone as fo
import fiftyone.core.utils as fou

import fiftyone_prune as fop
from fiftyone_prune.core import models
from fiftyone_prune.sdk import storage
from tests.conftest import unique_name


def bare_forward(model, filepaths):
    transform = model.transform()
    batch = torch.stack([transform(Image.open(p)) for p in filepaths])
    with torch.inference_mode():
        return model.module(batch).numpy()


def test_embeddings_equal_a_bare_forward_pass(digits_dataset, efficientnet_small):
    view = digits_dataset.limit(24)
    result = fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="emb",
                                    batch_size=10, num_workers=1)
    assert result.num_embedded == 24 and result.num_failed == 0
    assert digits_dataset.count("emb") == 24  # only the view was embedded
    stored = np.stack(view.values("emb"))
    expected = bare_forward(efficientnet_small, view.values("filepath"))
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4)
    assert stored.dtype == np.float32
    # FiftyOne's own decoder reads what the fast writer wrote, and vice versa
    info = digits_dataset.get_field("emb").info["fiftyone_prune"]
    assert info["model"] == "efficientnet_lite0" and info["dim"] == 1280


def test_skip_existing_resumes_and_only_embeds_the_rest(digits_dataset, efficientnet_small):
    first = digits_dataset.limit(10)
    fop.compute_embeddings(first, model=efficientnet_small, embeddings_field="emb", num_workers=0)
    before = first.values("emb")
    result = fop.compute_embeddings(digits_dataset.limit(16), model=efficientnet_small,
                                    embeddings_field="emb", num_workers=0)
    assert result.num_skipped_existing == 10 and result.num_embedded == 6
    for a, b in zip(before, first.values("emb")):
        assert np.array_equal(a, b)


def test_interrupted_run_keeps_finished_chunks_and_resumes(digits_dataset, efficientnet_small):
    calls = {"n": 0}

    def stop_after_three_batches(pb):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fop.compute_embeddings(digits_dataset, model=efficientnet_small, embeddings_field="emb",
                               batch_size=4, chunk_size=4, num_workers=0,
                               progress=stop_after_three_batches)
    kept = digits_dataset.count("emb")
    assert 8 <= kept < len(digits_dataset)
    result = fop.compute_embeddings(digits_dataset, model=efficientnet_small,
                                    embeddings_field="emb", batch_size=16, num_workers=0)
    assert result.num_skipped_existing == kept
    assert digits_dataset.count("emb") == len(digits_dataset)


def test_corrupt_and_missing_images_are_reported_not_fatal(digits_dataset, efficientnet_small, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    view_ids = digits_dataset.limit(6).values("id")
    extra = digits_dataset.add_samples([
        fo.Sample(filepath=str(bad)),
        fo.Sample(filepath=str(tmp_path / "missing.jpg")),
    ])
    view = digits_dataset.select(view_ids + list(extra))
    result = fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="emb",
                                    batch_size=3, num_workers=1)
    assert result.num_embedded == 6
    assert sorted(result.failed_ids) == sorted(extra)
    assert all(result.failures[i] for i in extra)
    assert digits_dataset.select(extra).count("emb") == 0


def test_wrong_type_field_is_refused_before_any_work(digits_dataset, efficientnet_small):
    with pytest.raises(ValueError, match="already exists as a StringField"):
        fop.compute_embeddings(digits_dataset, model=efficientnet_small,
                               embeddings_field="filepath")
    with pytest.raises(ValueError, match="not a valid field name"):
        fop.compute_embeddings(digits_dataset, model=efficientnet_small,
                               embeddings_field="bad name")
    with pytest.raises(ValueError, match="Unknown model"):
        fop.compute_embeddings(digits_dataset, model="no-such-model", embeddings_field="x")
    assert "x" not in digits_dataset.get_field_schema()


def test_swav_checkpoint_in_official_format_through_the_pipeline(digits_dataset, tmp_path):
    from tests.unit.test_models import official_format_checkpoint

    path = tmp_path / models.SWAV_FILENAME
    official_format_checkpoint(path, seed=3)
    view = digits_dataset.limit(4)
    result = fop.compute_embeddings(view, model="swav_resnet50", checkpoint_path=str(path),
                                    image_size=32, num_workers=0)
    assert result.num_embedded == 4
    stored = np.stack(view.values("swav_embedding"))
    reference = models.swav_resnet50(str(path), image_size=32)
    np.testing.assert_allclose(stored, bare_forward(reference, view.values("filepath")),
                               rtol=1e-4, atol=1e-4)
    assert stored.shape == (4, 2048)


def test_fast_vector_io_is_compatible_with_fiftyone(digits_dataset):
    rng = np.random.default_rng(0)
    ids = digits_dataset.values("id")
    vectors = rng.normal(size=(len(ids), 7)).astype(np.float32)
    digits_dataset.add_sample_field("v", fo.VectorField)
    storage.write_vectors(digits_dataset, "v", ids, vectors)
    assert np.array_equal(np.stack(digits_dataset.values("v")), vectors)
    digits_dataset.set_values("w", list(vectors.astype(np.float64)))
    got_ids, got = [], []
    for batch_ids, block, missing, nonfinite in storage.iter_vector_blocks(
            digits_dataset, "w", batch_size=50):
        got_ids += batch_ids
        got.append(block.copy())  # the default destination is one reused buffer
        assert missing == [] and len(nonfinite) == 0
    assert got_ids == ids
    assert np.array_equal(np.concatenate(got), vectors)
    assert storage.encode_vector(vectors[0])[:2] and fou.deserialize_numpy_array(
        storage.encode_vector(vectors[0])).tolist() == vectors[0].tolist()


@pytest.mark.parametrize("num_threads,count_field", [(1, False), (3, False), (2, True)])
def test_matrix_reader_equals_fiftyone_values(digits_dataset, num_threads, count_field,
                                              monkeypatch):
    """The threaded in-place reader against FiftyOne's own decoding, on vectors written by
    FiftyOne (zlib level 6), as lists, and missing, across batch boundaries; with the
    matrix sized by the view's length or (big views) by counting the field."""
    if count_field:
        monkeypatch.setattr(storage, "_EXACT_COUNT_ABOVE_BYTES", 0)
    rng = np.random.default_rng(1)
    ids = digits_dataset.values("id")
    vectors = rng.normal(size=(len(ids), 5)).astype(np.float64)
    values = list(vectors)
    values[3] = values[50] = None
    digits_dataset.set_values("v", values)
    from bson import ObjectId

    for i in range(0, len(ids), 7):  # some values stored as plain lists of floats
        if values[i] is not None:
            digits_dataset._sample_collection.update_one(
                {"_id": ObjectId(ids[i])}, {"$set": {"v": vectors[i].tolist()}})
    view = digits_dataset.skip(2)  # a view: rows follow view order
    got_ids, matrix, missing, nonfinite = storage.read_vector_matrix(
        view, "v", batch_size=17, num_threads=num_threads)
    present = [(i, v) for i, v in zip(view.values("id"), view.values("v")) if v is not None]
    assert got_ids == [i for i, _ in present]
    assert missing == [ids[3], ids[50]]
    assert matrix.dtype == np.float32 and len(nonfinite) == 0
    np.testing.assert_array_equal(matrix, np.array([v for _, v in present], dtype=np.float32))


def test_matrix_reader_reports_nonfinite_rows_and_mixed_sizes(digits_dataset):
    ids = digits_dataset.values("id")
    vectors = np.ones((len(ids), 4), dtype=np.float32)
    vectors[[5, 40]] = [np.nan, 0, 0, 0]
    digits_dataset.add_sample_field("v", fo.VectorField)
    storage.write_vectors(digits_dataset, "v", ids, vectors)
    _, _, _, nonfinite = storage.read_vector_matrix(digits_dataset, "v", batch_size=16)
    assert nonfinite.tolist() == [5, 40]
    sample = digits_dataset[ids[33]]  # a wrong size in a later batch
    sample["v"] = np.ones(3)
    sample.save()
    with pytest.raises(storage.VectorDimensionError, match=ids[33]) as info:
        storage.read_vector_matrix(digits_dataset, "v", batch_size=16)
    assert (info.value.size, info.value.expected) == (3, 4)


def test_resume_with_other_settings_is_refused_naming_both(digits_dataset, efficientnet_small,
                                                          tmp_path):
    from tests.unit.test_models import official_format_checkpoint

    first = digits_dataset.limit(5)
    fop.compute_embeddings(first, model=efficientnet_small, embeddings_field="emb", num_workers=0)
    before = np.stack(first.values("emb"))
    info = dict(digits_dataset.get_field("emb").info)
    other_size = models.efficientnet_lite0(image_size=48)
    with pytest.raises(ValueError, match=r"image_size 32 \(stored\) vs 48 \(now\)"):
        fop.compute_embeddings(digits_dataset, model=other_size, embeddings_field="emb")
    ckpt = tmp_path / models.SWAV_FILENAME
    official_format_checkpoint(ckpt, seed=1)
    with pytest.raises(ValueError, match="model 'efficientnet_lite0' \\(stored\\) vs "
                                         "'swav_resnet50' \\(now\\)"):
        fop.compute_embeddings(digits_dataset, model="swav_resnet50", image_size=32,
                               checkpoint_path=str(ckpt), embeddings_field="emb")
    # other weights of the same model and size: caught by the weights' fingerprint
    altered = models.efficientnet_lite0(image_size=32)
    with torch.no_grad():
        next(altered.module.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="weights_sha1"):
        fop.compute_embeddings(digits_dataset, model=altered, embeddings_field="emb")
    # nothing was written by the refused calls; the same settings resume
    assert digits_dataset.count("emb") == 5
    assert digits_dataset.get_field("emb").info == info
    np.testing.assert_array_equal(np.stack(first.values("emb")), before)
    again = models.efficientnet_lite0(image_size=32)  # a fresh load of the same weights
    result = fop.compute_embeddings(digits_dataset.limit(8), model=again,
                                    embeddings_field="emb", num_workers=0)
    assert result.num_skipped_existing == 5 and result.num_embedded == 3


def test_vectors_of_unknown_origin_are_not_mixed(digits_dataset, efficientnet_small):
    digits_dataset.limit(3).set_values("emb", [np.ones(1280, dtype=np.float32)] * 3)
    with pytest.raises(ValueError, match="no record of the model"):
        fop.compute_embeddings(digits_dataset, model=efficientnet_small, embeddings_field="emb")
    assert digits_dataset.count("emb") == 3


def test_unavailable_device_is_refused_before_any_write(digits_dataset, efficientnet_small):
    for device, message in (("cuda", "no usable CUDA GPU"), ("gpu", "not a torch device"),
                            ("cuda:7", "CUDA")):
        if torch.cuda.is_available() and device == "cuda":
            continue
        with pytest.raises(ValueError, match=message) as err:
            fop.compute_embeddings(digits_dataset, model=efficientnet_small,
                                   embeddings_field="emb", device=device)
        assert "\n" not in str(err.value)
    assert digits_dataset.get_field("emb") is None  # no empty field left behind


def _with_boxes(dataset):
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]]
    for sample in dataset.limit(4):
        sample["objects"] = fo.Detections(detections=[
            fo.Detection(label=str(i), bounding_box=b) for i, b in enumerate(boxes)])
        sample.save()
    return dataset.limit(4)


def test_patches_views_are_refused_with_the_fix(digits_dataset, efficientnet_small):
    view = _with_boxes(digits_dataset)
    with pytest.raises(ValueError, match="patches_field='<label field>'"):
        fop.compute_embeddings(view.to_patches("objects"), model=efficientnet_small,
                               embeddings_field="emb")
    with pytest.raises(ValueError, match="must be a Detection or Detections field"):
        fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="emb",
                               patches_field="ground_truth")
    assert digits_dataset.get_field("emb") is None


def test_patches_field_embeds_each_crop_onto_its_label(digits_dataset, efficientnet_small):
    view = _with_boxes(digits_dataset)
    result = fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="emb",
                                    patches_field="objects", batch_size=3, chunk_size=3,
                                    num_workers=0)
    assert result.num_embedded == 8 and result.num_failed == 0
    transform = efficientnet_small.transform()
    for sample in view:
        with Image.open(sample.filepath) as img:
            w, h = img.size
            crops = [img.crop((0, 0, round(w / 2), round(h / 2))),
                     img.crop((round(w / 4), round(h / 4), w, h))]
            with torch.inference_mode():
                expected = efficientnet_small.module(torch.stack([transform(c) for c in crops]))
        got = np.stack([d["emb"] for d in sample.objects.detections])
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
        assert not np.allclose(got[0], got[1])  # each box its own vector
    # the vectors are in the source dataset, and a patches view shows them
    patches = view.to_patches("objects")
    assert len(patches.exists("objects.emb")) == 8
    info = digits_dataset.get_field("objects.detections.emb").info["fiftyone_prune"]
    assert info["model"] == "efficientnet_lite0"
    # resume: a new box is the only work left
    sample = view.first()
    sample.objects.detections.append(fo.Detection(label="x", bounding_box=[0.1, 0.1, 0.3, 0.3]))
    sample.save()
    again = fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="emb",
                                   patches_field="objects", num_workers=0)
    assert again.num_skipped_existing == 8 and again.num_embedded == 1
    assert digits_dataset.count("objects.detections.emb") == 9


def test_frames_views_are_refused(digits_images, efficientnet_small, tmp_path):
    video = fo.Dataset(unique_name("video"))
    try:
        sample = fo.Sample(filepath=str(tmp_path / "clip.mp4"))
        sample.metadata = fo.VideoMetadata(total_frame_count=2, frame_rate=1.0, duration=2.0,
                                           frame_width=28, frame_height=28)
        sample.frames[1] = fo.Frame(filepath=digits_images[0][0])
        sample.frames[2] = fo.Frame(filepath=digits_images[1][0])
        video.add_sample(sample)
        frames = video.to_frames(sample_frames=False)
        assert frames.media_type == "image" and len(frames) == 2
        with pytest.raises(ValueError, match="does not support frames views"):
            fop.compute_embeddings(frames, model=efficientnet_small, embeddings_field="emb")
        assert frames.get_field("emb") is None
    finally:
        video.delete()


def test_default_precision_is_the_plain_fp32_forward_pass_bit_for_bit(digits_dataset,
                                                                     efficientnet_small):
    # one batch of the same 12 images: the same kernels, so the same bits
    view = digits_dataset.limit(12)
    fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="emb",
                           batch_size=12, num_workers=0)
    stored = np.stack(view.values("emb"))
    np.testing.assert_array_equal(stored, bare_forward(efficientnet_small,
                                                       view.values("filepath")))
    assert digits_dataset.get_field("emb").info["fiftyone_prune"]["precision"] == "fp32"


def test_bad_precision_is_refused_before_any_write(digits_dataset, efficientnet_small):
    from fiftyone_prune.core.params import ParameterError

    for precision, match in [("fp8", "one of"), ("half", "one of"),
                             ("fp16", "not available on a cpu device.*'bf16' on CPU")]:
        with pytest.raises(ParameterError, match=match) as info:
            fop.compute_embeddings(digits_dataset, model=efficientnet_small,
                                   embeddings_field="emb", device="cpu", precision=precision)
        assert info.value.param == "precision"
        with pytest.raises(ParameterError, match=match):  # the sharded path checks too
            fop.compute_embeddings(digits_dataset, model="efficientnet_lite0", image_size=32,
                                   embeddings_field="emb", device="cpu",
                                   precision=precision, num_shards=2)
    assert not digits_dataset.has_field("emb") and "emb" not in digits_dataset.list_runs()


def test_bf16_on_cpu_is_close_to_fp32_recorded_and_not_mixed_on_resume(digits_dataset,
                                                                      efficientnet_small):
    """bf16 is the CPU's reduced precision (autocast): vectors within bf16's ~3
    significant digits of fp32, the choice recorded so that an fp32 resume is refused."""
    view = digits_dataset.limit(12)
    fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="fp32",
                           num_workers=0)
    fop.compute_embeddings(view.limit(6), model=efficientnet_small, embeddings_field="bf16",
                           num_workers=0, precision="bf16")
    a, b = np.stack(view.limit(6).values("fp32")), np.stack(view.limit(6).values("bf16"))
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # autocast really ran
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99
    assert digits_dataset.get_field("bf16").info["fiftyone_prune"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision 'bf16' \\(stored\\) vs 'fp32'"):
        fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="bf16",
                               num_workers=0)
    assert digits_dataset.count("bf16") == 6  # nothing mixed in
    done = fop.compute_embeddings(view, model=efficientnet_small, embeddings_field="bf16",
                                  num_workers=0, precision="bf16")
    assert done.num_embedded == 6 and done.num_skipped_existing == 6


def test_every_bad_input_is_a_parameter_error_naming_its_argument(digits_dataset):
    """One parameter path: compute_embeddings and the App form's check_embedding_inputs
    raise the same ParameterError, whose .param is compute_embeddings' own keyword,
    before a model loads or anything is written."""
    from fiftyone_prune.core.params import ParameterError
    from fiftyone_prune.sdk.embeddings import check_embedding_inputs

    digits_dataset.add_sample_field("text", fo.StringField)
    detections = _with_boxes(digits_dataset)
    cases = [
        (dict(embeddings_field="text"), "already exists as a StringField",
         "embeddings_field"),
        (dict(embeddings_field="bad name"), "not a valid field name", "embeddings_field"),
        (dict(model="no-such-model"), "Unknown model", "model"),
        (dict(model=3), "must be a name", "model"),
        (dict(batch_size=0), "batch_size", "batch_size"),
        (dict(chunk_size="2"), "chunk_size", "chunk_size"),
        (dict(image_size=4), "image_size", "image_size"),
        (dict(num_workers=-1), "num_workers", "num_workers"),
        (dict(skip_existing="yes"), "skip_existing", "skip_existing"),
        (dict(device="gpu"), "not a torch device", "device"),
        (dict(precision="fp8"), "one of", "precision"),
        (dict(patches_field="ground_truth"), "Detection or Detections", "patches_field"),
        (dict(num_shards=0), "positive integer", "num_shards"),
        (dict(num_shards=1000), "exceeds the 120 samples", "num_shards"),
        (dict(num_shards=10**6), "choose at most 10000", "num_shards"),
        (dict(model="efficientnet_lite0", checkpoint_path="/no/swav.pth"),
         "applies to model='swav_resnet50' only", "checkpoint_path"),
        (dict(model="swav_resnet50", checkpoint_path="/no/swav.pth"), "does not exist",
         "checkpoint_path"),
        (dict(num_shards=2, skip_existing=False), "skip_existing=False", "skip_existing"),
        (dict(num_shards=2, patches_field="objects"), "patches", "patches_field"),
    ]
    for kwargs, match, param in cases:
        kwargs = dict(dict(model="efficientnet_lite0", embeddings_field="emb"), **kwargs)
        with pytest.raises(ParameterError, match=match) as info:
            fop.compute_embeddings(detections if "patches_field" in kwargs
                                   else digits_dataset, **kwargs)
        assert info.value.param == param, (kwargs, info.value)
        with pytest.raises(ParameterError, match=match) as info:
            check_embedding_inputs(detections if "patches_field" in kwargs
                                   else digits_dataset, **kwargs)
        assert info.value.param == param
    with pytest.raises(ParameterError, match="patches view") as info:
        fop.compute_embeddings(detections.to_patches("objects"), model="efficientnet_lite0")
    assert info.value.param == "samples"
    assert not digits_dataset.has_field("emb") and not digits_dataset.list_runs()
