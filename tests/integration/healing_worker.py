"""A ``fiftyone delegated launch`` worker as an operator deploys it for
``test_shards_healing.py``: FiftyOne's own local launch loop, restarted when it exits on
an error, as a process supervisor (systemd ``Restart=always``, a Kubernetes pod) restarts
it. FiftyOne's loop polls the queue with no error handling of its own: a database
outage longer than the driver's server-selection wait (30 s) ends it, and without a
supervisor an idle worker would be gone when the database comes back.

    python -m tests.integration.healing_worker DELAY_S CHUNK

As ``shard_worker``: scoring shards read, assign and write ``CHUNK`` samples per step and
each write waits ``DELAY_S`` first, so that the test can kill a worker between two
writes of its shard; what is written is unchanged.
"""

import sys
import time
import traceback


def main():
    delay, chunk = float(sys.argv[1]), int(sys.argv[2])
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

    while True:  # the supervisor
        try:
            _launch_delegated_local()
            return  # interrupted (Ctrl-C): FiftyOne's loop returns
        except Exception:  # noqa: BLE001 - what a supervisor sees as an exit
            print("worker loop exited; restarting in 1 s\n" + traceback.format_exc(),
                  flush=True)
            time.sleep(1.0)


if __name__ == "__main__":
    main()
