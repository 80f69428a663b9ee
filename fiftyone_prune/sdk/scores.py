"""Prototype scores as sample fields, registered as a run with full provenance.

The pipeline's public steps, which the single-process call and each shard of a sharded
run (:mod:`~fiftyone_prune.sdk.shard_plans`) both use: :func:`check_scoring_inputs`
(every argument, nothing read), :func:`prepare_scoring` (the k values and the training
subsample resolved: a :class:`ScoringSetup`), :func:`read_training_vectors` and
:func:`train_prototypes` (k-means, once), :func:`assign_blocks` (one view or slice read,
normalised and assigned batch by batch) and :class:`ScoreWriter` (the concurrent, fenced
writes of the two score fields).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field as dc_field

import numpy as np
from bson import ObjectId, json_util

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.core import prototypes as core
from fiftyone_prune.core.concurrency import OrderedBatchWriter
from fiftyone_prune.core.params import ParameterError, check_scalar, parse_num_clusters
from fiftyone_prune.sdk import (leases, object_scores, run_configs, runs, shard_plans, storage,
                                validation, writer)

logger = logging.getLogger(__name__)

METHODS = ("kmeans", "supervised")
_WRITE_BATCH = 4096
#: concurrent bulk writes of the score fields: mongod then updates two batches at once
#: (measured on 100,000 samples of 8 KB: 1.25-1.5x faster than one writer; three gained
#: nothing more on 2 cores)
_WRITE_THREADS = 2
#: ids per ``select`` stage when reading the training subsample (~2.4 MB of BSON)
_SELECT_CHUNK = 100_000


@dataclass
class ScoreResult:
    """What a :func:`compute_prototype_scores` call did.

    Attributes:
        run_key: the scoring run's key
        method: ``"kmeans"`` or ``"supervised"``
        distance_field: ``<run_key>_distance``, the score (large = hard)
        cluster_field: ``<run_key>_cluster``, the cluster (or class) of each sample
        num_clusters: the k values used (one per combined k; the number of classes for
            ``"supervised"``)
        num_scored: samples given a score
        skipped_ids: ids of the samples left unscored (no embedding, an all-zero
            vector, or no label for ``"supervised"``)
        timings: seconds per phase (``read_s``, ``train_s``, ``prototypes_s``,
            ``stream_s``, ``write_s``, ``total_s``: those the path taken has)
        num_skipped: ``len(skipped_ids)``
    """

    run_key: str
    method: str
    distance_field: str
    cluster_field: str
    num_clusters: list
    num_scored: int = 0
    skipped_ids: list = dc_field(default_factory=list)  # no embedding (or no label)
    timings: dict = dc_field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_ids)

    def to_dict(self) -> dict:
        return {
            "run_key": self.run_key, "method": self.method,
            "distance_field": self.distance_field, "cluster_field": self.cluster_field,
            "num_clusters": self.num_clusters, "num_scored": self.num_scored,
            "num_skipped": self.num_skipped, "timings": self.timings,
        }


def score_fields(run_key: str) -> tuple[str, str]:
    """The fields a scoring run created under ``run_key`` writes (its config owns them)."""
    return run_configs.score_field_names(run_key)


def _check_arguments(samples, *, embeddings_field, run_key, method, num_clusters,
                     label_field, overwrite, niter, max_points_per_centroid, num_shards,
                     delegate, patches_field=None):
    """Every check of :func:`check_scoring_inputs` that reads no sample (an object-level
    run: :func:`~fiftyone_prune.sdk.object_scores.check_object_arguments`, which counts
    the objects when ``num_clusters`` is given)."""
    try:
        validation.check_collection(samples)
    except (TypeError, ValueError) as e:
        raise ParameterError(str(e), "samples") from None
    runs.check_key_free(samples, run_key, overwrite, "prototypes")
    try:
        validation.check_not_empty(samples)
    except ValueError as e:
        raise ParameterError(str(e), "samples") from None
    if method not in METHODS:
        raise ParameterError(f"Unknown method {method!r}; choose one of {METHODS}", "method")
    _check_same_kind_of_items(samples, run_key, patches_field, overwrite)
    if patches_field is not None:
        if isinstance(num_clusters, str):
            raise ParameterError(f"num_clusters must be an integer or a list of integers, "
                                 f"got the text {num_clusters!r}", "num_clusters")
        if method == "supervised" and num_clusters is not None:
            raise ParameterError("num_clusters applies to method='kmeans'; supervised uses "
                                 "one prototype per class", "num_clusters")
        check_scalar(niter, "niter", int, min_val=1)
        check_scalar(max_points_per_centroid, "max_points_per_centroid", int, min_val=1)
        return object_scores.check_object_arguments(
            samples, embeddings_field=embeddings_field, patches_field=patches_field,
            label_field=label_field, num_shards=num_shards, delegate=delegate,
            num_clusters=num_clusters, run_key=run_key, overwrite=overwrite,
            orphans_at=lambda path: orphan_fields(samples._dataset, run_key, path))
    if num_shards is not None or delegate:
        shard_plans.check_num_shards(1 if num_shards is None else num_shards, samples)
        if overwrite:
            raise ParameterError("num_shards does not replace a run: delete it first "
                                 "(fop.delete_run) and start the sharded run on a free key, "
                                 "or replace it without num_shards", "overwrite")
    validation.check_embeddings_field(samples, embeddings_field)
    if label_field is not None or method == "supervised":
        validation.check_classification_field(samples, label_field,
                                              required_by="method='supervised'")
    if method == "supervised" and num_clusters is not None:
        raise ParameterError("num_clusters applies to method='kmeans'; supervised uses one "
                             "prototype per class", "num_clusters")
    if isinstance(num_clusters, str):  # text is the front ends' to parse
        raise ParameterError(f"num_clusters must be an integer or a list of integers, got "
                             f"the text {num_clusters!r} (core.params.parse_num_clusters "
                             f"reads text)", "num_clusters")
    if num_clusters is not None:
        parse_num_clusters(num_clusters)
    check_scalar(niter, "niter", int, min_val=1)
    check_scalar(max_points_per_centroid, "max_points_per_centroid", int, min_val=1)
    distance_field, cluster_field = score_fields(run_key)
    mine = set(runs.owned_fields(samples, run_key)) if overwrite else set()
    orphans = orphan_fields(samples._dataset, run_key)
    for f in (distance_field, cluster_field):
        if samples._dataset.get_field(f) is None or f in mine:
            continue
        if f in orphans:
            if not overwrite:
                raise ParameterError(
                    f"Field {f!r} was left by a run {run_key!r} that was killed before it "
                    f"finished (no run is registered); pass overwrite=True to replace it",
                    "overwrite")
            continue
        raise ParameterError(
            f"Field {f!r} already exists and was not created by run {run_key!r}; "
            f"choose another run key (nothing is overwritten)", "run_key")


def _check_same_kind_of_items(samples, run_key, patches_field, overwrite):
    """An overwrite scores what the run it replaces scored (samples, or the objects of
    the same field): its fields are the run's, and another kind would orphan them.
    Checked before any work (the run class checks it again at registration)."""
    if not overwrite or run_key not in samples._dataset.list_runs():
        return
    existing = getattr(samples._dataset.get_run_info(run_key).config, "patches_field", None)
    if existing != patches_field:
        scored = f"the objects of {existing!r}" if existing else "samples"
        would = f"the objects of {patches_field!r}" if patches_field else "samples"
        raise ParameterError(
            f"Run {run_key!r} scored {scored}; this run would score {would}: delete it "
            f"first (fop.delete_run) or choose another run key", "run_key")


def _check_ks(ks, num_present):
    """k is at most the number of samples with an embedding (ParameterError about
    ``num_clusters`` otherwise): the one place this is checked."""
    too_big = [k for k in ks if k > num_present]
    if too_big:
        raise ParameterError(
            f"num_clusters {too_big} exceeds the number of samples with embeddings "
            f"({num_present}); choose at most {num_present}", "num_clusters")


def check_scoring_inputs(samples, embeddings_field, run_key="prototypes", method="kmeans",
                         num_clusters=None, label_field=None, overwrite=False, niter=25,
                         max_points_per_centroid=core.DEFAULT_MAX_POINTS_PER_CENTROID,
                         num_shards=None, delegate=False, patches_field=None):
    """Checks the arguments of :func:`compute_prototype_scores` (same names) against
    ``samples`` without writing anything: what the App form calls on every change, and
    what the scoring call itself checks (k against the samples with an embedding, as
    :func:`prepare_scoring` does, is counted only when ``num_clusters`` is given).

    Raises:
        ParameterError: naming the first wrong argument (``.param``)
    """
    _check_arguments(samples, embeddings_field=embeddings_field, run_key=run_key,
                     method=method, num_clusters=num_clusters, label_field=label_field,
                     overwrite=overwrite, niter=niter,
                     max_points_per_centroid=max_points_per_centroid,
                     num_shards=num_shards, delegate=delegate, patches_field=patches_field)
    if num_clusters is not None and patches_field is None:
        parsed = parse_num_clusters(num_clusters)
        _check_ks(parsed if isinstance(parsed, list) else [parsed],
                  samples.exists(embeddings_field).count())


def _field_descriptions(run_key):
    distance_field, cluster_field = score_fields(run_key)
    return {distance_field: f"prototype distance, run {run_key}",
            cluster_field: f"prototype (cluster/class), run {run_key}"}


def orphan_fields(dataset, run_key, labels_path: str | None = None) -> list[str]:
    """Score fields of ``run_key`` that exist without their run: what a run killed
    mid-write (OOM, a killed worker: no chance to clean up) leaves behind. Recognised
    by the description this module gives its fields. ``labels_path``: an object-level
    run's label attributes (``gt.detections.<key>_distance``)."""
    if run_key in dataset.list_runs():
        return []
    prefix = f"{labels_path}." if labels_path else ""
    return [prefix + f for f, text in _field_descriptions(run_key).items()
            if dataset.get_field(prefix + f) is not None
            and getattr(dataset.get_field(prefix + f), "description", None) == text]


def _mixed_message(embeddings_field, e):
    return (f"Embeddings in {embeddings_field!r} have mixed dimensions: sample {e.sample_id} "
            f"has {e.size}, earlier samples {e.expected}; recompute them with one model")


def _nonfinite_message(embeddings_field, count, example_id):
    return (f"{count} embedding(s) in {embeddings_field!r} contain NaN or inf (e.g. sample "
            f"{example_id}); recompute them or exclude those samples from the view")


def read_embeddings(samples, embeddings_field: str):
    """The embeddings of ``samples`` as one matrix, in one streamed pass: what scoring,
    SemDeDup and the evaluation's linear probe read.

    Args:
        samples: the dataset or view
        embeddings_field: a vector field

    Returns:
        ``(ids, matrix, missing_ids)``: the ids of the samples that have an embedding,
        their float32 ``(n, d)`` rows in that order (not normalised), and the ids of
        the samples without one

    Raises:
        ValueError: when no sample has an embedding, dimensions are mixed or a value is
            NaN/inf (naming a sample)
    """
    try:
        ids, matrix, missing, nonfinite = storage.read_vector_matrix(samples, embeddings_field)
    except storage.VectorDimensionError as e:
        raise ValueError(_mixed_message(embeddings_field, e)) from None
    if matrix is None:
        raise ValueError(
            f"No sample of this view has a value in {embeddings_field!r}; compute embeddings "
            f"first (fop.compute_embeddings)"
        )
    if len(nonfinite):
        raise ValueError(_nonfinite_message(embeddings_field, len(nonfinite),
                                            ids[nonfinite[0]]))
    return ids, matrix, missing


def _zero_rows(x: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~x.any(axis=1))


def _read_scorable(samples, embeddings_field, zero: list):
    """:func:`read_embeddings` without the all-zero vectors: they have no direction
    (every cosine distance would be 1.0), so they are left unscored, listed in ``zero``
    and among the missing ids."""
    ids, x, missing = read_embeddings(samples, embeddings_field)
    rows = _zero_rows(x)
    if len(rows):
        zero.extend(ids[i] for i in rows)
        if len(rows) == len(ids):
            raise ValueError(f"Every embedding in {embeddings_field!r} is all zeros; "
                             f"recompute them")
        keep = np.ones(len(ids), dtype=bool)
        keep[rows] = False
        x = x[keep]
        ids = [i for i, k in zip(ids, keep) if k]
        missing = missing + zero
    return ids, x, missing


@dataclass
class ScoringSetup:
    """What :func:`prepare_scoring` resolved: the settings one scoring run shares (the
    single-process call, or the planning call and every shard of a sharded run).

    Attributes:
        run_key, embeddings_field, method, label_field, seed, niter,
        max_points_per_centroid, use_gpu, overwrite: as passed
        ks: the k values (resolved from the data when ``num_clusters`` was None); empty
            for ``"supervised"`` (one prototype per class, known once read)
        distance_field, cluster_field: the run's fields
        num_present: samples of the view with an embedding
        training_ids: the ids of the seeded training subsample, or None when k-means
            trains on every vector (a view small enough to read once)
        view: the view's stages as JSON text (recorded with the run)
    """

    run_key: str
    embeddings_field: str
    method: str
    ks: list
    label_field: str | None
    seed: int
    niter: int
    max_points_per_centroid: int
    use_gpu: bool | None
    overwrite: bool
    distance_field: str
    cluster_field: str
    num_present: int = 0
    training_ids: list | None = dc_field(default=None, repr=False)
    view: str | None = dc_field(default=None, repr=False)

    @property
    def kmeans(self) -> dict:
        """The arguments of :func:`~fiftyone_prune.core.prototypes.spherical_kmeans`."""
        return dict(niter=self.niter, seed=self.seed,
                    max_points_per_centroid=self.max_points_per_centroid,
                    use_gpu=self.use_gpu)

    def run_params(self, embeddings_model, **more) -> dict:
        """The scoring run's recorded parameters."""
        params = dict(
            embeddings_field=self.embeddings_field, embeddings_model=embeddings_model,
            method_name=self.method, num_clusters=self.ks, label_field=self.label_field,
            seed=self.seed, niter=self.niter,
            max_points_per_centroid=self.max_points_per_centroid,
            score_type="cosine_distance" if len(self.ks) == 1 else "mean_normalized_rank",
            field_prefix=self.run_key, view=self.view)
        params.update(more)
        return params


def prepare_scoring(samples, embeddings_field, run_key="prototypes", method="kmeans",
                    num_clusters=None, label_field=None, seed=51,
                    niter=core.DEFAULT_NITER,
                    max_points_per_centroid=core.DEFAULT_MAX_POINTS_PER_CENTROID,
                    use_gpu=None, overwrite=False, num_shards=None,
                    delegate=False) -> ScoringSetup:
    """The first step of a scoring run: the arguments checked (as
    :func:`check_scoring_inputs`), the samples with an embedding listed, k resolved and
    checked against them, and the training subsample drawn (seeded). Writes nothing.

    Returns:
        a :class:`ScoringSetup`

    Raises:
        ParameterError: naming the wrong argument (``.param``)
        ValueError: when no sample of the view has an embedding
    """
    _check_arguments(samples, embeddings_field=embeddings_field, run_key=run_key,
                     method=method, num_clusters=num_clusters, label_field=label_field,
                     overwrite=overwrite, niter=niter,
                     max_points_per_centroid=max_points_per_centroid,
                     num_shards=num_shards, delegate=delegate)
    distance_field, cluster_field = score_fields(run_key)
    # as JSON text, built before anything is written: stage dicts carry "_cls" keys that
    # mongoengine tries to dereference when the run is reloaded, and ObjectIds in stages
    # need bson's encoder
    view = json_util.dumps(samples._serialize()) if hasattr(samples, "_serialize") else None
    setup = ScoringSetup(
        run_key=run_key, embeddings_field=embeddings_field, method=method, ks=[],
        label_field=label_field, seed=seed, niter=niter,
        max_points_per_centroid=max_points_per_centroid, use_gpu=use_gpu,
        overwrite=overwrite, distance_field=distance_field, cluster_field=cluster_field,
        view=view)
    if method == "supervised":
        return setup
    present = samples.exists(embeddings_field)
    num_present = present.count()  # on the server: no id list (memory grows with k, not N)
    if not num_present:
        raise ValueError(f"No sample of this view has a value in {embeddings_field!r}; "
                         f"compute embeddings first (fop.compute_embeddings)")
    setup.num_present = num_present
    setup.ks = _resolve_ks(num_clusters, label_field, present, num_present)
    rows = core.training_subsample(num_present, max(setup.ks), max_points_per_centroid, seed)
    if rows is not None:
        setup.training_ids = _ids_at(present, rows)
    return setup


def _ids_at(samples, rows) -> list[str]:
    """The ids at the sorted positions ``rows`` of ``samples`` (view order), kept as the
    ids stream past: memory grows with ``len(rows)``, not with the view."""
    wanted, out = iter(rows), []
    target = next(wanted, None)
    for position, sample_id in enumerate(storage.iter_ids(samples)):
        if position == target:
            out.append(sample_id)
            target = next(wanted, None)
            if target is None:
                break
    return out


def _resolve_ks(num_clusters, label_field, present, num_present):
    num_classes = None
    if label_field is not None and num_clusters is None:
        num_classes = len(present.distinct(f"{label_field}.label"))
    ks = (list(num_clusters) if isinstance(num_clusters, (list, tuple))
          else [num_clusters or core.default_num_clusters(num_present, num_classes)])
    ks = [int(k) for k in ks]
    _check_ks(ks, num_present)
    return ks


def read_training_vectors(samples, setup: ScoringSetup) -> np.ndarray:
    """The L2-normalised vectors k-means trains on: the seeded subsample
    (``setup.training_ids``, read from the view, whose stages may define the field), or
    every scorable vector of a view small enough to train on all of it. All-zero vectors
    (no direction) are not trained on."""
    if setup.training_ids is None:
        _, x, _ = _read_scorable(samples, setup.embeddings_field, [])
    else:
        # in chunks: one select stage of k x max_points_per_centroid ids could pass
        # MongoDB's 16 MB limit
        ids = setup.training_ids
        parts = [read_embeddings(samples.select(ids[s: s + _SELECT_CHUNK]),
                                 setup.embeddings_field)[1]
                 for s in range(0, len(ids), _SELECT_CHUNK)]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        del parts
        if len(_zero_rows(x)):
            x = x[x.any(axis=1)]
    core.l2_normalize(x, out=x)
    return x


def train_prototypes(x: np.ndarray, setup: ScoringSetup) -> list[np.ndarray]:
    """Spherical k-means on the normalised ``x``, once per k of ``setup.ks`` (seeded):
    the same centroids in a single process and in a sharded run's planning call."""
    return [core.spherical_kmeans(x, k, **setup.kmeans) for k in setup.ks]


def assign_blocks(samples, embeddings_field, centroids, *, missing=None, zero=None,
                  batch_size=None):
    """Streams the vectors of ``samples`` in batches and yields ``(ids, assigned)`` per
    batch, ``assigned`` holding ``(cluster, distance)`` for each array of
    ``centroids``: the read-normalise-assign loop of the single-process streamed pass
    and of every scoring shard. Samples without a vector go to ``missing``, all-zero
    vectors (left unscored) to ``zero`` and ``missing`` (when given).

    Raises:
        ValueError: at the first NaN/inf vector or vector of another size, naming a
            sample
    """
    dim = centroids[0].shape[1]
    try:
        for batch_ids, block, batch_missing, nonfinite in storage.iter_vector_blocks(
                samples, embeddings_field, batch_size=batch_size):
            if missing is not None:
                missing.extend(batch_missing)
            if len(nonfinite):
                raise ValueError(_nonfinite_message(embeddings_field, len(nonfinite),
                                                    batch_ids[nonfinite[0]]))
            if not batch_ids:
                continue
            zero_rows = _zero_rows(block)
            if len(zero_rows):
                nonzero = np.ones(len(batch_ids), dtype=bool)
                nonzero[zero_rows] = False
                left = [batch_ids[i] for i in zero_rows]
                for out in (zero, missing):
                    if out is not None:
                        out.extend(left)
                batch_ids = [i for i, k in zip(batch_ids, nonzero) if k]
                block = block[nonzero]
                if not batch_ids:
                    continue
            if block.shape[1] != dim:  # a whole batch of another size
                raise ValueError(_mixed_message(embeddings_field, storage.VectorDimensionError(
                    batch_ids[0], block.shape[1], dim)))
            core.l2_normalize(block, out=block)
            yield batch_ids, [core.nearest_prototype(block, c) for c in centroids]
    except storage.VectorDimensionError as e:
        raise ValueError(_mixed_message(embeddings_field, e)) from None


class ScoreWriter:
    """Writes the two score fields: the batches handed to :meth:`submit` are written by
    ``_WRITE_THREADS`` concurrent bulk writes (an
    :class:`~fiftyone_prune.core.concurrency.OrderedBatchWriter`), each fenced by
    ``fence`` (a writer that lost its lease or plan writes nothing more: the next
    :meth:`submit` or :meth:`close` raises). What the single-process run and every
    scoring shard write through.

    Args:
        dataset: the dataset
        fields: ``(distance field, cluster field)`` to write
        fence (None): the :class:`~fiftyone_prune.sdk.storage.Fence` of every write
        on_written (None): called with the number of samples of each written batch, in
            submission order
    """

    def __init__(self, dataset, fields, *, fence=None, on_written=None):
        self.dataset, self.fields, self.fence = dataset, tuple(fields), fence
        # at most two batches per thread in flight: bounded memory, live progress
        self.writer = OrderedBatchWriter(self._write, _WRITE_THREADS, on_written=on_written,
                                         name="score-writer")

    def submit(self, ids, distance, cluster):
        # plain Python floats/ints/strs: what BSON encodes without per-value conversion
        distance = distance.tolist() if isinstance(distance, np.ndarray) else list(distance)
        cluster = cluster.tolist() if isinstance(cluster, np.ndarray) else list(cluster)
        for s in range(0, len(ids), _WRITE_BATCH):
            e = min(s + _WRITE_BATCH, len(ids))
            self.writer.submit(ids[s:e], distance[s:e], cluster[s:e])

    def _write(self, ids, distance, cluster):
        storage.write_scalars(self.dataset, {self.fields[0]: distance,
                                             self.fields[1]: cluster}, ids, fence=self.fence)
        return len(ids)  # rows, for the progress

    def close(self):
        """Waits for every write; re-raises the first failed one."""
        self.writer.close()

    def cancel(self):
        """Drops the batches not written yet and waits for those being written."""
        self.writer.cancel()


def compute_prototype_scores(
    samples,
    embeddings_field: str,
    run_key: str = "prototypes",
    method: str = "kmeans",
    num_clusters=None,
    label_field: str | None = None,
    seed: int = 51,
    niter: int = core.DEFAULT_NITER,
    max_points_per_centroid: int = core.DEFAULT_MAX_POINTS_PER_CENTROID,
    use_gpu: bool | None = None,
    overwrite: bool = False,
    progress=None,
    num_shards: int | None = None,
    delegate: bool = False,
    patches_field: str | None = None,
) -> ScoreResult:
    """Scores every sample by its cosine distance to a prototype (Sorscher et al. 2022).

    Writes ``<run_key>_distance`` (float; small = easy/prototypical, large = hard) and
    ``<run_key>_cluster`` (the k-means cluster, or the class for ``"supervised"``), and
    registers a run ``run_key`` recording every parameter.

    Args:
        samples: a dataset or view
        embeddings_field: a vector field (from :func:`compute_embeddings` or any other)
        run_key ('prototypes'): the run's key and the prefix of its fields
        method ('kmeans'): ``"kmeans"`` (self-supervised prototypes, label-free) or ``"supervised"``
            (one prototype per class of ``label_field``)
        num_clusters (None): k, or a list of k values whose scores are combined by mean
            normalised rank (robust when k is unknown; ``_distance`` then holds that
            rank score in [0, 1] and ``_cluster`` the assignment of the first k).
            Default: the number of classes of ``label_field`` when given, else
            ``round(sqrt(n / 2))`` capped at 1,000 (see ``core.prototypes.default_num_clusters``)
        label_field (None): a ``Classification`` field (required for ``"supervised"``)
        seed (51): seed of the training subsample and of faiss; results are deterministic for a
            seed
        niter (25): k-means iterations
        max_points_per_centroid (256): faiss's training subsample per centroid
        use_gpu (None): faiss on GPU (default: when available)
        overwrite (False): replace an existing run with this key (and its fields)
        progress (None): progress bar (True/False) or a callback for ``fo.report_progress``
        num_shards (None): train k-means here (the same centroids as without shards), then
            assign and write the view in this many disjoint ``_id`` ranges
            (:mod:`~fiftyone_prune.sdk.shard_plans`); the run stays unusable (state
            ``"sharded"``) until every shard is done, then equals the single-process
            run. Several k: the shards stage every k's distance and one last step ranks
            them over all samples; ``"supervised"``: the shards add up class sums, and
            one last step makes the prototypes and scores every slice
        delegate (False): queue the shards as delegated operations for ``fiftyone delegated
            launch`` workers and return the run's status (needs ``num_shards``)
        patches_field (None): a Detection or Detections field: score each object instead
            of each sample. ``embeddings_field`` is then the labels' vector attribute
            (``compute_embeddings(..., patches_field=...)`` writes it), the scores are
            attributes of the labels (``<labels>.<run_key>_distance`` /
            ``_cluster``), ``"supervised"`` uses each object's own label as its class,
            and ``skipped_ids`` / ``num_scored`` count labels
            (:mod:`~fiftyone_prune.sdk.object_scores`)

    Samples without an embedding (or, for ``"supervised"``, without a label) are left
    unscored and listed in ``skipped_ids``.

    Memory and passes (``"kmeans"``): when the view has more samples than k x
    ``max_points_per_centroid`` (faiss's own training-set cap), only a seeded random
    subsample of that size is read to train k-means; a single streamed pass then reads,
    assigns and writes every sample batch by batch, so no more vectors than that
    subsample and a few batches are in memory at once. Smaller views are read once into
    one matrix. ``"supervised"`` reads one matrix.

    All-zero vectors have no direction (every cosine distance would be 1.0): they are
    left unscored, with a warning, and listed in ``skipped_ids``.

    Failure and concurrency: the run key is leased for the whole call
    (:mod:`~fiftyone_prune.sdk.leases`): a second writer of the same key, in this or
    another process or machine, gets an error naming the holder. A bad vector (NaN/inf,
    another dimension) among the training vectors fails before anything changes; one
    found later in the streamed pass stops the run and the fields it had started
    writing are removed again. ``overwrite=True`` writes the new values into staging
    fields and switches them in only when they are complete, so a failure or a kill
    leaves the old run and every old value intact; rerun to score. Every write is fenced
    by the lease (:class:`~fiftyone_prune.sdk.storage.Fence`): a call stalled past its
    lease (and taken over) writes nothing more, and its roll-back deletes nothing.
    ``overwrite=True`` of a sharded run deletes its plan first, so the shards still
    running on it are fenced out from their next write.

    Returns:
        a :class:`ScoreResult`; with ``delegate=True`` instead the sharded run's status
        (see :func:`~fiftyone_prune.sdk.shards.shard_status`)

    Raises:
        ParameterError: before anything is written, naming the wrong argument
            (``.param``; see :func:`check_scoring_inputs`)
        ~fiftyone_prune.sdk.leases.RunLockedError: while another writer holds the run

    Example::

        import fiftyone_prune as fop

        dataset = fop.load_demo_dataset("prune-demo", max_samples=200)
        fop.compute_embeddings(dataset, model="efficientnet_lite0", embeddings_field="emb")
        result = fop.compute_prototype_scores(dataset, "emb", run_key="prototypes",
                                              num_clusters=10)
        print(result.num_scored, result.distance_field)  # 200 prototypes_distance
    """
    args = dict(embeddings_field=embeddings_field, run_key=run_key, method=method,
                num_clusters=num_clusters, label_field=label_field, seed=seed, niter=niter,
                max_points_per_centroid=max_points_per_centroid, use_gpu=use_gpu)
    if patches_field is not None:
        return _score_objects(samples, args, patches_field, overwrite, progress,
                              num_shards=num_shards, delegate=delegate)
    if num_shards is not None or delegate:
        return _score_sharded(samples, num_shards=1 if num_shards is None else num_shards,
                              delegate=delegate, overwrite=overwrite, **args)
    validation.check_run_key(run_key)
    # the lease first: the checks (is the key free? whose are the fields?) and every
    # write then happen while no other writer can change the answers
    with writer.run_writer(samples, run_key, "prototypes", overwrite=overwrite) as w:
        setup = prepare_scoring(samples, overwrite=overwrite, **args)
        if overwrite and shard_plans.drop_plan(samples._dataset, run_key):
            # a sharded run replaced: its shards still running are fenced out from now
            logger.info("Replacing sharded run %r", run_key)
        return _score(samples, setup, w, progress)


def _score_objects(samples, args, patches_field, overwrite, progress, num_shards, delegate):
    """``compute_prototype_scores(..., patches_field=...)``: the checks and the settings
    of a per-sample run, then :func:`~fiftyone_prune.sdk.object_scores.score_objects`
    under the run's lease."""
    validation.check_run_key(args["run_key"])
    with writer.run_writer(samples, args["run_key"], "prototypes", overwrite=overwrite) as w:
        check = {k: args[k] for k in ("embeddings_field", "run_key", "method", "num_clusters",
                                      "label_field", "niter", "max_points_per_centroid")}
        labels_path, single = _check_arguments(
            samples, overwrite=overwrite, num_shards=num_shards, delegate=delegate,
            patches_field=patches_field, **check)
        distance_field, cluster_field = score_fields(args["run_key"])
        parsed = (None if args["num_clusters"] is None
                  else parse_num_clusters(args["num_clusters"]))
        view = json_util.dumps(samples._serialize()) if hasattr(samples, "_serialize") else None
        setup = ScoringSetup(
            run_key=args["run_key"], embeddings_field=args["embeddings_field"],
            method=args["method"], ks=[] if parsed is None else
            (parsed if isinstance(parsed, list) else [parsed]),
            label_field=None, seed=args["seed"], niter=args["niter"],
            max_points_per_centroid=args["max_points_per_centroid"],
            use_gpu=args["use_gpu"], overwrite=overwrite,
            distance_field=f"{labels_path}.{distance_field}",
            cluster_field=f"{labels_path}.{cluster_field}", view=view)
        scored, skipped, timings = object_scores.score_objects(
            samples, setup, w, patches_field=patches_field, labels_path=labels_path,
            single=single, descriptions=_field_descriptions(args["run_key"]),
            progress=progress)
    return ScoreResult(setup.run_key, setup.method, setup.distance_field,
                       setup.cluster_field, setup.ks, len(scored), skipped, timings)


def _score(samples, setup, w, progress):
    """The single-process run: prototypes, one pass assigning and writing every sample,
    the run registered (an overwrite's staged values switched in)."""
    timings = {}
    zero = []  # ids of all-zero vectors: left unscored
    t0 = time.perf_counter()
    target = _RunFields(samples._dataset, setup, w, progress)
    try:
        if setup.method == "supervised":
            ids, missing, distance, cluster_values, extra = _supervised(samples, setup,
                                                                        timings, zero)
            target.write_all(ids, distance, cluster_values, timings)
        elif setup.training_ids is None:  # small enough to train on everything: one read
            ids, missing, distance, cluster_values, extra = _kmeans_in_memory(
                samples, setup, timings, zero)
            target.write_all(ids, distance, cluster_values, timings)
        else:
            ids, missing, extra = _kmeans_streamed(samples, setup, target, timings, zero)
        timings["total_s"] = round(time.perf_counter() - t0, 3)
        model_info = (samples.get_field(setup.embeddings_field).info or {}).get(
            "fiftyone_prune")
        # what the run's fields hold, from what this writer wrote (the run records it
        # to recognise values it did not write; no second pass over the dataset)
        check = target.check()
        params = setup.run_params(model_info, num_scored=len(ids), num_skipped=len(missing),
                                  num_zero_vectors=len(zero), check=check)
        # an overwrite registers the new run "in progress", then switches the new values
        # in: a kill in between leaves a run that readers refuse until a rerun
        w.register(params, dict(skipped_ids=missing, timings=timings, **extra),
                   state=runs.IN_PROGRESS if target.replaces_run else runs.COMPLETE)
        if target.replaces_run:
            target.switch()
            w.set_state(runs.COMPLETE, check=check)
    except BaseException:
        target.roll_back()  # no scores without their run (a no-op before the first write)
        raise
    if zero:
        logger.warning("%d sample(s) have an all-zero embedding in %r (no direction: every "
                       "cosine distance would be 1.0); left unscored: %s", len(zero),
                       setup.embeddings_field,
                       ", ".join(zero[:10]) + (" ..." if len(zero) > 10 else ""))
    if len(missing) > len(zero):
        logger.warning("%d sample(s) left unscored (no embedding%s): %s",
                       len(missing) - len(zero),
                       " or no label" if setup.method == "supervised" else "",
                       ", ".join(m for m in missing[:10] if m not in zero)
                       + (" ..." if len(missing) > 10 else ""))
    return ScoreResult(setup.run_key, setup.method, setup.distance_field,
                       setup.cluster_field, setup.ks, len(ids), missing, timings)


def _supervised(samples, setup, timings, zero):
    """One prototype per class: the whole (normalised) matrix in memory, one read."""
    embeddings_field, label_field = setup.embeddings_field, setup.label_field
    t = time.perf_counter()
    ids, x, missing = _read_scorable(samples, embeddings_field, zero)
    timings["read_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    core.l2_normalize(x, out=x)
    label_by_id = dict(zip(*samples.values(["id", f"{label_field}.label"])))
    labels = [label_by_id.get(i) for i in ids]
    keep = np.array([lab is not None for lab in labels])
    unlabeled = [i for i, k in zip(ids, keep) if not k]
    labels_arr = np.array([lab for lab in labels if lab is not None], dtype=object)
    classes, counts = np.unique(labels_arr.astype(str), return_counts=True)
    singles = classes[counts < 2]
    if len(singles):
        raise ValueError(
            f"Class(es) {list(singles)[:10]} have a single sample with an embedding: its "
            f"own prototype would be the sample itself (distance 0, falsely 'easiest'). "
            f"Exclude or relabel them, or use method='kmeans'"
        )
    if len(classes) == 0:
        raise ValueError(f"No sample with an embedding has a label in {label_field!r}")
    if not keep.all():
        x = x[keep]  # only when some labels are missing: a copy of the labelled rows
        ids = [i for i, k in zip(ids, keep) if k]
        missing = missing + unlabeled
    classes_, protos = core.class_prototypes(x, labels_arr.astype(str))
    label_index = np.searchsorted(classes_, labels_arr.astype(str))
    distance = core.distance_to_own_prototype(x, label_index, protos)
    extra = dict(classes=[str(c) for c in classes_], class_counts=[int(c) for c in counts],
                 centroids=fou.serialize_numpy_array(protos, ascii=True))
    timings["prototypes_s"] = round(time.perf_counter() - t, 3)
    setup.ks = [len(classes_)]
    return ids, missing, distance, [str(c) for c in labels_arr], extra


def _kmeans_in_memory(samples, setup, timings, zero):
    t = time.perf_counter()
    ids, x, missing = _read_scorable(samples, setup.embeddings_field, zero)
    timings["read_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    core.l2_normalize(x, out=x)
    centroids = train_prototypes(x, setup)
    assigned = [_assign_in_batches(x, c) for c in centroids]
    timings["prototypes_s"] = round(time.perf_counter() - t, 3)
    distance = (assigned[0][1] if len(setup.ks) == 1
                else core.combine_by_mean_rank([d for _, d in assigned]))
    return (ids, missing, distance, assigned[0][0],
            _kmeans_extra(centroids[0], assigned[0][0], setup.ks[0]))


def _kmeans_extra(centroids, cluster, k):
    sizes = np.bincount(cluster, minlength=k)
    return dict(centroids=fou.serialize_numpy_array(centroids, ascii=True),
                cluster_sizes=[int(s) for s in sizes])


def _kmeans_streamed(samples, setup, target, timings, zero):
    """k-means on the seeded subsample, then one streamed pass (:func:`assign_blocks`):
    each batch is read, normalised, assigned and (a new run with one k) written while the
    next is read. Memory: the training subsample, a few batches, and an id and a cluster
    per sample (plus a distance when the write waits for the pass); no other vectors.

    The training vectors are checked before anything changes; a bad vector found later
    in the pass (NaN, another size) stops the run, and the fields this run created
    (new fields, or an overwrite's staging fields) are removed again (fenced: only while
    this writer owns the run), so the dataset is as before. With several k (scores are
    ranks over all samples) the scores are kept in memory (a float and an int per
    sample) and written after the pass."""
    t = time.perf_counter()
    centroids = train_prototypes(read_training_vectors(samples, setup), setup)
    timings["train_s"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    write_now = len(setup.ks) == 1
    ids, missing, clusters, distances = [], [], [], [[] for _ in setup.ks]
    if write_now:
        target.begin(setup.num_present)
    for batch_ids, assigned in assign_blocks(samples, setup.embeddings_field, centroids,
                                             missing=missing, zero=zero):
        ids.extend(batch_ids)
        if write_now:
            target.submit(batch_ids, assigned[0][1], assigned[0][0])
        clusters.append(assigned[0][0])
        if not write_now:  # kept for the ranks / the write after the pass
            for j, (_, distance) in enumerate(assigned):
                distances[j].append(distance)
    if write_now:
        target.finish()
    cluster = np.concatenate(clusters)
    # read, assign and (a new run with one k) write, overlapped
    timings["stream_s"] = round(time.perf_counter() - t, 3)
    if not write_now:
        merged = [np.concatenate(d) for d in distances]
        target.write_all(ids, core.combine_by_mean_rank(merged), cluster, timings)
    return ids, missing, _kmeans_extra(centroids[0], cluster, setup.ks[0])


class _RunFields:
    """The score fields of a single-process run, written through a :class:`ScoreWriter`
    fenced by the run writer's lease.

    A new run writes its fields directly (created before the first write, removed again
    if the run fails part-way, while it still owns the run; a killed run leaves them
    without a run, which ``overwrite=True`` replaces). An overwrite (``replaces_run``)
    writes into two staging fields named after this writer's token, so the old run and
    its values stay whole until the new values are complete; :meth:`switch` then moves
    them into the run's fields in one server-side pass."""

    def __init__(self, dataset, setup, w, progress):
        self.dataset, self.run_key, self.w = dataset, setup.run_key, w
        self.final = (setup.distance_field, setup.cluster_field)
        self.cluster_type = fo.StringField if setup.method == "supervised" else fo.IntField
        self.replaces_run = setup.overwrite and w.replaces_run
        self.fields = (tuple(w.staging_name(f) for f in self.final) if self.replaces_run
                       else self.final)
        self.progress = progress
        self.writer = self.bar = None
        self.started = False  # fields created: from here on a failure removes them
        self.count, self.total = 0, 0.0  # distances written, and their exact sum

    def begin(self, total):
        self.started = True
        # what a killed (or stalled and fenced-out) writer left: removed while this
        # writer owns the run, values first (fenced), declarations after
        leftovers = staging_fields(self.dataset, self.run_key) + orphan_fields(
            self.dataset, self.run_key)
        if leftovers:
            storage.unset_fields(self.dataset, leftovers, self.w.fence)
        descriptions = _field_descriptions(self.run_key)
        for field, final, ftype in zip(self.fields, self.final,
                                       (fo.FloatField, self.cluster_type)):
            description = descriptions[final]
            if field != final:
                description = _STAGING_DESCRIPTION.format(description)
            self.dataset.add_sample_field(field, ftype, description=description)
        self.bar = fou.ProgressBar(total=total, progress=self.progress)
        self.bar.start()
        self.writer = ScoreWriter(self.dataset, self.fields, fence=self.w.fence,
                                  on_written=self.bar.update)
        self.t = time.perf_counter()

    def submit(self, ids, distance, cluster):
        self.writer.submit(ids, distance, cluster)
        self.count += len(ids)
        self.total += math.fsum(distance)

    def check(self) -> dict:
        """``{"count", "sum"}`` of the distances written: what the run's distance field
        holds once they are in place (``storage.count_and_sum`` of it)."""
        return {"count": self.count, "sum": self.total}

    def finish(self):
        self.writer.close()
        self.writer = None
        self.bar.close()
        self.write_s = round(time.perf_counter() - self.t, 3)

    def switch(self):
        """Replaces the old values by the staged ones (the new run is registered by
        then, marked in progress), fenced. Fields of the same types swap in one
        server-side pass, per document atomically; a type change (e.g.
        ``"supervised"`` clusters are strings, k-means ones ints) deletes the old field
        and renames the staged one."""
        fence = self.w.fence
        same = {src: dst for src, dst in zip(self.fields, self.final)
                if type(self.dataset.get_field(dst)) is type(self.dataset.get_field(src))}
        if same:
            storage.swap_fields(self.dataset, same, fence=fence)
        changed = {src: dst for src, dst in zip(self.fields, self.final) if src not in same}
        if changed:
            old = [dst for dst in changed.values() if self.dataset.get_field(dst) is not None]
            if old:
                storage.unset_fields(self.dataset, old, fence)
            self.w.check()
            self.dataset.rename_sample_fields(changed)
        staged = [f for f in same if self.dataset.get_field(f) is not None]
        if staged:  # values already moved: this only drops the declarations
            storage.undeclare_empty_fields(self.dataset, staged)
        descriptions = _field_descriptions(self.run_key)
        self.dataset.reload()  # a renamed field object still carries its old name
        for field in self.final:
            declared = self.dataset.get_field(field)
            if declared.description != descriptions[field]:
                declared.description = descriptions[field]
                declared.save()

    def roll_back(self):
        """Stops the writes and removes the fields this writer created (a new run's two
        fields: no partial scores without their run; or an overwrite's staging fields:
        the old run and its values were never touched), fenced: a writer that lost the
        run deletes nothing (another writer may own those fields now)."""
        if not self.started:
            return
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None
            self.bar.close()
        try:
            removed = storage.unset_fields(self.dataset, list(self.fields), self.w.fence)
        except leases.LeaseLostError:
            logger.warning("Scoring stopped after losing the run %r: its fields %s are left "
                           "to the writer that owns the run now", self.run_key,
                           list(self.fields))
            return
        if removed:
            logger.warning("Scoring stopped; removed the partly written fields %s", removed)

    def write_all(self, ids, distance, cluster_values, timings):
        self.begin(len(ids))
        self.submit(ids, distance, cluster_values)
        self.finish()
        timings["write_s"] = self.write_s


_STAGING_DESCRIPTION = "staging (being written, not yet valid): {}"


def staging_fields(dataset, run_key) -> list[str]:
    """Staging fields of ``run_key`` in the dataset (any writer's: the run's config
    names them, :func:`~fiftyone_prune.sdk.run_configs.is_staging_field`): those of a
    running overwrite (under its lease) or, for the lease holder, what a killed or
    fenced-out overwrite left."""
    finals = score_fields(run_key)
    return [name for name in dataset.get_field_schema()
            if any(run_configs.is_staging_field(name, f) for f in finals)]


# --- sharded runs (composed by shard_plans from the steps above) -----------------------

def _score_sharded(samples, *, num_shards, delegate, overwrite, embeddings_field, run_key,
                   method, num_clusters, label_field, seed, niter, max_points_per_centroid,
                   use_gpu):
    """``compute_prototype_scores(..., num_shards=M, delegate=...)``: trains k-means once
    per k (:func:`read_training_vectors`, :func:`train_prototypes`: the single-process
    path's steps, so the centroids are identical), registers the run in state
    ``"sharded"`` with the centroids in its results (FiftyOne keeps run results in
    GridFS: no size limit; the plan records no centroid), then runs the assign-and-write
    shards here in order (returns a ``ScoreResult``) or queues them (returns the plan's
    status). Calling it again with the same arguments resumes the unfinished shards."""
    dataset = samples._dataset
    params = dict(embeddings_field=embeddings_field, num_clusters=num_clusters, seed=seed,
                  niter=niter, max_points_per_centroid=max_points_per_centroid,
                  use_gpu=use_gpu)
    if method == "supervised":
        params.update(method=method, label_field=label_field)
    existing = storage.get_shard_plan(shard_plans.plan_id(dataset, run_key))
    if (existing is not None and run_key in dataset.list_runs()
            and existing["params"] == params and existing.get("kind") == "prototypes"
            and not overwrite):
        shard_plans.check_num_shards(num_shards, samples)
        plan = shard_plans.plan_or_resume(samples, run_key, "prototypes", num_shards, params)
    else:
        validation.check_run_key(run_key)
        with writer.run_writer(samples, run_key, "prototypes", overwrite=overwrite) as w:
            setup = prepare_scoring(samples, overwrite=overwrite, num_shards=num_shards,
                                    delegate=delegate, run_key=run_key,
                                    **dict(params, method=method, label_field=label_field))
            t = time.perf_counter()
            if method == "supervised":  # the prototypes are the shards' class sums, reduced
                setup.ks = [_check_sharded_classes(samples, setup)]
                serialized = []
            else:
                centroids = train_prototypes(read_training_vectors(samples, setup), setup)
                serialized = [fou.serialize_numpy_array(c, ascii=True) for c in centroids]
            train_s = round(time.perf_counter() - t, 3)
            # a new plan (new token): a deleted run's shards still running are fenced out
            plan = shard_plans.plan_or_resume(samples, run_key, "prototypes", num_shards,
                                              params, fresh=True, ks=setup.ks,
                                              method=method, train_s=train_s)
            model_info = (samples.get_field(embeddings_field).info or {}).get(
                "fiftyone_prune")
            w.register(setup.run_params(model_info, view=plan["view"],
                                        num_shards=num_shards),
                       dict(centroids=serialized[0] if serialized else None,
                            # every k's when several (one k: ``centroids``, not twice)
                            centroids_by_k=serialized if len(serialized) > 1 else None,
                            plan_token=plan["token"],
                            timings={"train_s": train_s}),
                       state=shard_plans.SHARDED)
    _declare_score_fields(dataset, run_key, plan)
    return shard_plans.run_or_queue(dataset, plan, SHARD_STEPS, delegate)


def _declare_score_fields(dataset, run_key, plan):
    descriptions = _field_descriptions(run_key)
    distance_field, cluster_field = score_fields(run_key)
    cluster_type = fo.StringField if _supervised_plan(plan) else fo.IntField
    declared = [(distance_field, fo.FloatField, descriptions[distance_field]),
                (cluster_field, cluster_type, descriptions[cluster_field])]
    staged = _staged_distances(plan)
    if staged:
        declared.append((staged, fo.ListField,
                         _STAGING_DESCRIPTION.format("distance to each k's nearest "
                                                     "centroid, ranked when every shard "
                                                     "is done")))
    for field, ftype, description in declared:
        if dataset.get_field(field) is None:
            kwargs = {"subfield": fo.FloatField} if ftype is fo.ListField else {}
            dataset.add_sample_field(field, ftype, description=description, **kwargs)


def _staged_distances(plan) -> str | None:
    """With several k, the field where the shards put each sample's distance to every
    k's nearest centroid (a staging field of the run's distance field, named after the
    plan's token, so ``delete_run`` removes it); the last step ranks them over all
    samples. None with one k (the shards write the distance itself)."""
    if len(plan["ks"]) == 1 or _supervised_plan(plan):
        return None
    return run_configs.staging_field(score_fields(plan["key"])[0], plan["token"])


def _supervised_plan(plan) -> bool:
    return plan.get("method") == "supervised"


def _check_sharded_classes(samples, setup) -> int:
    """What a supervised run checks before its shards start, counted on the server (no
    vector read): some sample has an embedding and a label, and no class has a single
    one. Returns the number of classes."""
    present = samples.exists(setup.embeddings_field).exists(setup.label_field)
    counts = present.count_values(f"{setup.label_field}.label")
    counts.pop(None, None)
    if not counts:
        raise ValueError(f"No sample with an embedding has a label in "
                         f"{setup.label_field!r}")
    _check_single_classes([c for c, n in counts.items() if n < 2])
    return len(counts)


def _check_single_classes(singles):
    if len(singles):
        raise ValueError(
            f"Class(es) {sorted(singles)[:10]} have a single sample with an embedding: its "
            f"own prototype would be the sample itself (distance 0, falsely 'easiest'). "
            f"Exclude or relabel them, or use method='kmeans'"
        )


def _labelled_vectors(samples, embeddings_field, label_field, zero):
    """The normalised scorable vectors of ``samples`` that have a label: ``(ids, x,
    labels, missing)`` (a supervised shard's slice, or a slice of its last step)."""
    ids, x, missing = _read_scorable(samples, embeddings_field, zero)
    core.l2_normalize(x, out=x)
    label_by_id = dict(zip(*samples.values(["id", f"{label_field}.label"])))
    labels = [label_by_id.get(i) for i in ids]
    keep = np.array([lab is not None for lab in labels], dtype=bool)
    if not keep.all():
        missing = missing + [i for i, k in zip(ids, keep) if not k]
        x = x[keep]
        ids = [i for i, k in zip(ids, keep) if k]
    return ids, x, np.array([str(lab) for lab in labels if lab is not None]), missing


def _save_class_sums(plan, view):
    """The first step of a supervised shard: the class sums and counts of its slice,
    stored for the last step (GridFS: any number of classes and dimensions), under the
    shard's index (the ``_id`` range its samples fall in)."""
    import bisect
    import io

    p = plan["params"]
    view = view.exists(p["embeddings_field"])
    first = view.sort_by("_id").limit(1).values("_id")
    last = plan.get("last_planned_id")
    zero = []
    if first:
        if last and first[0] > ObjectId(last):  # the run's catch-up of late samples
            index = plan["num_shards"]
        else:  # a shard: its planned samples (the catch-up adds the later ones once)
            index = bisect.bisect_right([ObjectId(b) for b in plan["bounds"]], first[0]) - 1
            if last:
                view = view.match(fo.ViewField("_id") <= ObjectId(last))
        _, x, labels, _ = _labelled_vectors(view, p["embeddings_field"], p["label_field"],
                                            zero)
        if len(labels):
            classes, sums, counts = core.class_sums(x, labels)
            buffer = io.BytesIO()
            np.savez(buffer, classes=classes.astype(str), sums=sums, counts=counts)
            storage.put_shard_part(plan["_id"], plan["token"], index, buffer.getvalue())
            return {"num_summed": len(labels), "num_zero_vectors": len(zero)}
    return {"num_summed": 0, "num_zero_vectors": len(zero)}


def _reduce_class_sums(plan):
    """``(classes, prototypes, counts)`` from every shard's class sums, added in shard
    order, then normalised as :func:`core.class_prototypes` does."""
    import io

    total, counts = {}, {}
    # every shard is done (none is missing), then the samples added after planning
    for index in range(plan["num_shards"] + 1):
        data = storage.get_shard_part(plan["_id"], plan["token"], index)
        if data is None:  # a slice without a labelled vector
            continue
        part = np.load(io.BytesIO(data))
        for c, s, n in zip(part["classes"], part["sums"], part["counts"]):
            total[str(c)] = total[str(c)] + s if str(c) in total else s
            counts[str(c)] = counts.get(str(c), 0) + int(n)
    if not total:
        raise ValueError(f"No sample with an embedding has a label in "
                         f"{plan['params']['label_field']!r}")
    classes = np.array(sorted(total))
    _check_single_classes([c for c in classes if counts[c] < 2])
    sums = np.stack([total[c] for c in classes])
    return classes, core.l2_normalize(sums.astype(np.float32)), [counts[c] for c in classes]


def _score_own_class(dataset, plan, prototypes_of, w):
    """The last step of a supervised sharded run: every slice's distance to its class's
    prototype (``core.distance_to_own_prototype``, as the single-process run), written
    with the class, fenced by the run's lease. Memory: one slice."""
    classes, protos = prototypes_of
    p = plan["params"]
    fields = score_fields(plan["key"])
    score_writer = ScoreWriter(dataset, fields, fence=w.fence)
    try:
        for index in range(plan["num_shards"]):
            view = shard_plans.shard_view(dataset, plan, index).exists(p["embeddings_field"])
            ids, x, labels, _ = _labelled_vectors(view, p["embeddings_field"],
                                                  p["label_field"], [])
            if not ids:
                continue
            distance = core.distance_to_own_prototype(x, np.searchsorted(classes, labels),
                                                      protos)
            score_writer.submit(ids, distance, list(labels))
    except BaseException:
        score_writer.cancel()
        raise
    score_writer.close()


def _plan_centroids(dataset, plan) -> list[np.ndarray]:
    """The centroids of every k of ``plan``, from its run's results (where the planning
    call stored them). A run replaced or deleted since the plan was read stops the
    shard here, as its fenced writes would."""
    dataset.reload()  # another process registered the run
    key = plan["key"]
    results = (dataset.load_run_results(key, load_view=False, cache=False)
               if key in dataset.list_runs() else None)
    if results is None or getattr(results, "plan_token", None) != plan["token"]:
        raise leases.LeaseLostError(
            f"Sharded run {key!r} was replaced or deleted while its shards ran (see "
            f"fop.shard_status for the current run)")
    return [fou.deserialize_numpy_array(c, ascii=True)
            for c in (results.centroids_by_k or [results.centroids])]


class _ScoringShards(shard_plans.ShardSteps):
    """The scoring pipeline's steps as sharding composes them: each shard assigns its
    slice to the planned centroids and writes it (:func:`assign_blocks`,
    :class:`ScoreWriter`, as the single-process streamed pass); the last one completes
    the run. With several k a shard writes each k's distance to a staging field, and the
    last step ranks them over all samples (``core.combine_by_mean_rank``, as the
    single-process run) into the distance field. A supervised shard adds up its slice's
    class sums (``core.class_sums``, stored in GridFS), and the last step reduces them
    into the class prototypes and scores every slice."""

    kind = "prototypes"
    counts_writes = True  # assigning is about as fast per sample as counting

    def process(self, dataset, plan, view, *, fence, on_written):
        field = plan["params"]["embeddings_field"]
        distance_field, cluster_field = score_fields(plan["key"])
        if _supervised_plan(plan):  # class sums now, the scores in the last step
            return _save_class_sums(plan, view)
        staged = _staged_distances(plan)
        centroids = _plan_centroids(dataset, plan)
        # resume: the samples of this shard not scored yet (the values are a
        # deterministic function of the stored centroids)
        todo = view.exists(field).exists(staged or distance_field, False)
        num_scored = 0
        score_writer = ScoreWriter(dataset, (staged or distance_field, cluster_field),
                                   fence=fence, on_written=on_written)
        try:
            for batch_ids, assigned in assign_blocks(todo, field, centroids):
                cluster, distance = assigned[0]
                if staged:  # one row of distances (one per k) per sample
                    distance = np.stack([d for _, d in assigned], axis=1)
                score_writer.submit(batch_ids, distance, cluster)
                num_scored += len(batch_ids)
        except BaseException:
            score_writer.cancel()
            raise
        score_writer.close()
        return {"num_scored": num_scored}

    def count_done(self, view, plan):
        return view.exists(_staged_distances(plan) or score_fields(plan["key"])[0]).count()

    def finish(self, dataset, plan):
        """Registers the scoring run as complete (its results as the single-process run
        records them) once every shard is done, while the plan is the current one; a
        no-op for whoever comes second."""
        run_key = plan["key"]
        try:
            with writer.run_writer(dataset, run_key, "prototypes", overwrite=True) as w:
                if (run_key not in dataset.list_runs()
                        or not shard_plans.is_current(dataset, plan)):
                    return
                if getattr(dataset.get_run_info(run_key).config, "state",
                           None) != shard_plans.SHARDED:
                    return
                view = shard_plans.plan_view(dataset, plan)
                p = plan["params"]
                distance_field, cluster_field = score_fields(run_key)
                staged = _staged_distances(plan)
                if staged:
                    _rank_staged(dataset, view, staged, (distance_field, cluster_field), w)
                stored = dataset.load_run_results(run_key, load_view=False, cache=False)
                extra, more = dict(plan_token=stored.plan_token), {}
                if _supervised_plan(plan):
                    classes, protos, class_counts = _reduce_class_sums(plan)
                    _score_own_class(dataset, plan, (classes, protos), w)
                    serialized = fou.serialize_numpy_array(protos, ascii=True)
                    extra.update(classes=[str(c) for c in classes], class_counts=class_counts,
                                 centroids=serialized, centroids_by_k=None)
                    more = dict(num_clusters=[len(classes)], num_zero_vectors=sum(
                        (s.get("result") or {}).get("num_zero_vectors", 0)
                        for s in plan["shards"]))
                else:
                    counts = view.exists(distance_field).count_values(cluster_field)  # server
                    sizes = [counts.get(c, 0) for c in range(plan["ks"][0])]
                    extra.update(centroids=stored.centroids,
                                 centroids_by_k=stored.centroids_by_k,
                                 cluster_sizes=[int(s) for s in sizes])
                unscored = view.exists(distance_field, False)
                skipped = unscored.values("id")
                if "num_zero_vectors" not in more:
                    # read, not inferred: an unscored sample with a vector may also be one
                    # copied in with an old id after its shard ran (not computed; the plan
                    # reports those), not an all-zero vector
                    with_vector = unscored.exists(p["embeddings_field"])
                    more["num_zero_vectors"] = (
                        len(_zero_rows(read_embeddings(with_vector, p["embeddings_field"])[1]))
                        if with_vector.count() else 0)
                # in place (results, then the state): re-registering would delete and
                # recreate the run, which readers in other processes could see missing
                results = dataset.init_run_results(
                    run_key, skipped_ids=skipped, timings={"train_s": plan.get("train_s")},
                    **extra)
                w.check()
                dataset.save_run_results(run_key, results, overwrite=True)
                w.set_state(runs.COMPLETE, num_scored=len(view) - len(skipped),
                            num_skipped=len(skipped), **more)
        except leases.RunLockedError:  # another worker finalizes right now
            pass

    def result(self, dataset, plan, outputs):
        """The run's :class:`ScoreResult` as registered (finished here first when every
        shard is done but the last step has not run: its worker died)."""
        run_key = plan["key"]
        dataset.reload()
        cfg = dataset.get_run_info(run_key).config
        if getattr(cfg, "state", None) == shard_plans.SHARDED and shard_plans.is_complete(plan):
            self.finish(dataset, plan)
            dataset.reload()
            cfg = dataset.get_run_info(run_key).config
        results = dataset.load_run_results(run_key, load_view=False, cache=False)
        distance_field, cluster_field = score_fields(run_key)
        return ScoreResult(run_key, plan.get("method") or "kmeans", distance_field,
                           cluster_field,
                           list(cfg.num_clusters), cfg.num_scored,
                           list(results.skipped_ids or []), dict(results.timings or {}))


def _rank_staged(dataset, view, staged, fields, w):
    """The last step of a sharded run with several k: every sample's distances to each
    k (staged by the shards) ranked over all samples and combined by mean normalised rank
    (``core.combine_by_mean_rank``, the single-process run's step) into the distance
    field, then the staging field removed; every write fenced by the run's lease. Memory:
    the ids and K + 1 numbers per scored sample, as the single-process run with several
    k."""
    scored = view.exists(staged)
    ids, staged_rows, cluster = scored.values(["id", staged, fields[1]])
    if ids:
        by_k = np.array(staged_rows, dtype=np.float32).T  # (K, n)
        del staged_rows
        distance = core.combine_by_mean_rank(list(by_k))
        score_writer = ScoreWriter(dataset, fields, fence=w.fence)
        try:
            score_writer.submit(ids, distance, cluster)
        except BaseException:
            score_writer.cancel()
            raise
        score_writer.close()
    w.check()
    storage.unset_fields(dataset, [staged], w.fence)


#: the steps :mod:`~fiftyone_prune.sdk.shards` runs for a plan of kind ``"prototypes"``
SHARD_STEPS = _ScoringShards()


def _assign_in_batches(x, centroids, batch_size=65536):
    cluster = np.empty(len(x), dtype=np.int64)
    distance = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), batch_size):
        c, d = core.nearest_prototype(x[s: s + batch_size], centroids)
        cluster[s: s + len(c)] = c
        distance[s: s + len(d)] = d
    return cluster, distance


def load_centroids(samples, run_key: str) -> np.ndarray:
    """The prototypes of scoring run ``run_key``.

    Args:
        samples: a dataset or view
        run_key: a :func:`compute_prototype_scores` run

    Returns:
        a ``(k, d)`` array of unit-norm prototypes: the k-means centroids (of the first
        k when several were combined), or for ``"supervised"`` one per class in the
        order of the run's recorded ``classes``

    Raises:
        ParameterError: when ``run_key`` is not a run of this package

    Example::

        centroids = fop.load_centroids(dataset, "prototypes")  # (10, 1280) for k=10, lite0
    """
    results = runs.load_run_results(samples, run_key)
    return fou.deserialize_numpy_array(results.centroids, ascii=True)
