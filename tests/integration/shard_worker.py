"""A real ``fiftyone delegated launch`` worker for ``test_shards.py``: FiftyOne's own
local launch loop (claims one queued operation at a time, atomically), in a process that
inherits the test session's database name and plugins folder.

    python -m tests.integration.shard_worker DELAY_S CHUNK

Scoring shards read, assign and write ``CHUNK`` samples per step (the setting
``storage.READ_BATCH_SIZE``; embedding shards take the run's ``chunk_size``) and each
write of scores or vectors waits ``DELAY_S`` first, so that a shard takes long enough for the test to SIGKILL its worker between two
writes; what is written is unchanged.
"""

import sys
import time


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

    _launch_delegated_local()


if __name__ == "__main__":
    main()
