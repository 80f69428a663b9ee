"""Prototype scores as sample fields, registered as a run with full provenance."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field as dc_field

import numpy as np

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.core import prototypes as core
from fiftyone_prune.sdk import runs, storage, validation

logger = logging.getLogger(__name__)

METHODS = ("kmeans", "supervised")
_WRITE_BATCH = 4096
#: concurrent bulk writes of the score fields: mongod then updates two batches at once
#: (measured on 100,000 samples of 8 KB: 1.25-1.5x faster than one writer; three gained
#: nothing more on 2 cores)
_WRITE_THREADS = 2


@dataclass
class ScoreResult:
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
    return f"{run_key}_distance", f"{run_key}_cluster"


def _check_inputs(samples, embeddings_field, run_key, method, num_clusters, label_field,
                  overwrite, niter, max_points_per_centroid):
    validation.check_collection(samples)
    runs.check_key_free(samples, run_key, overwrite, "prototypes")
    validation.check_not_empty(samples)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}")
    field = samples.get_field(embeddings_field) if isinstance(embeddings_field, str) else None
    if field is None:
        raise ValueError(
            f"Embeddings field {embeddings_field!r} does not exist; compute it with "
            f"fop.compute_embeddings() or pick one of the vector fields: "
            f"{validation.vector_fields(samples) or 'none'}"
        )
    if not isinstance(field, (fo.VectorField, fo.ArrayField)):
        raise ValueError(
            f"Field {embeddings_field!r} is a {type(field).__name__}, not a vector field; "
            f"vector fields here: {validation.vector_fields(samples) or 'none'}"
        )
    if label_field is not None:
        lf = samples.get_field(label_field)
        if lf is None:
            raise ValueError(
                f"Label field {label_field!r} does not exist; Classification fields here: "
                f"{validation.classification_fields(samples) or 'none'}"
            )
        if not (isinstance(lf, fo.EmbeddedDocumentField) and lf.document_type is fo.Classification):
            raise ValueError(
                f"Label field {label_field!r} is not a Classification field; "
                f"Classification fields here: {validation.classification_fields(samples) or 'none'}"
            )
    if method == "supervised":
        if label_field is None:
            raise ValueError("method='supervised' needs label_field= (a Classification field)")
        if num_clusters is not None:
            raise ValueError("num_clusters applies to method='kmeans'; supervised uses one "
                             "prototype per class")
    if num_clusters is not None:
        ks = num_clusters if isinstance(num_clusters, (list, tuple)) else [num_clusters]
        if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                         for k in ks):
            raise ValueError(
                f"num_clusters must be a positive integer or a list of them, got {num_clusters!r}"
            )
    for name, value in (("niter", niter), ("max_points_per_centroid", max_points_per_centroid)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    distance_field, cluster_field = score_fields(run_key)
    mine = set(runs.owned_fields(samples, run_key)) if overwrite else set()
    for f in (distance_field, cluster_field):
        if samples._dataset.get_field(f) is not None and f not in mine:
            raise ValueError(
                f"Field {f!r} already exists and was not created by run {run_key!r}; "
                f"choose another run key (nothing is overwritten)"
            )


def _read_embeddings(samples, embeddings_field):
    """One streamed pass: ids and a single float32 matrix of the samples that have an
    embedding (normalised in place later), plus the ids without one. Raises on mixed
    dimensions and non-finite values, naming a sample."""
    try:
        ids, matrix, missing, nonfinite = storage.read_vector_matrix(samples, embeddings_field)
    except storage.VectorDimensionError as e:
        raise ValueError(
            f"Embeddings in {embeddings_field!r} have mixed dimensions: sample {e.sample_id} "
            f"has {e.size}, earlier samples {e.expected}; recompute them with one model"
        ) from None
    if matrix is None:
        raise ValueError(
            f"No sample of this view has a value in {embeddings_field!r}; compute embeddings "
            f"first (fop.compute_embeddings)"
        )
    if len(nonfinite):
        raise ValueError(
            f"{len(nonfinite)} embedding(s) in {embeddings_field!r} contain NaN or inf (e.g. "
            f"sample {ids[nonfinite[0]]}); recompute them or exclude those samples from the "
            f"view"
        )
    return ids, matrix, missing


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
) -> ScoreResult:
    """Scores every sample by its cosine distance to a prototype (Sorscher et al. 2022).

    Writes ``<run_key>_distance`` (float; small = easy/prototypical, large = hard) and
    ``<run_key>_cluster`` (the k-means cluster, or the class for ``"supervised"``), and
    registers a run ``run_key`` recording every parameter.

    Args:
        samples: a dataset or view
        embeddings_field: a vector field (from :func:`compute_embeddings` or any other)
        run_key: the run's key and the prefix of its fields
        method: ``"kmeans"`` (self-supervised prototypes, label-free) or ``"supervised"``
            (one prototype per class of ``label_field``)
        num_clusters: k, or a list of k values whose scores are combined by mean
            normalised rank (robust when k is unknown; ``_distance`` then holds that
            rank score in [0, 1] and ``_cluster`` the assignment of the first k).
            Default: the number of classes of ``label_field`` when given, else
            ``round(sqrt(n / 2))`` capped at 1,000 (see ``core.prototypes.default_num_clusters``)
        label_field: a ``Classification`` field (required for ``"supervised"``)
        seed: k-means seed (faiss); results are deterministic for a seed
        niter: k-means iterations
        max_points_per_centroid: faiss's training subsample per centroid
        use_gpu: faiss on GPU (default: when available)
        overwrite: replace an existing run with this key (and its fields)
        progress: progress bar (True/False) or a callback for ``fo.report_progress``

    Samples without an embedding (or, for ``"supervised"``, without a label) are left
    unscored and listed in ``skipped_ids``.
    """
    _check_inputs(samples, embeddings_field, run_key, method, num_clusters, label_field,
                  overwrite, niter, max_points_per_centroid)
    timings = {}
    t0 = time.perf_counter()
    ids, x, missing = _read_embeddings(samples, embeddings_field)
    timings["read_s"] = round(time.perf_counter() - t0, 3)
    core.l2_normalize(x, out=x)

    labels = None
    if label_field is not None:
        label_by_id = dict(zip(*samples.values(["id", f"{label_field}.label"])))
        labels = [label_by_id.get(i) for i in ids]

    distance_field, cluster_field = score_fields(run_key)
    results_extra = {}
    t1 = time.perf_counter()
    if method == "supervised":
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
        cluster_values = list(labels_arr.astype(str))
        ks = [len(classes_)]
        results_extra.update(classes=[str(c) for c in classes_],
                             class_counts=[int(c) for c in counts],
                             centroids=fou.serialize_numpy_array(protos, ascii=True))
    else:
        num_classes = None
        if label_field is not None and num_clusters is None:
            num_classes = len({lab for lab in labels if lab is not None})
        ks = (list(num_clusters) if isinstance(num_clusters, (list, tuple))
              else [num_clusters or core.default_num_clusters(len(ids), num_classes)])
        ks = [int(k) for k in ks]
        too_big = [k for k in ks if k > len(ids)]
        if too_big:
            raise ValueError(
                f"num_clusters {too_big} exceeds the number of samples with embeddings "
                f"({len(ids)}); choose at most {len(ids)}"
            )
        all_distances, primary = [], None
        for j, k in enumerate(ks):
            centroids = core.spherical_kmeans(x, k, niter=niter, seed=seed,
                                              max_points_per_centroid=max_points_per_centroid,
                                              use_gpu=use_gpu)
            cluster, dist = _assign_in_batches(x, centroids)
            all_distances.append(dist)
            if j == 0:
                primary = (cluster, centroids)
        cluster, centroids = primary
        distance = all_distances[0] if len(ks) == 1 else core.combine_by_mean_rank(all_distances)
        cluster_values = cluster
        sizes = np.bincount(cluster, minlength=ks[0])
        results_extra.update(centroids=fou.serialize_numpy_array(centroids, ascii=True),
                             cluster_sizes=[int(s) for s in sizes])
    timings["prototypes_s"] = round(time.perf_counter() - t1, 3)

    # everything validated and computed: only now is the dataset changed
    dataset = samples._dataset
    cluster_type = fo.StringField if method == "supervised" else fo.IntField
    if overwrite and run_key in dataset.list_runs():
        _clear_previous_run(samples, run_key, distance_field, cluster_field, cluster_type, ids)
    dataset.add_sample_field(distance_field, fo.FloatField,
                             description=f"prototype distance, run {run_key}")
    dataset.add_sample_field(cluster_field, cluster_type,
                             description=f"prototype (cluster/class), run {run_key}")
    t2 = time.perf_counter()
    # plain Python floats/ints/strs: what BSON encodes without per-value conversion
    distance_values = distance.tolist()
    cluster_list = (cluster_values.tolist() if isinstance(cluster_values, np.ndarray)
                    else [str(c) for c in cluster_values])

    def write_batch(start):
        end = min(start + _WRITE_BATCH, len(ids))
        storage.write_scalars(
            dataset,
            {distance_field: distance_values[start:end],
             cluster_field: cluster_list[start:end]},
            ids[start:end],
        )
        return end - start

    pool = ThreadPoolExecutor(_WRITE_THREADS)
    try:
        with fou.ProgressBar(total=len(ids), progress=progress) as pb:
            for written in pool.map(write_batch, range(0, len(ids), _WRITE_BATCH)):
                pb.update(written)
    finally:  # an interrupt stops queued batches; finished ones stay written
        pool.shutdown(cancel_futures=True)
    timings["write_s"] = round(time.perf_counter() - t2, 3)
    timings["total_s"] = round(time.perf_counter() - t0, 3)

    model_info = (samples.get_field(embeddings_field).info or {}).get("fiftyone_prune")
    params = dict(
        embeddings_field=embeddings_field, embeddings_model=model_info, method_name=method,
        num_clusters=ks, label_field=label_field, seed=seed, niter=niter,
        max_points_per_centroid=max_points_per_centroid,
        score_type="cosine_distance" if len(ks) == 1 else "mean_normalized_rank",
        distance_field=distance_field, cluster_field=cluster_field,
        num_scored=len(ids), num_skipped=len(missing),
        # as JSON text: stage dicts carry "_cls" keys, which mongoengine later tries to
        # dereference as documents when the run is reloaded (NotRegistered on overwrite)
        view=json.dumps(samples._serialize()) if hasattr(samples, "_serialize") else None,
    )
    runs.register(samples, run_key, "prototypes", params, [distance_field, cluster_field],
                  dict(skipped_ids=missing, timings=timings, **results_extra),
                  overwrite=overwrite)
    if missing:
        logger.warning("%d sample(s) left unscored (no embedding%s): %s", len(missing),
                       " or no label" if method == "supervised" else "",
                       ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return ScoreResult(run_key, method, distance_field, cluster_field, ks, len(ids),
                       missing, timings)


def _clear_previous_run(samples, run_key, distance_field, cluster_field, cluster_type,
                        scored_ids):
    """Replaces the run ``run_key`` (``overwrite=True``).

    When its two fields have the types the new run writes, they are kept and the new
    values overwrite the old ones in place: removing the fields first would be a full
    ``$unset`` pass over every document (134 s for 1M samples here) and adding them back
    costs mongod twice as much per document as updating them. Only the samples the new
    run does not score lose their old values, so no stale score survives. Otherwise
    (e.g. ``kmeans`` after ``supervised``: int vs str clusters) the run is deleted."""
    dataset = samples._dataset
    old_fields = runs.owned_fields(samples, run_key)
    same = (sorted(old_fields) == sorted([distance_field, cluster_field])
            and isinstance(dataset.get_field(distance_field), fo.FloatField)
            and isinstance(dataset.get_field(cluster_field), cluster_type))
    if not same:
        runs.delete_run(samples, run_key)
        return
    scored = set(scored_ids)
    stale = [doc["_id"] for doc in dataset._sample_collection.find(
        {"$or": [{distance_field: {"$exists": True}}, {cluster_field: {"$exists": True}}]},
        {"_id": 1}) if str(doc["_id"]) not in scored]
    storage.unset_fields(dataset, [distance_field, cluster_field], stale)
    dataset.delete_run(run_key)


def _assign_in_batches(x, centroids, batch_size=65536):
    cluster = np.empty(len(x), dtype=np.int64)
    distance = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), batch_size):
        c, d = core.nearest_prototype(x[s: s + batch_size], centroids)
        cluster[s: s + len(c)] = c
        distance[s: s + len(d)] = d
    return cluster, distance


def load_centroids(samples, run_key: str) -> np.ndarray:
    results = runs.load_run_results(samples, run_key)
    return fou.deserialize_numpy_array(results.centroids, ascii=True)
