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

import contextlib
import logging
import time
import uuid

from bson import ObjectId, json_util
from pymongo.errors import ConnectionFailure

import fiftyone as fo
from fiftyone import ViewField as F

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import leases, run_configs, storage
from fiftyone_prune.sdk.run_configs import (  # names the runs own
    late_samples_lease_key, plan_id, shard_lease_key, tail_watch_lease_key)

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
#: tries of one delegated shard before it stays ``failed`` for a person to look at. A
#: transient cause (the database gone for longer than the driver waits, a worker killed
#: or stalled past its lease) clears on the next try, and each try resumes where the last
#: one stopped, so a retry costs only the unfinished part; a cause in the data or the
#: setup (a NaN vector, a missing model file) fails the same way every time, and a third
#: identical failure says so, where retrying forever would keep a worker busy failing.
MAX_ATTEMPTS = 3
#: how long a worker whose database vanished waits for it to come back before it gives
#: up on its shard (it then marks the shard failed and requeues it with tries left)
DATABASE_WAIT_SECONDS = 900.0
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
            ``on_written``: the heartbeat adds those counts instead of counting the
            shard's documents on every beat (a count scans the slice; on a slice of
            millions of documents that is a full read per beat)
        reports_existing: True when :meth:`process` also reports, first, the samples of
            its slice it finds already written (a resumed shard's earlier tries, or
            values written before the run), so that the shard's count starts at zero
            and its slice is never counted at all
    """

    kind: str = ""
    counts_writes: bool = False
    reports_existing: bool = False

    def reports_writes(self, plan: dict) -> bool:
        """Whether :meth:`process` reports its writes for ``plan`` (a pipeline may
        report for some plans only, e.g. only when its own loop does the writing)."""
        return self.counts_writes

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
    # what deleting the run does too: a queued shard of the replaced run would be
    # claimed later and fail (or count against the new run's tries)
    run_configs.delete_queued_operations(existing)
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
    ``steps.result(...)``, or queues one delegated operation per shard that no worker
    has or will run (never a shard whose worker is alive, nor one whose operation still
    waits in the queue: a resume while the run is healthy queues nothing) and returns
    the plan's status. A plan whose shards are all done but whose last step never ran
    (its worker died) is finished here, and the operations of done shards whose worker
    died before FiftyOne recorded their end are ended
    (:func:`end_finished_operations`)."""
    key = plan["key"]
    end_finished_operations(dataset, plan)
    if "last_planned_id" not in plan:  # samples with a greater _id were added later
        last = plan_view(dataset, plan).sort_by("_id", reverse=True).limit(1).values("_id")
        plan["last_planned_id"] = str(last[0]) if last else None
        storage.update_shard_plan(plan["_id"], {"last_planned_id": plan["last_planned_id"]})
    if delegate:
        queued = [op for op in (queue_shard(dataset, key, i)
                                for i in _shards_to_queue(dataset, plan)) if op]
        plan = load_plan(dataset, key)
        if is_complete(plan) and not plan.get("finished"):
            finish_run(dataset, plan, steps)
        status = shard_status(dataset, key)
        status["queued_operations"] = queued
        return status
    todo = [s["index"] for s in plan["shards"] if s["state"] != DONE]
    outputs = [run_one_shard(dataset, key, i, steps) for i in todo]
    if not todo and not plan.get("finished"):
        finish_run(dataset, load_plan(dataset, key), steps)
    return steps.result(dataset, load_plan(dataset, key), outputs)


def _shards_to_queue(dataset, plan) -> list[int]:
    """The shards a planning (or resuming) call with ``delegate=True`` queues: those
    never queued, failed (whatever their tries: the call is a person's decision), whose
    worker died, or whose operation ended or vanished without running them."""
    out = []
    for s in plan["shards"]:
        state = s["state"]
        if state == DONE:
            continue
        if state == RUNNING:
            if leases.current(dataset, shard_lease_key(plan["key"], s["index"])) is None:
                out.append(s["index"])
        elif state == FAILED or not s.get("operation"):
            out.append(s["index"])
        elif state == QUEUED and _claimed_and_abandoned(dataset, plan["key"], s):
            out.append(s["index"])
    return out


def queue_shard(dataset, key, index, *, seen: dict | None = None,
                fresh_tries: bool = True, count_try: bool = False,
                reason: str = "it was requeued") -> str | None:
    """Queues one delegated operation that runs shard ``index`` of run ``key``; returns
    its id. Needs FiftyOne's orchestrator-less delegation
    (``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true``) and a ``fiftyone delegated launch``
    worker (any number, on any machine sharing the database). The shard's last error
    stays on it (``error``, and every try's in ``errors``) until it is done; the
    operation queued for it before, if FiftyOne still lists it running, is marked failed
    (its worker is gone: that is why the shard is queued again).

    Args:
        seen (None): the shard's values the caller saw (``state``, ``operation``,
            ``owner``, ``attempts``): the shard is queued only if it still holds them
            (a compare-and-set, so that two healers never queue one shard twice);
            returns None when another caller changed it first
        fresh_tries (True): count the shard's tries from zero again (a person's
            decision); the self-healing keeps counting (:data:`MAX_ATTEMPTS`)
        count_try (False): count a try that never started the shard (its operation was
            claimed and ended, or its worker died, before the shard started: a worker
            that fails every operation it claims must not requeue forever)
        reason ("it was requeued"): why, for the operation it replaces
    """
    import fiftyone.operators as foo

    seen = dict(seen or {})
    state = seen.pop("state", None)
    previous = (seen["operation"] if "operation" in seen
                else load_plan(dataset, key)["shards"][index].get("operation"))
    values = {"state": QUEUED, "operation": None}
    if fresh_tries:
        values["attempts"] = 0
    elif count_try:
        values["attempts"] = (seen.get("attempts") or 0) + 1
    if not storage.update_shard(plan_id(dataset, key), index, values, stamp=("queued_at",),
                                only_if_state=None if state is None else (state,),
                                only_if=seen):
        return None
    if previous:
        _retire_operation(previous, f"shard {index} of {key!r} was queued again: {reason}")
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


def _retire_operation(op_id, why) -> None:
    """Ends a FiftyOne operation that will not run its shard (any more): one still
    listed ``running`` (its worker died: FiftyOne would list it running forever) is
    marked failed with ``why``; one still waiting in the queue is deleted (the shard has
    a newer one). Best effort: FiftyOne's queue is its record, not ours."""
    from bson.errors import InvalidId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    service = DelegatedOperationService()
    try:
        op = service.get(ObjectId(op_id))
        if op.run_state == ExecutionRunState.RUNNING:
            service.set_failed(ObjectId(op_id),
                               result=ExecutionResult(error=why, error_message=why),
                               required_state=ExecutionRunState.RUNNING)
        elif op.run_state in (ExecutionRunState.QUEUED, ExecutionRunState.SCHEDULED):
            service.delete_operation(ObjectId(op_id))
    except (ValueError, InvalidId):  # deleted already
        pass
    except Exception as e:  # noqa: BLE001 - the requeue matters, this is bookkeeping
        logger.warning("Could not end delegated operation %s: %s", op_id, e)


def heal(dataset, key: str, check_claims: bool = False) -> list[int]:
    """Requeues, without a person, the delegated shards of run ``key`` that no live
    worker will finish: a ``running`` shard whose worker died (its lease expired), a
    ``failed`` one, and with ``check_claims`` a ``queued`` one whose operation a worker
    claimed and died on (one lookup in FiftyOne's queue per queued shard, which the
    tail watcher and the planning and status calls pay, not every shard's end). A shard
    is tried at most :data:`MAX_ATTEMPTS` times (then it stays ``failed`` with its
    errors); the dead worker's FiftyOne operation is marked failed. Each requeue is a
    compare-and-set on what was seen, so that two healers never queue one shard twice.
    Shards run in a process (never queued) are that process's: its caller got the error.

    A done shard whose worker died before FiftyOne recorded the end of its operation
    (which FiftyOne would list ``running`` forever) has that operation ended too
    (:func:`end_finished_operations`), also once the run is complete.

    Called by every worker when its shard ends (done or failed), by the worker watching
    the last shards (:func:`run_one_shard`), by ``fiftyone-prune runs`` and by a
    planning call that resumes the run.

    Returns:
        the indices of the shards requeued
    """
    plan = storage.get_shard_plan(plan_id(dataset, key))
    if plan is None:
        return []
    end_finished_operations(dataset, plan)
    if is_complete(plan):
        return []
    healed = []
    for s in plan["shards"]:
        op_id, index, state = s.get("operation"), s["index"], s["state"]
        if not op_id:
            continue
        tries = s.get("attempts") or 0
        if state == RUNNING:
            if leases.current(dataset, shard_lease_key(key, index)) is not None:
                continue
            why = f"its worker {s.get('owner')} died (its lease expired)"
        elif state == FAILED:
            why = s.get("error") or "failed"
        elif state == QUEUED and check_claims and _claimed_and_abandoned(dataset, key, s):
            why = "its operation was claimed, then ended or died before the shard started"
        else:
            continue
        seen = {"state": state, "operation": op_id, "attempts": s.get("attempts"),
                "owner": s.get("owner")}
        if state == QUEUED:  # the lost claim was a try
            tries += 1
        if tries >= MAX_ATTEMPTS:
            if state != FAILED:  # out of tries: shown failed, with why, for a person
                error = f"{why}, on try {tries} of {MAX_ATTEMPTS}"
                if storage.update_shard(plan["_id"], index,
                                        {"state": FAILED, "error": error, "attempts": tries,
                                         "errors": (s.get("errors") or []) + [error]},
                                        only_if_state=(state,),
                                        only_if={k: v for k, v in seen.items()
                                                 if k != "state"}):
                    _retire_operation(op_id, error)
            continue
        try:
            if queue_shard(dataset, key, index, seen=seen, fresh_tries=False,
                           count_try=state == QUEUED, reason=why) is not None:
                logger.warning("Requeued shard %d of %r (try %d of %d): %s", index, key,
                               tries + 1, MAX_ATTEMPTS, why)
                healed.append(index)
        except Exception as e:  # noqa: BLE001 - e.g. no delegation here; status shows it
            logger.warning("Could not requeue shard %d of %r: %s", index, key, e)
    return healed


def _finished_but_running(dataset, plan) -> list[tuple[dict, bool]]:
    """``(shard, its worker is alive)`` for each done shard whose FiftyOne operation is
    still listed running: one query for the run's running operations (as many as
    workers on it), then one lease lookup per such shard."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    done = {s["operation"]: s for s in plan["shards"]
            if s["state"] == DONE and s.get("operation")}
    if not done:
        return []
    running = DelegatedOperationService().list_operations(
        operator=SHARD_OPERATOR, dataset_name=dataset.name,
        run_state=ExecutionRunState.RUNNING)
    out = []
    for op in running:
        shard = done.get(str(op.id))
        if shard is not None:
            live = leases.current(dataset, shard_lease_key(plan["key"], shard["index"]))
            out.append((shard, live is not None))
    return out


def end_finished_operations(dataset, plan) -> list[int]:
    """Marks ``completed`` the FiftyOne operations of done shards that FiftyOne still
    lists ``running`` although their worker is gone (its shard lease, which a delegated
    worker keeps until it leaves the run, expired): the worker was killed after marking
    its shard done and before FiftyOne recorded the operation's end. Returns the
    indices of those shards. Best effort: FiftyOne's queue is its record, not ours.

    Why ``completed`` rather than ``failed``: what the operation was for, its shard's
    writes and their done mark, happened and is recorded (fenced by the shard's lease
    and the plan, like every done shard); what the dead worker had left to do (finish
    the run, heal others, watch the tail) is not the shard's, and other workers, the
    tail watcher or the next planning call do it. ``failed`` would tell a person, and
    the App's re-run button, that the shard's work is missing, and a rerun would do
    nothing. The operation's result says that its worker died after the shard was
    done. And a healer that comes just after a live worker let go of its lease, before
    FiftyOne recorded the end, writes the state FiftyOne is about to write (FiftyOne's
    own update then finds the state changed and leaves it)."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    ended = []
    try:
        for shard, alive in _finished_but_running(dataset, plan):
            if alive:
                continue
            note = (f"shard {shard['index']} of {plan['key']!r} was done; its worker "
                    f"{shard.get('owner')} died before FiftyOne recorded the end of this "
                    f"operation, which the run's healing completed")
            result = ExecutionResult(result={"key": plan["key"], "shard": shard["index"],
                                             "result": shard.get("result"), "note": note})
            if DelegatedOperationService().set_completed(
                    ObjectId(shard["operation"]), result=result,
                    required_state=ExecutionRunState.RUNNING) is not None:
                logger.warning("Completed the operation of shard %d of %r: %s",
                               shard["index"], plan["key"], note)
                ended.append(shard["index"])
    except Exception as e:  # noqa: BLE001 - bookkeeping: never fails the healing
        logger.warning("Could not end the operations of done shards of %r: %s",
                       plan["key"], e)
    return ended


def _heal_quietly(dataset, key, check_claims=False) -> list[int]:
    """:func:`heal`, logging instead of raising: healing others must never fail the
    shard (or the call) that does it."""
    try:
        return heal(dataset, key, check_claims)
    except Exception as e:  # noqa: BLE001
        logger.warning("Could not look for dead shards of run %r: %s", key, e)
        return []


def _wait_for_database(seconds: float) -> bool:
    """Waits until the database answers again (True), at most ``seconds`` (False)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            storage.server_time()
            return True
        except ConnectionFailure:
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)


def _operation_waiting(shard) -> bool:
    """Whether the FiftyOne operation queued for ``shard`` still waits for a worker."""
    from bson.errors import InvalidId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    if not shard.get("operation"):
        return False
    try:
        op = DelegatedOperationService().get(ObjectId(shard["operation"]))
    except (ValueError, InvalidId):
        return False
    return op.run_state in (ExecutionRunState.QUEUED, ExecutionRunState.SCHEDULED)


#: how long a tail watcher that sees a shard of its run requeued waits for another
#: worker to claim it: idle ``fiftyone delegated launch`` workers poll the queue every
#: 0.5 s, so a longer wait means none is idle and this worker should go and run it
CLAIM_WAIT_SECONDS = 5.0


def _claimed_by_another(dataset, key, waiting) -> bool:
    """Whether another worker claims every operation in ``waiting`` (shards whose
    operation waits in the queue) within :data:`CLAIM_WAIT_SECONDS`."""
    deadline = time.monotonic() + max(CLAIM_WAIT_SECONDS, leases.lease_seconds() / 4)
    while True:
        plan = storage.get_shard_plan(plan_id(dataset, key))
        if plan is None:
            return False
        shards = {s["index"]: s for s in plan["shards"]}
        if not any(_operation_waiting(shards[s["index"]]) for s in waiting):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


def _watch_tail(dataset, key: str, token: str, own: int | None = None,
                requeued=()) -> None:
    """Run by a worker whose shard ended while the rest of the run is on other workers:
    keeps looking (every quarter lease) for a shard whose worker died, and requeues it,
    so that a run whose last worker is killed finishes without a person. One watcher per
    run (its own lease); it stops as soon as the run is replaced or deleted, or nothing
    is left running.

    An operation of the run waiting in the queue: when the watch starts (a shard not yet
    taken, mid-run) the worker leaves to run it. One requeued by the watcher (or, when
    it starts, only the shards this worker's shard end requeued, ``requeued``) is
    different: at the tail the other workers idle, one of them claims it within its
    queue poll, and the watcher keeps watching that one (if it dies too, the watcher
    requeues it again, within about the lease time); only when nobody claims it within
    :data:`CLAIM_WAIT_SECONDS` (no worker idle: a single worker, or the others busy)
    does the watcher leave to run it. A watcher that left at every requeue let the idle
    worker that took the shard run it unwatched, and if that one died the run stood
    still until the next ``fiftyone-prune runs`` or planning call (idle workers only
    poll FiftyOne's queue).

    Once every shard is done it waits, at most two lease times, for the workers of other
    done shards whose operations FiftyOne still lists running (``own``: this worker's
    shard, not waited for) to end them, or for their leases to expire, so that a worker
    killed just after marking its shard done does not leave its operation running
    (:func:`end_finished_operations`). It rides out a database outage (it only reads,
    and requeues).

    Why a worker waits rather than something scheduled: FiftyOne's open-source queue
    has no timer, and once every operation of the run is taken nothing else of ours
    runs; the cost is one worker's time at the run's tail, the part where workers would
    be idle anyway."""
    try:
        with leases.hold(dataset, tail_watch_lease_key(key)):
            until = None
            first = True
            while True:
                try:
                    plan = storage.get_shard_plan(plan_id(dataset, key))
                    if plan is None or plan.get("token") != token:
                        return
                    waiting = [s for s in plan["shards"]
                               if s["state"] == QUEUED and _operation_waiting(s)]
                    if waiting and (
                            (first and not {s["index"] for s in waiting} <= set(requeued))
                            or not _claimed_by_another(dataset, key, waiting)):
                        return
                    first = False
                    if heal(dataset, key, check_claims=True):
                        continue  # requeued: wait for its claim at once
                    plan = storage.get_shard_plan(plan_id(dataset, key))
                    if plan is None:
                        return
                    if not {RUNNING, QUEUED} & {s["state"] for s in plan["shards"]}:
                        # done, or every shard left is out of tries: what may be left is
                        # a done shard's operation whose worker's lease has not expired
                        if not any(alive and shard["index"] != own for shard, alive
                                   in _finished_but_running(dataset, plan)):
                            return
                        until = until or time.monotonic() + 2 * leases.lease_seconds()
                        if time.monotonic() > until:
                            return
                except ConnectionFailure as e:
                    logger.warning("Watching run %r: the database is unreachable (%s)",
                                   key, e)
                    if not _wait_for_database(DATABASE_WAIT_SECONDS):
                        return
                    continue
                time.sleep(leases.lease_seconds() / 4)
    except leases.RunLockedError:  # another worker watches
        return
    except Exception as e:  # noqa: BLE001 - the shard itself is done
        logger.warning("Stopped watching run %r: %s", key, e)


def late_samples_view(dataset, plan):
    """The samples of the planned view added after the run was planned: those whose
    ``_id`` is greater than the greatest one planned (FiftyOne's ids grow with the time
    they were made), an ``_id`` index range, cheap to count. They fall in the last
    shard's range, which is open above: when that shard runs after they were added it
    computes them; else the run's last step does (:func:`finish_run`). A sample added
    with an older id (copied with its id from elsewhere) is not seen."""
    return plan_view(dataset, plan).match(F("_id") > ObjectId(plan["last_planned_id"]))


def late_samples_pending(dataset, plan, steps) -> int:
    """How many samples of :func:`late_samples_view` the run has not written yet."""
    if not plan.get("last_planned_id"):
        return 0
    late = late_samples_view(dataset, plan)
    return late.count() - steps.count_done(late, plan)


def count_unplanned(dataset, plan) -> int:
    """Samples in the planned view that neither planning nor the late-sample catch-up
    saw: added after planning with an ``_id`` older than the plan's greatest (copied
    with their ids, e.g. ``add_collection(..., new_ids=False)``), into slices whose
    shards had already run. Two counts (the view, the late range) at the run's end; a
    deletion meanwhile can hide as many of them as were deleted."""
    if not plan.get("last_planned_id"):
        return 0
    now = plan_view(dataset, plan).count()
    return max(0, now - plan["total"] - late_samples_view(dataset, plan).count())


def unplanned_message(count: int) -> str:
    return (f"{count} sample(s) were added after this run was planned with ids older than "
            f"the plan's (copied with their ids): their slices had already run, so this run "
            f"did not compute them (they read as not computed, never as zero vectors). Run "
            f"the same call again without num_shards: an embedding run computes only what "
            f"is missing; a scoring run needs overwrite=True")


def finish_run(dataset, plan, steps) -> None:
    """The run's last step, once every shard is done, by one worker (its own lease;
    whoever comes second leaves it to the first): computes the samples added to the
    planned view after planning (a catch-up over :func:`late_samples_view`, skipping what
    is written, so that they are neither left out nor counted as empty vectors), records
    how many (``late``), then ``steps.finish`` registers or completes the run. A worker
    that dies here leaves the run unfinished until the next planning call
    (``compute_*`` with the same arguments), which finishes it."""
    key = plan["key"]
    token = plan.get("token")
    try:
        with leases.hold(dataset, late_samples_lease_key(key)) as lease:
            if not is_current(dataset, plan):
                return
            if late_samples_pending(dataset, plan, steps) > 0:
                fence = storage.Fence.of(lease).and_plan(plan["_id"], token)
                out = steps.process(dataset, plan, late_samples_view(dataset, plan),
                                    fence=fence, on_written=lambda n: None)
                fence.confirm()
                logger.info("Run %r: computed the samples added after it was planned: %s",
                            key, out)
                storage.update_shard_plan(plan["_id"], {"late": out})
            unplanned = count_unplanned(dataset, plan)
            if unplanned > 0:
                storage.update_shard_plan(plan["_id"], {"unplanned": unplanned})
                logger.warning("Run %r: %s", key, unplanned_message(unplanned))
            steps.finish(dataset, load_plan(dataset, key))
            if is_current(dataset, plan):
                storage.update_shard_plan(plan["_id"], {"finished": True})
    except leases.RunLockedError:  # another worker finishes it
        return


class _ProgressBeat:
    """The shard's beat in its lease's heartbeat (one thread renews the lease and stamps
    the shard's heartbeat and samples done); ``progress_at`` moves only when the count
    does, which is what tells a hung worker from a slow one.

    A pipeline that reports its writes (``steps.reports_writes(plan)``) is never counted
    on a beat: each written batch is added (:meth:`wrote`) and stamped at once, and a
    beat stamps the last total. Its count starts at zero for a shard that never ran, or
    for one whose pipeline reports what it found written (``reports_existing``: the
    first report is that, and beats stamp nothing before it), else with one count. A
    pipeline that does not report is counted (a scan of the shard's documents) at the
    start, the end and every beat."""

    def __init__(self, dataset, plan, index, steps):
        import threading

        self.dataset, self.plan, self.index, self.steps = dataset, plan, index, steps
        self.counting = steps.reports_writes(plan)
        self.done = None  # the shard's count as this worker knows it (None: not yet)
        self.last = None  # the count last stamped
        self.stopped = False
        self._lock = threading.Lock()

    def start(self, shard):
        """The count before the shard's work, from the shard as loaded before it was
        marked running (``started_at`` unset: no try ever started it)."""
        if not self.counting:
            self(query=True)
        elif self.steps.reports_existing:
            pass
        elif shard.get("started_at") is None:
            self.wrote(0)
        else:
            self(query=True)

    def end(self):
        self(query=not self.counting or self.done is None)

    def stop(self):
        with self._lock:
            self.stopped = True

    def wrote(self, count):
        with self._lock:
            if self.stopped:
                return
            self.done = (self.done or 0) + count
            self._stamp()

    def __call__(self, query=False):
        with self._lock:
            if self.stopped:
                return
            if query or not self.counting:
                self.done = self.steps.count_done(
                    shard_view(self.dataset, self.plan, self.index), self.plan)
            if self.done is not None:
                self._stamp()

    def _stamp(self):
        done = self.done
        stamp = ("heartbeat_at", "progress_at") if done != self.last else ("heartbeat_at",)
        self.last = done
        storage.update_shard(self.plan["_id"], self.index, {"samples_done": done},
                             stamp=stamp, plan_token=self.plan.get("token"))


def run_one_shard(dataset, key: str, index: int, steps: ShardSteps) -> dict:
    """Computes shard ``index`` of sharded run ``key`` with ``steps`` under the shard's
    lease (see :func:`fiftyone_prune.sdk.shards.run_shard`); the worker that completes
    the last shard finishes the run (:func:`finish_run`).

    A delegated shard (one with a queued operation) heals the run around it: when it
    ends, done or failed, the worker requeues the shards whose worker died and the
    failed ones with tries left (:func:`heal`), its own included, and watches the run's
    tail (:func:`_watch_tail`). A worker whose database vanished waits for it
    (:data:`DATABASE_WAIT_SECONDS`) before it gives the shard up, so that it can
    record the failure and requeue the shard when the database is back.

    A delegated shard that is done keeps its lease until its worker leaves the run
    (finished, healed, watched): the lease is how others tell a worker still in its
    operation from one that died after marking its shard done, whose FiftyOne
    operation :func:`heal` then ends. A failed one lets go first, so that the try it
    requeues is not refused by its own lease."""
    plan = load_plan(dataset, key)
    if not 0 <= index < plan["num_shards"]:
        raise ParameterError(f"Run {key!r} has shards 0..{plan['num_shards'] - 1}, not "
                             f"{index}", "index")
    delegated = bool(plan["shards"][index].get("operation"))
    with contextlib.ExitStack() as held:
        try:
            out, token = _compute_shard(dataset, key, index, steps, held)
        except ConnectionFailure:
            held.close()
            if delegated and _wait_for_database(DATABASE_WAIT_SECONDS):
                _heal_quietly(dataset, key)
            raise
        except leases.RunLockedError:  # another worker has it: not this worker's to heal
            raise
        except BaseException:
            held.close()
            if delegated:
                _heal_quietly(dataset, key)
            raise
        if not delegated:
            held.close()
        plan = load_plan(dataset, key)
        if plan.get("token") == token and is_complete(plan):
            finish_run(dataset, plan, steps)
        if plan.get("token") == token and delegated:
            healed = _heal_quietly(dataset, key)
            _watch_tail(dataset, key, token, own=index, requeued=healed)
    return out


def _compute_shard(dataset, key, index, steps, held) -> tuple[dict, str]:
    """The shard's work under its lease, entered into the ExitStack ``held`` (the
    caller decides when to let go): ``(its result, the plan's token)``. Each start
    counts a try (``attempts``); a failure is recorded on the shard (``error``, and in
    ``errors`` with the earlier tries'), the database permitting."""
    lease = held.enter_context(leases.hold(dataset, shard_lease_key(key, index)))
    plan = load_plan(dataset, key)
    shard = plan["shards"][index]
    token = plan.get("token")
    out = shard.get("result") or {}
    if shard["state"] != DONE:
        tries = (shard.get("attempts") or 0) + 1
        fence = storage.Fence.of(lease).and_plan(plan["_id"], token)
        storage.update_shard(plan["_id"], index,
                             {"state": RUNNING, "owner": lease.owner, "attempts": tries},
                             stamp=("started_at", "heartbeat_at", "progress_at"),
                             plan_token=token)
        beat = _ProgressBeat(dataset, plan, index, steps)
        try:
            beat.start(shard)
            lease.heartbeat.add(beat)  # one thread: the lease's renewal and this beat
            out = steps.process(dataset, plan, shard_view(dataset, plan, index),
                                fence=fence, on_written=beat.wrote)
            fence.confirm()
            beat.end()
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            if isinstance(e, ConnectionFailure):
                _wait_for_database(DATABASE_WAIT_SECONDS)
            try:
                storage.update_shard(
                    plan["_id"], index,
                    {"state": FAILED, "error": error,
                     "errors": (shard.get("errors") or [])[-9:] + [
                         f"try {tries}: {error}"]},
                    stamp=("heartbeat_at",), only_if_state=(RUNNING,),
                    only_if={"owner": lease.owner}, plan_token=token)
            except ConnectionFailure:  # still gone: its expired lease shows it stale
                pass
            raise
        finally:
            beat.stop()  # the lease may outlive the work (run_one_shard): its beat not
        # done only on the plan it was computed for: a replaced plan's shard is not
        if not storage.update_shard(plan["_id"], index,
                                    {"state": DONE, "result": out, "error": None},
                                    stamp=("finished_at", "heartbeat_at"),
                                    plan_token=token):
            raise leases.LeaseLostError(
                f"Sharded run {key!r} was replaced or deleted while shard {index} ran; "
                f"its results were fenced out (see fop.shard_status for the current "
                f"run)")
    return out, token


def shard_status(dataset, key: str, stale_after: float | None = None,
                 steps: ShardSteps | None = None) -> dict:
    """Where sharded run ``key`` stands: ``{"key", "kind", "num_shards", "total",
    "samples_done", "counts": {state: n}, "complete", "seconds_left", "late", "unplanned",
    "shards": [{"index", "state", "owner", "samples_done", "samples_total", "error",
    "errors", "attempts", "retries_left"}]}`` (with ``steps``, also ``late_samples``:
    samples added to the view after planning that the run has not computed yet; it
    computes them after its last shard). ``seconds_left`` is the time the unfinished
    samples need at the pace kept so far (None before any progress); ``late`` what the
    catch-up of late samples computed; ``error`` a shard's last error, ``errors`` every
    try's, ``retries_left`` the automatic tries it has left (None for a shard run in a
    process). A ``running`` shard is
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
        steps (None): the run's pipeline steps (``fiftyone_prune.sdk.shards`` passes
            them), to count the late samples

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
        tries = s.get("attempts") or 0
        shards.append({"index": s["index"], "state": state, "owner": s.get("owner"),
                       "samples_done": done, "samples_total": size,
                       "error": s.get("error"), "errors": list(s.get("errors") or []),
                       "attempts": tries,
                       "retries_left": (max(0, MAX_ATTEMPTS - tries)
                                        if s.get("operation") else None)})
    complete = counts.get(DONE, 0) == plan["num_shards"]
    out = {"key": key, "kind": plan["kind"], "num_shards": plan["num_shards"],
           "total": plan["total"], "samples_done": done_total, "counts": counts,
           "complete": complete, "shards": shards,
           "seconds_left": None if complete else _seconds_left(plan, done_total, now),
           "late": plan.get("late"), "unplanned": plan.get("unplanned", 0)}
    if steps is not None:
        out["late_samples"] = late_samples_pending(dataset, plan, steps)
    return out


def _seconds_left(plan, done, now) -> float | None:
    """The time the run still needs at the pace its shards kept since the first started
    (None before any progress): samples left / samples written per second."""
    starts = [s["started_at"] for s in plan["shards"] if s.get("started_at")]
    if not starts or done <= 0:
        return None
    elapsed = (now - min(starts)).total_seconds()
    if elapsed <= 0:
        return None
    return round(max(0, plan["total"] - done) * elapsed / done, 1)


def describe_progress(status: dict) -> str:
    """One line on a sharded run for people (the CLI's ``runs``, the run's status):
    samples written, shards by state, the time left, and each failed or stale shard
    with its index, tries and error."""
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status["counts"].items()))
    line = (f"{status['samples_done']}/{status['total']} samples; {counts} "
            f"(of {status['num_shards']})")
    if status.get("seconds_left") is not None:
        line += f"; about {_duration(status['seconds_left'])} left"
    for s in status["shards"]:
        if s["state"] in (FAILED, STALE):
            tries = (f", try {s['attempts']} of {MAX_ATTEMPTS}"
                     if s.get("retries_left") is not None else "")
            why = s.get("error") or "its worker died"
            line += f"; shard {s['index']} {s['state']}{tries}: {why}"
    if status.get("late_samples"):
        line += (f"; {status['late_samples']} sample(s) added after this run was planned: "
                 f"the run computes them after its last shard")
    if status.get("unplanned"):
        line += f"; {unplanned_message(status['unplanned'])}"
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def shards_to_rerun(dataset, key: str, include_failed=True,
                    stale_after: float | None = None) -> list[int]:
    """The stale shards of ``key`` and (unless ``include_failed=False``) the failed
    ones."""
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
