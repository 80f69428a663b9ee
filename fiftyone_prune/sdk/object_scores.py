"""Object-level prototype scores: each label of a Detection or Detections field is one
item, scored by the distance of its own vector (``compute_embeddings(patches_field=...)``
writes one per label) to k-means prototypes of all objects, or to its class prototype
(its own ``label``), written as attributes of the labels themselves
(``gt.detections.<run_key>_distance`` / ``_cluster``), as FiftyOne's brain stores
object-level results. :func:`fiftyone_prune.compute_prototype_scores` with
``patches_field=`` lands here; selections of such a run tag the labels
(:mod:`~fiftyone_prune.sdk.selection`).

Every object vector of the view is read into one matrix (objects of one view rarely
outnumber what a machine holds; sharding is per-sample, so ``num_shards`` is refused),
and the same core steps as per-sample scoring run on it (the seeded training subsample,
spherical k-means, nearest prototype, several k by mean normalised rank).
"""

from __future__ import annotations

import logging
import math
import re
import time

import numpy as np

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.core import prototypes as core
from fiftyone_prune.core.params import ParameterError, parse_num_clusters
from fiftyone_prune.sdk import leases, run_configs, runs, storage, validation

logger = logging.getLogger(__name__)


def read_labels(samples, labels_path: str, single: bool, attrs: list[str]):
    """The labels at ``labels_path`` of ``samples``, flattened in view order:
    ``(sample ids, label ids, {attr: values})``, one entry per label."""
    values = samples.values(["id", f"{labels_path}.id"]
                            + [f"{labels_path}.{a}" for a in attrs])
    sample_ids, label_ids, columns = [], [], {a: [] for a in attrs}
    for row in zip(*values):
        sid, lids, rest = row[0], row[1], row[2:]
        if lids is None:
            continue
        if single:
            lids, rest = [lids], [[v] for v in rest]
        for j, lid in enumerate(lids):
            sample_ids.append(sid)
            label_ids.append(lid)
            for a, column in zip(attrs, rest):
                columns[a].append(None if column is None else column[j])
    return sample_ids, label_ids, columns


def _vectors(label_ids, raw, embeddings_field):
    """The labels with a usable vector and their float32 matrix; the others' ids (no
    vector, or all zeros: no direction) and the all-zero ones."""
    rows, vectors, zero = [], [], []
    dim = None
    for i, (lid, v) in enumerate(zip(label_ids, raw)):
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float32).ravel()
        if dim is None:
            dim = v.size
        elif v.size != dim:
            raise ValueError(f"Object vectors in {embeddings_field!r} have mixed dimensions: "
                             f"label {lid} has {v.size}, earlier labels {dim}; recompute "
                             f"them with one model")
        if not np.isfinite(v).all():
            raise ValueError(f"Object vector of label {lid} in {embeddings_field!r} "
                             f"contains NaN or inf; recompute it")
        if not v.any():
            zero.append(lid)
            continue
        rows.append(i)
        vectors.append(v)
    if not vectors:
        raise ValueError(f"No object of this view has a usable vector in "
                         f"{embeddings_field!r}; embed the objects first "
                         f"(fop.compute_embeddings(..., patches_field=...))")
    return np.array(rows), np.stack(vectors), zero


def count_objects_with_vectors(samples, labels_path, embeddings_field) -> int:
    """Labels of the view with a value in ``embeddings_field`` (k is checked against it)."""
    return int(samples.count(f"{labels_path}.{embeddings_field}"))


def score_objects(samples, setup, w, *, patches_field, labels_path, single, descriptions,
                  progress=None):
    """The object-level run under the run-writer ``w`` (its lease held): reads every
    object vector, computes the prototypes and distances, then writes the two label
    attributes and registers the run.

    A new run writes its attributes directly and removes them again if it fails part
    way (fenced). An overwrite writes this writer's staging attributes, registers the
    new run in progress and then swaps them in, per document atomically, so the old
    run's values stay whole until the new ones are complete (a kill in between leaves
    a run that readers refuse until a rerun).

    Args:
        descriptions: the description of each score attribute, by name

    Returns:
        ``(label ids scored, label ids left unscored, timings)``
    """
    dataset = samples._dataset
    timings, t0 = {}, time.perf_counter()
    attrs = [setup.embeddings_field] + (["label"] if setup.method == "supervised" else [])
    sample_ids, label_ids, columns = read_labels(samples, labels_path, single, attrs)
    rows, x, zero = _vectors(label_ids, columns[setup.embeddings_field],
                             setup.embeddings_field)
    timings["read_s"] = round(time.perf_counter() - t0, 3)
    t = time.perf_counter()
    core.l2_normalize(x, out=x)
    extra = {}
    if setup.method == "supervised":
        labels = [columns["label"][i] for i in rows]
        labelled = np.array([lab is not None for lab in labels])
        rows, x = rows[labelled], x[labelled]
        classes_arr = np.array([str(lab) for lab in labels if lab is not None], dtype=object)
        if not len(classes_arr):
            raise ValueError(f"No object with a vector has a label in {patches_field!r}")
        classes, counts = np.unique(classes_arr.astype(str), return_counts=True)
        if (counts < 2).any():
            raise ValueError(
                f"Class(es) {list(classes[counts < 2])[:10]} have a single object with a "
                f"vector: its own prototype would be the object itself (distance 0, "
                f"falsely 'easiest'). Relabel them, or use method='kmeans'")
        classes_, protos = core.class_prototypes(x, classes_arr.astype(str))
        distance = core.distance_to_own_prototype(
            x, np.searchsorted(classes_, classes_arr.astype(str)), protos)
        cluster = [str(c) for c in classes_arr]
        setup.ks = [len(classes_)]
        extra = dict(classes=[str(c) for c in classes_], class_counts=[int(c) for c in counts],
                     centroids=fou.serialize_numpy_array(protos, ascii=True))
    else:
        if not setup.ks:
            setup.ks = [core.default_num_clusters(len(x))]
        too_big = [k for k in setup.ks if k > len(x)]
        if too_big:
            raise ParameterError(f"num_clusters {too_big} exceeds the number of objects "
                                 f"with a vector ({len(x)}); choose at most {len(x)}",
                                 "num_clusters")
        sub = core.training_subsample(len(x), max(setup.ks), setup.max_points_per_centroid,
                                      setup.seed)
        train = x if sub is None else x[np.sort(sub)]
        centroids = [core.spherical_kmeans(train, k, **setup.kmeans) for k in setup.ks]
        assigned = [core.nearest_prototype(x, c) for c in centroids]
        distance = (assigned[0][1] if len(setup.ks) == 1
                    else core.combine_by_mean_rank([d for _, d in assigned]))
        cluster = assigned[0][0].tolist()
        extra = dict(centroids=fou.serialize_numpy_array(centroids[0], ascii=True),
                     cluster_sizes=[int(s) for s in np.bincount(assigned[0][0],
                                                                minlength=setup.ks[0])])
    timings["prototypes_s"] = round(time.perf_counter() - t, 3)
    scored = set(rows.tolist())
    skipped = [lid for i, lid in enumerate(label_ids) if i not in scored]
    keys = [(sample_ids[i], label_ids[i]) for i in rows]
    distance = [float(d) for d in np.asarray(distance)]

    names = [a.rsplit(".", 1)[-1] for a in (setup.distance_field, setup.cluster_field)]
    final_paths = [f"{labels_path}.{a}" for a in names]
    replaces = setup.overwrite and w.replaces_run
    written = [w.staging_name(a) for a in names] if replaces else names
    t = time.perf_counter()
    try:
        if not replaces:
            for path, a, ftype in zip(final_paths, names, (fo.FloatField, _cluster_type(setup))):
                declared = dataset.get_field(path)
                if declared is not None and type(declared) is not ftype:
                    # what a killed first run left (overwrite=True was checked): replaced
                    w.check()
                    dataset.delete_sample_field(path)
                dataset.add_sample_field(path, ftype, description=descriptions[a])
        # and what a killed (or fenced-out) overwrite staged: this writer owns the run now
        leftovers = storage.label_attribute_names(
            dataset, labels_path, single,
            "^(" + "|".join(map(re.escape, names)) + r")_staging_[0-9a-f]{8}$")
        storage.unset_label_attributes(dataset, labels_path, single,
                                       sorted(set(written) | set(leftovers)), w.fence)
        bar = fou.ProgressBar(total=len(keys), progress=progress)
        with bar:
            for s in range(0, len(keys), _WRITE_BATCH):
                e = min(s + _WRITE_BATCH, len(keys))
                storage.write_label_scalars(
                    dataset, labels_path, single,
                    {written[0]: distance[s:e], written[1]: cluster[s:e]}, keys[s:e], w.fence)
                bar.update(e - s)
        timings["write_s"] = round(time.perf_counter() - t, 3)
        timings["total_s"] = round(time.perf_counter() - t0, 3)
        check = {"count": len(distance), "sum": math.fsum(distance)}
        model_info = (samples.get_field(f"{labels_path}.{setup.embeddings_field}").info
                      or {}).get("fiftyone_prune")
        params = setup.run_params(model_info, num_scored=len(keys), num_skipped=len(skipped),
                                  num_zero_vectors=len(zero), check=check,
                                  patches_field=patches_field, labels_path=labels_path)
        w.register(params, dict(skipped_ids=skipped, timings=timings, **extra),
                   state=runs.IN_PROGRESS if replaces else runs.COMPLETE)
        if replaces:
            _switch(dataset, labels_path, single, dict(zip(written, names)), final_paths,
                    setup, descriptions, w)
            w.set_state(runs.COMPLETE, check=check)
    except BaseException:
        _roll_back(dataset, labels_path, single, written, None if replaces else final_paths,
                   w, setup.run_key)
        raise
    if zero:
        logger.warning("%d object(s) have an all-zero vector in %r; left unscored: %s",
                       len(zero), setup.embeddings_field, ", ".join(zero[:10]))
    return [lid for _, lid in keys], skipped, timings


#: labels per fenced write (each sample's labels travel as one merged row)
_WRITE_BATCH = 20_000


def _cluster_type(setup):
    return fo.StringField if setup.method == "supervised" else fo.IntField


def _switch(dataset, labels_path, single, staging_to_final, final_paths, setup,
            descriptions, w):
    """Swaps the staged attributes in; a cluster type change (k-means ints vs class
    strings) re-declares the field."""
    for path, a, ftype in zip(final_paths, staging_to_final.values(),
                              (fo.FloatField, _cluster_type(setup))):
        declared = dataset.get_field(path)
        if declared is not None and type(declared) is not ftype:
            w.check()
            dataset.delete_sample_field(path)  # its values are replaced by the swap
            declared = None
        if declared is None:
            dataset.add_sample_field(path, ftype, description=descriptions[a])
    storage.swap_label_attributes(dataset, labels_path, single, staging_to_final, w.fence)


def _roll_back(dataset, labels_path, single, written, declared_paths, w, run_key):
    """Removes what this writer wrote (fenced: a writer that lost the run deletes
    nothing) and, for a new run, the attributes' declarations."""
    try:
        storage.unset_label_attributes(dataset, labels_path, single, written, w.fence)
    except leases.LeaseLostError:
        logger.warning("Scoring stopped after losing the run %r: its label attributes %s "
                       "are left to the writer that owns the run now", run_key, written)
        return
    except Exception as e:  # noqa: BLE001 - the original error is what the caller needs
        logger.warning("Could not remove the partly written attributes %s: %s", written, e)
        return
    for path in declared_paths or ():
        if dataset.get_field(path) is not None:
            dataset.delete_sample_field(path)


def check_object_arguments(samples, *, embeddings_field, patches_field, label_field,
                           num_shards, delegate, num_clusters, run_key, overwrite,
                           orphans_at=lambda labels_path: ()):
    """The object-level checks of :func:`~fiftyone_prune.sdk.scores.check_scoring_inputs`
    (``orphans_at(labels_path)``: the run's label attributes a killed first run left
    without its run): returns ``(labels path, one label per sample)``."""
    if getattr(samples, "_is_patches", False):
        raise ParameterError(
            "Got a patches view (to_patches): its samples are copies; pass the source "
            "dataset or view with patches_field='<label field>' to score each object on "
            "its label", "samples")
    labels_path, single = validation.check_object_embeddings(samples, patches_field,
                                                             embeddings_field)
    if label_field is not None:
        raise ParameterError(
            f"label_field does not apply to object-level scoring: each object's own "
            f"label is its class (method='supervised' and balance='class' use it); leave "
            f"label_field unset", "label_field")
    if num_shards is not None or delegate:
        raise ParameterError("num_shards shards samples, not objects: score the objects "
                             "of patches_field in one process (leave num_shards unset)",
                             "num_shards")
    mine = set(runs.owned_fields(samples, run_key)) if overwrite else set()
    orphans = orphans_at(labels_path)
    for name in run_configs.score_field_names(run_key):
        path = f"{labels_path}.{name}"
        if path in orphans:
            if not overwrite:
                raise ParameterError(
                    f"Label attribute {path!r} was left by a run {run_key!r} that was "
                    f"killed before it finished (no run is registered); pass "
                    f"overwrite=True to replace it", "overwrite")
            continue
        if samples._dataset.get_field(path) is not None and path not in mine:
            raise ParameterError(
                f"Label attribute {path!r} already exists and was not created by run "
                f"{run_key!r}; choose another run key (nothing is overwritten)", "run_key")
    if num_clusters is not None:
        parsed = parse_num_clusters(num_clusters)
        ks = parsed if isinstance(parsed, list) else [parsed]
        present = count_objects_with_vectors(samples, labels_path, embeddings_field)
        too_big = [k for k in ks if k > present]
        if too_big:
            raise ParameterError(f"num_clusters {too_big} exceeds the number of objects "
                                 f"with a vector ({present}); choose at most {present}",
                                 "num_clusters")
    return labels_path, single

