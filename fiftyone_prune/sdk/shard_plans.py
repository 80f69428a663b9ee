"""The machinery of sharded runs: the plan, the queue, one heartbeat per shard, requeue
and finalise. It knows no pipeline: embedding and scoring hand it their steps
(:class:`ShardSteps`), and :mod:`~fiftyone_prune.sdk.shards`, the module a worker enters,
maps a plan's ``kind`` to them.

The coordinating record of a run is one document (:mod:`~fiftyone_prune.sdk.storage`,
``fiftyone_prune_shard_plans``) holding the serialized view, the parameters, the shard
boundaries, a plan ``token`` and per-shard state (``queued`` / ``running`` / ``done`` /
``failed``, owner, heartbeat, samples done). Shards are ``_id`` ranges of the view: the
sorted sample ids are cut once, when the run is planned, into M ranges of equal counts,
and only the M lower bounds are stored; a shard is then ``lower_i <= _id < lower_{i+1}``
whatever the workers' view order, served by the ``_id`` index.

A shard is written under its own lease (``<key>#shard<i>``,
:mod:`~fiftyone_prune.sdk.leases`), so two workers never write one shard at once; a
killed worker's lease expires and its shard shows as ``stale``. Every write of a shard is
fenced (``storage.Fence``) by its shard lease *and* its plan's token: a plan replaced (an
overwrite) or deleted (``delete_run``) fences out the shards still running on it, and a
shard is marked done, and the run finalised, only while its plan is still the current
one. Every shard is idempotent and resumable (each pipeline skips what is already
written), so a requeued shard continues where its killed worker stopped.
"""

from __future__ import annotations

import logging
import uuid

from bson import ObjectId, json_util

import fiftyone as fo
from fiftyone import ViewField as F

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import leases, storage
from fiftyone_prune.sdk.run_configs import plan_id, shard_lease_key  # names the runs own

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, STALE = "queued", "running", "done", "failed", "stale"
#: the ``state`` of a scoring run whose shards are not all done yet
SHARDED = "sharded"
#: the plugin operator that runs one shard (``fiftyone_prune/plugin/shards.py``)
SHARD_OPERATOR = "@fiftyone-prune/prune/run_shard"
#: seconds without progress after which a running shard counts as stale even though
#: its worker still renews its lease (a hung worker); a dead worker's shard is stale as
#: soon as its lease expires
DEFAULT_STALE_SECONDS = 600.0
#: the most shards of one run: its record holds a bound and a state (~0.4 KB) per shard,
#: and no centroid (those are stored with the run's results), so its size depends on M
#: only and stays far below MongoDB's 16 MB document limit
MAX_SHARDS = 10000


class ShardSteps:
    """What a pipeline gives sharding: its work on one slice and its last step. The
    planning (checks, the model or k-means, the record) is the pipeline's own call,
    which then hands the plan to :func:`run_or_queue`.

    Attributes:
        kind: the plan's ``kind`` (``"embeddings"``, ``"prototypes"``)
        counts_writes: True when :meth:`process` reports each write through
            ``on_written`` (cheap per-sample work: the heartbeat adds those counts
            instead of counting the shard's documents on every beat)
    """

    kind: str = ""
    counts_writes: bool = False

    def process(self, dataset, plan: dict, view, *, fence, on_written) -> dict:
        """Computes and writes the part of shard ``view`` not written yet, every write
        fenced by ``fence``; returns the shard's result (JSON-serialisable)."""
        raise NotImplementedError

    def count_done(self, view, plan: dict) -> int:
        """Samples of ``view`` already written (the shard's progress)."""
        raise NotImplementedError

    def finish(self, dataset, plan: dict) -> None:
        """Registers or completes the run once every shard is done; called by the
        worker that finished the last shard (a no-op for whoever comes second)."""
        raise NotImplementedError

    def result(self, dataset, plan: dict, outputs: list):
        """What the planning call returns after running the shards here: ``outputs``
        are the results of the shards this call ran."""
        raise NotImplementedError


def check_num_shards(num_shards, samples) -> None:
    """``num_shards`` is a positive integer no larger than the samples of ``samples``.

    Raises:
        ParameterError: (``.param="num_shards"``) naming the problem and the fix
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ParameterError(f"num_shards must be a positive integer, got {num_shards!r}",
                             "num_shards")
    if num_shards > MAX_SHARDS:
        raise ParameterError(f"num_shards={num_shards} is more than one coordinating record "
                             f"holds (MongoDB's 16 MB document); choose at most "
                             f"{MAX_SHARDS}", "num_shards")
    num_samples = len(samples)
    if num_shards > num_samples:
        raise ParameterError(f"num_shards={num_shards} exceeds the {num_samples} samples of "
                             f"the view; choose at most {num_samples}", "num_shards")


def _bounds(samples, num_shards) -> tuple[list[str], int]:
    """``(lower bounds, total)``: the lower ``_id`` bound of each shard, cutting the
    view's sorted ids into equal counts, and the number of samples cut. The ids stream
    past in order (a covered read of the ``_id`` index for a whole dataset) and only
    every (N/M)-th is kept: memory grows with the shards, not the samples."""
    total = storage.count_samples(samples)
    if num_shards > total:
        check_num_shards(num_shards, samples)
    cuts = [i * total // num_shards for i in range(num_shards)]
    bounds = []
    for position, sample_id in enumerate(storage.iter_sorted_ids(samples)):
        if position == cuts[len(bounds)]:
            bounds.append(str(sample_id))
            if len(bounds) == num_shards:
                break
    if len(bounds) < num_shards:
        raise RuntimeError(f"Samples were deleted while the run was being planned "
                           f"({total} counted, fewer read); plan it again")
    return bounds, total


def plan_view(dataset, plan):
    """The view the run was planned on."""
    stages = json_util.loads(plan["view"]) if plan.get("view") else []
    return fo.DatasetView._build(dataset, stages) if stages else dataset.view()


def shard_view(dataset, plan, index):
    """The samples of shard ``index``: its ``_id`` range of the planned view."""
    lower = plan["bounds"]
    expr = F("_id") >= ObjectId(lower[index])
    if index + 1 < len(lower):
        expr = expr & (F("_id") < ObjectId(lower[index + 1]))
    return plan_view(dataset, plan).match(expr)


def shard_size(plan, index) -> int:
    n, m = plan["total"], plan["num_shards"]  # the equal cuts _bounds made
    return (index + 1) * n // m - index * n // m


def load_plan(dataset, key):
    plan = storage.get_shard_plan(plan_id(dataset, key))
    if plan is None:
        raise ParameterError(f"Dataset {dataset.name!r} has no sharded run {key!r}; start one "
                             f"with num_shards= on compute_embeddings / "
                             f"compute_prototype_scores", "key")
    return plan


def plan_or_resume(samples, key, kind, num_shards, params, *, fresh=False, **extra) -> dict:
    """The stored record when it describes the same run (a resume), else (or with
    ``fresh``) a new one, with a new token: saving it replaces an older record, which
    fences out the shards still running on that one. ``extra`` values go into a new
    record (e.g. trained centroids)."""
    dataset = samples._dataset
    plan = None if fresh else storage.get_shard_plan(plan_id(dataset, key))
    if plan is not None and plan["params"] == params and plan["kind"] == kind:
        if plan["num_shards"] != num_shards:
            raise ParameterError(f"Sharded run {key!r} exists with {plan['num_shards']} "
                                 f"shards; resume it with num_shards={plan['num_shards']}",
                                 "num_shards")
        return plan
    if plan is not None and kind == "embeddings" and not is_complete(plan):
        raise ParameterError(f"An unfinished sharded embedding run into {key!r} exists with "
                             f"other parameters ({plan['params']}); resume it with those",
                             "embeddings_field")
    bounds, total = _bounds(samples, num_shards)
    plan = {
        "_id": plan_id(dataset, key), "token": uuid.uuid4().hex,
        "dataset": dataset.name, "key": key, "kind": kind, "params": params,
        "view": json_util.dumps(samples.view()._serialize()),
        "bounds": bounds, "num_shards": num_shards, "total": total,
        "shards": [{"index": i, "state": QUEUED, "owner": None, "samples_done": 0,
                    "error": None, "heartbeat_at": None, "progress_at": None}
                   for i in range(num_shards)],
        **extra,
    }
    storage.save_shard_plan(plan)
    storage.delete_shard_parts(plan["_id"], keep_token=plan["token"])  # a replaced plan's
    return plan


def drop_plan(dataset, key) -> bool:
    """Deletes the record of sharded run ``key`` (if any): its shards still running are
    fenced out from their next write on. What an overwrite of the run calls, under the
    run's lease, before it writes anything."""
    existing = storage.get_shard_plan(plan_id(dataset, key))
    if existing is None:
        return False
    running = [s["index"] for s in existing["shards"] if s["state"] == RUNNING]
    storage.delete_shard_plan(plan_id(dataset, key))
    if running:
        logger.warning("Run %r was replaced while shard(s) %s were running: their workers "
                       "stop at their next write", key, running)
    return True


def is_complete(plan) -> bool:
    return all(s["state"] == DONE for s in plan["shards"])


def is_current(dataset, plan) -> bool:
    """Whether ``plan`` is still the run's record (not replaced, not deleted)."""
    stored = storage.get_shard_plan(plan["_id"])
    return stored is not None and stored.get("token") == plan.get("token")


def run_or_queue(dataset, plan, steps: ShardSteps, delegate: bool):
    """Runs the unfinished shards of ``plan`` here in order and returns
    ``steps.result(...)``, or queues one delegated operation per unfinished shard and
    returns the plan's status."""
    todo = [s["index"] for s in plan["shards"] if s["state"] != DONE]
    if delegate:
        queued = [queue_shard(dataset, plan["key"], i) for i in todo]
        status = shard_status(dataset, plan["key"])
        status["queued_operations"] = queued
        return status
    outputs = [run_one_shard(dataset, plan["key"], i, steps) for i in todo]
    return steps.result(dataset, load_plan(dataset, plan["key"]), outputs)


def queue_shard(dataset, key, index) -> str:
    """Queues one delegated operation that runs shard ``index`` of run ``key``; returns
    its id. Needs FiftyOne's orchestrator-less delegation
    (``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true``) and a ``fiftyone delegated launch``
    worker (any number, on any machine sharing the database)."""
    import fiftyone.operators as foo

    storage.update_shard(plan_id(dataset, key), index,
                         {"state": QUEUED, "error": None, "operation": None},
                         stamp=("queued_at",))
    result = foo.execute_operator(SHARD_OPERATOR, {"dataset": dataset.name},
                                  params={"dataset": dataset.name, "key": key,
                                          "shard": index},
                                  request_delegation=True)
    result.raise_exceptions()
    if not getattr(result, "delegated", False):
        raise RuntimeError(f"Shard {index} of {key!r} ran immediately instead of being "
                           f"queued; set FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true")
    op_id = str(result.result["id"]) if isinstance(result.result, dict) else str(result.result)
    # the operation that should run the shard: a worker killed after claiming it (the
    # operation no longer queued) before the shard started leaves the shard queued
    storage.update_shard(plan_id(dataset, key), index, {"operation": op_id},
                         only_if_state=(QUEUED,))
    return op_id


def _claimed_and_abandoned(dataset, key, shard) -> bool:
    """A ``queued`` shard whose delegated operation a worker claimed (or that ended, or
    was deleted) without the shard ever starting: the worker died in between. A claim
    younger than the lease time may still be starting (loading the plan, taking the
    shard's lease)."""
    op_id = shard.get("operation")
    if not op_id or leases.current(dataset, shard_lease_key(key, shard["index"])):
        return False
    from bson.errors import InvalidId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    try:
        op = DelegatedOperationService().get(ObjectId(op_id))
    except (ValueError, InvalidId):  # deleted: nothing will run the shard
        return True
    if op.run_state in (ExecutionRunState.QUEUED, ExecutionRunState.SCHEDULED):
        return False
    if op.run_state in (ExecutionRunState.RUNNING, ExecutionRunState.PROCESSING):
        started = op.started_at or op.updated_at
        return (started is not None and (storage.server_time() - started).total_seconds()
                > leases.lease_seconds())
    return True  # completed or failed without the shard starting


class _ProgressBeat:
    """The shard's beat in its lease's heartbeat (one thread renews the lease and stamps
    the shard's heartbeat and samples done); ``progress_at`` moves only when the count
    does, which is what tells a hung worker from a slow one.

    The count is queried (a scan of the shard's documents) at the start and the end,
    and on every timed beat of a pipeline whose per-sample cost dwarfs the scan; one
    about as fast per sample as the scan itself (``steps.counts_writes``) reports each
    written batch instead (:meth:`wrote`), which is added and stamped at once."""

    def __init__(self, dataset, plan, index, steps):
        import threading

        self.dataset, self.plan, self.index, self.steps = dataset, plan, index, steps
        self.last = None
        self._lock = threading.Lock()

    def wrote(self, count):
        with self._lock:
            self._stamp((self.last or 0) + count)

    def __call__(self, query=False):
        with self._lock:
            if query or self.last is None or not self.steps.counts_writes:
                done = self.steps.count_done(shard_view(self.dataset, self.plan, self.index),
                                             self.plan)
            else:
                done = self.last
            self._stamp(done)

    def _stamp(self, done):
        stamp = ("heartbeat_at", "progress_at") if done != self.last else ("heartbeat_at",)
        self.last = done
        storage.update_shard(self.plan["_id"], self.index, {"samples_done": done},
                             stamp=stamp, plan_token=self.plan.get("token"))


def run_one_shard(dataset, key: str, index: int, steps: ShardSteps) -> dict:
    """Computes shard ``index`` of sharded run ``key`` with ``steps`` under the shard's
    lease (see :func:`fiftyone_prune.sdk.shards.run_shard`); the worker that completes
    the last shard finishes the run."""
    plan = load_plan(dataset, key)
    if not 0 <= index < plan["num_shards"]:
        raise ParameterError(f"Run {key!r} has shards 0..{plan['num_shards'] - 1}, not "
                             f"{index}", "index")
    with leases.hold(dataset, shard_lease_key(key, index)) as lease:
        plan = load_plan(dataset, key)
        shard = plan["shards"][index]
        token = plan.get("token")
        out = shard.get("result") or {}
        if shard["state"] != DONE:
            fence = storage.Fence.of(lease).and_plan(plan["_id"], token)
            storage.update_shard(plan["_id"], index,
                                 {"state": RUNNING, "owner": lease.owner, "error": None},
                                 stamp=("started_at", "heartbeat_at", "progress_at"),
                                 plan_token=token)
            beat = _ProgressBeat(dataset, plan, index, steps)
            try:
                beat(query=True)
                lease.heartbeat.add(beat)  # one thread: the lease's renewal and this beat
                out = steps.process(dataset, plan, shard_view(dataset, plan, index),
                                    fence=fence, on_written=beat.wrote)
                fence.confirm()
                beat(query=True)
            except BaseException as e:
                storage.update_shard(plan["_id"], index,
                                     {"state": FAILED, "error": f"{type(e).__name__}: {e}"},
                                     stamp=("heartbeat_at",), only_if_state=(RUNNING,),
                                     plan_token=token)
                raise
            # done only on the plan it was computed for: a replaced plan's shard is not
            if not storage.update_shard(plan["_id"], index, {"state": DONE, "result": out},
                                        stamp=("finished_at", "heartbeat_at"),
                                        plan_token=token):
                raise leases.LeaseLostError(
                    f"Sharded run {key!r} was replaced or deleted while shard {index} ran; "
                    f"its results were fenced out (see fop.shard_status for the current "
                    f"run)")
    plan = load_plan(dataset, key)
    if plan.get("token") == token and is_complete(plan):
        steps.finish(dataset, plan)
    return out


def shard_status(dataset, key: str, stale_after: float | None = None) -> dict:
    """Where sharded run ``key`` stands: ``{"key", "kind", "num_shards", "total",
    "samples_done", "counts": {state: n}, "complete", "shards": [{"index", "state",
    "owner", "samples_done", "samples_total", "error"}]}``. A ``running`` shard is
    reported ``stale`` when its worker's lease has expired (the worker died) or its
    count has not moved for ``stale_after`` seconds (default
    :data:`DEFAULT_STALE_SECONDS`); a ``queued`` one when the delegated operation queued
    for it was claimed by a worker more than the lease time ago (or ended, or was
    deleted) and the shard never started: the worker died right after claiming it.

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
        ParameterError: when ``dataset`` has no sharded run ``key``

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
    plan = load_plan(dataset, key)
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
        elif state == QUEUED and _claimed_and_abandoned(dataset, key, s):
            state = STALE
        counts[state] = counts.get(state, 0) + 1
        size = shard_size(plan, s["index"])
        done = size if s["state"] == DONE else s.get("samples_done", 0)
        done_total += done
        shards.append({"index": s["index"], "state": state, "owner": s.get("owner"),
                       "samples_done": done, "samples_total": size,
                       "error": s.get("error")})
    return {"key": key, "kind": plan["kind"], "num_shards": plan["num_shards"],
            "total": plan["total"], "samples_done": done_total, "counts": counts,
            "complete": counts.get(DONE, 0) == plan["num_shards"], "shards": shards}


def shards_to_rerun(dataset, key: str, include_failed=False,
                    stale_after: float | None = None) -> list[int]:
    """The stale shards of ``key`` (and the failed ones with ``include_failed``)."""
    wanted = {STALE} | ({FAILED} if include_failed else set())
    status = shard_status(dataset, key, stale_after)
    return [s["index"] for s in status["shards"] if s["state"] in wanted]


def running_shards(dataset, key: str) -> list[str]:
    """``"<index> (<owner>)"`` of each shard of ``key`` whose worker is alive now."""
    plan = storage.get_shard_plan(plan_id(dataset, key))
    if plan is None:
        return []
    return [f"{s['index']} ({s.get('owner')})" for s in plan["shards"]
            if s["state"] == RUNNING
            and leases.current(dataset, shard_lease_key(key, s["index"])) is not None]


def list_sharded_runs(dataset) -> list[str]:
    """Keys of the sharded runs of ``dataset``: embedding runs (keyed by their field)
    and the scoring runs that still exist (a deleted one leaves its record, which the
    next sharded run of that key replaces)."""
    existing = set(dataset.list_runs())
    return [key for key, kind in storage.list_shard_plans(dataset._doc.id)
            if kind == "embeddings" or key in existing]
