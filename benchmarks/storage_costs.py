"""Benchmark: the costs that bound prototype scoring on this machine.

1. inflating one stored 2048-d vector: zlib vs ISA-L (``isal``), zlib levels 6 and 0
2. faiss's inner-product search with its bundled OpenBLAS as it loads by itself vs
   through ``fiftyone_prune.core.faiss_loader`` (each in a fresh process), and NumPy's
   matrix product for reference
3. mongod CPU per update of two scalar fields, on 100-byte and ~8 KB documents (new
   fields, same fields, no-op), and for 8 KB documents three ways of writing them

    .venv/bin/python benchmarks/storage_costs.py --num-docs 100000
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
import zlib

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

import numpy as np  # noqa: E402


def inflate_costs():
    from isal import isal_zlib

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 2048)).astype(np.float32)
    x = (centers[rng.integers(0, 50, 2000)] + 0.7 * rng.normal(size=(2000, 2048))).astype(
        np.float32)
    print("1. inflate one 2048-d vector (us)")
    for level in (6, 0):
        raws = []
        for v in x:
            buf = io.BytesIO()
            np.save(buf, v)
            raws.append(zlib.compress(buf.getvalue(), level))
        row = []
        for name, inflate in (("zlib", zlib.decompress), ("isal", isal_zlib.decompress)):
            t = time.perf_counter()
            for r in raws:
                inflate(r)
            row.append(f"{name} {(time.perf_counter() - t) / len(raws) * 1e6:.1f}")
        print(f"   level {level}: " + ", ".join(row))


_SEARCH = """
import sys, time, numpy as np
if sys.argv[1] == "loader":
    from fiftyone_prune.core.faiss_loader import load_faiss
    faiss = load_faiss()
else:
    import faiss
x = np.random.default_rng(0).normal(size=(65536, 2048)).astype(np.float32)
c = np.random.default_rng(1).normal(size=(100, 2048)).astype(np.float32)
index = faiss.IndexFlatIP(2048)
index.add(c)
best = min((lambda t: (index.search(x, 1), time.perf_counter() - t)[1])(time.perf_counter())
           for _ in range(3))
best_np = min((lambda t: ((x @ c.T).argmax(1), time.perf_counter() - t)[1])(time.perf_counter())
              for _ in range(3))
print(f"{best:.2f} {best_np:.2f}")
"""


def faiss_costs():
    print("2. 65,536 x 2048 queries vs 100 centroids, best of 3 (s)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    for mode in ("plain import", "loader"):
        out = subprocess.run([sys.executable, "-c", _SEARCH, mode.split()[0]], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"   faiss ({mode}): {out[0]}   numpy matmul + argmax: {out[1]}")


def mongod_process(client):
    import psutil

    port = client.address[1]
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "mongod" and (
                str(port) in " ".join(proc.info["cmdline"] or [])
                or any(c.laddr.port == port for c in proc.net_connections(kind="tcp"))):
            return proc
    raise RuntimeError(f"no local mongod process listens on port {port}")


def update_costs(n):
    import fiftyone.core.odm as foo
    from pymongo import UpdateOne

    client = foo.get_db_client()
    client.admin.command("ping")
    mongod = mongod_process(client)
    db = client["fiftyone_prune_storage_costs"]

    def mongod_cpu(fn):
        before = mongod.cpu_times()
        fn()
        after = mongod.cpu_times()
        return after.user + after.system - before.user - before.system

    def bulk(coll, ids, fields, values):
        coll.bulk_write([UpdateOne({"_id": i}, {"$set": {fields[0]: values[j],
                                                         fields[1]: j % 100}})
                         for j, i in enumerate(ids)], ordered=False)

    print(f"3. mongod CPU per update of two scalar fields, {n:,} documents (us)")
    rng = np.random.default_rng(0)
    for size in (100, 8300):
        coll = db[f"docs{size}"]
        coll.drop()
        pad = os.urandom(max(0, size - 100))
        for s in range(0, n, 10000):
            coll.insert_many([{"filepath": f"/x/{i}.jpg", "tags": [], "pad": pad}
                              for i in range(s, min(n, s + 10000))])
        ids = [d["_id"] for d in coll.find({}, {"_id": 1})]
        first, second = rng.random(n).tolist(), rng.random(n).tolist()
        costs = [mongod_cpu(lambda: bulk(coll, ids, ("d", "c"), first)),
                 mongod_cpu(lambda: bulk(coll, ids, ("d", "c"), second)),
                 mongod_cpu(lambda: bulk(coll, ids, ("d", "c"), second))]
        print(f"   {size:>5}-byte docs, bulk UpdateOne: new fields {costs[0] / n * 1e6:.0f}, "
              f"same fields {costs[1] / n * 1e6:.0f}, no-op {costs[2] / n * 1e6:.0f}")
        if size != 8300:
            continue
        values = rng.random(n).tolist()

        def merge():
            tmp = db["scores_tmp"]
            tmp.drop()
            tmp.insert_many([{"_id": i, "m_d": values[j], "m_c": j % 100}
                             for j, i in enumerate(ids)])
            tmp.aggregate([{"$merge": {"into": coll.name, "on": "_id",
                                       "whenMatched": "merge", "whenNotMatched": "discard"}}])
            tmp.drop()

        def pipeline(batch=256):
            for s in range(0, n, batch):
                chunk = ids[s: s + batch]
                at = {"$indexOfArray": [{"$literal": chunk}, "$_id"]}
                coll.update_many({"_id": {"$in": chunk}}, [{"$set": {
                    "p_d": {"$arrayElemAt": [{"$literal": values[s: s + batch]}, at]},
                    "p_c": {"$arrayElemAt": [{"$literal": [j % 100 for j in range(
                        s, s + len(chunk))]}, at]}}}])

        print(f"   {size:>5}-byte docs, new fields: insert + $merge "
              f"{mongod_cpu(merge) / n * 1e6:.0f}, pipeline update_many "
              f"{mongod_cpu(pipeline) / n * 1e6:.0f}")
    client.drop_database(db.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-docs", type=int, default=100000)
    args = ap.parse_args()
    inflate_costs()
    faiss_costs()
    update_costs(args.num_docs)


if __name__ == "__main__":
    main()
