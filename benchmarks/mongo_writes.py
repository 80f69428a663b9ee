"""Benchmark: what one MongoDB primary absorbs, for the operations part of
``docs/scale.md``: the three kinds of write a sharded run makes, each as the package
makes it (fenced by a lease, as shards write).

1. shard-state updates: single-document ``$set``s on the coordinating record (what
   every heartbeat, progress beat and state change of every shard costs), per second;
2. score writes: ``storage.write_scalars`` of two fields (distance, cluster) in
   batches of 10,000 samples, the write path of a scoring shard: samples per second;
3. vector writes: ``storage.write_vectors`` of 2048-d float32 vectors in batches of
   500, the write path of an embedding shard: vectors per second and MB per second.

Runs on FiftyOne's own mongod (or ``FIFTYONE_DATABASE_URI``) in a database of its own
and deletes what it made. Prints the load average before and after: mongod and this
client share the machine, so on a shared machine treat the figures as a lower bound.

    .venv/bin/python benchmarks/mongo_writes.py --samples 50000 --vectors 5000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "fiftyone_prune_bench_writes")

import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=50000)
    parser.add_argument("--vectors", type=int, default=5000)
    parser.add_argument("--state-updates", type=int, default=2000)
    args = parser.parse_args()

    import fiftyone as fo

    from fiftyone_prune.sdk import leases, storage

    print(f"load average before: {os.getloadavg()}")
    name = f"bench-writes-{os.getpid()}"
    dataset = fo.Dataset(name)
    try:
        dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg")
                             for i in range(args.samples)])
        dataset.add_sample_field("emb", fo.VectorField)
        ids = dataset.values("id")
        plan_id = f"{dataset._doc.id}/bench"
        storage.save_shard_plan({"_id": plan_id, "key": "bench", "kind": "bench",
                                 "shards": [{"index": i, "state": "queued",
                                             "samples_done": 0} for i in range(64)]})
        with leases.hold(dataset, "bench") as lease:
            fence = storage.Fence.of(lease)

            t = time.perf_counter()
            for i in range(args.state_updates):
                storage.update_shard(plan_id, i % 64, {"samples_done": i},
                                     stamp=("heartbeat_at",))
            s = time.perf_counter() - t
            print(f"shard-state updates: {args.state_updates} in {s:.2f} s = "
                  f"{args.state_updates / s:,.0f}/s (one client, one after another)")

            rng = np.random.default_rng(0)
            distance = rng.random(len(ids)).astype(float).tolist()
            cluster = rng.integers(0, 1000, len(ids)).tolist()
            t = time.perf_counter()
            for a in range(0, len(ids), 10000):
                storage.write_scalars(dataset, {"d": distance[a:a + 10000],
                                                "c": cluster[a:a + 10000]},
                                      ids[a:a + 10000], fence=fence)
            s = time.perf_counter() - t
            print(f"score writes (2 fields, fenced, batches of 10,000): {len(ids)} in "
                  f"{s:.2f} s = {len(ids) / s:,.0f} samples/s")

            n = min(args.vectors, len(ids))
            x = rng.normal(size=(n, 2048)).astype(np.float32)
            t = time.perf_counter()
            for a in range(0, n, 500):
                storage.write_vectors(dataset, "emb", ids[a:a + 500], x[a:a + 500],
                                      fence=fence)
            s = time.perf_counter() - t
            mb = n * 2048 * 4 / 2**20
            print(f"vector writes (2048-d float32, fenced, batches of 500): {n} in "
                  f"{s:.2f} s = {n / s:,.0f} vectors/s = {mb / s:,.1f} MB/s")
        storage.delete_shard_plan(plan_id)
    finally:
        fo.delete_dataset(name)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
