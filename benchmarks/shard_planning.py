"""Benchmark: the memory and time of planning a sharded run, against N.

For each N (samples x ``--dim`` vectors, written with the package's own writer as
``benchmarks/scoring.py``'s ``make_dataset`` does; each dataset built in a child
process), times in this one process:

1. the shard bounds as planned now: the ``_id`` index streamed in order (a covered
   read), every (N/M)-th id kept (``shard_plans.plan_or_resume``)
2. the training ids of scoring as drawn now: the samples with an embedding counted on
   the server, then their ids streamed and only the k x ``max_points_per_centroid``
   drawn rows kept (``scores.prepare_scoring``)
3. the old way of each, as the baseline: ``sorted(view.values("_id"))`` cut into M, and
   ``view.exists(field).values("id")`` indexed by the drawn rows

and prints seconds, the peak RSS rise of each (sampled every 50 ms) and that rise per
sample. The new steps run first: memory freed by the old ones would otherwise be reused
without raising the RSS.

    .venv/bin/python benchmarks/shard_planning.py --num-samples 100000 300000 1000000 --keep
    .venv/bin/python benchmarks/shard_planning.py --num-samples 100000 300000 1000000 --delete
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

from scoring import PeakRSS, make_dataset  # noqa: E402


def old_bounds(samples, num_shards):
    ids = sorted(samples.values("_id"))
    return [str(ids[i * len(ids) // num_shards]) for i in range(num_shards)]


def old_training_ids(samples, field, k, max_points, seed):
    from fiftyone_prune.core import prototypes as core

    present_ids = samples.exists(field).values("id")
    rows = core.training_subsample(len(present_ids), k, max_points, seed)
    return None if rows is None else [present_ids[i] for i in rows]


def measure(n, dim, num_shards, k):
    import fiftyone as fo
    from fiftyone_prune.sdk import scores, shard_plans, storage

    ds = make_dataset(n, dim, 50, 0, "fiftyone_prune")
    rows = []
    gc.collect()
    with PeakRSS() as m:
        plan = shard_plans.plan_or_resume(ds, "benchplan", "prototypes", num_shards, {},
                                          fresh=True)
    rows.append(("bounds, streamed (new)", m))
    storage.delete_shard_plan(plan["_id"])
    with PeakRSS() as m:
        setup = scores.prepare_scoring(ds, "emb", run_key="benchplan", num_clusters=k)
    rows.append(("training ids, streamed (new)", m))
    gc.collect()
    with PeakRSS() as m:
        bounds = old_bounds(ds, num_shards)
    rows.append(("bounds, every id sorted (old)", m))
    assert bounds == plan["bounds"], "the streamed bounds differ from the old cut"
    del bounds
    gc.collect()
    with PeakRSS() as m:
        ids = old_training_ids(ds, "emb", k, setup.max_points_per_centroid, setup.seed)
    rows.append(("training ids, every id listed (old)", m))
    assert ids == setup.training_ids, "the streamed training ids differ from the old ones"
    del ids
    return ds, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-samples", type=int, nargs="+", default=[100000, 300000, 1000000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--num-shards", type=int, default=64)
    ap.add_argument("--k", type=int, default=100, help="k of the training subsample")
    ap.add_argument("--keep", action="store_true", help="keep the datasets for reruns")
    ap.add_argument("--delete", action="store_true",
                    help="only delete the kept datasets of these sizes")
    ap.add_argument("--measure-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--build-only", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    if args.delete:
        import fiftyone as fo

        for n in args.num_samples:
            name = f"bench-scoring-{n}-{args.dim}-fiftyone_prune"
            if fo.dataset_exists(name):
                fo.delete_dataset(name)
        return
    if args.build_only:
        make_dataset(args.build_only, args.dim, 50, 0, "fiftyone_prune")
        return
    if args.measure_one:
        ds, rows = measure(args.measure_one, args.dim, args.num_shards, args.k)
        for name, m in rows:
            print(f"{args.measure_one:>9d} {name:38s} {m.seconds:9.2f} "
                  f"{m.delta_gb * 2**30 / 2**20:13.1f} "
                  f"{m.delta_gb * 2**30 / args.measure_one:14.1f}", flush=True)
        if not args.keep:
            import fiftyone as fo

            fo.delete_dataset(ds.name)
        return
    print(f"D={args.dim} M={args.num_shards} shards, training subsample k={args.k} x 256; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'N':>9s} {'step':38s} {'seconds':>9s} {'peak RSS +MB':>13s} "
          f"{'bytes/sample':>14s}", flush=True)
    for n in args.num_samples:
        common = ["--dim", str(args.dim), "--num-shards", str(args.num_shards), "--k",
                  str(args.k)] + (["--keep"] if args.keep else [])
        # built, then measured, each in a fresh process: the build's buffers and one
        # size's allocations do not lower the next one's measured rise
        subprocess.run([sys.executable, __file__, "--build-only", str(n), *common],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, __file__, "--measure-one", str(n), *common],
                       check=True)


if __name__ == "__main__":
    main()
