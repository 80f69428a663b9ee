"""Benchmark: throughput of a sharded embedding pass and of a sharded scoring pass with
1, 2 and 4 delegated workers.

Embedding pass: N real photos (400x300 JPEG crops of scikit-learn's two sample photos,
``embedding_throughput.write_photos``) embedded with ``efficientnet_lite0`` (offline
ImageNet weights) at ``--image-size``

1. in one process, without shards (the reference),
2. with ``num_shards=M, delegate=True`` on W real ``fiftyone delegated launch`` workers,
   each with ``OMP_NUM_THREADS = max(1, cores // W)`` (one worker per core share, as one
   worker per GPU on a GPU machine); the clock runs from the queueing call until every
   shard is done,

checking that every variant's vectors equal the reference (float tolerance).

Scoring pass: (once, kept) N x D clustered float32 vectors in a FiftyOne dataset of its
own database (``fiftyone_prune_bench``; real mongod), the same scoring run in one
process, with ``num_shards=M`` in this process, and on W workers (started and warmed
before the clock starts; the clock runs from the queueing call, which trains k-means,
until the run is registered complete), checking the reference's clusters.

Prints seconds, samples/s, the ratio to 1 worker measured in the same run, and the load
average before and after (other jobs on the machine distort every number).

    .venv/bin/python benchmarks/scale_out.py --passes embedding --embed-samples 256 \
        --workers 1 2 4
    .venv/bin/python benchmarks/scale_out.py --passes scoring --num-samples 50000 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "fiftyone_prune_bench")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["FIFTYONE_PLUGINS_DIR"] = REPO_ROOT
os.environ["FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"] = "true"
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import numpy as np  # noqa: E402


def start_workers(n, log_dir, env=None):
    fiftyone = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    procs, logs = [], []
    for i in range(n):
        log = os.path.join(log_dir, f"worker{n}_{i}.log")
        logs.append(log)
        procs.append(subprocess.Popen([fiftyone, "delegated", "launch"], cwd=REPO_ROOT,
                                      stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                      env=dict(os.environ, **(env or {}))))
    deadline = time.time() + 120
    while not all("service running" in open(log).read() for log in logs):
        if time.time() > deadline:
            raise RuntimeError(f"workers did not start; see {log_dir}")
        time.sleep(0.2)
    return procs


def stop_workers(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


def clear(dataset, key):
    import fiftyone_prune as fop
    from fiftyone_prune.sdk import shards, storage

    if key in dataset.list_runs():
        fop.delete_run(dataset, key)
    storage.delete_shard_plan(shards.plan_id(dataset, key))


def delete_operations(queued):
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    service = DelegatedOperationService()
    for op_id in queued.get("queued_operations", []):
        # by ObjectId: FiftyOne matches the string form of an id against nothing and
        # deletes nothing, which left every benchmark's operations in the queue
        service.delete_operation(ObjectId(op_id))


def print_table(title, n, rows):
    base = next((sec for name, sec in rows if name.startswith("1 delegated")), None)
    print(f"\n| {title} ({n} samples) | seconds | samples/s | vs 1 worker |\n|---|---|---|---|")
    for name, seconds in rows:
        ratio = f"{base / seconds:.2f}x" if base and "delegated" in name else ""
        print(f"| {name} | {seconds:.1f} | {n / seconds:,.1f} | {ratio} |")


def embedding_pass(args):
    import tempfile

    import fiftyone as fo
    import fiftyone_prune as fop
    from fiftyone_prune.sdk import shards, storage
    from embedding_throughput import write_photos

    folder = tempfile.mkdtemp(prefix="fop-scale-out-")
    paths = write_photos(folder, args.embed_samples)
    name = "scale_out_embedding"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name)
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    n = len(ds)
    common = dict(model="efficientnet_lite0", image_size=args.image_size,
                  batch_size=args.batch_size, num_workers=0)
    print(f"embedding pass: {n} photos, efficientnet_lite0 at {args.image_size} px, "
          f"{args.shards} shards, {os.cpu_count()} CPU cores")
    rows = []
    t = time.perf_counter()
    fop.compute_embeddings(ds, embeddings_field="single", **common)
    rows.append(("one process, no shards", time.perf_counter() - t))
    reference = np.stack(ds.values("single"))
    log_dir = os.path.join("/tmp", f"scale_out_{os.getpid()}")
    os.makedirs(log_dir, exist_ok=True)
    for w in args.workers:
        field = f"w{w}"
        threads = max(1, (os.cpu_count() or 1) // w)
        procs = start_workers(w, log_dir, {"OMP_NUM_THREADS": str(threads)})
        queued = {}
        try:
            t = time.perf_counter()
            queued = fop.compute_embeddings(ds, embeddings_field=field,
                                            num_shards=args.shards, delegate=True, **common)
            queue_s = time.perf_counter() - t
            while True:
                status = shards.shard_status(ds, field)
                if status["complete"]:
                    break
                if status["counts"].get("failed"):
                    raise RuntimeError(f"a shard failed: {status}")
                time.sleep(0.1)
            rows.append((f"{w} delegated worker(s) x {threads} thread(s), {args.shards} "
                         f"shards (queueing {queue_s:.1f} s)", time.perf_counter() - t))
            ds.reload()
            got = np.stack(ds.values(field))
            np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
        finally:
            stop_workers(procs)
            delete_operations(queued)
            storage.delete_shard_plan(shards.plan_id(ds, field))
    fo.delete_dataset(name)
    print_table("embedding pass", n, rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", nargs="+", default=["embedding", "scoring"],
                    choices=["embedding", "scoring"])
    ap.add_argument("--num-samples", type=int, default=50000, help="scoring pass")
    ap.add_argument("--embed-samples", type=int, default=256, help="embedding pass")
    ap.add_argument("--image-size", type=int, default=224, help="embedding pass")
    ap.add_argument("--batch-size", type=int, default=16, help="embedding pass")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    if "embedding" in args.passes:
        embedding_pass(args)
    if "scoring" in args.passes:
        scoring_pass(args)
    print(f"\nload average after: {os.getloadavg()}")


def scoring_pass(args):
    import fiftyone_prune as fop
    from fiftyone_prune.sdk import runs, shards
    from scoring import make_dataset

    ds = make_dataset(args.num_samples, args.dim, args.k, 0, "fiftyone_prune")
    n = len(ds)
    common = dict(embeddings_field="emb", num_clusters=args.k, seed=51)
    print(f"{n} x {args.dim} vectors, k={args.k}, {args.shards} shards, "
          f"{os.cpu_count()} CPU cores")
    rows = []

    clear(ds, "single")
    t = time.perf_counter()
    fop.compute_prototype_scores(ds, run_key="single", **common)
    rows.append(("one process, no shards", time.perf_counter() - t))
    reference = np.array(ds.values("single_cluster"))

    def check(key):
        ds.reload()
        got = np.array(ds.values(f"{key}_cluster"))
        assert (got == reference).all(), f"{key}: clusters differ from the reference"

    clear(ds, "inproc")
    t = time.perf_counter()
    fop.compute_prototype_scores(ds, run_key="inproc", num_shards=args.shards, **common)
    rows.append((f"one process, {args.shards} shards in order", time.perf_counter() - t))
    check("inproc")
    clear(ds, "inproc")

    log_dir = os.path.join("/tmp", f"scale_out_{os.getpid()}")
    os.makedirs(log_dir, exist_ok=True)
    for w in args.workers:
        key = f"w{w}"
        clear(ds, key)
        procs = start_workers(w, log_dir)
        queued = {}
        try:
            t = time.perf_counter()
            queued = fop.compute_prototype_scores(ds, run_key=key, num_shards=args.shards,
                                                  delegate=True, **common)
            queue_s = time.perf_counter() - t
            while True:
                ds.reload()
                if runs.run_status(ds, key) == runs.COMPLETE:
                    break
                status = shards.shard_status(ds, key)
                if status["counts"].get("failed"):
                    raise RuntimeError(f"a shard failed: {status}")
                time.sleep(0.1)
            rows.append((f"{w} delegated worker(s), {args.shards} shards "
                         f"(queueing + training {queue_s:.1f} s)", time.perf_counter() - t))
            check(key)
        finally:
            stop_workers(procs)
            delete_operations(queued)
            clear(ds, key)
    clear(ds, "single")
    print_table("scoring pass", n, rows)


if __name__ == "__main__":
    main()
