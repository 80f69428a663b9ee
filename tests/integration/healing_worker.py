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

Each worker it starts is ``shard_worker`` (scoring shards read, assign and write
``CHUNK`` samples per step and each write waits ``DELAY_S`` first, so that the test can
kill a worker between two writes of its shard; what is written is unchanged).
"""

import subprocess
import sys
import time


def supervise(args):
    while True:
        child = subprocess.run([sys.executable, "-m", "tests.integration.shard_worker",
                                *args])
        print(f"worker exited with {child.returncode}; restarting it in 1 s", flush=True)
        time.sleep(1.0)


def main():
    supervise(sys.argv[2:] if sys.argv[1] == "supervise" else sys.argv[1:])


if __name__ == "__main__":
    main()
