"""Does the pruned subset still train as well? A pruning curve against random.

For each strategy and kept fraction, select from the training part with the same code as
:func:`select_samples`, train a probe on the kept samples, and measure accuracy on a
held-out part that is never pruned. Stored as a FiftyOne run (table, verdicts, split)
so Python, the CLI and the App can load it again.
"""

from __future__ import annotations

import hashlib
import numbers
import time
from dataclasses import dataclass

import numpy as np

import fiftyone.core.utils as fou

from fiftyone_prune.core import probe as core_probe
from fiftyone_prune.core import scaling as core_scaling
from fiftyone_prune.core import significance
from fiftyone_prune.core.params import (  # EVAL_STRATEGIES is re-exported
    EVAL_STRATEGIES, ParameterError, SelectionSpec, check_scalar, parse_fractions)
from fiftyone_prune.sdk import runs, validation, writer
from fiftyone_prune.sdk.scores import read_embeddings
from fiftyone_prune.sdk.selection import (
    as_selection_spec, check_scoring_run, plan_from_table, read_score_table)
# advice (recommend_strategy, quick_evaluation_offer) reads evaluations without importing
# this module, so that selection can use it: imports go selection -> advice, evaluation ->
# selection and advice, never back
from fiftyone_prune.sdk.advice import (
    DEFAULT_STRATEGIES, beats_random, format_points as _pts,
    scoring_version as _scoring_version)

PROBES = ("linear", "cnn")
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
#: Seeds the paired bootstrap over the held-out part (recorded with the run).
BOOTSTRAP_SEED = 0


@dataclass
class EvaluationResult:
    eval_key: str
    table: list  # rows: strategy, fraction, kept, fits, mean, std, low, high, diff...
    full_accuracy: dict  # mean, std, low, high, accuracies, kept
    verdicts: list
    plot_path: str | None = None
    num_test: int = 0
    num_fits: int = 0
    #: one row per evaluated selection (every strategy but random, at every kept
    #: fraction; random too when the evaluation deduplicates): ``strategy``,
    #: ``fraction``, ``kept``, ``error``, ``random_equivalent`` (samples) with
    #: ``equivalent_low``/``equivalent_high``, ``ratio`` (equivalent / kept) with
    #: ``ratio_low``/``ratio_high`` (95 %), ``status`` and ``reason`` (numbers None when
    #: none is given); None for evaluations made with ``scaling=False`` or before it
    worth: list | None = None
    #: one row per curve (``"random"``, the learning curve, first; then each strategy):
    #: the law ``error(n) = a * n^(-b) + c`` fitted, ``a``, ``b``, ``c`` with 95 %
    #: intervals, ``form``/``form_reason``, fit quality (``misfit``: the largest miss
    #: in standard deviations of the point missed; ``rmse``), ``points``,
    #: ``status``/``reason`` (see
    #: :func:`fiftyone_prune.core.scaling.fit_curve`)
    scaling: list | None = None
    scaling_plot_path: str | None = None

    def to_dict(self) -> dict:
        return {"eval_key": self.eval_key, "table": self.table,
                "full_accuracy": self.full_accuracy, "verdicts": self.verdicts,
                "plot_path": self.plot_path, "num_test": self.num_test,
                "num_fits": self.num_fits, "worth": self.worth, "scaling": self.scaling,
                "scaling_plot_path": self.scaling_plot_path}

    def format_worth(self) -> str:
        """The scaling view as text: each curve's law, then what every evaluated
        selection is worth in random samples (or why no number is given)."""
        if not self.scaling:
            return "no scaling view (evaluated with scaling=False)"
        lines = ["learning curves, error(n) = a * n^(-b) + c (95 % intervals):"]
        lines += [f"  {core_scaling.describe_fit(row)}" for row in self.scaling]
        lines.append("worth of each selection in random samples (95 % intervals):")
        lines += [f"  {core_scaling.describe_worth(row)}" for row in self.worth]
        return "\n".join(lines)

    def samples_needed(self, target_accuracy: float) -> list:
        """The inverse projection: how many samples random data, and each strategy,
        need to reach ``target_accuracy`` on the held-out part, by each curve's fitted
        law, with 95 % intervals (the refitted laws of the bootstrap resamples).
        Marked ``extrapolated`` outside the measured sizes; refused (``samples`` None,
        with the ``reason``) where the curve gives no law, the target is at or below
        its plateau, more than ``core.scaling.MAX_EXTRAPOLATION`` times beyond the
        measured sizes, or too noisy.

        Args:
            target_accuracy: held-out accuracy to reach, in (0, 1)

        Returns:
            one row per curve: ``strategy``, ``target_accuracy``, ``samples``, ``low``,
            ``high``, ``extrapolated``, ``status``, ``reason``

        Raises:
            ParameterError: ``target_accuracy`` outside (0, 1), or no scaling view

        Example::

            result = fop.load_evaluation(dataset, "prototypes_evaluation")
            for row in result.samples_needed(0.95):
                print(row["strategy"], row["samples"], row["low"], row["high"], row["reason"])
        """
        check_scalar(target_accuracy, "target_accuracy", numbers.Real, 0, 1, "neither")
        if not self.scaling:
            raise ParameterError(f"evaluation {self.eval_key!r} has no scaling view; "
                                 f"evaluate again with scaling=True", "target_accuracy")
        return [core_scaling.samples_needed(row, 1.0 - float(target_accuracy))
                for row in self.scaling]

    def format_table(self) -> str:
        """The curve as text: accuracy with its 95 % interval and the difference to
        random (points) with its 95 % interval."""
        d = _decimals(self.num_test)
        w = d + 3
        lines = [f"{'strategy':10s} {'kept':>5s} {'count':>6s} {'fits':>4s} "
                 f"{'accuracy':>{max(w, 8)}s} {'95% CI':>{2 * w + 3}s}  vs random (points, 95% CI)"]
        for r in self.table + [dict(self.full_accuracy, strategy="full data", fraction=1.0)]:
            # evaluations stored before intervals existed show their seed spread
            low, high = r.get("low", r["mean"] - r["std"]), r.get("high", r["mean"] + r["std"])
            ci = f"[{low:.{d}f}, {high:.{d}f}]"
            vs = ("" if "diff" not in r or r["strategy"] == "random" else
                  f"{100 * r['diff']:+5.1f} [{100 * r['diff_low']:+.1f}, "
                  f"{100 * r['diff_high']:+.1f}]")
            lines.append(f"{r['strategy']:10s} {r['fraction']:5.2f} {r['kept']:6d} "
                         f"{r.get('fits', len(r['accuracies'])):4d} "
                         f"{r['mean']:{max(w, 8)}.{d}f} {ci:>{2 * w + 3}s}  {vs}")
        lines.append(f"held out: {self.num_test} samples (one sample = "
                     f"{100 / max(1, self.num_test):.2f} points)")
        return "\n".join(lines)


def _decimals(num_test):
    """Accuracy digits worth printing: a third decimal only when one held-out sample is
    worth less than a tenth of a point."""
    return 3 if num_test >= 1000 else 2


def check_evaluation(samples, label_field, run_key: str = "prototypes",
                     fractions=DEFAULT_FRACTIONS, strategies=DEFAULT_STRATEGIES,
                     seeds: int = 3, probe: str = "linear", test_tag=None,
                     test_fraction: float = 0.2, eval_key=None, overwrite: bool = False,
                     spec: SelectionSpec | None = None, scaling: bool = True,
                     embeddings_field: str | None = None):
    """Checks the arguments of :func:`evaluate_pruning` (same names) against
    ``samples`` without evaluating anything: what the App form calls on every change.

    A view whose labels hold fewer than two classes is refused (``label_field``): every
    probe would predict the one class, and the table would read 1.00 at every kept
    fraction while measuring nothing. Refused before any work rather than reported in
    the result, because no part of such an evaluation means anything.

    Returns:
        the scoring run's config

    Raises:
        ParameterError: naming the first wrong argument (``.param``)
    """
    validation.check_collection(samples)
    validation.check_not_empty(samples)
    validation.check_classification_field(samples, label_field,
                                          required_by="evaluate_pruning")
    _check_classes(samples, label_field)
    cfg = check_scoring_run(samples, run_key)
    if getattr(cfg, "patches_field", None):
        raise ParameterError(
            f"Run {run_key!r} scored the objects of {cfg.patches_field!r}; the evaluation "
            f"trains an image classifier on selections of samples, so it measures "
            f"per-sample scoring runs only: evaluate a run scored on image embeddings",
            "run_key")
    if probe == "linear":
        validation.check_embeddings_field(samples, embeddings_field or cfg.embeddings_field,
                                          reader="the linear probe")
    try:
        parse_fractions(fractions)
    except ParameterError as e:  # the message names the whole list, not one entry
        raise ParameterError(f"fractions must be kept fractions in (0, 1], got "
                             f"{fractions!r} ({e})", "fractions") from None
    if isinstance(strategies, str) or not strategies:
        raise ParameterError(f"strategies must be a non-empty list such as "
                             f"['random', 'hard'], got {strategies!r}", "strategies")
    if "auto" in strategies:
        raise ParameterError(
            "'auto' is not evaluated as a strategy of its own: without an evaluation it "
            "selects randomly, with one it follows it; evaluate the strategies it chooses "
            "from (random, easy, hard, ccs, density)", "strategies")
    bad = [s for s in strategies if s not in EVAL_STRATEGIES]
    if bad:
        raise ParameterError(f"Unknown strategies {bad}; choose from {EVAL_STRATEGIES}",
                             "strategies")
    if "density" in strategies and cfg.method_name != "kmeans":
        raise ParameterError("strategy 'density' needs a k-means scoring run", "strategies")
    check_scalar(seeds, "seeds", int, min_val=1)
    check_scalar(scaling, "scaling", bool)
    if probe not in PROBES:
        raise ParameterError(f"Unknown probe {probe!r}; choose one of {PROBES}", "probe")
    if test_tag is None:
        check_scalar(test_fraction, "test_fraction", numbers.Real, 0, 1, "neither")
    elif not samples.match_tags(test_tag).count():
        tags = sorted(samples.distinct("tags"))
        raise ParameterError(
            f"No sample of this view carries the test tag {test_tag!r} (tags here: "
            f"{tags or 'none'}); tag a held-out split, or omit test_tag to split "
            f"automatically", "test_tag")
    # too few samples (every class needs a training and a held-out one): before Execute
    _labelled_split(samples, label_field, test_tag, test_fraction, 0)
    if spec is not None:
        spec.validate()
        if spec.label_field not in (None, label_field):
            raise ParameterError(
                f"spec.label_field={spec.label_field!r}: an evaluation balances classes by "
                f"its label_field={label_field!r}; leave spec.label_field None",
                "label_field")
    if eval_key is not None:
        validation.check_run_key(eval_key, "eval_key")
    runs.check_key_free(samples, eval_key or f"{run_key}_evaluation", overwrite, "evaluation",
                        "eval_key")
    return cfg


def _check_classes(samples, label_field):
    classes = samples.distinct(f"{label_field}.label")
    if len(classes) >= 2:
        return
    num = samples.count(f"{label_field}.label")
    if not classes:
        raise ParameterError(
            f"Label field {label_field!r} holds no label in this view: an evaluation "
            f"needs labelled samples of at least two classes; label them, or pass a view "
            f"with labels", "label_field")
    raise ParameterError(
        f"Label field {label_field!r} has a single class ({classes[0]!r}, {num} labelled "
        f"samples) in this view: every probe would predict it, so accuracy would be 1.00 "
        f"at every kept fraction and the evaluation would measure nothing. Evaluate a "
        f"view with at least two classes (e.g. the whole dataset) or another label field",
        "label_field")


#: the earlier private name (the App form imported it)


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


# the run's lease is held from the first check to the registration (#19)
@writer.holds_run("evaluation", lambda a: a["eval_key"] or f"{a['run_key']}_evaluation",
                  param="eval_key")
def evaluate_pruning(samples, label_field: str, run_key: str = "prototypes",
                     embeddings_field: str | None = None,
                     fractions=DEFAULT_FRACTIONS, strategies=DEFAULT_STRATEGIES,
                     seeds: int = 3, probe: str = "linear", balance="cluster",
                     balance_ratio: float = 0.5, test_tag: str | None = None,
                     test_fraction: float = 0.2, split_seed: int = 0,
                     image_size: int = 28, cnn_epochs: int = 15,
                     eval_key: str | None = None, overwrite: bool = False,
                     plot_path: str | None = None, progress=None,
                     spec: SelectionSpec | None = None, scaling: bool = True,
                     scaling_plot_path: str | None = None) -> EvaluationResult:
    """Trains a probe on each selection and reports accuracy on a held-out split.

    Args:
        samples: a dataset or view with labels and a prototype-score run
        label_field: Classification field: the probe's target
        run_key ('prototypes'): the :func:`compute_prototype_scores` run to select from
        embeddings_field (None): the linear probe's features (default: the run's field)
        fractions ((0.1, 0.2, 0.3, 0.5, 0.7, 0.9)): kept fractions to evaluate (the full training set is always added
            as the reference)
        strategies (('random', 'easy', 'hard', 'ccs')): selection strategies; ``random`` is always included (``auto`` is
            not one: without an evaluation it is random, with one it follows it)
        seeds (3): selection (and CNN probe) seeds per point. A selection that is the same
            for every seed (easy, hard, density, the full set) is fitted once with the
            deterministic linear probe: only distinct training sets are fitted
        probe ('linear'): ``"linear"`` (logistic regression on the embeddings, seconds) or
            ``"cnn"`` (a small ConvNet from scratch on the images resized to
            ``image_size``, closer to the paper's setting; ~2-50 s per probe here on
            1,000-4,000 small images)
        balance ("cluster"), balance_ratio (0.5): as in :func:`select_samples`
        test_tag (None): samples with this tag are the held-out part; default: a stratified
            split of ``test_fraction`` made with ``split_seed`` (recorded in the run)
        test_fraction (0.2): share of each class held out when ``test_tag`` is None
        split_seed (0): seed of that stratified split
        image_size (28): image side for the CNN probe
        cnn_epochs (15): CNN probe training epochs
        eval_key (None): the run key (default ``<run_key>_evaluation``)
        overwrite (False): replace an evaluation run with the same key
        plot_path (None): also save the curve as a PNG here (95 % intervals as error bars)
        progress (None): True/False for a progress bar, or a callback taking FiftyOne's
            progress bar (``pb.iteration`` of ``pb.total`` probe fits)
        spec (None): a :class:`~fiftyone_prune.core.params.SelectionSpec` holding the
            knobs every evaluated selection shares (balance, balance_ratio, dedup_eps,
            ccs_beta, ccs_bins, density_temperature) instead of ``balance`` and
            ``balance_ratio``; its keep, strategy and seed are what the evaluation
            varies (``fractions``, ``strategies``, ``seeds``), so they are not used.
            Class balance uses ``label_field``
        scaling (True): also the scaling view (``result.scaling``, ``result.worth``):
            the random learning curve (random subsets of the training pool at
            geometrically spaced sizes from ~2 % of it to all of it, ``seeds`` each;
            the table's random points are reused and only the missing, mostly small
            sizes are fitted), the law ``error(n) = a * n^(-b) + c`` per curve, and
            each selection's random-equivalent size and worth ratio (see
            :mod:`fiftyone_prune.core.scaling`). The random curve is made of random
            subsets of the training pool as it is, never deduplicated: a deduplicating
            ``spec`` is measured against random samples of the data as they come
        scaling_plot_path (None): also save the scaling view as a log-log PNG here
            (:func:`save_scaling_plot`)

    Every point carries a 95 % interval (``low``/``high``) and its difference to random
    at the same fraction (``diff``, ``diff_low``, ``diff_high``), combining held-out
    sampling noise (a paired bootstrap over the held-out samples) and seed variance
    (see :mod:`fiftyone_prune.core.significance`); a strategy "beats random" only when
    the interval of its difference is above zero. The per-sample correctness of every
    fit is stored with the run (``correct``, packed bits in held-out order).

    The evaluation reads nothing from earlier evaluations: the same call on the same
    data gives the same table.

    Returns:
        an :class:`EvaluationResult` (also stored as run ``eval_key``)

    Example::

        import fiftyone_prune as fop

        result = fop.evaluate_pruning(dataset, "ground_truth", "prototypes",
                                      fractions=(0.3, 0.7), seeds=2)
        print(result.format_table())
    """
    eval_key = eval_key or f"{run_key}_evaluation"
    spec = as_selection_spec(spec, balance=balance, balance_ratio=balance_ratio)
    cfg = check_evaluation(samples, label_field, run_key, fractions, strategies, seeds,
                           probe, test_tag, test_fraction, eval_key, overwrite, spec, scaling,
                           embeddings_field=embeddings_field)
    strategies = ["random"] + [s for s in strategies if s != "random"]
    fractions = sorted(set(parse_fractions(fractions)))
    # the evaluated selections balance classes by the probe's labels
    spec = spec.replace(label_field=label_field if spec.balance == "class" else None)
    scoring_timestamp = _scoring_version(samples, run_key)
    t0 = time.perf_counter()
    ids, labels, train, test = _labelled_split(samples, label_field, test_tag,
                                               test_fraction, split_seed)
    train_ids = [ids[i] for i in train]
    test_ids = [ids[i] for i in test]
    feats = _features(samples, ids, probe, embeddings_field or cfg.embeddings_field,
                      image_size)
    table_all = _training_scores(samples, cfg, train_ids, spec.balance, label_field, run_key)
    points, fit_rows, full_keys, train_rows, curve = _plan_fits(
        samples, cfg, table_all, ids, set(test_ids), spec, fractions, strategies, seeds,
        probe, run_key,
        curve_classes=len(set(labels[train].astype(str))) if scaling else None)
    correct = _fit_probes(probe, fit_rows, full_keys[0], feats, labels, test, cnn_epochs,
                          progress)
    bootstrap = significance.HeldoutBootstrap(len(test), seed=BOOTSTRAP_SEED)
    full = _point(bootstrap, [correct[k] for k in full_keys])
    full["kept"] = int(len(train_rows))
    table = _curve_table(bootstrap, points, correct)
    verdicts = make_verdicts(table, full, seeds, len(test))
    scaling_rows = worth = curve_points = None
    if scaling:
        scaling_rows, worth, curve_points = _scaling_view(
            bootstrap, points, curve, correct, full_keys, len(train_rows), seeds,
            spec.dedup_eps is not None)
        verdicts += scaling_verdicts(scaling_rows, worth)
    result = EvaluationResult(eval_key, table, full, verdicts, num_test=len(test),
                              num_fits=len(fit_rows), worth=worth, scaling=scaling_rows)
    if plot_path:
        result.plot_path = save_plot(result, plot_path, title=f"{samples._dataset.name}: {run_key}, {probe} probe")
    if scaling_plot_path and scaling:
        result.scaling_plot_path = save_scaling_plot(
            result, scaling_plot_path,
            title=f"{samples._dataset.name}: {run_key}, {probe} probe")
    params = dict(run_key=run_key, label_field=label_field, embeddings_field=embeddings_field
                  or cfg.embeddings_field, fractions=fractions, strategies=strategies,
                  seeds=seeds, probe=probe, balance=spec.balance,
                  balance_ratio=spec.balance_ratio, dedup_eps=spec.dedup_eps,
                  ccs_beta=spec.ccs_beta, ccs_bins=spec.ccs_bins,
                  density_temperature=spec.density_temperature,
                  test_tag=test_tag, test_fraction=None if test_tag else test_fraction,
                  split_seed=None if test_tag else split_seed,
                  image_size=image_size if probe == "cnn" else None,
                  cnn_epochs=cnn_epochs if probe == "cnn" else None,
                  num_train=len(train_ids), num_test=len(test_ids), num_fits=len(fit_rows),
                  bootstrap_seed=BOOTSTRAP_SEED, scoring_timestamp=scoring_timestamp,
                  scaling=scaling)
    runs.register(samples, eval_key, "evaluation", params,
                  dict(result.to_dict(), test_ids=test_ids, train_ids=train_ids,
                       training_sets=_training_sets(points, fit_rows, train, test),
                       learning_curve=curve_points,
                       seconds=round(time.perf_counter() - t0, 2)),
                  overwrite=overwrite)
    return result


def _labelled_split(samples, label_field, test_tag, test_fraction, split_seed):
    """``(ids, labels, train, test)``: the labelled samples and the row indices of the
    training and held-out parts (:func:`_split`)."""
    ids, labels, tags = samples.values(["id", f"{label_field}.label", "tags"])
    keep_mask = np.array([lab is not None for lab in labels])
    ids = [i for i, k in zip(ids, keep_mask) if k]
    labels = np.array([lab for lab in labels if lab is not None], dtype=object)
    tags = [t for t, k in zip(tags, keep_mask) if k]
    train, test = _split(ids, labels, test_tag, tags, test_fraction, split_seed)
    return ids, labels, train, test


def _features(samples, ids, probe, embeddings_field, image_size):
    """The probe's inputs, row-aligned with ``ids``: embeddings for the linear probe,
    resized images for the CNN."""
    if probe == "linear":
        emb_ids, x, missing = read_embeddings(samples.select(ids), embeddings_field)
        if missing:
            raise ValueError(f"{len(missing)} labelled sample(s) have no "
                             f"{embeddings_field!r} embedding (e.g. {missing[0]}); embed "
                             f"them first")
        row = {sid: r for r, sid in enumerate(emb_ids)}
        return x[[row[i] for i in ids]]
    paths = dict(zip(*samples.select(ids).values(["id", "filepath"])))
    return _load_images([paths[i] for i in ids], image_size)


def _training_scores(samples, cfg, train_ids, balance, label_field, run_key):
    """The scores of the training part only: the held-out part is never a candidate."""
    table = read_score_table(samples.select(train_ids, ordered=True), cfg, balance,
                             label_field)
    if table.unscored_ids:
        raise ValueError(f"{len(table.unscored_ids)} training sample(s) have no score in "
                         f"run {run_key!r}; score them or exclude them from the view")
    return table


def _plan_fits(samples, cfg, table_all, ids, test_set, spec, fractions, strategies, seeds,
               probe, run_key, curve_classes=None):
    """Every selection of the curve (cheap), and the distinct training sets to fit.

    One probe fit per *distinct* training set: a deterministic selection (easy, hard,
    density, the full set) gives the same rows for every seed, and the linear probe is
    deterministic too, so refitting it per seed would only repeat the same numbers.

    With ``curve_classes`` (the number of classes), also the random learning curve of
    the scaling view: random subsets of the training pool (never deduplicated) at the
    table's random sizes plus those :func:`fiftyone_prune.core.scaling.curve_sizes`
    adds, ``seeds`` each. Without dedup the table's random points are the curve's
    (the same training sets: nothing is fitted twice).

    Returns:
        ``(points, fit_rows, full_keys, train_rows, curve)``: per curve point
        ``(strategy, fraction, kept, fit keys in seed order)``; fit key -> training rows;
        the full training set's fit keys; its rows; the learning curve's ``(kept, fit
        keys)`` below the full set, by size (empty without ``curve_classes``)
    """
    pos = {sid: p for p, sid in enumerate(ids)}
    train_rows = np.array([pos[i] for i in table_all.ids])
    stochastic_probe = probe not in core_probe.DETERMINISTIC_PROBES
    fit_rows = {}  # fit key -> training rows

    def fit_key(rows, seed):
        key = (hashlib.sha1(np.sort(rows).astype(np.int64).tobytes()).hexdigest(),
               seed if stochastic_probe else None)
        fit_rows.setdefault(key, rows)
        return key

    points = []
    full_keys = list(dict.fromkeys(fit_key(train_rows, seed) for seed in range(seeds)))
    for fraction in fractions:
        for strategy in strategies:
            keys, kept = [], 0
            for seed in range(seeds):
                plan = plan_from_table(samples, cfg, table_all,
                                       spec.replace(keep=fraction, strategy=strategy,
                                                    seed=seed),
                                       name=run_key, run_key=run_key)
                if test_set.intersection(plan.kept_ids):
                    raise RuntimeError("a held-out sample was selected for training")
                kept_rows = np.array([pos[i] for i in plan.kept_ids], dtype=np.int64)
                kept = len(kept_rows)
                keys.append(fit_key(kept_rows, seed))
            points.append((strategy, fraction, kept, list(dict.fromkeys(keys))))
    curve = {}
    if curve_classes is not None:
        pool = len(train_rows)
        evaluated = {kept for strategy, _, kept, _ in points if strategy == "random"}
        if spec.dedup_eps is None:
            curve = {kept: keys for strategy, _, kept, keys in points if strategy == "random"}
        plain = spec.replace(strategy="random", dedup_eps=None)
        wanted = evaluated | set(core_scaling.curve_sizes(pool, curve_classes, evaluated))
        for size in sorted(wanted - set(curve) - {pool}):
            keys = []
            for seed in range(seeds):
                plan = plan_from_table(samples, cfg, table_all,
                                       plain.replace(keep=int(size), seed=seed),
                                       name=run_key, run_key=run_key)
                if test_set.intersection(plan.kept_ids):
                    raise RuntimeError("a held-out sample was selected for training")
                keys.append(fit_key(np.array([pos[i] for i in plan.kept_ids],
                                             dtype=np.int64), seed))
            curve[size] = list(dict.fromkeys(keys))
    curve = [(kept, curve[kept]) for kept in sorted(curve) if kept < len(train_rows)]
    return points, fit_rows, full_keys, train_rows, curve


def _fit_probes(probe, fit_rows, full_key, feats, labels, test, cnn_epochs, progress):
    """fit key -> per-held-out-sample correctness of the probe trained on its rows.

    The full training set (``full_key``) is fitted first; every linear fit of a subset
    then starts from its solution (``init=``): the objective is convex, so the optimum is
    the one a cold start reaches, in about half the L-BFGS iterations (BENCHMARKS.md).
    """
    order = [full_key] + [k for k in fit_rows if k != full_key]
    test_x, test_y = feats[test], labels[test].astype(str)
    correct, full_probe = {}, None
    with fou.ProgressBar(total=len(fit_rows), progress=progress) as pb:
        for key in order:
            rows, seed = fit_rows[key], key[1]
            kwargs = ({"epochs": cnn_epochs} if probe == "cnn"
                      else {"init": full_probe})
            fitted = core_probe.fit_probe(probe, feats[rows], labels[rows].astype(str),
                                          seed=0 if seed is None else seed, **kwargs)
            correct[key] = core_probe.correctness(fitted, test_x, test_y)
            if key == full_key and probe == "linear":
                full_probe = fitted
            pb.update()
    return correct


def _training_sets(points, fit_rows, train, test) -> list:
    """What each fit of each curve point (table order, fits in ``correct`` order) trained
    on: packed bits over the labelled samples in the order ``train_ids + test_ids``, so
    that anyone can check from the stored run that no held-out sample was trained on
    (about 2.5 kB per fit at 20,000 samples)."""
    split_order = np.concatenate([train, test])
    position = np.empty(len(split_order), dtype=np.int64)
    position[split_order] = np.arange(len(split_order))

    def packed(rows):
        mask = np.zeros(len(split_order), dtype=bool)
        mask[position[rows]] = True
        return significance.pack_correct(mask)

    return [[packed(fit_rows[key]) for key in keys] for *_, keys in points]


def _curve_table(bootstrap, points, correct) -> list:
    """The curve's rows: each point's accuracy interval and its difference to random at
    the same fraction (random comes first at every fraction)."""
    table = []
    random_correct = {}
    for strategy, fraction, kept, keys in points:
        fits = [correct[k] for k in keys]
        row = dict(strategy=strategy, fraction=fraction, kept=kept, **_point(bootstrap, fits))
        if strategy == "random":
            random_correct[fraction] = fits
            row.update(diff=0.0, diff_low=0.0, diff_high=0.0)
        else:
            diff, lo, hi = significance.difference_interval(bootstrap, fits,
                                                            random_correct[fraction])
            row.update(diff=diff, diff_low=lo, diff_high=hi)
        table.append(row)
    return table


def _point(bootstrap, fits) -> dict:
    """One curve point from the per-sample correctness of its distinct fits."""
    mean, low, high = significance.accuracy_interval(bootstrap, np.array(fits))
    accuracies = [float(np.mean(c)) for c in fits]
    return dict(mean=mean, low=low, high=high, std=float(np.std(accuracies)),
                accuracies=accuracies, fits=len(fits),
                correct=[significance.pack_correct(c) for c in fits])


def _scaling_view(bootstrap, points, curve, correct, full_keys, pool, seeds, deduplicated):
    """The scaling view from the fits already made: the random learning curve's law,
    each strategy's law, and every selection's random-equivalent size.

    All of it uses the evaluation's held-out bootstrap (paired: one set of resamples for
    every curve and selection) and one seeded generator for the seed-noise draws, so the
    same call gives the same numbers.

    Returns:
        ``(scaling rows, worth rows, learning curve points to store)``
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    full = np.array([correct[k] for k in full_keys])

    def fits(keys):
        return np.array([correct[k] for k in keys])

    random_fit = core_scaling.fit_curve(
        "random", [(kept, fits(keys)) for kept, keys in curve] + [(pool, full)], bootstrap, rng)
    if random_fit["status"] == "too_few_sizes":
        random_fit["reason"] += (
            f" (a learning curve starts at {core_scaling.MIN_PER_CLASS} samples per class "
            f"or {core_scaling.MIN_FRACTION:.0%} of the training pool, whichever is more: "
            f"{pool} training samples leave too few sizes; label more samples)")
    if seeds < 2 and random_fit["status"] == "ok":
        random_fit.update(status="one_seed", reason=(
            "one seed: the noise of random subsets is unmeasured, so no size is matched "
            "to it; run 2 or more seeds"))
    rows, worth = [random_fit], []
    for strategy in dict.fromkeys(p[0] for p in points):
        if strategy == "random" and not deduplicated:
            continue  # the learning curve is random's curve
        # a deduplicating evaluation selects from the survivors: its selections are
        # "<strategy>+dedup", and keeping everything is not the full training set
        label = f"{strategy}+dedup" if deduplicated else strategy
        mine = [(fraction, kept, keys) for s, fraction, kept, keys in points if s == strategy]
        curve_points = [(kept, fits(keys)) for _, kept, keys in mine]
        if not deduplicated and all(kept != pool for _, kept, _ in mine):
            curve_points.append((pool, full))
        fit = core_scaling.fit_curve(label, curve_points, bootstrap, rng)
        if fit["status"] == "too_few_sizes":
            fit["reason"] += " (evaluate more kept fractions)"
        rows.append(fit)
        worth += [core_scaling.selection_worth(random_fit, label, fraction, kept, fits(keys),
                                               bootstrap, rng)
                  for fraction, kept, keys in mine]
    for row in rows:
        row.pop("_draws_errors", None)
    stored = [dict(kept=int(kept), correct=[significance.pack_correct(c) for c in fits(keys)])
              for kept, keys in curve]
    return rows, worth, stored


def scaling_verdicts(scaling_rows, worth) -> list:
    """Two plain-language lines: the random learning curve's law (or why there is
    none), and what the selections are worth in random samples."""
    out = [f"Random learning curve: {core_scaling.describe_fit(scaling_rows[0])}"]
    given = [w for w in worth if w["ratio"] is not None]
    if given:
        best = max(given, key=lambda w: w["ratio"])
        less = sum(w["ratio_high"] < 1 for w in given)
        more = sum(w["ratio_low"] > 1 for w in given)
        out.append(
            f"Worth in random samples: {len(given)} of {len(worth)} selections get a ratio "
            f"({more} worth more than random data of their size, {less} less, the rest "
            f"within the noise); the highest: {core_scaling.describe_worth(best)}.")
    elif worth and all(w["status"] == "no_curve" for w in worth):
        out.append("Worth in random samples: no selection gets a ratio, as the random "
                   "learning curve gives none (above).")
    elif worth:
        statuses = [w["status"] for w in worth]
        common = max(dict.fromkeys(statuses), key=statuses.count)
        example = next(w for w in worth if w["status"] == common)
        out.append(f"Worth in random samples: no selection gets a ratio; e.g. "
                   f"{core_scaling.describe_worth(example)}.")
    return out


def make_verdicts(table, full, seeds, num_test) -> list:
    """Plain-language lines: first the held-out size (and a warning when it is too small
    to resolve the differences measured), then one line per fraction: the strategy that
    beats random (its difference interval above zero), or that none does, which ones
    lose to it, and the distance to training on all data."""
    d = _decimals(num_test)
    one_sample = 1 / max(1, num_test)
    others = [r for r in table if r["strategy"] != "random"]
    half_widths = [(r["diff_high"] - r["diff_low"]) / 2 for r in others]
    out = [f"Held out: {num_test} samples (one sample = {100 * one_sample:.2f} points); "
           f"intervals are 95 % and include held-out sampling noise (paired bootstrap) "
           f"and seed variance."]
    if half_widths:
        typical = float(np.median(half_widths))
        leads = [max(r["diff"] for r in others if r["fraction"] == f)
                 for f in {r["fraction"] for r in others}]
        unresolved_lead = any(0 < lead <= one_sample for lead in leads)
        # 2 points: the size of the leads the curves of docs/evaluation/ show at all; and
        # below 100 held-out samples one sample alone is more than a point, whatever the
        # bootstrap says (a split where every fit is right has a zero-width interval)
        if typical > 0.02 or unresolved_lead or one_sample > 0.01:
            out.append(
                f"Warning: {num_test} held-out samples resolve differences of about "
                f"{100 * typical:.1f} points only (median 95 % half-width); smaller "
                f"differences here are noise. Hold out more samples (test_fraction=, or "
                f"a larger test_tag split) to tell them apart.")
    if seeds < 2:
        out.append("One seed: the selection noise of random is unmeasured, so no strategy "
                   "is called a win; run 2 or more seeds.")
    for fraction in sorted({r["fraction"] for r in table}):
        rows = [r for r in table if r["fraction"] == fraction]
        rand = next(r for r in rows if r["strategy"] == "random")
        head = f"Keeping {fraction:.0%} ({rand['kept']} samples):"
        winners = [r for r in rows if beats_random(r, seeds)]
        losers = [r["strategy"] for r in rows if r["strategy"] != "random" and r["diff_high"] < 0]
        if winners:
            best = max(winners, key=lambda r: r["mean"])
            text = (f"{head} {best['strategy']} beats random, {best['mean']:.{d}f} vs "
                    f"{rand['mean']:.{d}f}: {_pts(best['diff'])} points (95 % CI "
                    f"{_pts(best['diff_low'])} to {_pts(best['diff_high'])})")
        else:
            text = f"{head} no strategy beats random ({rand['mean']:.{d}f})"
            ahead = [r for r in rows if r["strategy"] != "random" and r["diff"] > 0]
            if ahead:
                best = max(ahead, key=lambda r: r["mean"])
                text += (f"; {best['strategy']} is {_pts(best['diff'])} points ahead but "
                         f"within the noise (95 % CI {_pts(best['diff_low'])} to "
                         f"{_pts(best['diff_high'])})")
            text += "; random selection is the safe choice here"
            best = rand
        if losers:
            text += f"; {', '.join(losers)} {'loses' if len(losers) == 1 else 'lose'} to random"
        gap_full = full["mean"] - best["mean"]
        where = "below" if gap_full >= 0 else "above"
        text += (f"; {abs(100 * gap_full):.1f} points {where} training on all data "
                 f"({full['mean']:.{d}f}).")
        out.append(text)
    return out


def save_plot(result: EvaluationResult, path: str, title: str = "") -> str:
    """Saves an evaluation's curve as an image: held-out accuracy against the kept
    fraction, one line per strategy with its 95 % intervals as error bars, and the
    accuracy of training on all data as a horizontal line.

    Drawn on a :class:`matplotlib.figure.Figure` of its own: no pyplot state and no
    backend switch in the caller's process.

    Args:
        result: an :class:`EvaluationResult` (from :func:`evaluate_pruning` or
            :func:`load_evaluation`)
        path: the image file to write (the format follows its extension, e.g. ``.png``)
        title (""): the plot's title

    Returns:
        ``path``

    Example::

        import fiftyone_prune as fop
        from fiftyone_prune.sdk.evaluation import save_plot

        result = fop.load_evaluation(dataset, "prototypes_evaluation")
        save_plot(result, "/tmp/curve.png", title="my dataset")
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    for strategy in dict.fromkeys(r["strategy"] for r in result.table):
        rows = [r for r in result.table if r["strategy"] == strategy]
        xs = [r["fraction"] for r in rows]
        means = np.array([r["mean"] for r in rows])
        err = [means - [r["low"] for r in rows], [r["high"] for r in rows] - means]
        ax.errorbar(xs, means, yerr=np.maximum(err, 0), marker="o", capsize=3,
                    label=strategy, linestyle="--" if strategy == "random" else "-")
    full = result.full_accuracy
    ax.axhline(full["mean"], color="black", linewidth=1, label=f"all data ({full['mean']:.3f})")
    ax.set_xlabel("fraction of training data kept")
    ax.set_ylabel(f"held-out accuracy (95 % CI, {result.num_test} held out)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


#: Colours of the scaling plot (the panel has its own, for both App themes).
_PLOT_COLORS = {"random": "#757575", "easy": "#1E88E5", "hard": "#E53935", "ccs": "#8E24AA",
                "density": "#00ACC1"}


def scaling_plot_data(result: EvaluationResult, selection=None) -> dict:
    """What a scaling plot draws, in numbers (the PNG and the App panel draw the same):
    per curve its measured points (held-out error with 95 % intervals against training
    samples) and its fitted law over the measured sizes; and the equivalence of one
    selection: its point, and the random curve's size at the same error, with the
    interval.

    Args:
        result: an :class:`EvaluationResult` with a scaling view
        selection (None): ``(strategy, fraction)`` whose equivalence to draw (strategy
            as in ``result.worth``, e.g. ``"hard"``; the fraction nearest is used);
            default: the selection with the highest worth ratio given, if any

    Returns:
        ``{"curves": [{"strategy", "points": [{"kept", "error", "low", "high"}],
        "line": {"n", "error"} or None, "status", "label"}], "equivalence": None or the
        worth row plus ``label``}``
    """
    if not result.scaling:
        raise ParameterError(f"evaluation {result.eval_key!r} has no scaling view; evaluate "
                             f"again with scaling=True", "scaling")
    floor = 0.5 / max(1, result.num_test)  # log axes: an error of 0 is drawn at half a sample
    curves = []
    for row in result.scaling:
        points = [dict(kept=p["kept"], error=max(p["error"], floor), low=max(p["low"], floor),
                       high=max(p["high"], floor)) for p in row["points"]]
        line = None
        if row.get("a") is not None:
            n = np.geomspace(points[0]["kept"], points[-1]["kept"], 60)
            line = {"n": n.tolist(),
                    "error": np.maximum(core_scaling.law((row["a"], row["b"], row["c"]), n),
                                        floor).tolist()}
        law = (f"{row['a']:.3g}·n^-{row['b']:.2f}" + (f" + {row['c']:.3f}" if row["c"] else "")
               if row.get("a") is not None else "no law")
        curves.append(dict(strategy=row["strategy"], points=points, line=line,
                           status=row["status"],
                           label=f"{row['strategy']}: {law}"
                           + ("" if row["status"] == "ok" else f" ({row['status']})")))
    given = [w for w in (result.worth or []) if w["ratio"] is not None]
    chosen = None
    if selection is not None:
        strategy, fraction = selection
        same = [w for w in (result.worth or []) if w["strategy"] == strategy]
        if same:
            chosen = min(same, key=lambda w: abs(w["fraction"] - float(fraction)))
    elif given:
        chosen = max(given, key=lambda w: w["ratio"])
    equivalence = None
    if chosen is not None:
        equivalence = dict(chosen, label=core_scaling.describe_worth(chosen))
        random = result.scaling[0]
        if chosen["ratio"] is not None and random.get("a") is not None:
            # the random law drawn out to the equivalent size's interval when it reaches
            # beyond the measured sizes (an extrapolation, drawn dashed)
            lo = min(chosen["equivalent_low"], random["points"][0]["kept"])
            hi = max(chosen["equivalent_high"], random["points"][-1]["kept"])
            n = np.geomspace(lo, hi, 60)
            equivalence["random_line"] = {
                "n": n.tolist(), "error": np.maximum(core_scaling.law(
                    (random["a"], random["b"], random["c"]), n), floor).tolist()}
    return {"curves": curves, "equivalence": equivalence}


def save_scaling_plot(result: EvaluationResult, path: str, selection=None,
                      title: str = "") -> str:
    """Saves the scaling view as a log-log image: held-out error against training
    samples, each curve's measured points with 95 % intervals and its fitted law, and
    the equivalence of one selection drawn on the random curve (its point, the random
    size at the same error with the interval, and the worth ratio).

    Args:
        result: an :class:`EvaluationResult` with a scaling view (``scaling=True``)
        path: the image file to write (format from the extension, e.g. ``.png``)
        selection (None): ``(strategy, fraction)`` whose equivalence to draw; default:
            the selection with the highest worth ratio given
        title (""): the plot's title

    Returns:
        ``path``

    Example::

        import fiftyone_prune as fop
        from fiftyone_prune.sdk.evaluation import save_scaling_plot

        result = fop.load_evaluation(dataset, "prototypes_evaluation")
        save_scaling_plot(result, "/tmp/scaling.png", selection=("ccs", 0.5))
    """
    from matplotlib.figure import Figure

    data = scaling_plot_data(result, selection)
    fig = Figure(figsize=(7.5, 5), dpi=120)
    ax = fig.subplots()
    for curve in data["curves"]:
        color = _PLOT_COLORS.get(curve["strategy"].split("+")[0], None)
        pts = curve["points"]
        xs = [p["kept"] for p in pts]
        ys = np.array([p["error"] for p in pts])
        err = [ys - [p["low"] for p in pts], [p["high"] for p in pts] - ys]
        random = curve["strategy"] == "random"
        drawn = ax.errorbar(xs, ys, yerr=np.maximum(err, 0), fmt="o" if random else "s",
                            markersize=4, capsize=2, color=color, alpha=0.9,
                            label=curve["label"])
        if curve["line"] is not None:
            ax.plot(curve["line"]["n"], curve["line"]["error"], color=drawn[0].get_color(),
                    linestyle="--" if random else "-", linewidth=1.5 if random else 1)
    eq = data["equivalence"]
    if eq is not None and eq["ratio"] is not None:
        line = eq["random_line"]
        ax.plot(line["n"], line["error"], color=_PLOT_COLORS["random"], linestyle=":",
                linewidth=1)
        y = max(eq["error"], 0.5 / max(1, result.num_test))
        ax.plot([eq["kept"], eq["random_equivalent"]], [y, y], color="black", linewidth=1.2)
        ax.plot([eq["kept"]], [y], marker="*", markersize=13, color="black", linestyle="")
        ax.plot([eq["random_equivalent"]], [y], marker="o", markersize=7,
                markerfacecolor="white", color="black", linestyle="")
        ax.hlines(y, eq["equivalent_low"], eq["equivalent_high"], color="black",
                  linewidth=5, alpha=0.25)
        ax.axvline(eq["random_equivalent"], color="black", linestyle=":", linewidth=0.8)
        ax.annotate(f"{eq['strategy']} {eq['fraction']:.0%}: worth "
                    f"{eq['random_equivalent']:,} random\n({eq['ratio']:.2f}x, 95 % CI "
                    f"{eq['ratio_low']:.2f}x-{eq['ratio_high']:.2f}x)",
                    (eq["random_equivalent"], y), textcoords="offset points",
                    xytext=(8, 10), fontsize=8)
    elif eq is not None:
        ax.plot([eq["kept"]], [max(eq["error"], 0.5 / max(1, result.num_test))], marker="*",
                markersize=13, color="black", linestyle="",
                label=f"{eq['strategy']} {eq['fraction']:.0%}: no ratio ({eq['status']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # plain numbers on the log axes (100, 200, 0.20, 0.30), not powers of ten
    from matplotlib.ticker import FuncFormatter

    def plain(digits):
        def label(value, _):
            mantissa = value / 10 ** np.floor(np.log10(value))
            if round(mantissa, 6) not in (1, 2, 3, 5):
                return ""
            return f"{value:,.{digits(value)}f}"
        return FuncFormatter(label)

    x_plain = plain(lambda v: 0)
    y_plain = plain(lambda v: max(0, int(-np.floor(np.log10(v)))))
    ax.xaxis.set_major_formatter(x_plain)
    ax.xaxis.set_minor_formatter(x_plain)
    ax.yaxis.set_major_formatter(y_plain)
    ax.yaxis.set_minor_formatter(y_plain)
    ax.set_xlabel("training samples n (log)")
    ax.set_ylabel(f"held-out error (log; 95 % CI, {result.num_test} held out)")
    ax.set_title(title or "learning curves: error(n) = a·n^-b + c", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def load_evaluation(samples, eval_key: str) -> EvaluationResult:
    """The stored result of evaluation run ``eval_key`` (nothing is recomputed).

    Args:
        samples: a dataset or view
        eval_key: an :func:`evaluate_pruning` run (by default ``<run_key>_evaluation``)

    Returns:
        an :class:`EvaluationResult` with the table, full-data accuracy, verdicts and
        scaling view (``worth``, ``scaling``; None for evaluations without one) that
        :func:`evaluate_pruning` stored

    Raises:
        ParameterError: when ``eval_key`` is not a run of this package

    Example::

        import fiftyone_prune as fop

        print(fop.load_evaluation(dataset, "prototypes_evaluation").format_table())
    """
    evaluations = runs.list_runs(samples, "evaluation")
    if eval_key not in evaluations:
        raise ParameterError(
            f"{eval_key!r} is not an evaluation run of dataset {samples._dataset.name!r} "
            f"(evaluations: {evaluations or 'none'}); run one with fop.evaluate_pruning()",
            "eval_key")
    results = runs.load_run_results(samples, eval_key)
    return EvaluationResult(eval_key, results.table, results.full_accuracy, results.verdicts,
                            getattr(results, "plot_path", None),
                            getattr(results, "num_test", None)
                            or len(getattr(results, "test_ids", None) or []),
                            getattr(results, "num_fits", 0),
                            worth=getattr(results, "worth", None),
                            scaling=getattr(results, "scaling", None),
                            scaling_plot_path=getattr(results, "scaling_plot_path", None))
