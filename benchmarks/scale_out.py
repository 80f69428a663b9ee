"""Benchmark: throughput of a sharded scoring pass with 1, 2 (, 4) delegated workers.

Builds (once, kept) N x D clustered float32 vectors in a FiftyOne dataset of its own
database (``fiftyone_prune_bench``; real mongod), then times the same scoring run

1. in one process, without shards (the reference),
2. with ``num_shards=M`` in this process (what the sharding itself costs),
3. with ``num_shards=M, delegate=True`` on W real ``fiftyone delegated launch`` workers
   (started and warmed before the clock starts; the clock runs from the queueing call,
   which trains k-means, until the run is registered complete),

checks that every variant gives the reference's clusters, and prints seconds and
samples/s. Embedding throughput scales the same way per worker (one model per worker;
``benchmarks/embedding_throughput.py`` gives the per-worker rate), so it is not re-run.

    .venv/bin/python benchmarks/scale_out.py --num-samples 50000 --workers 1 2
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


def start_workers(n, log_dir):
    fiftyone = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    procs, logs = [], []
    for i in range(n):
        log = os.path.join(log_dir, f"worker{i}.log")
        logs.append(log)
        procs.append(subprocess.Popen([fiftyone, "delegated", "launch"], cwd=REPO_ROOT,
                                      stdout=open(log, "w"), stderr=subprocess.STDOUT))
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-samples", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

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
            from fiftyone.operators.delegated import DelegatedOperationService

            service = DelegatedOperationService()
            for op_id in queued.get("queued_operations", []):
                service.delete_operation(op_id)
            clear(ds, key)
    clear(ds, "single")

    print(f"\n| variant ({n} samples) | seconds | samples/s |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {n / seconds:,.0f} |")


if __name__ == "__main__":
    main()
