"""Benchmark: fenced writes (``storage.Fence``: the database checks the writer's lease in
the same operation) against the unfenced bulk ``UpdateOne``s, in one process, on one
collection, alternating so both see the same machine load.

Writes two scalar fields (a float distance and an int cluster, as scoring does) of every
sample in batches of 4,096 on two threads (the scoring writer's settings), first into
new fields, then over the same fields; then adds a tag to every sample in chunks of
50,000 ids and switches staged tags. Prints the seconds of each, median of ``--repeats``.

    .venv/bin/python benchmarks/fenced_writes.py --num-samples 100000 [--dim 2048]

``--dim`` adds a float32 vector of that size to every document (~8 KB at 2048, as when
the samples hold their embeddings): the per-document cost of MongoDB's update path grows
with the document.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ["FIFTYONE_DATABASE_NAME"] = f"fiftyone_prune_bench_{uuid.uuid4().hex[:8]}"

import numpy as np  # noqa: E402

BATCH, THREADS = 4096, 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import fiftyone as fo
    import fiftyone.core.odm as foo
    from bson import ObjectId

    from fiftyone_prune.sdk import leases, storage

    try:
        dataset = fo.Dataset()
        n = args.num_samples
        rng = np.random.default_rng(0)
        docs = [{"_id": ObjectId(), "filepath": f"/bench/{i}.png", "tags": []}
                for i in range(n)]
        if args.dim:
            x = rng.normal(size=(n, args.dim)).astype(np.float32)
            header = storage._npy_header(x.dtype, x.shape[1:])  # noqa: SLF001 (benchmark)
            for d, v in zip(docs, x):
                d["emb"] = storage.encode_vector(v, header)
        for s in range(0, n, 10_000):  # raw inserts: setting up, not measured
            dataset._sample_collection.insert_many(docs[s : s + 10_000])
        ids = [str(d["_id"]) for d in docs]
        with leases.hold(dataset, "bench") as lease:
            fence = storage.Fence.of(lease)
            results = {}

            def scalars(field, fenced):
                distance = rng.random(n).tolist()
                cluster = rng.integers(0, 100, n).tolist()
                t = time.perf_counter()
                with ThreadPoolExecutor(THREADS) as pool:
                    list(pool.map(lambda s: storage.write_scalars(
                        dataset, {f"{field}_d": distance[s : s + BATCH],
                                  f"{field}_c": cluster[s : s + BATCH]},
                        ids[s : s + BATCH], fence=fence if fenced else None),
                        range(0, n, BATCH)))
                return time.perf_counter() - t

            def tags(tag, fenced):
                t = time.perf_counter()
                storage.add_tag(dataset, ids, tag, fence=fence if fenced else None)
                storage.switch_tags(dataset, {tag: tag + "-final"},
                                    fence=fence if fenced else None)
                return time.perf_counter() - t

            for r in range(args.repeats):
                for fenced in (False, True) if r % 2 == 0 else (True, False):
                    name = "fenced" if fenced else "unfenced"
                    field = f"{name[0]}{r}"
                    results.setdefault(f"scalars, new fields, {name}", []).append(
                        scalars(field, fenced))
                    results.setdefault(f"scalars, same fields, {name}", []).append(
                        scalars(field, fenced))
                    results.setdefault(f"add_tag + switch_tags, {name}", []).append(
                        tags(f"t{field}", fenced))
        print(f"{n} samples{f', {args.dim}-d vector per document' if args.dim else ''}; "
              f"median of {args.repeats} (s):")
        for key in sorted(results):
            print(f"  {key:38s} {statistics.median(results[key]):7.2f}   "
                  f"({', '.join(f'{v:.2f}' for v in results[key])})")
    finally:
        foo.get_db_client().drop_database(os.environ["FIFTYONE_DATABASE_NAME"])


if __name__ == "__main__":
    main()
