"""Does the pruned subset still train as well? A pruning curve against random.

For each strategy and kept fraction, select from the training part with the same code as
:func:`select_samples`, train a probe on the kept samples, and measure accuracy on a
held-out part that is never pruned. Stored as a FiftyOne run (table, verdicts, split)
so Python, the CLI and the App can load it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import fiftyone as fo
import fiftyone.core.utils as fou

from fiftyone_prune.core import probe as core_probe
from fiftyone_prune.sdk import runs, validation

PROBES = ("linear", "cnn")
EVAL_STRATEGIES = ("random", "easy", "hard", "ccs", "density", "auto")
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
DEFAULT_STRATEGIES = ("random", "easy", "hard", "ccs")


@dataclass
class EvaluationResult:
    eval_key: str
    table: list  # rows: strategy, fraction, kept, mean, std, accuracies
    full_accuracy: dict  # mean, std, accuracies, kept
    verdicts: list
    plot_path: str | None = None

    def to_dict(self) -> dict:
        return {"eval_key": self.eval_key, "table": self.table,
                "full_accuracy": self.full_accuracy, "verdicts": self.verdicts,
                "plot_path": self.plot_path}

    def format_table(self) -> str:
        lines = [f"{'strategy':10s} {'kept':>6s} {'count':>6s} {'accuracy':>9s} {'spread':>7s}"]
        for r in self.table:
            lines.append(f"{r['strategy']:10s} {r['fraction']:6.2f} {r['kept']:6d} "
                         f"{r['mean']:9.4f} {r['std']:7.4f}")
        f = self.full_accuracy
        lines.append(f"{'full data':10s} {1.0:6.2f} {f['kept']:6d} {f['mean']:9.4f} {f['std']:7.4f}")
        return "\n".join(lines)


def _check(samples, label_field, run_key, fractions, strategies, seeds, probe, test_tag,
           test_fraction, eval_key, overwrite):
    from fiftyone_prune.sdk.selection import _scoring_config

    validation.check_collection(samples)
    validation.check_not_empty(samples)
    if label_field is None:
        raise ValueError("evaluate_pruning needs label_field= (a Classification field) to "
                         "train and test the probe")
    f = samples.get_field(label_field)
    if f is None or not (isinstance(f, fo.EmbeddedDocumentField)
                         and f.document_type is fo.Classification):
        raise ValueError(
            f"Label field {label_field!r} {'does not exist' if f is None else 'is not a Classification field'}; "
            f"Classification fields here: {validation.classification_fields(samples) or 'none'}")
    cfg = _scoring_config(samples, run_key)
    fr = list(fractions)
    if not fr or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x <= 1
                     for x in fr):
        raise ValueError(f"fractions must be kept fractions in (0, 1], got {fractions!r}")
    bad = [s for s in strategies if s not in EVAL_STRATEGIES]
    if bad:
        raise ValueError(f"Unknown strategies {bad}; choose from {EVAL_STRATEGIES}")
    if "density" in strategies and cfg.method_name != "kmeans":
        raise ValueError("strategy 'density' needs a k-means scoring run")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    if probe not in PROBES:
        raise ValueError(f"Unknown probe {probe!r}; choose one of {PROBES}")
    if test_tag is None and not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    runs.check_key_free(samples, eval_key, overwrite, "evaluation")
    return cfg


def _split(ids, labels, test_tag, tags, test_fraction, split_seed):
    """Indices (train, test) over the labelled samples; every class must have both."""
    labels = np.asarray(labels, dtype=object)
    if test_tag is not None:
        is_test = np.array([test_tag in (t or []) for t in tags])
        if not is_test.any():
            raise ValueError(f"No sample carries the test tag {test_tag!r}; tag a held-out "
                             f"split or omit test_tag to split automatically")
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        train, test = core_probe.stratified_split(labels.astype(str), test_fraction, split_seed)
    missing = sorted(set(labels[train].astype(str)) - set(labels[test].astype(str)))
    if missing:
        raise ValueError(f"Class(es) {missing[:10]} have no held-out sample: accuracy on them "
                         f"can't be measured; add held-out samples or drop those classes")
    return train, test


def _load_images(filepaths, image_size):
    from PIL import Image

    from fiftyone_prune.core.models import to_rgb

    images, gray = [], True
    for p in filepaths:
        with Image.open(p) as img:
            img = to_rgb(img).resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(img)
            gray = gray and bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
            images.append(arr)
    images = np.stack(images)
    return images[..., 0] if gray else images


def evaluate_pruning(samples, label_field: str, run_key: str = "prototypes",
                     embeddings_field: str | None = None,
                     fractions=DEFAULT_FRACTIONS, strategies=DEFAULT_STRATEGIES,
                     seeds: int = 3, probe: str = "linear", balance="cluster",
                     balance_ratio: float = 0.5, test_tag: str | None = None,
                     test_fraction: float = 0.2, split_seed: int = 0,
                     image_size: int = 28, cnn_epochs: int = 15,
                     eval_key: str | None = None, overwrite: bool = False,
                     plot_path: str | None = None, progress=None) -> EvaluationResult:
    """Trains a probe on each selection and reports accuracy on a held-out split.

    Args:
        samples: a dataset or view with labels and a prototype-score run
        label_field: Classification field: the probe's target
        run_key: the :func:`compute_prototype_scores` run to select from
        embeddings_field: the linear probe's features (default: the run's field)
        fractions: kept fractions to evaluate (the full training set is always added
            as the reference)
        strategies: selection strategies; ``random`` is always included
        seeds: repetitions per point (selection seed and probe seed); mean and spread
            (standard deviation) are reported
        probe: ``"linear"`` (logistic regression on the embeddings, seconds) or
            ``"cnn"`` (a small ConvNet from scratch on the images resized to
            ``image_size``, closer to the paper's setting; ~2-50 s per probe here on
            1,000-4,000 small images)
        balance, balance_ratio: as in :func:`select_samples`
        test_tag: samples with this tag are the held-out part; default: a stratified
            split of ``test_fraction`` made with ``split_seed`` (recorded in the run)
        eval_key: the run key (default ``<run_key>_evaluation``)
        plot_path: also save the curve as a PNG here

    Returns:
        an :class:`EvaluationResult` (also stored as run ``eval_key``)
    """
    from fiftyone_prune.sdk.selection import plan_from_table, read_score_table

    eval_key = eval_key or f"{run_key}_evaluation"
    strategies = ["random"] + [s for s in strategies if s != "random"]
    fractions = sorted({float(f) for f in fractions})
    cfg = _check(samples, label_field, run_key, fractions, strategies, seeds, probe, test_tag,
                 test_fraction, eval_key, overwrite)
    t0 = time.perf_counter()
    ids, labels, tags = samples.values(["id", f"{label_field}.label", "tags"])
    keep_mask = np.array([lab is not None for lab in labels])
    ids = [i for i, k in zip(ids, keep_mask) if k]
    labels = np.array([lab for lab in labels if lab is not None], dtype=object)
    tags = [t for t, k in zip(tags, keep_mask) if k]
    train, test = _split(ids, labels, test_tag, tags, test_fraction, split_seed)
    train_ids = [ids[i] for i in train]
    test_ids = [ids[i] for i in test]

    # features, aligned with ids
    if probe == "linear":
        from fiftyone_prune.sdk.scores import _read_embeddings

        field = embeddings_field or cfg.embeddings_field
        emb_ids, x, missing = _read_embeddings(samples.select(ids), field)
        if missing:
            raise ValueError(f"{len(missing)} labelled sample(s) have no {field!r} "
                             f"embedding (e.g. {missing[0]}); embed them first")
        row = {sid: r for r, sid in enumerate(emb_ids)}
        feats = x[[row[i] for i in ids]]
    else:
        paths = dict(zip(*samples.select(ids).values(["id", "filepath"])))
        feats = _load_images([paths[i] for i in ids], image_size)

    # scores of the training part only: the held-out part is never a candidate
    label_field_sel = label_field if balance == "class" else None
    table_all = read_score_table(samples.select(train_ids, ordered=True), cfg, balance,
                                 label_field)
    if table_all.unscored_ids:
        raise ValueError(f"{len(table_all.unscored_ids)} training sample(s) have no score in "
                         f"run {run_key!r}; score them or exclude them from the view")
    pos = {sid: p for p, sid in enumerate(ids)}
    train_rows = np.array([pos[i] for i in table_all.ids])

    def accuracy(rows, seed):
        kwargs = {"epochs": cnn_epochs} if probe == "cnn" else {}
        return float(core_probe.probe_accuracy(probe, feats[rows], labels[rows].astype(str),
                                               feats[test], labels[test].astype(str),
                                               seed=seed, **kwargs))

    num_probes = seeds * (1 + len(fractions) * len(strategies))
    table, full = [], None
    with fou.ProgressBar(total=num_probes, progress=progress) as pb:
        accs = []
        for seed in range(seeds):
            accs.append(accuracy(train_rows, seed))
            pb.update()
        full = {"mean": float(np.mean(accs)), "std": float(np.std(accs)),
                "accuracies": accs, "kept": int(len(train_rows))}
        for fraction in fractions:
            for strategy in strategies:
                accs, kept = [], 0
                for seed in range(seeds):
                    plan = plan_from_table(samples, cfg, table_all, fraction, strategy, balance,
                                           label_field_sel, balance_ratio, seed, None, None, 50,
                                           0.5, run_key, run_key)
                    kept_rows = np.array([pos[i] for i in plan.kept_ids])
                    assert not set(plan.kept_ids) & set(test_ids)  # held-out never kept
                    kept = len(kept_rows)
                    accs.append(accuracy(kept_rows, seed))
                    pb.update()
                table.append({"strategy": strategy if strategy != "auto" else f"auto:{plan.strategy}",
                              "fraction": fraction, "kept": kept,
                              "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                              "accuracies": accs})
    verdicts = make_verdicts(table, full, seeds)
    result = EvaluationResult(eval_key, table, full, verdicts)
    if plot_path:
        result.plot_path = save_plot(result, plot_path, title=f"{samples._dataset.name}: {run_key}, {probe} probe")
    params = dict(run_key=run_key, label_field=label_field, embeddings_field=embeddings_field
                  or cfg.embeddings_field, fractions=fractions, strategies=strategies,
                  seeds=seeds, probe=probe, balance=balance, balance_ratio=balance_ratio,
                  test_tag=test_tag, test_fraction=None if test_tag else test_fraction,
                  split_seed=None if test_tag else split_seed,
                  image_size=image_size if probe == "cnn" else None,
                  cnn_epochs=cnn_epochs if probe == "cnn" else None,
                  num_train=len(train_ids), num_test=len(test_ids))
    runs.register(samples, eval_key, "evaluation", params, [],
                  dict(result.to_dict(), test_ids=test_ids,
                       seconds=round(time.perf_counter() - t0, 2)),
                  overwrite=overwrite)
    return result


def make_verdicts(table, full, seeds) -> list:
    """One plain-language line per fraction: the best strategy, its margin over random,
    and whether that margin exceeds the seed-to-seed spread."""
    out = []
    for fraction in sorted({r["fraction"] for r in table}):
        rows = [r for r in table if r["fraction"] == fraction]
        rand = next(r for r in rows if r["strategy"] == "random")
        best = max(rows, key=lambda r: (r["mean"], r["strategy"] == "random"))
        gap_full = full["mean"] - best["mean"]
        spread = max(best["std"], rand["std"])
        head = f"Keeping {fraction:.0%} ({best['kept']} samples):"
        if best["strategy"] == "random":
            text = (f"{head} no strategy beats random ({rand['mean']:.3f}); random "
                    f"selection is the safe choice here")
        else:
            margin = best["mean"] - rand["mean"]
            if seeds < 2:
                sig = "run more seeds to know whether this exceeds noise"
            elif margin > spread:
                sig = f"larger than the seed spread ({spread:.3f})"
            else:
                sig = f"within the seed spread ({spread:.3f}): not a reliable gain"
            text = (f"{head} best is {best['strategy']} ({best['mean']:.3f}), "
                    f"{100 * margin:+.1f} points over random ({rand['mean']:.3f}), {sig}")
        where = "below" if gap_full >= 0 else "above"
        text += (f"; {abs(100 * gap_full):.1f} points {where} training on all data "
                 f"({full['mean']:.3f}).")
        out.append(text)
    return out


def save_plot(result: EvaluationResult, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for strategy in dict.fromkeys(r["strategy"] for r in result.table):
        rows = [r for r in result.table if r["strategy"] == strategy]
        xs = [r["fraction"] for r in rows]
        ax.errorbar(xs, [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                    marker="o", capsize=3, label=strategy,
                    linestyle="--" if strategy == "random" else "-")
    full = result.full_accuracy
    ax.axhline(full["mean"], color="black", linewidth=1, label=f"all data ({full['mean']:.3f})")
    ax.set_xlabel("fraction of training data kept")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def recommend_strategy(samples, run_key: str, keep_fraction: float):
    """``(strategy, reason)`` from the newest evaluation of ``run_key`` at the fraction
    nearest ``keep_fraction``, or None when there is no evaluation. Picks the best
    strategy only when it beats random by more than the seed spread, else random."""
    keys = [k for k in runs.list_runs(samples, "evaluation")
            if getattr(runs.get_run_info(samples, k).config, "run_key", None) == run_key]
    if not keys:
        return None
    key = max(keys, key=lambda k: runs.get_run_info(samples, k).timestamp)
    table = runs.load_run_results(samples, key).table
    fractions = sorted({r["fraction"] for r in table})
    nearest = min(fractions, key=lambda f: abs(f - keep_fraction))
    rows = [r for r in table if r["fraction"] == nearest and not r["strategy"].startswith("auto")]
    rand = next(r for r in rows if r["strategy"] == "random")
    best = max(rows, key=lambda r: r["mean"])
    if best["strategy"] != "random" and best["mean"] - rand["mean"] > max(best["std"], rand["std"]):
        return best["strategy"], (f"evaluation {key!r} at {nearest:.0%} kept: {best['strategy']} "
                                  f"{best['mean']:.3f} vs random {rand['mean']:.3f}")
    return "random", (f"evaluation {key!r} at {nearest:.0%} kept: no strategy beats random "
                      f"beyond the seed spread")


def load_evaluation(samples, eval_key: str) -> EvaluationResult:
    results = runs.load_run_results(samples, eval_key)
    return EvaluationResult(eval_key, results.table, results.full_accuracy, results.verdicts,
                            getattr(results, "plot_path", None))
