"""Benchmark: object-level scoring (``compute_prototype_scores(..., patches_field=)``)
on a Detections field, and its label writes against FiftyOne's own
``set_label_values``, in one process on one dataset (alternating, so both see the same
machine load).

    .venv/bin/python benchmarks/object_scores.py --num-samples 20000 --boxes 5 --dim 128

Creates ``--num-samples`` samples with ``--boxes`` Detections each, every box carrying a
random ``--dim``-d vector (``boxes.detections.emb``), then prints: the scoring run's
phases (read, prototypes, write, total); the seconds to write the two score attributes
of every label with the package's fenced writer (one merged row per sample) and with
FiftyOne's ``set_label_values`` (unfenced), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ["FIFTYONE_DATABASE_NAME"] = f"fiftyone_prune_bench_{uuid.uuid4().hex[:8]}"

import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=20_000)
    parser.add_argument("--boxes", type=int, default=5)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import fiftyone as fo
    import fiftyone.core.odm as foo

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import leases, storage
    from fiftyone_prune.sdk.object_scores import read_labels

    dataset = fo.Dataset()
    try:
        rng = np.random.default_rng(0)
        n, b = args.num_samples, args.boxes
        t = time.perf_counter()
        samples = [fo.Sample(filepath=f"/bench/{i}.png", boxes=fo.Detections(detections=[
            fo.Detection(label=f"c{j}", bounding_box=[0.1, 0.1, 0.2, 0.2],
                         emb=rng.normal(size=args.dim).astype(np.float32))
            for j in range(b)])) for i in range(n)]
        dataset.add_samples(samples, progress=False)
        dataset.add_sample_field("boxes.detections.emb", fo.VectorField)
        print(f"dataset: {n} samples x {b} boxes = {n * b} objects of {args.dim}-d "
              f"({time.perf_counter() - t:.1f} s to create)")

        result = fop.compute_prototype_scores(dataset, "emb", run_key="obj",
                                              num_clusters=args.k, patches_field="boxes")
        print("scoring run:", {k: round(v, 2) for k, v in result.timings.items()},
              f"-> {n * b / result.timings['total_s']:,.0f} objects/s")

        sample_ids, label_ids, _ = read_labels(dataset, "boxes.detections", False, [])
        keys = list(zip(sample_ids, label_ids))
        values = rng.random(len(keys)).tolist()
        clusters = rng.integers(0, args.k, len(keys)).tolist()
        ours, theirs = [], []
        with leases.hold(dataset, "bench") as lease:
            fence = storage.Fence.of(lease)
            for _ in range(args.repeats):
                t = time.perf_counter()
                for s in range(0, len(keys), 20_000):
                    storage.write_label_scalars(
                        dataset, "boxes.detections", False,
                        {"a_distance": values[s:s + 20_000], "a_cluster": clusters[s:s + 20_000]},
                        keys[s:s + 20_000], fence)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                dataset.set_label_values("boxes.detections.b_distance",
                                         dict(zip(label_ids, values)))
                dataset.set_label_values("boxes.detections.b_cluster",
                                         dict(zip(label_ids, clusters)))
                theirs.append(time.perf_counter() - t)
        assert dataset.count("boxes.detections.a_distance") == len(keys)
        mine, fo_s = statistics.median(ours), statistics.median(theirs)
        print(f"write two attributes of {len(keys)} labels: fenced merge {mine:.2f} s "
              f"({len(keys) / mine:,.0f} labels/s), FiftyOne set_label_values (unfenced) "
              f"{fo_s:.2f} s; ratio {fo_s / mine:.2f}x")
        print(f"load average: {os.getloadavg()[0]:.1f}")
    finally:
        dataset.delete()
        foo.get_db_conn().client.drop_database(os.environ["FIFTYONE_DATABASE_NAME"])


if __name__ == "__main__":
    main()
