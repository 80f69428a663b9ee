"""Exclusive writers: one lease per (dataset, run key), held in MongoDB.

A run (scoring, selection, evaluation) is written by one process at a time, wherever the
writers run (delegated workers on other machines share only the database). The lease is
a document of our own collection in FiftyOne's database, ``_id`` = ``<dataset id>/<run
key>``, taken atomically: one ``find_one_and_update`` with ``upsert`` whose filter
matches only an expired lease, so a live lease makes the upsert collide on ``_id``
(``DuplicateKeyError``: held) and an absent or expired one is (re)written by exactly one
caller. Times are the server's (``$$NOW``), so writers on machines whose clocks disagree
still agree on expiry.

While the work runs a heartbeat (:class:`~fiftyone_prune.core.concurrency.Heartbeat`)
renews the expiry every quarter of the lease time; a killed process (SIGKILL, OOM, a lost
machine) stops renewing and its lease expires, so the next writer takes over after at
most ``lease_seconds()`` plus a short grace (:func:`takeover_grace`). The lease is
released when the ``with`` block ends, by an exception too.

The token is a fencing token: a lease is *valid* while its document holds this token and
has not expired, and an expired lease is lost for good (renewal needs a valid lease;
taking over writes a new token). Validity can thus only turn from true to false, so a
write the database made conditional on it (``storage.Fence``), followed by one more
look, tells the writer exactly whether it still owns the run. The grace between expiry
and takeover lets a write the database accepted just before the expiry land before the
next writer starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from datetime import timezone

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from fiftyone_prune.core.concurrency import Heartbeat

logger = logging.getLogger(__name__)

COLLECTION = "fiftyone_prune_leases"

#: seconds a lease lives without renewal: how long a killed writer blocks the run key.
#: Long enough that a busy machine renews in time (every quarter of it), short enough
#: that a crashed worker does not block a user for long.
DEFAULT_LEASE_SECONDS = 60.0
_ENV = "FIFTYONE_PRUNE_LEASE_SECONDS"

_local = threading.local()  # leases held by this thread: a nested hold is a no-op


# ValueErrors, like bad input: the front ends show them as one line (CLI exit code 2)
class RunLockedError(ValueError):
    """Another writer holds the run key."""


class LeaseLostError(ValueError):
    """This writer's lease expired (another writer may own the run key now): the writer
    stops and writes nothing more."""


class RunBusyAbort(BaseException):
    """Refuses FiftyOne's own ``delete_run`` / ``rename_run`` of a run another process is
    writing. A ``BaseException`` on purpose: FiftyOne catches every ``Exception`` raised
    by a run's ``cleanup``/``rename``, logs it and deletes (renames) the record anyway,
    which would leave the writer's fields without a run; this one stops FiftyOne before
    it touches the record, so record and fields both stay."""


def lease_seconds() -> float:
    """The lease time: ``FIFTYONE_PRUNE_LEASE_SECONDS`` or 60 s."""
    value = os.environ.get(_ENV)
    if value is None:
        return DEFAULT_LEASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{_ENV}={value!r} must be a positive number of seconds")
    return seconds


def takeover_grace(seconds: float) -> float:
    """Seconds an expired lease stays untakeable: a write the database accepted just
    before the expiry lands before the next writer starts (writes are single server
    operations of at most a few seconds; the writer renews every quarter of the lease)."""
    return min(5.0, seconds / 8)


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def lease_id(dataset, run_key: str) -> str:
    return f"{dataset._doc.id}/{run_key}"


#: a lease document that is still valid (server time)
UNEXPIRED = {"$expr": {"$gt": ["$expires_at", "$$NOW"]}}


def valid_filter(lease_id_: str, token: str) -> dict:
    """The query matching the lease ``lease_id_`` only while ``token`` holds it validly:
    what a fenced write makes the database check."""
    return {"_id": lease_id_, "token": token, **UNEXPIRED}


def current(dataset, run_key: str) -> dict | None:
    """The lease document of ``run_key`` if a live (unexpired) lease exists."""
    return _collection().find_one({"_id": lease_id(dataset, run_key), **UNEXPIRED})


def held_by_another(samples, run_key: str) -> dict | None:
    """The live lease document of ``run_key`` unless this thread holds it, else None."""
    live = current(samples._dataset, run_key)
    if live is None or held_here(samples, run_key) is not None:
        return None
    return live


def describe(doc: dict) -> str:
    since = doc["acquired_at"].replace(tzinfo=timezone.utc).isoformat(timespec="seconds")
    return f"{doc['owner']} since {since}"


class Lease:
    """One writer's lease on one run key; see the module docstring.

    Attributes:
        run_key, id: the run key and the lease document's ``_id``
        token: this writer's fencing token
        owner: ``<host>/pid <pid>/<token[:8]>``, what other writers are told
        lost: set once a renewal found the lease lost
        expires_at: the expiry (server time) this writer last set: no other writer can
            own the key before it, so a write the database makes only while ``$$NOW`` is
            earlier is made under this lease (``storage.Fence``)
        heartbeat: the :class:`~fiftyone_prune.core.concurrency.Heartbeat` renewing it
            (running while held); other periodic work of the same writer joins it with
            ``lease.heartbeat.add(fn)`` instead of starting a thread of its own
    """

    def __init__(self, dataset, run_key: str, seconds: float):
        self.run_key = run_key
        self.id = lease_id(dataset, run_key)
        self.seconds = seconds
        self.token = uuid.uuid4().hex
        self.owner = f"{socket.gethostname()}/pid {os.getpid()}/{self.token[:8]}"
        self.lost = False
        self.expires_at = None
        self.heartbeat = Heartbeat(seconds / 4, self._beat, name=f"lease {run_key}")

    def acquire(self, dataset) -> None:
        ms = int(self.seconds * 1000)
        grace_ms = int(takeover_grace(self.seconds) * 1000)

        def take(field, value):  # this writer's value when the lease is free, else the holder's
            return {"$cond": ["$_free", value, f"${field}"]}

        # one atomic single-document update: MongoDB refuses $expr in an upsert's filter,
        # so the "absent or expired (for longer than the holder's grace)" test is made
        # inside the update pipeline
        update = [
            {"$set": {"_free": {"$or": [
                {"$eq": [{"$type": "$expires_at"}, "missing"]},
                {"$lte": [{"$add": ["$expires_at", {"$ifNull": ["$grace_ms", 0]}]},
                          "$$NOW"]}]}}},
            {"$set": {"owner": take("owner", self.owner), "token": take("token", self.token),
                      "dataset": dataset.name, "run_key": self.run_key,
                      "seconds": take("seconds", self.seconds),
                      "grace_ms": take("grace_ms", grace_ms),
                      "acquired_at": take("acquired_at", "$$NOW"),
                      "renewed_at": take("renewed_at", "$$NOW"),
                      "expires_at": take("expires_at", {"$add": ["$$NOW", ms]})}},
            {"$unset": "_free"},
        ]
        for attempt in range(3):
            try:
                doc = _collection().find_one_and_update(
                    {"_id": self.id}, update, upsert=True,
                    return_document=ReturnDocument.AFTER)
                break
            except DuplicateKeyError:  # two first-ever upserts raced: the loser retries
                if attempt == 2:
                    raise
        if doc["token"] != self.token:
            held_for = doc.get("seconds", self.seconds) + doc.get("grace_ms", 0) / 1000
            raise RunLockedError(
                f"Run {self.run_key!r} of dataset {dataset.name!r} is being written by "
                f"{describe(doc)}; wait or pass overwrite=True after it ends (a writer "
                f"that was killed blocks it for at most {held_for:g} s)")
        self.expires_at = doc["expires_at"]
        self.heartbeat.start()

    def renew(self) -> bool:
        """Pushes the expiry one lease time ahead if this writer still holds the lease
        validly; False (and :attr:`lost` set) once it does not."""
        if self.lost:
            return False
        ms = int(self.seconds * 1000)
        doc = _collection().find_one_and_update(
            valid_filter(self.id, self.token),
            [{"$set": {"renewed_at": "$$NOW", "expires_at": {"$add": ["$$NOW", ms]}}}],
            projection={"expires_at": 1}, return_document=ReturnDocument.AFTER)
        if doc is None:
            self.lost = True
        else:
            self.expires_at = doc["expires_at"]
        return not self.lost

    def _beat(self):
        if self.renew():
            return True
        logger.error("Lost the lease on run %r (it expired: this process was stalled for "
                     "longer than %g s); this writer writes nothing more", self.run_key,
                     self.seconds)
        return False  # nothing left to renew

    def lost_error(self) -> LeaseLostError:
        return lost_error(self.run_key, self.seconds)

    def check(self) -> None:
        """Raises :class:`LeaseLostError` unless this writer still holds the lease
        (renewing it; checked by the database): called before every commit."""
        if not self.renew():
            raise self.lost_error()

    def release(self) -> None:
        self.heartbeat.stop()
        try:
            _collection().delete_one({"_id": self.id, "token": self.token})
        except Exception as e:  # the lease then simply expires
            logger.warning("Could not release the lease on run %r: %s", self.run_key, e)


def lost_error(run_key: str, seconds: float | None = None) -> LeaseLostError:
    """The error of a writer that lost the lease of ``run_key``."""
    why = (f"it expired: this process was stalled for longer than {seconds:g} s"
           if seconds else "it expired or the run was replaced")
    return LeaseLostError(
        f"Run {run_key!r}: this writer lost its lease ({why}) and another writer may "
        f"own the run now; this writer stopped and wrote nothing more (nothing was "
        f"committed by it since; check fop.run_status and rerun if needed)")


@contextlib.contextmanager
def hold(samples, run_key: str):
    """Holds the lease of ``run_key`` on the dataset of ``samples`` for the ``with``
    block and yields the :class:`Lease`; raises :class:`RunLockedError` at once when
    another writer holds it. Nested holds of one key in one thread share the lease.
    Once acquired, the dataset is reloaded, so that the caller's checks see what the
    previous writer committed."""
    dataset = samples._dataset
    held = getattr(_local, "held", None)
    if held is None:
        held = _local.held = {}
    key = lease_id(dataset, run_key)
    if key in held:
        yield held[key]
        return
    lease = Lease(dataset, run_key, lease_seconds())
    lease.acquire(dataset)
    try:
        # what other writers committed before we got the lease (runs, fields): a
        # long-lived process (the App, a delegated worker) may hold this dataset from
        # before. The dataset document and schema only: in-memory samples keep any
        # unsaved edits. Inside the try: a reload that fails (the database gone for a
        # moment) must not leave the lease renewed by this process for ever
        dataset._reload(hard=True)
        held[key] = lease
        yield lease
    finally:
        held.pop(key, None)
        lease.release()


def held_here(samples, run_key: str):
    """This thread's lease on ``run_key``, or None."""
    return (getattr(_local, "held", None) or {}).get(lease_id(samples._dataset, run_key))
