"""Benchmark: prototype scoring end to end vs faiss alone vs fiftyone-brain.

Stores N x D clustered random float32 vectors in a FiftyOne dataset (real mongod), then
times, in this one process:

1. ``fop.compute_prototype_scores`` end to end (read from MongoDB, k-means, assign, write)
2. faiss alone on the same matrix already in memory (spherical k-means + assignment)
3. fiftyone-brain ``compute_representativeness`` on the same field (skip with --no-brain)
4. FiftyOne's own ``values()`` of the vector field (the read baseline)

and prints times, ratios and the peak RSS increase of each step (sampled every 50 ms).

    .venv/bin/python benchmarks/scoring.py --num-samples 50000 --dim 2048 --k 100
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __init__(self):
        self.proc = psutil.Process()

    def __enter__(self):
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.delta_gb = (self.peak - self.base) / 2**30


def make_dataset(n, d, k_true, seed, writer, chunk=20000):
    """Vectors stored as FiftyOne itself writes them (``writer="fiftyone"``: zlib level 6,
    what ``set_values``/``compute_embeddings`` of FiftyOne and the Brain produce), or as
    fiftyone-prune's ``compute_embeddings`` writes them (zlib level 0, same format)."""
    import fiftyone as fo
    import fiftyone.core.utils as fou
    from bson import Binary, ObjectId
    from pymongo import UpdateOne
    from fiftyone_prune.sdk import storage

    name = f"bench-scoring-{n}-{d}-{writer}"
    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
        if len(ds) == n and ds.count("emb") == n:
            return ds
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    ds.media_type = "image"
    ds.add_sample_field("emb", fo.VectorField)
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k_true, d)).astype(np.float32)
    t = time.perf_counter()
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        ids = ds._sample_collection.insert_many(
            [{"filepath": f"/bench/{s + i}.jpg", "tags": [], "_media_type": "image",
              "_dataset_id": ds._doc.id} for i in range(m)]
        ).inserted_ids
        x = centers[rng.integers(0, k_true, m)] + 0.7 * rng.normal(size=(m, d)).astype(np.float32)
        if writer == "fiftyone":
            ds._sample_collection.bulk_write(
                [UpdateOne({"_id": ObjectId(i)}, {"$set": {"emb": Binary(fou.serialize_numpy_array(v))}})
                 for i, v in zip(ids, x)], ordered=False)
        else:
            storage.write_vectors(ds, "emb", [str(i) for i in ids], x)
    print(f"built {n} x {d} dataset in {time.perf_counter() - t:.1f} s")
    return ds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-samples", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--niter", type=int, default=25)
    ap.add_argument("--no-brain", action="store_true")
    ap.add_argument("--writer", choices=["fiftyone", "fiftyone_prune"], default="fiftyone",
                    help="how the vectors were stored (see make_dataset)")
    ap.add_argument("--keep", action="store_true", help="keep the dataset for reruns")
    ap.add_argument("--rescore", action="store_true",
                    help="also time a second run over the same key with overwrite=True")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-values", action="store_true",
                    help="skip FiftyOne's values() read (needs ~15 GB RSS at 1M x 2048)")
    args = ap.parse_args()

    # the same faiss setup as the package (its bundled OpenBLAS, told this CPU's kernels),
    # so that the baseline is not handicapped
    from fiftyone_prune.core.faiss_loader import load_faiss

    faiss = load_faiss()
    import fiftyone as fo
    import fiftyone_prune as fop
    from fiftyone_prune.core import prototypes as core
    from fiftyone_prune.sdk.scores import read_embeddings

    if args.build_only:
        make_dataset(args.num_samples, args.dim, 50, 0, args.writer)
        return
    # built in a child process: the build's transient buffers stay in this process's
    # allocator otherwise (at 1M x 2048 that pushed the measured run into the OOM killer)
    import subprocess
    import sys

    subprocess.run([sys.executable, __file__, "--build-only", "--num-samples",
                    str(args.num_samples), "--dim", str(args.dim), "--writer", args.writer],
                   check=True)
    ds = make_dataset(args.num_samples, args.dim, 50, 0, args.writer)
    n, d = args.num_samples, args.dim
    print(f"N={n} D={d} k={args.k} niter={args.niter} writer={args.writer} "
          f"faiss threads={faiss.omp_get_max_threads()}")
    rows = []

    with PeakRSS() as m:
        ids, x, _ = read_embeddings(ds, "emb")
    rows.append(("fiftyone-prune read", m))

    core.l2_normalize(x, out=x)
    with PeakRSS() as m:
        km = faiss.Kmeans(d, args.k, niter=args.niter, seed=51, spherical=True)
        km.train(x)
        index = faiss.IndexFlatIP(d)
        index.add(km.centroids)
        index.search(x, 1)
    faiss_row = ("faiss k-means + assign (in memory)", m)
    rows.append(faiss_row)
    del x, index, km
    gc.collect()

    if "bench" in fop.list_runs(ds):  # a kept dataset: time a first run, not a re-run
        fop.delete_run(ds, "bench")
    with PeakRSS() as m:
        fop.compute_prototype_scores(ds, "emb", run_key="bench", num_clusters=args.k,
                                     niter=args.niter)
    ours_row = ("fiftyone-prune end to end", m)
    rows.append(ours_row)
    timings = fop.load_run_results(ds, "bench").timings
    if args.rescore:
        with PeakRSS() as m:
            fop.compute_prototype_scores(ds, "emb", run_key="bench", num_clusters=args.k,
                                         niter=args.niter, seed=52, overwrite=True)
        rows.append(("fiftyone-prune re-score (overwrite=True)", m))

    brain_row = None
    if not args.no_brain:
        import fiftyone.brain as fob

        with PeakRSS() as m:
            fob.compute_representativeness(ds, representativeness_field="brain_repr",
                                           embeddings="emb", progress=False)
        brain_row = ("fiftyone-brain compute_representativeness", m)
        rows.append(brain_row)

    if not args.no_values:
        with PeakRSS() as m:
            vals = ds.values("emb")
        rows.insert(0, ("fiftyone values() read", m))
        del vals

    print(f"\n{'step':45s} {'seconds':>9s} {'peak RSS +GB':>13s}")
    for name, m in rows:
        print(f"{name:45s} {m.seconds:9.2f} {m.delta_gb:13.2f}")
    print(f"\nend-to-end stages: {timings}")
    print(f"matrix size: {n * d * 4 / 2**30:.2f} GB")
    print(f"ratio end-to-end / faiss alone: {ours_row[1].seconds / faiss_row[1].seconds:.2f}x")
    if not args.no_values:
        read_ratio = rows[0][1].seconds / rows[1][1].seconds
        print(f"read speed-up over fiftyone values(): {read_ratio:.1f}x")
    if brain_row:
        print(f"fiftyone-brain / fiftyone-prune: {brain_row[1].seconds / ours_row[1].seconds:.1f}x")
    if not args.keep:
        fo.delete_dataset(ds.name)


if __name__ == "__main__":
    main()
