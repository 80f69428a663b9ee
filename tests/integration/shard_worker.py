"""A real ``fiftyone delegated launch`` worker for ``test_shards.py``: FiftyOne's own
local launch loop (claims one queued operation at a time, atomically), in a process that
inherits the test session's database name and plugins folder.

    python -m tests.integration.shard_worker DELAY_S CHUNK
    python -m tests.integration.shard_worker watch DELAY_S CHUNK DATASET KEY INDEX
    python -m tests.integration.shard_worker stop-after-done DELAY_S CHUNK

Scoring shards read, assign and write ``CHUNK`` samples per step (the setting
``storage.READ_BATCH_SIZE``; embedding shards take the run's ``chunk_size``) and each
write of scores or vectors waits ``DELAY_S`` first, so that a shard takes long enough for
the test to SIGKILL its worker between two writes; what is written is unchanged.

``stop-after-done`` is the worker that stops itself (SIGSTOP) right after it marked its
first shard done, before FiftyOne records the end of its operation, so that the test can
SIGKILL it at that point.

``watch`` runs one shard in this process (``shards.run_shard``, as the operator does)
with pymongo's command monitoring on the database client from its first connection, and
prints as JSON what the shard sent: ``reads`` (the count/aggregate/find commands on the
dataset's sample collection), ``renewals`` (the renewals of the shard's lease: one per
heartbeat beat) and ``samples_done`` (each value the shard stamped on its record).
"""

import json
import sys
import threading
import time

import pymongo.monitoring


def slow_writes(delay, chunk):
    from fiftyone_prune.sdk import storage

    storage.READ_BATCH_SIZE = chunk

    def slowed(write):
        def slowed_write(*args, **kwargs):
            time.sleep(delay)
            return write(*args, **kwargs)
        return slowed_write

    storage.write_scalars = slowed(storage.write_scalars)
    storage.write_vectors = slowed(storage.write_vectors)


class _Commands(pymongo.monitoring.CommandListener):
    """Every command this process's MongoDB clients start (registered before the first
    client exists: pymongo attaches listeners to the clients made afterwards)."""

    def __init__(self):
        self.seen, self._lock = [], threading.Lock()

    def started(self, event):
        with self._lock:
            self.seen.append((event.command_name, dict(event.command)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def watch(delay, chunk, dataset_name, key, index):
    listener = _Commands()
    pymongo.monitoring.register(listener)
    slow_writes(delay, chunk)
    import fiftyone as fo

    from fiftyone_prune.sdk import leases, shards, storage

    dataset = fo.load_dataset(dataset_name)
    samples = dataset._sample_collection_name
    shards.run_shard(dataset, key, index)
    lease_id = f"{dataset._doc.id}/{shards.shard_lease_key(key, index)}"
    field = f"shards.{index}.samples_done"
    reads, renewals, done = {}, 0, []
    for name, command in list(listener.seen):
        target = command.get(name)
        if name in ("count", "aggregate", "find", "distinct") and target == samples:
            reads[name] = reads.get(name, 0) + 1
        elif (name == "findAndModify" and target == leases.COLLECTION
              and command.get("query", {}).get("_id") == lease_id):
            renewals += 1
        elif name == "update" and target == storage.SHARD_PLANS:
            for update in command.get("updates", []):
                value = update.get("u", {}).get("$set", {}).get(field)
                if value is not None:
                    done.append(value)
    print(json.dumps({"reads": reads, "renewals": renewals, "samples_done": done}))


def stop_after_done():
    import os
    import signal

    from fiftyone_prune.sdk import storage

    update_shard = storage.update_shard

    def update_then_stop(plan_id, index, values, *args, **kwargs):
        applied = update_shard(plan_id, index, values, *args, **kwargs)
        if applied and values.get("state") == "done":
            os.kill(os.getpid(), signal.SIGSTOP)
        return applied

    storage.update_shard = update_then_stop


def main():
    if sys.argv[1] == "stop-after-done":
        del sys.argv[1]
        stop_after_done()
    if sys.argv[1] == "watch":
        watch(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
              int(sys.argv[6]))
        return
    slow_writes(float(sys.argv[1]), int(sys.argv[2]))
    from fiftyone.core.cli import _launch_delegated_local

    _launch_delegated_local()


if __name__ == "__main__":
    main()
