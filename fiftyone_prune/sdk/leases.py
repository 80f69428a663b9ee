"""Exclusive writers: one lease per (dataset, run key), held in MongoDB.

A run (scoring, selection, evaluation) is written by one process at a time, wherever the
writers run (delegated workers on other machines share only the database). The lease is
a document of our own collection in FiftyOne's database, ``_id`` = ``<dataset id>/<run
key>``, taken atomically: one ``find_one_and_update`` with ``upsert`` whose filter
matches only an expired lease, so a live lease makes the upsert collide on ``_id``
(``DuplicateKeyError``: held) and an absent or expired one is (re)written by exactly one
caller. Times are the server's (``$$NOW``), so writers on machines whose clocks disagree
still agree on expiry.

While the work runs a daemon thread renews the expiry every quarter of the lease time; a
killed process (SIGKILL, OOM, a lost machine) stops renewing and its lease expires, so
the next writer takes over after at most ``lease_seconds()``. The lease is released when
the ``with`` block ends, by an exception too. Before its final commit (registering the
run, switching tags or fields) a writer calls :meth:`Lease.check`, which fails if the
lease was taken over meanwhile (a process stalled past the expiry): nothing is then
committed.
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
    """This writer's lease expired and another writer took the run key over."""


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


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def lease_id(dataset, run_key: str) -> str:
    return f"{dataset._doc.id}/{run_key}"


def current(dataset, run_key: str) -> dict | None:
    """The lease document of ``run_key`` if a live (unexpired) lease exists."""
    doc = _collection().find_one(
        {"_id": lease_id(dataset, run_key), "$expr": {"$gt": ["$expires_at", "$$NOW"]}})
    return doc


def describe(doc: dict) -> str:
    since = doc["acquired_at"].replace(tzinfo=timezone.utc).isoformat(timespec="seconds")
    return f"{doc['owner']} since {since}"


class Lease:
    def __init__(self, dataset, run_key: str, seconds: float):
        self.run_key = run_key
        self.id = lease_id(dataset, run_key)
        self.seconds = seconds
        self.token = uuid.uuid4().hex
        self.owner = f"{socket.gethostname()}/pid {os.getpid()}/{self.token[:8]}"
        self.lost = False
        self._stop = threading.Event()
        self._thread = None

    def acquire(self, dataset) -> None:
        ms = int(self.seconds * 1000)

        def take(field, value):  # this writer's value when the lease is free, else the holder's
            return {"$cond": ["$_free", value, f"${field}"]}

        # one atomic single-document update: MongoDB refuses $expr in an upsert's filter,
        # so the "absent or expired" test is made inside the update pipeline
        update = [
            {"$set": {"_free": {"$or": [{"$eq": [{"$type": "$expires_at"}, "missing"]},
                                        {"$lte": ["$expires_at", "$$NOW"]}]}}},
            {"$set": {"owner": take("owner", self.owner), "token": take("token", self.token),
                      "dataset": dataset.name, "run_key": self.run_key,
                      "acquired_at": take("acquired_at", "$$NOW"),
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
            raise RunLockedError(
                f"Run {self.run_key!r} of dataset {dataset.name!r} is being written by "
                f"{describe(doc)}; wait or pass overwrite=True after it ends (a writer "
                f"that was killed blocks it for at most {self.seconds:g} s)")
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name=f"lease {self.run_key}")
        self._thread.start()

    def _renew(self) -> bool:
        ms = int(self.seconds * 1000)
        result = _collection().update_one(
            {"_id": self.id, "token": self.token},
            [{"$set": {"renewed_at": "$$NOW", "expires_at": {"$add": ["$$NOW", ms]}}}])
        return result.matched_count == 1

    def _heartbeat(self):
        while not self._stop.wait(self.seconds / 4):
            try:
                if not self._renew():
                    self.lost = True
                    logger.error("Lost the lease on run %r (another writer took it over "
                                 "after it expired); this run will not be committed",
                                 self.run_key)
                    return
            except Exception as e:  # a database hiccup: try again next beat
                logger.warning("Could not renew the lease on run %r: %s", self.run_key, e)

    def check(self) -> None:
        """Raises :class:`LeaseLostError` unless this writer still holds the lease
        (renewing it): called right before a commit."""
        if self.lost or not self._renew():
            self.lost = True
            raise LeaseLostError(
                f"Run {self.run_key!r}: this writer's lease expired and another writer took "
                f"the run over; nothing was committed (rerun when it ends)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            _collection().delete_one({"_id": self.id, "token": self.token})
        except Exception as e:  # the lease then simply expires
            logger.warning("Could not release the lease on run %r: %s", self.run_key, e)


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
    # what other writers committed before we got the lease (runs, fields): a long-lived
    # process (the App, a delegated worker) may hold this dataset from before. The
    # dataset document and schema only: in-memory samples keep any unsaved edits
    dataset._reload(hard=True)
    held[key] = lease
    try:
        yield lease
    finally:
        del held[key]
        lease.release()


def held_here(samples, run_key: str):
    """This thread's lease on ``run_key``, or None."""
    return (getattr(_local, "held", None) or {}).get(lease_id(samples._dataset, run_key))
