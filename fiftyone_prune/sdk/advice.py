"""Which strategy an evaluation of this data recommends, and the quick evaluation to
offer when none matches: what ``strategy="auto"``, the CLI and the App ask before
selecting.

Reads evaluation runs' stored results through :mod:`fiftyone_prune.sdk.runs` only, so
that imports go one way: :mod:`~fiftyone_prune.sdk.selection` imports this module and
:mod:`~fiftyone_prune.sdk.evaluation` imports both (an evaluation selects many times).
"""

from __future__ import annotations

import os

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.core.scaling import curve_sizes
from fiftyone_prune.sdk import runs, validation

#: ``recommend_strategy`` answers from an evaluated kept fraction at most this far from
#: the requested one: the curves of docs/evaluation/ change by up to ~10 points of
#: accuracy between fractions 0.1 apart at high pruning, so a farther point says little.
MATCH_FRACTION_DISTANCE = 0.1
#: Strategies an evaluation compares unless told otherwise (also a quick evaluation's):
#: the paper's two, CCS, and random, the baseline every verdict is about.
DEFAULT_STRATEGIES = ("random", "easy", "hard", "ccs")
#: Measured cost of one linear-probe fit, in seconds per (training sample x embedding
#: dimension) on a quiet 2-core machine: issue 15's 20,000-image evaluation took 197 s
#: for 93 fits of 7,500 x 1,280 on average (2.2e-7); benchmarks/evaluation_cost.py
#: prints the figure for the machine it runs on. Used only to say how long a quick
#: evaluation would take.
FIT_SECONDS_PER_SAMPLE_DIM = 2.2e-7
#: A quick evaluation is offered up to this many labelled samples (about a minute).
QUICK_EVALUATION_MAX_SAMPLES = 50_000


def scoring_version(samples, run_key: str) -> str:
    """Identifies one computation of scoring run ``run_key``: re-scoring (overwrite)
    registers the run again, with a new ``version`` (and timestamp). An evaluation
    records it, so advice from before a re-scoring is not applied after it."""
    info = runs.get_run_info(samples, run_key)
    return getattr(info.config, "version", None) or str(info.timestamp)


def beats_random(row: dict, seeds: int) -> bool:
    """A strategy wins only when the 95 % interval of its difference to random is above
    zero; with one seed the selection noise of random is unmeasured, so never."""
    return row["strategy"] != "random" and seeds >= 2 and row["diff_low"] > 0


def format_points(x: float) -> str:
    """An accuracy difference (a fraction) as signed points: ``0.012 -> "+1.2"``."""
    return f"{100 * x:+.1f}"


def recommend_strategy(samples, run_key: str, keep_fraction: float, balance="cluster",
                       label_field=None):
    """The strategy an evaluation of this data recommends for a request.

    An evaluation matches when it evaluated the same scoring run *as it is now* (not
    re-scored since), with the same balance mode (and label field for class balance),
    at a kept fraction within :data:`MATCH_FRACTION_DISTANCE` of ``keep_fraction``;
    the newest match is used, at its nearest fraction. It recommends the best strategy
    whose 95 % interval of the difference to random is above zero, else random.

    Args:
        samples: the dataset or view the evaluation runs are registered on
        run_key: the prototype-score run the selection would use
        keep_fraction: the kept fraction requested, in (0, 1]
        balance ("cluster"): the balance mode requested
        label_field (None): the class-balance field requested (checked only for
            ``balance="class"``)

    Returns:
        ``(strategy, reason, eval_key)``, or ``(None, why none fits, None)``

    Example::

        import fiftyone_prune as fop

        strategy, reason, eval_key = fop.recommend_strategy(dataset, "prototypes", 0.5)
        print(strategy or "no matching evaluation:", reason)
    """
    version = scoring_version(samples, run_key)
    matches, refused = [], []
    for key in runs.list_runs(samples, "evaluation"):
        info = runs.get_run_info(samples, key)
        cfg = info.config
        if getattr(cfg, "run_key", None) != run_key:
            continue
        fractions = list(getattr(cfg, "fractions", None) or [])
        near = [f for f in fractions if abs(f - keep_fraction) <= MATCH_FRACTION_DISTANCE + 1e-9]
        if getattr(cfg, "scoring_timestamp", None) != version:
            refused.append(f"{key!r} evaluated an earlier version of {run_key!r} (re-scored "
                           f"since) or predates confidence intervals")
        elif getattr(cfg, "balance", None) != balance:
            refused.append(f"{key!r} evaluated balance={getattr(cfg, 'balance', None)!r}, "
                           f"not {balance!r}")
        elif balance == "class" and label_field and cfg.label_field != label_field:
            refused.append(f"{key!r} balanced by {cfg.label_field!r}, not {label_field!r}")
        elif not near:
            refused.append(f"{key!r} evaluated kept fractions "
                           f"{', '.join(f'{f:.2f}' for f in fractions)}, none within "
                           f"{MATCH_FRACTION_DISTANCE} of {keep_fraction:.2f}")
        else:
            nearest = min(near, key=lambda f: abs(f - keep_fraction))
            matches.append((info.timestamp, key, nearest, cfg.seeds))
    if not matches:
        why = "; ".join(refused) if refused else f"no evaluation of {run_key!r} exists"
        return None, why, None
    _, key, nearest, seeds = max(matches)
    table = runs.load_run_results(samples, key).table
    rows = [r for r in table if r["fraction"] == nearest]
    rand = next(r for r in rows if r["strategy"] == "random")
    winners = [r for r in rows if beats_random(r, seeds)]
    where = f"evaluation {key!r} at {nearest:.0%} kept (requested {keep_fraction:.0%})"
    if winners:
        best = max(winners, key=lambda r: r["mean"])
        return best["strategy"], (
            f"{where}: {best['strategy']} beats random by {format_points(best['diff'])} "
            f"points (95 % CI {format_points(best['diff_low'])} to "
            f"{format_points(best['diff_high'])})"), key
    return "random", (f"{where}: no strategy beats random beyond the noise (95 % "
                      f"intervals), so random ({rand['mean']:.3f})"), key


def quick_evaluation_offer(samples, run_key: str, keep_fraction: float,
                           balance="cluster", label_field=None):
    """The evaluation that would settle ``auto`` when no evaluation matches the request
    but labels exist and the view is small enough to evaluate in about a minute.

    One fraction (the requested one), random/easy/hard/ccs, 3 seeds: 1 full fit +
    3 random + 3 CCS + easy + hard, and the scaling view's learning-curve sizes below
    the fraction (3 fits each, small ones), all counted in the time estimate.

    Args:
        samples: the dataset or view
        run_key: the prototype-score run the selection uses
        keep_fraction: the kept fraction requested, in (0, 1]
        balance ("cluster"): the balance mode requested
        label_field (None): the labels to evaluate with (default: the scoring run's,
            else the first Classification field)

    Returns:
        ``{"seconds", "kwargs", "message"}`` (``kwargs`` for
        :func:`fiftyone_prune.sdk.evaluation.evaluate_pruning`), or None

    Example::

        import fiftyone_prune as fop

        offer = fop.quick_evaluation_offer(dataset, "prototypes", keep_fraction=0.5)
        if offer is not None:
            print(offer["message"])
            result = fop.evaluate_pruning(dataset, **offer["kwargs"])
    """
    cfg = runs.get_run_info(samples, run_key).config
    label_field = label_field or cfg.label_field or next(
        iter(validation.classification_fields(samples)), None)
    if label_field is None or samples.get_field(label_field) is None:
        return None
    num = samples.exists(f"{label_field}.label").count()
    if num < 20 or num > QUICK_EVALUATION_MAX_SAMPLES:
        return None
    if recommend_strategy(samples, run_key, keep_fraction, balance, label_field)[0] is not None:
        return None
    embedded = samples.exists(cfg.embeddings_field)
    if not len(embedded):
        return None
    dim = len(embedded.first()[cfg.embeddings_field])
    num_train = 0.8 * num
    # the table's fits, and the scaling view's: the random learning curve's sizes missing
    # below the evaluated one, 3 seeds each
    num_classes = len(samples.distinct(f"{label_field}.label"))
    curve = curve_sizes(int(num_train), num_classes, [round(keep_fraction * num_train)])
    idle = FIT_SECONDS_PER_SAMPLE_DIM * dim * (
        num_train * (1 + 8 * keep_fraction) + 3 * sum(curve)) + 5
    # the figure is a quiet machine's: a busy one shares its cores with the fits (an
    # estimate of "about 6 s" for minutes of work was reported under load)
    factor = _busy_factor()
    seconds = idle * factor
    busy = (f": this machine is busy now (load {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores); about {idle:.0f} s when idle" if factor > 1.2 else "")
    fraction = round(float(keep_fraction), 2)
    kwargs = dict(label_field=label_field, run_key=run_key, fractions=(fraction,),
                  strategies=DEFAULT_STRATEGIES, seeds=3,
                  balance=balance)
    message = (f"Labels found ({label_field!r}): a quick evaluation at {fraction:.0%} kept "
               f"(about {seconds:.0f} s{busy}) would tell whether a strategy beats random "
               f"here")
    return {"seconds": seconds, "kwargs": kwargs, "message": message}


def _busy_factor() -> float:
    """How much longer than on an idle machine CPU work takes here now: the 1-minute
    load per core, at least 1 (1 where the system does not report a load)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


#: A selection matches an evaluated kept fraction within this distance (a count ``keep``
#: is compared as the fraction of the scored samples it kept).
WORTH_FRACTION_TOLERANCE = 0.005


def worth_of_selection(samples, selection_key: str) -> dict | None:
    """What selection ``selection_key`` is worth in random samples, from the stored
    evaluation that evaluated that very selection: the same scoring run at the same
    version, the same strategy (as chosen), balance (and balance ratio, class-balance
    field), dedup threshold, and kept fraction (within
    :data:`WORTH_FRACTION_TOLERANCE`). The newest such evaluation with a scaling view is
    used. Nothing is computed.

    Args:
        samples: the dataset or view the runs are registered on
        selection_key: a selection run's key (``<name>_selection``)

    Returns:
        None when no evaluation matches; else the evaluation's worth row
        (``strategy``, ``fraction``, ``kept``, ``random_equivalent``,
        ``equivalent_low``, ``equivalent_high``, ``ratio``, ``ratio_low``,
        ``ratio_high``, ``status``, ``reason``; the ratio None with the reason when the
        evaluation gave no number) plus ``eval_key`` and ``selection_fraction``. A random
        selection without dedup is the reference itself: ``ratio`` None, ``status``
        ``"reference"``, and the reason says so

    Raises:
        ParameterError: ``selection_key`` is not a selection run of this package

    Example::

        import fiftyone_prune as fop
        from fiftyone_prune.sdk.advice import worth_of_selection

        worth = worth_of_selection(dataset, "prototypes_selection")
        print(worth and (worth["ratio"], worth["ratio_low"], worth["ratio_high"], worth["reason"]))
    """
    info = runs.get_run_info(samples, selection_key)
    sel = info.config
    if getattr(sel, "kind", None) != "selection":
        raise ParameterError(f"{selection_key!r} is a {getattr(sel, 'kind', 'other')} run, "
                             f"not a selection; pass a selection's run key such as "
                             f"'<name>_selection'", "selection_key")
    strategy = getattr(sel, "chosen_strategy", None) or sel.strategy
    dedup_eps = getattr(sel, "dedup_eps", None)
    keep = sel.keep
    scored = (getattr(sel, "num_kept", 0) or 0) + (getattr(sel, "num_pruned", 0) or 0)
    fraction = (float(keep) if isinstance(keep, float)
                else (getattr(sel, "budget", None) or keep) / max(1, scored))
    base = dict(selection_fraction=fraction)
    if strategy == "random" and dedup_eps is None:
        return dict(base, strategy="random", eval_key=None, ratio=None, ratio_low=None,
                    ratio_high=None, random_equivalent=None, status="reference",
                    reason="a random selection is the reference the worth ratio is "
                           "measured against (1x by definition)")
    label = f"{strategy}+dedup" if dedup_eps is not None else strategy
    found = []
    for key in runs.list_runs(samples, "evaluation"):
        einfo = runs.get_run_info(samples, key)
        ev = einfo.config
        if (getattr(ev, "run_key", None) != sel.run_key
                or getattr(ev, "scoring_timestamp", None) != getattr(sel, "scoring_version", None)
                or getattr(ev, "balance", None) != sel.balance
                or getattr(ev, "balance_ratio", None) != sel.balance_ratio
                or getattr(ev, "dedup_eps", None) != dedup_eps
                or (sel.balance == "class" and ev.label_field != sel.label_field)
                or not getattr(ev, "scaling", False)):
            continue
        for row in runs.load_run_results(samples, key).worth or []:
            if (row["strategy"] == label
                    and abs(row["fraction"] - fraction) <= WORTH_FRACTION_TOLERANCE):
                found.append((einfo.timestamp, key, row))
    if not found:
        return None
    _, key, row = max(found, key=lambda f: f[0])
    return dict(row, eval_key=key, **base)
