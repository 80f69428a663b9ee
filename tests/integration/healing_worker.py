"""A ``fiftyone delegated launch`` worker as an operator deploys it, for
``test_shards_healing.py``: FiftyOne's own local launch loop in a process that a
supervisor restarts whenever it exits, as systemd (``Restart=always``) or a Kubernetes
Deployment would. FiftyOne's loop polls the queue with no error handling of its own: a
database outage longer than the driver's server-selection wait (30 s) ends the
process, and without a supervisor an idle worker would be gone when the database comes
back. The restart must be a new process: FiftyOne keeps its connection in module state,
and a connection attempt that fails half way (the database still down) leaves it
unusable in that process ("You have not defined a default connection").

    python -m tests.integration.healing_worker supervise DELAY_S CHUNK
    python -m tests.integration.healing_worker worker DELAY_S CHUNK

As ``shard_worker``: scoring shards read, assign and write ``CHUNK`` samples per step and
each write waits ``DELAY_S`` first, so that the test can kill a worker between two
writes of its shard; what is written is unchanged.
"""

import subprocess
import sys
import time


def worker(delay, chunk):
    from fiftyone_prune.sdk import storage

    storage.READ_BATCH_SIZE = chunk

    def slowed(write):
        def slowed_write(*args, **kwargs):
            time.sleep(delay)
            return write(*args, **kwargs)
        return slowed_write

    storage.write_scalars = slowed(storage.write_scalars)
    storage.write_vectors = slowed(storage.write_vectors)
    from fiftyone.core.cli import _launch_delegated_local

    _launch_delegated_local()


def supervise(args):
    while True:
        child = subprocess.run([sys.executable, "-m", "tests.integration.healing_worker",
                                "worker", *args])
        print(f"worker exited with {child.returncode}; restarting it in 1 s", flush=True)
        time.sleep(1.0)


def main():
    if sys.argv[1] == "supervise":
        supervise(sys.argv[2:])
    else:
        worker(float(sys.argv[2]), int(sys.argv[3]))


if __name__ == "__main__":
    main()
