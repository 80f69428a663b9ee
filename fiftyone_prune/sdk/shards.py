"""Sharded runs: one embedding or scoring run split into M disjoint, stable slices that
separate processes (FiftyOne delegated-operation workers, on any machine sharing the
database) compute independently.

``compute_embeddings`` / ``compute_prototype_scores`` with ``num_shards=M`` plan the run
(their own checks and first steps, then the coordinating record) and run or queue its
shards; this module is where a worker enters: :func:`run_shard` maps the plan's ``kind``
to its pipeline's steps (``embeddings.SHARD_STEPS``, ``scores.SHARD_STEPS``) and runs the
shard with them through :mod:`~fiftyone_prune.sdk.shard_plans` (the plan, the queue, one
heartbeat per shard, requeue and finalise; it knows no pipeline). Imports go one way:
this module -> the pipelines -> ``shard_plans``; a worker in a fresh process finds every
pipeline because it entered here.

Scoring trains k-means once, in the planning call, with the single-process path's own
steps (the same seeded subsample, or every vector when the view is small enough, in the
same order), and stores the centroids with the run's results (GridFS: any k; the record
holds none); the shards only assign. Several k: the shards stage each k's distance and
the last step ranks them over all samples; supervised: the shards add up class sums and
the last step turns them into prototypes and scores every slice. Training
happens in the planning call rather than in a queued "train" operation because its cost
is bounded by k x ``max_points_per_centroid`` vectors whatever the size of the view, and
shards queued after it never have to wait for or poll a training step. The scoring run
is registered at planning time in state ``"sharded"`` (so every reader, selection
included, refuses it) and is switched to ``"complete"`` by whichever worker finishes the
last shard; an embedding run is registered by that worker.

The same shard function (:func:`run_shard`) is what FiftyOne Enterprise's distributed
execution of one operation would call per task: a task index maps to a shard index.
"""

from __future__ import annotations

import fiftyone as fo

from fiftyone_prune.sdk import embeddings, scores, shard_plans
from fiftyone_prune.sdk.shard_plans import (
    DEFAULT_STALE_SECONDS, DONE, FAILED, QUEUED, RUNNING, SHARD_OPERATOR, SHARDED, STALE,
    MAX_ATTEMPTS, describe_progress, heal, list_sharded_runs, plan_id, queue_shard,
    shard_lease_key)

#: the public names of sharding, in one place (most are defined by ``shard_plans``)
__all__ = ["DEFAULT_STALE_SECONDS", "DONE", "FAILED", "MAX_ATTEMPTS", "PIPELINES",
           "QUEUED", "RUNNING", "SHARDED", "SHARD_OPERATOR", "STALE", "describe_progress",
           "heal", "list_sharded_runs", "plan_id", "queue_shard", "requeue_stale_shards",
           "run_shard", "shard_lease_key", "shard_status"]

#: each pipeline's steps, by the ``kind`` its plans record
PIPELINES = {steps.kind: steps for steps in (embeddings.SHARD_STEPS, scores.SHARD_STEPS)}


def run_shard(dataset, key: str, index: int) -> dict:
    """Computes shard ``index`` of sharded run ``key`` under its lease (refused with
    :class:`~fiftyone_prune.sdk.leases.RunLockedError` while another worker holds it),
    resuming where an earlier attempt stopped; a no-op for a done shard. Every write is
    fenced by the shard's lease and its plan: a run replaced (``overwrite=True``) or
    deleted meanwhile stops the shard at its next write. The worker that completes the
    last shard registers (embeddings) or completes (scoring) the run.

    Args:
        dataset: the dataset (or its name) the sharded run was planned on
        key: the sharded run: the ``embeddings_field`` of an embedding run, the
            ``run_key`` of a scoring run
        index: the shard, ``0 <= index < num_shards``

    Returns:
        the shard's result: ``{"num_embedded", "failed_ids"}`` for an embedding shard,
        ``{"num_scored"}`` for a scoring shard (an already done shard's stored result)

    Raises:
        ParameterError: when ``dataset`` has no sharded run ``key`` or ``index`` is out
            of range
        ~fiftyone_prune.sdk.leases.RunLockedError: while another worker holds the shard
        ~fiftyone_prune.sdk.leases.LeaseLostError: when the run was replaced or deleted
            while the shard ran (nothing more was written)
    """
    if isinstance(dataset, str):
        dataset = fo.load_dataset(dataset)
    plan = shard_plans.load_plan(dataset, key)
    return shard_plans.run_one_shard(dataset, key, index, PIPELINES[plan["kind"]])


def shard_status(dataset, key: str, stale_after: float | None = None) -> dict:
    """Where sharded run ``key`` stands, with the samples added to its view after it was
    planned (``late_samples``); see
    :func:`fiftyone_prune.sdk.shard_plans.shard_status` for the keys.

    Args:
        dataset: the dataset (or its name) the sharded run was planned on
        key: the sharded run: the ``embeddings_field`` of an embedding run, the
            ``run_key`` of a scoring run
        stale_after (None): seconds without progress after which a running shard is
            ``stale`` (default :data:`DEFAULT_STALE_SECONDS`, 600)

    Returns:
        a dict: ``counts`` by state, ``samples_done`` of ``total``, ``seconds_left``,
        ``complete``, ``late_samples``, and per shard its state, counts, tries and errors

    Raises:
        ParameterError: when ``dataset`` has no sharded run ``key``

    Example::

        import fiftyone_prune as fop

        status = fop.shard_status(dataset, "emb2")
        print(status["counts"], status["seconds_left"])  # {'done': 1, 'running': 1} 40.0
    """
    if isinstance(dataset, str):
        dataset = fo.load_dataset(dataset)
    plan = shard_plans.load_plan(dataset, key)
    return shard_plans.shard_status(dataset, key, stale_after, steps=PIPELINES[plan["kind"]])


def requeue_stale_shards(dataset, key: str, delegate: bool = True, include_failed=True,
                         stale_after: float | None = None) -> list[int]:
    """Re-runs the stale shards of ``key`` and the failed ones (``include_failed=False``
    leaves those): queued as delegated operations, or with ``delegate=False`` run here
    in order. A rerun continues where the shard stopped, and starts its tries afresh.
    Sharded runs queued with ``delegate=True`` heal themselves (dead workers' shards and
    failed ones are requeued by the other workers, up to :data:`MAX_ATTEMPTS` tries):
    this is for a shard out of tries, once its cause is fixed.

    Args:
        dataset: the dataset (or its name) the sharded run was planned on
        key: the sharded run (``embeddings_field`` or scoring ``run_key``)
        delegate (True): queue each shard as a delegated operation (needs a
            ``fiftyone delegated launch`` worker); False runs them here, in order
        include_failed (True): also rerun the ``failed`` shards
        stale_after (None): as in :func:`shard_status`

    Returns:
        the indices of the shards requeued (or run); ``[]`` when there were none

    Raises:
        ParameterError: when ``dataset`` has no sharded run ``key``

    Example::

        import fiftyone_prune as fop

        fop.requeue_stale_shards(dataset, "emb2", delegate=False, include_failed=True)
    """
    if isinstance(dataset, str):
        dataset = fo.load_dataset(dataset)
    indices = shard_plans.shards_to_rerun(dataset, key, include_failed, stale_after)
    for i in indices:
        if delegate:
            queue_shard(dataset, key, i)
        else:
            run_shard(dataset, key, i)
    return indices
