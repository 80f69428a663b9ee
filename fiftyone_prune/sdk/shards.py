"""Sharded runs: one embedding or scoring run split into M disjoint, stable slices that
separate processes (FiftyOne delegated-operation workers, on any machine sharing the
database) compute independently.

The coordinating record is one document (:mod:`~fiftyone_prune.sdk.storage`,
``fiftyone_prune_shard_plans``) holding the serialized view, the parameters, the shard
boundaries and per-shard state (``queued`` / ``running`` / ``done`` / ``failed``, owner,
heartbeat, samples done). Shards are ``_id`` ranges of the view: the sorted sample ids
are cut once, when the run is planned, into M ranges of equal counts, and only the M
lower bounds are stored; a shard is then ``lower_i <= _id < lower_{i+1}`` whatever the
workers' view order, served by the ``_id`` index.

A shard is written under its own lease (``<key>#shard<i>``, :mod:`~fiftyone_prune.sdk.leases`),
so two workers never write one shard at once; a killed worker's lease expires and its
shard shows as ``stale``. Every shard is idempotent and resumable: embeddings skip the
samples that have one (``skip_existing``), scoring skips the samples that have a score
(the values are a deterministic function of the stored centroids).

Scoring trains k-means once, in the planning call, exactly as the single-process path
does (the same seeded subsample, or every vector when the view is small enough, in the
same order), and stores the centroids in the record; the shards only assign. Training
happens in the planning call rather than in a queued "train" operation because its cost
is bounded by k x ``max_points_per_centroid`` vectors whatever the size of the view, and
shards queued after it never have to wait for or poll a training step. The scoring run is
registered at planning time in state ``"sharded"`` (so every reader, selection included,
refuses it) and is switched to ``"complete"`` by whichever worker finishes the last shard.

The same shard function (:func:`run_shard`) is what FiftyOne Enterprise's distributed
execution of one operation would call per task: a task index maps to a shard index.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from bson import ObjectId, json_util

import fiftyone as fo
import fiftyone.core.utils as fou
from fiftyone import ViewField as F

from fiftyone_prune.core import prototypes as core
from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import leases, run_configs, runs, storage, validation

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, STALE = "queued", "running", "done", "failed", "stale"
#: the ``state`` of a scoring run whose shards are not all done yet
SHARDED = "sharded"
#: the plugin operator that runs one shard (``fiftyone_prune/plugin/shards.py``)
SHARD_OPERATOR = "@fiftyone-prune/prune/run_shard"
#: samples assigned and written per database write of a scoring shard: the most a
#: killed worker loses of its shard
SCORE_CHUNK = 4096
#: seconds without progress after which a running shard counts as stale even though
#: its worker still renews its lease (a hung worker); a dead worker's shard is stale as
#: soon as its lease expires
DEFAULT_STALE_SECONDS = 600.0


def plan_id(dataset, key: str) -> str:
    return f"{dataset._doc.id}/{key}"


def shard_lease_key(key: str, index: int) -> str:
    return f"{key}#shard{index}"


def _check_num_shards(num_shards):
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")


def _bounds(samples, num_shards) -> list[str]:
    """Lower ``_id`` bound of each shard: equal counts of the view's sorted ids."""
    ids = sorted(samples.values("_id"))
    if num_shards > len(ids):
        raise ValueError(f"num_shards={num_shards} exceeds the {len(ids)} samples of the "
                         f"view; choose at most {len(ids)}")
    return [str(ids[i * len(ids) // num_shards]) for i in range(num_shards)]


def _slice(view, plan, index):
    lower = plan["bounds"]
    expr = F("_id") >= ObjectId(lower[index])
    if index + 1 < len(lower):
        expr = expr & (F("_id") < ObjectId(lower[index + 1]))
    return view.match(expr)


def _view(dataset, plan):
    stages = json_util.loads(plan["view"]) if plan.get("view") else []
    return fo.DatasetView._build(dataset, stages) if stages else dataset.view()


def _new_plan(samples, key, kind, num_shards, params):
    return {
        "_id": plan_id(samples._dataset, key), "dataset": samples._dataset.name,
        "key": key, "kind": kind, "params": params,
        "view": json_util.dumps(samples.view()._serialize()),
        "bounds": _bounds(samples, num_shards), "num_shards": num_shards,
        "total": len(samples),
        "shards": [{"index": i, "state": QUEUED, "owner": None, "samples_done": 0,
                    "error": None, "heartbeat_at": None, "progress_at": None}
                   for i in range(num_shards)],
    }


def _load_plan(dataset, key):
    plan = storage.get_shard_plan(plan_id(dataset, key))
    if plan is None:
        raise ValueError(f"Dataset {dataset.name!r} has no sharded run {key!r}; start one "
                         f"with num_shards= on compute_embeddings / compute_prototype_scores")
    return plan


# --- embeddings ----------------------------------------------------------------------

def compute_embeddings_sharded(samples, num_shards, delegate=False, model="swav_resnet50",
                               embeddings_field="swav_embedding", **kwargs):
    """``compute_embeddings(..., num_shards=M, delegate=...)``: plans (or resumes) a
    sharded embedding run keyed by ``embeddings_field`` and runs its shards here in order
    (returns the combined :class:`EmbeddingResult`) or queues one delegated operation per
    unfinished shard (returns the plan's status)."""
    from fiftyone_prune.core import models as core_models  # torch: imported when used
    from fiftyone_prune.sdk import embeddings

    _check_num_shards(num_shards)
    runs.check_key_free(samples, run_configs.embeddings_run_key(embeddings_field), True,
                        "embeddings", "embeddings_field")
    if not isinstance(model, str):
        raise ValueError("num_shards needs a model given by name (each worker loads it): "
                         "e.g. model='efficientnet_lite0'")
    if kwargs.get("patches_field") is not None:
        raise ValueError("num_shards does not split object patches yet; omit num_shards "
                         "for patches_field")
    if kwargs.get("skip_existing") is False:
        raise ValueError("shards resume by skipping embedded samples: skip_existing=False "
                         "is not available with num_shards (delete the field to recompute)")
    kwargs.pop("skip_existing", None)
    kwargs.pop("progress", None)
    # the single-process call's checks, before anything is written; the field is declared
    # here, once, rather than by M workers at the same time
    validation.check_collection(samples, images=True)
    validation.check_new_field(samples, embeddings_field, fo.VectorField, "embeddings field")
    device = embeddings._check_device(kwargs.get("device"))
    precision = kwargs.get("precision", "fp32")
    if kwargs.get("device") is not None or precision not in core_models.PRECISIONS:
        # with the device unset the workers' devices decide: a CPU-only machine may
        # queue fp16 shards for GPU workers (a worker without one fails its shard)
        core_models.autocast_dtype(precision, device.type)
    embedder = embeddings._resolve_model(model, kwargs.get("checkpoint_path"),
                                         kwargs.get("image_size", 224))
    if precision != "fp32" and not isinstance(embedder, core_models.EmbeddingModel):
        raise ParameterError(f"precision={precision!r} applies to the built-in models "
                             f"{core_models.BUILTIN_MODELS}: leave precision='fp32'",
                             "precision")
    settings = embeddings._settings(model, embedder, precision)
    embeddings._check_resume(samples, embeddings_field, settings)
    del embedder, device
    embeddings._declare_vector_field(samples._dataset, embeddings_field,
                                     {"fiftyone_prune": settings})
    params = dict(model=model, embeddings_field=embeddings_field, **kwargs)
    plan = _plan_or_resume(samples, embeddings_field, "embeddings", num_shards, params)
    return _run_or_queue(samples._dataset, plan, delegate)


def _embed_slice(dataset, plan, index, on_chunk):
    """Embeds the samples of shard ``index`` that have no vector yet. The slice's work
    without ``compute_embeddings``' run registration: M shards registering one run key at
    once would contend for its lease and record a slice as the run's view; the run is
    registered once, on the whole view, by whoever finishes the last shard."""
    from fiftyone_prune.core import models as core_models  # torch: imported when used
    from fiftyone_prune.sdk import embeddings

    EmbeddingModel = core_models.EmbeddingModel
    p = plan["params"]
    field = p["embeddings_field"]
    todo = _slice(_view(dataset, plan), plan, index).exists(field, False)
    device = embeddings._check_device(p.get("device"))
    embedder = embeddings._resolve_model(p["model"], p.get("checkpoint_path"),
                                         p.get("image_size", 224))
    precision = p.get("precision", "fp32")
    core_models.autocast_dtype(precision, device.type)
    # a worker whose model files differ from the planning machine's is refused here
    embeddings._check_resume(dataset, field,
                             embeddings._settings(p["model"], embedder, precision))
    result = embeddings.EmbeddingResult(field, p["model"])
    if isinstance(embedder, EmbeddingModel):
        ids, filepaths = todo.values(["id", "filepath"])
        if ids:
            embeddings._run_torch_model(
                embedder, embeddings._ImageFiles(filepaths, embedder.transform(),
                                                 embedder.image_size),
                ids, lambda keys, vectors: storage.write_vectors(dataset, field, keys, vectors),
                p.get("batch_size", 32), p.get("num_workers"), device,
                p.get("chunk_size", embeddings.DEFAULT_CHUNK_SIZE), False, result, precision)
    elif len(todo):
        embeddings._compute_with_fiftyone_model(todo, embedder, field, p.get("batch_size", 32),
                                                p.get("num_workers"), False, result)
    return {"num_embedded": result.num_embedded, "failed_ids": list(result.failed_ids)}


def _embed_done(view, plan):
    field = plan["params"]["embeddings_field"]
    return view.exists(field).count() if view.get_field(field) is not None else 0


# --- scoring -------------------------------------------------------------------------

def compute_prototype_scores_sharded(samples, embeddings_field, run_key, num_shards,
                                     delegate=False, method="kmeans", num_clusters=None,
                                     label_field=None, seed=51, niter=None,
                                     max_points_per_centroid=None, use_gpu=None,
                                     overwrite=False):
    """``compute_prototype_scores(..., num_shards=M, delegate=...)``: trains k-means once
    (as the single-process path does), registers the run in state ``"sharded"``, then
    runs the assign-and-write shards here in order (returns a ``ScoreResult``) or queues
    them as delegated operations (returns the plan's status). Calling it again with the
    same arguments resumes the unfinished shards."""
    from fiftyone_prune.sdk import scores

    niter = core.DEFAULT_NITER if niter is None else niter
    mppc = (core.DEFAULT_MAX_POINTS_PER_CENTROID if max_points_per_centroid is None
            else max_points_per_centroid)
    validation.check_collection(samples)
    validation.check_run_key(run_key)
    _check_num_shards(num_shards)
    if method != "kmeans":
        raise ValueError("num_shards applies to method='kmeans' (supervised prototypes need "
                         "every label at once and are one cheap pass): omit num_shards")
    if isinstance(num_clusters, (list, tuple)) and len(num_clusters) != 1:
        raise ValueError("num_shards takes one k: several k combine ranks over all samples, "
                         "which no shard sees; omit num_shards or pass one k")
    if overwrite:
        raise ValueError("num_shards does not replace a run: delete it first "
                         "(fop.delete_run) and start the sharded run on a free key")
    dataset = samples._dataset
    params = dict(embeddings_field=embeddings_field, num_clusters=num_clusters, seed=seed,
                  niter=niter, max_points_per_centroid=mppc, use_gpu=use_gpu)
    existing = storage.get_shard_plan(plan_id(dataset, run_key))
    resuming = (existing is not None and run_key in dataset.list_runs()
                and existing["params"] == params and existing.get("kind") == "prototypes")
    if resuming:
        plan = _plan_or_resume(samples, run_key, "prototypes", num_shards, params)
    else:
        scores.check_scoring_inputs(samples, embeddings_field, run_key, method, num_clusters,
                             label_field, False, niter, mppc)
        with leases.hold(samples, run_key):
            plan = _plan_or_resume(samples, run_key, "prototypes", num_shards, params,
                                   fresh=True)
            _train_and_register(samples, plan, label_field)
            plan = _load_plan(dataset, run_key)
    _declare_score_fields(dataset, run_key)
    return _run_or_queue(dataset, plan, delegate)


def _declare_score_fields(dataset, run_key):
    from fiftyone_prune.sdk import scores

    descriptions = scores._field_descriptions(run_key)
    distance_field, cluster_field = scores.score_fields(run_key)
    for field, ftype in ((distance_field, fo.FloatField), (cluster_field, fo.IntField)):
        if dataset.get_field(field) is None:
            dataset.add_sample_field(field, ftype, description=descriptions[field])


def _train_and_register(samples, plan, label_field):
    """k-means exactly as ``scores._compute`` trains it (same rows, same order, same
    seed), the centroids into the record, and the run registered as ``"sharded"``."""
    from fiftyone_prune.sdk import scores

    p = plan["params"]
    embeddings_field, run_key = p["embeddings_field"], plan["key"]
    present = samples.exists(embeddings_field)
    present_ids = present.values("id")
    if not present_ids:
        raise ValueError(f"No sample of this view has a value in {embeddings_field!r}; "
                         f"compute embeddings first (fop.compute_embeddings)")
    ks = scores._resolve_ks(p["num_clusters"], label_field, present, len(present_ids))
    kmeans = dict(niter=p["niter"], seed=p["seed"],
                  max_points_per_centroid=p["max_points_per_centroid"], use_gpu=p["use_gpu"])
    rows = core.training_subsample(len(present_ids), ks[0], p["max_points_per_centroid"],
                                   p["seed"])
    t = time.perf_counter()
    if rows is None:  # the single-process path then trains on every scorable vector
        _, x, _ = scores._read_scorable(samples, embeddings_field, [])
    else:
        train_ids = [present_ids[i] for i in rows]
        parts = [scores.read_embeddings(samples.select(train_ids[s: s + scores._SELECT_CHUNK]),
                                         embeddings_field)[1]
                 for s in range(0, len(train_ids), scores._SELECT_CHUNK)]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(scores._zero_rows(x)):
            x = x[x.any(axis=1)]
    core.l2_normalize(x, out=x)
    centroids = core.spherical_kmeans(x, ks[0], **kmeans)
    train_s = round(time.perf_counter() - t, 3)
    del x
    serialized = fou.serialize_numpy_array(centroids, ascii=True)
    model_info = (samples.get_field(embeddings_field).info or {}).get("fiftyone_prune")
    config = dict(embeddings_field=embeddings_field, embeddings_model=model_info,
                  method_name="kmeans", num_clusters=ks, label_field=label_field,
                  seed=p["seed"], niter=p["niter"],
                  max_points_per_centroid=p["max_points_per_centroid"],
                  score_type="cosine_distance", field_prefix=run_key, view=plan["view"],
                  num_shards=plan["num_shards"])
    storage.update_shard_plan(plan["_id"], {"centroids": serialized, "ks": ks,
                                            "train_s": train_s})
    runs.register(samples, run_key, "prototypes", config,
                  dict(centroids=serialized, timings={"train_s": train_s}), state=SHARDED)


def _score_slice(dataset, plan, index, on_chunk):
    from fiftyone_prune.sdk import scores

    p = plan["params"]
    embeddings_field = p["embeddings_field"]
    distance_field, cluster_field = scores.score_fields(plan["key"])
    centroids = fou.deserialize_numpy_array(plan["centroids"], ascii=True)
    # resume: the samples this shard has not scored yet
    todo = _slice(_view(dataset, plan), plan, index).exists(embeddings_field).exists(
        distance_field, False)
    num_scored = 0
    try:
        for batch_ids, block, _, nonfinite in storage.iter_vector_blocks(
                todo, embeddings_field, batch_size=SCORE_CHUNK):
            if len(nonfinite):
                raise ValueError(scores._nonfinite_message(embeddings_field, len(nonfinite),
                                                           batch_ids[nonfinite[0]]))
            nonzero = block.any(axis=1)  # all-zero vectors: unscored, as single-process
            if not nonzero.all():
                batch_ids = [i for i, k in zip(batch_ids, nonzero) if k]
                block = block[nonzero]
            if not batch_ids:
                continue
            if block.shape[1] != centroids.shape[1]:
                raise ValueError(scores._mixed_message(embeddings_field,
                                                       storage.VectorDimensionError(
                                                           batch_ids[0], block.shape[1],
                                                           centroids.shape[1])))
            core.l2_normalize(block, out=block)
            cluster, distance = core.nearest_prototype(block, centroids)
            storage.write_scalars(dataset, {distance_field: distance.tolist(),
                                            cluster_field: cluster.tolist()}, batch_ids)
            num_scored += len(batch_ids)
            on_chunk(len(batch_ids))
    except storage.VectorDimensionError as e:
        raise ValueError(scores._mixed_message(embeddings_field, e)) from None
    return {"num_scored": num_scored}


def _score_done(view, plan):
    from fiftyone_prune.sdk import scores

    return view.exists(scores.score_fields(plan["key"])[0]).count()


def _finalize_scores(dataset, plan):
    """Registers the scoring run as complete (its results as the single-process run
    records them) once every shard is done; a no-op for whoever comes second."""
    from fiftyone_prune.sdk import scores

    run_key = plan["key"]
    try:
        with leases.hold(dataset, run_key):
            dataset.reload()
            if run_key not in dataset.list_runs():
                return
            info = dataset.get_run_info(run_key)
            if getattr(info.config, "state", None) != SHARDED:
                return
            view = _view(dataset, plan)
            p = plan["params"]
            distance_field, cluster_field = scores.score_fields(run_key)
            skipped = view.exists(distance_field, False).values("id")
            no_embedding = view.exists(p["embeddings_field"], False).count()
            ks = plan["ks"]
            counts = view.exists(distance_field).count_values(cluster_field)  # server-side
            sizes = [counts.get(c, 0) for c in range(ks[0])]
            # in place (results, then the state): re-registering would delete and
            # recreate the run, which readers in other processes could see missing
            results = dataset.init_run_results(
                run_key, centroids=plan["centroids"], cluster_sizes=[int(s) for s in sizes],
                skipped_ids=skipped, timings={"train_s": plan.get("train_s")})
            dataset.save_run_results(run_key, results, overwrite=True)
            runs.set_state(dataset, run_key, runs.COMPLETE,
                           num_scored=len(view) - len(skipped), num_skipped=len(skipped),
                           num_zero_vectors=len(skipped) - no_embedding)
    except leases.RunLockedError:  # another worker finalizes right now
        pass


def _finalize_embeddings(dataset, plan):
    """Registers the embeddings run (keyed by its field, on the planned view, with every
    shard's counts) once every shard is done; whoever comes second finds the lease held
    and leaves it."""
    field = plan["params"]["embeddings_field"]
    combined = _embedding_result(plan, [s.get("result") or {} for s in plan["shards"]])
    settings = (dataset.get_field(field).info or {}).get("fiftyone_prune")
    try:
        runs.register(_view(dataset, plan), run_configs.embeddings_run_key(field),
                      "embeddings", dict(embeddings_field=field, patches_path=None,
                                         settings=settings),
                      combined.to_dict(), overwrite=True)
    except leases.RunLockedError:  # another worker registers it right now
        pass


# --- common machinery ----------------------------------------------------------------

_KINDS = {
    "embeddings": (_embed_slice, _embed_done),
    "prototypes": (_score_slice, _score_done),
}


def _plan_or_resume(samples, key, kind, num_shards, params, fresh=False):
    """The stored record when it describes the same run (a resume), else (or with
    ``fresh``) a new one."""
    dataset = samples._dataset
    plan = None if fresh else storage.get_shard_plan(plan_id(dataset, key))
    if plan is not None and plan["params"] == params and plan["kind"] == kind:
        if plan["num_shards"] != num_shards:
            raise ValueError(f"Sharded run {key!r} exists with {plan['num_shards']} shards; "
                             f"resume it with num_shards={plan['num_shards']}")
        return plan
    if plan is not None and kind == "embeddings" and not _complete(plan):
        raise ValueError(f"An unfinished sharded embedding run into {key!r} exists with "
                         f"other parameters ({plan['params']}); resume it with those")
    plan = _new_plan(samples, key, kind, num_shards, params)
    storage.save_shard_plan(plan)
    return plan


def _complete(plan):
    return all(s["state"] == DONE for s in plan["shards"])


def _run_or_queue(dataset, plan, delegate):
    todo = [s["index"] for s in plan["shards"] if s["state"] != DONE]
    if delegate:
        queued = [queue_shard(dataset, plan["key"], i) for i in todo]
        status = shard_status(dataset, plan["key"])
        status["queued_operations"] = queued
        return status
    outputs = [run_shard(dataset, plan["key"], i) for i in todo]
    if plan["kind"] == "prototypes":
        return _score_result(dataset, plan["key"])
    return _embedding_result(plan, outputs)


def _score_result(dataset, run_key):
    from fiftyone_prune.sdk import scores

    dataset.reload()
    cfg = dataset.get_run_info(run_key).config
    results = dataset.load_run_results(run_key, load_view=False)
    distance_field, cluster_field = scores.score_fields(run_key)
    return scores.ScoreResult(run_key, "kmeans", distance_field, cluster_field,
                              list(cfg.num_clusters), cfg.num_scored,
                              list(results.skipped_ids or []), dict(results.timings or {}))


def _embedding_result(plan, outputs):
    """What this call embedded (the shards it ran)."""
    from fiftyone_prune.sdk.embeddings import EmbeddingResult

    result = EmbeddingResult(plan["params"]["embeddings_field"], plan["params"]["model"])
    for out in outputs:
        result.num_embedded += out.get("num_embedded", 0)
        result.failed_ids.extend(out.get("failed_ids", []))
    result.num_skipped_existing = plan["total"] - result.num_embedded - result.num_failed
    return result


def queue_shard(dataset, key, index) -> str:
    """Queues one delegated operation that runs shard ``index`` of run ``key``; returns
    its id. Needs FiftyOne's orchestrator-less delegation
    (``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true``) and a ``fiftyone delegated launch``
    worker (any number, on any machine sharing the database)."""
    import fiftyone.operators as foo

    storage.update_shard(plan_id(dataset, key), index, {"state": QUEUED, "error": None},
                         stamp=("queued_at",))
    result = foo.execute_operator(SHARD_OPERATOR, {"dataset": dataset.name},
                                  params={"dataset": dataset.name, "key": key,
                                          "shard": index},
                                  request_delegation=True)
    result.raise_exceptions()
    if not getattr(result, "delegated", False):
        raise RuntimeError(f"Shard {index} of {key!r} ran immediately instead of being "
                           f"queued; set FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true")
    return str(result.result["id"]) if isinstance(result.result, dict) else str(result.result)


class _Heartbeat:
    """Stamps the shard's heartbeat and samples done every quarter lease time (and
    after each written chunk) while the shard runs; ``progress_at`` moves only when the
    count does, which is what tells a hung worker from a slow one.

    The count is queried (a scan of the shard's documents) at the start and the end,
    and on every timed beat of an embedding shard, whose per-sample cost dwarfs the
    scan; a scoring shard, about as fast per sample as the scan itself, adds what it
    wrote instead."""

    def __init__(self, dataset, plan, index, done_fn):
        self.dataset, self.plan, self.index, self.done_fn = dataset, plan, index, done_fn
        self.counts_writes = plan["kind"] == "prototypes"
        self.last = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def beat(self, written=None, query=False):
        with self._lock:
            if query or self.last is None or not self.counts_writes:
                view = _slice(_view(self.dataset, self.plan), self.plan, self.index)
                done = self.done_fn(view, self.plan)
            else:
                done = self.last + (written or 0)
            stamp = ("heartbeat_at", "progress_at") if done != self.last else ("heartbeat_at",)
            self.last = done
            storage.update_shard(self.plan["_id"], self.index, {"samples_done": done},
                                 stamp=stamp)

    def _loop(self):
        while not self._stop.wait(leases.lease_seconds() / 4):
            try:
                self.beat()
            except Exception as e:  # a database hiccup: next beat
                logger.warning("shard heartbeat failed: %s", e)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_shard(dataset, key: str, index: int) -> dict:
    """Computes shard ``index`` of sharded run ``key`` under its lease (refused with
    :class:`~fiftyone_prune.sdk.leases.RunLockedError` while another worker holds it),
    resuming where an earlier attempt stopped; a no-op for a done shard. The worker that
    completes the last shard of a scoring run registers the run as complete.

    Args:
        dataset: the dataset (or its name) the sharded run was planned on
        key: the sharded run: the ``embeddings_field`` of an embedding run, the
            ``run_key`` of a scoring run
        index: the shard, ``0 <= index < num_shards``

    Returns:
        the shard's result: ``{"num_embedded", "failed_ids"}`` for an embedding shard,
        ``{"num_scored"}`` for a scoring shard (an already done shard's stored result)

    Raises:
        ValueError: when ``dataset`` has no sharded run ``key`` or ``index`` is out of
            range
        ~fiftyone_prune.sdk.leases.RunLockedError: while another worker holds the shard
    """
    if isinstance(dataset, str):
        dataset = fo.load_dataset(dataset)
    plan = _load_plan(dataset, key)
    if not 0 <= index < plan["num_shards"]:
        raise ValueError(f"Run {key!r} has shards 0..{plan['num_shards'] - 1}, not {index}")
    compute, done_fn = _KINDS[plan["kind"]]
    with leases.hold(dataset, shard_lease_key(key, index)) as lease:
        plan = _load_plan(dataset, key)
        shard = plan["shards"][index]
        if shard["state"] != DONE:
            storage.update_shard(plan["_id"], index,
                                 {"state": RUNNING, "owner": lease.owner, "error": None},
                                 stamp=("started_at", "heartbeat_at", "progress_at"))
            heartbeat = _Heartbeat(dataset, plan, index, done_fn)
            try:
                heartbeat.beat(query=True)
                with heartbeat:
                    out = compute(dataset, plan, index, heartbeat.beat)
                lease.check()
                heartbeat.beat(query=True)
            except BaseException as e:
                storage.update_shard(plan["_id"], index,
                                     {"state": FAILED, "error": f"{type(e).__name__}: {e}"},
                                     stamp=("heartbeat_at",), only_if_state=(RUNNING,))
                raise
            storage.update_shard(plan["_id"], index, {"state": DONE, "result": out},
                                 stamp=("finished_at", "heartbeat_at"))
    plan = _load_plan(dataset, key)
    if _complete(plan):
        (_finalize_scores if plan["kind"] == "prototypes" else _finalize_embeddings)(dataset,
                                                                                    plan)
    return plan["shards"][index].get("result") or {}


def shard_status(dataset, key: str, stale_after: float | None = None) -> dict:
    """Where sharded run ``key`` stands: ``{"key", "kind", "num_shards", "total",
    "samples_done", "counts": {state: n}, "complete", "shards": [{"index", "state",
    "owner", "samples_done", "samples_total", "error"}]}``. A ``running`` shard is
    reported ``stale`` when its worker's lease has expired (the worker died) or its
    count has not moved for ``stale_after`` seconds (default
    :data:`DEFAULT_STALE_SECONDS`).

    Args:
        dataset: the dataset (or its name) the sharded run was planned on
        key: the sharded run: the ``embeddings_field`` of an embedding run, the
            ``run_key`` of a scoring run
        stale_after (None): seconds without progress after which a running shard is
            ``stale`` (default :data:`DEFAULT_STALE_SECONDS`, 600)

    Returns:
        the dict above; ``counts`` maps ``queued``/``running``/``done``/``failed``/
        ``stale`` to shard counts, ``complete`` is True when every shard is done

    Raises:
        ValueError: when ``dataset`` has no sharded run ``key``

    Example::

        import fiftyone_prune as fop

        fop.compute_embeddings(dataset, model="efficientnet_lite0",
                               embeddings_field="emb2", num_shards=2)
        status = fop.shard_status(dataset, "emb2")
        print(status["counts"], status["complete"])  # {'done': 2} True
    """
    if isinstance(dataset, str):
        dataset = fo.load_dataset(dataset)
    stale_after = DEFAULT_STALE_SECONDS if stale_after is None else stale_after
    plan = _load_plan(dataset, key)
    now = storage.server_time()
    shards, counts, done_total = [], {}, 0
    for s in plan["shards"]:
        state = s["state"]
        if state == RUNNING:
            live = leases.current(dataset, shard_lease_key(key, s["index"]))
            since = s.get("progress_at")
            if live is None or (since is not None
                                and (now - since).total_seconds() > stale_after):
                state = STALE
        counts[state] = counts.get(state, 0) + 1
        size = _slice_size(plan, s["index"])
        done = size if s["state"] == DONE else s.get("samples_done", 0)
        done_total += done
        shards.append({"index": s["index"], "state": state, "owner": s.get("owner"),
                       "samples_done": done, "samples_total": size,
                       "error": s.get("error")})
    return {"key": key, "kind": plan["kind"], "num_shards": plan["num_shards"],
            "total": plan["total"], "samples_done": done_total, "counts": counts,
            "complete": counts.get(DONE, 0) == plan["num_shards"], "shards": shards}


def _slice_size(plan, index):
    n, m = plan["total"], plan["num_shards"]  # the equal cuts _bounds made
    return (index + 1) * n // m - index * n // m


def requeue_stale_shards(dataset, key: str, delegate: bool = True, include_failed=False,
                         stale_after: float | None = None) -> list[int]:
    """Re-runs the stale shards of ``key`` (and the failed ones with
    ``include_failed=True``): queued as delegated operations, or with
    ``delegate=False`` run here in order. A rerun continues where the shard stopped.

    Args:
        dataset: the dataset (or its name) the sharded run was planned on
        key: the sharded run (``embeddings_field`` or scoring ``run_key``)
        delegate (True): queue each shard as a delegated operation (needs a
            ``fiftyone delegated launch`` worker); False runs them here, in order
        include_failed (False): also rerun the ``failed`` shards
        stale_after (None): as in :func:`shard_status`

    Returns:
        the indices of the shards requeued (or run); ``[]`` when there were none

    Raises:
        ValueError: when ``dataset`` has no sharded run ``key``

    Example::

        import fiftyone_prune as fop

        fop.requeue_stale_shards(dataset, "emb2", delegate=False, include_failed=True)
    """
    if isinstance(dataset, str):
        dataset = fo.load_dataset(dataset)
    wanted = {STALE} | ({FAILED} if include_failed else set())
    status = shard_status(dataset, key, stale_after)
    indices = [s["index"] for s in status["shards"] if s["state"] in wanted]
    for i in indices:
        if delegate:
            queue_shard(dataset, key, i)
        else:
            run_shard(dataset, key, i)
    return indices


def list_sharded_runs(dataset) -> list[str]:
    """Keys of the sharded runs of ``dataset``: embedding runs (keyed by their field)
    and the scoring runs that still exist (a deleted one leaves its record, which the
    next sharded run of that key replaces)."""
    existing = set(dataset.list_runs())
    return [key for key, kind in storage.list_shard_plans(dataset._doc.id)
            if kind == "embeddings" or key in existing]
