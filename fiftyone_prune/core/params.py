"""Typed parameters shared by every entry point (SDK, CLI, App), and the error that
names the parameter it is about.

One parser per textual input (``parse_keep``, ``parse_num_clusters``,
``parse_fractions``) and one range check (:func:`check_scalar`, after scikit-learn's
``sklearn.utils.check_scalar``) so that Python, the CLI and the App accept the same
values and say the same thing. Pure: no FiftyOne here; checks that need the dataset
(fields, runs) live in :mod:`fiftyone_prune.sdk.validation`.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace

#: strategies a selection can use ("auto" picks one of the others)
STRATEGIES = ("auto", "hard", "easy", "random", "ccs", "density")
#: strategies an evaluation compares ("auto" is a choice among them, not a strategy)
EVAL_STRATEGIES = ("random", "easy", "hard", "ccs", "density")
#: how a budget is spread: per k-means cluster, per class, or not at all
BALANCES = ("cluster", "class", None)


class ParameterError(ValueError):
    """A ``ValueError`` about one named parameter.

    ``param`` is the SDK argument name (``"keep"``, ``"label_field"``, ...): the App
    marks exactly that input invalid and the CLI can name its option, while Python
    callers see an ordinary ``ValueError`` with the full message.

    Args:
        message: what is wrong and how to fix it
        param: the name of the SDK argument the message is about
    """

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def check_scalar(value, name: str, target_type, min_val=None, max_val=None,
                 include_boundaries: str = "both"):
    """Checks a scalar's type and range, as ``sklearn.utils.check_scalar`` does, raising
    :class:`ParameterError` (with ``param=name``) instead of ``TypeError``/``ValueError``.

    Args:
        value: the value to check
        name: the parameter's name, used in the message and as ``param``
        target_type: a type or tuple of types (``bool`` is never accepted as a number)
        min_val (None): the lower bound, or None
        max_val (None): the upper bound, or None
        include_boundaries ("both"): which bounds are allowed: ``"both"``,
            ``"left"``, ``"right"`` or ``"neither"``

    Returns:
        ``value``
    """
    types_ = target_type if isinstance(target_type, tuple) else (target_type,)
    if isinstance(value, bool) and bool not in types_ or not isinstance(value, types_):
        names = " or ".join(t.__name__ for t in types_)
        raise ParameterError(f"{name} must be {names}, got {value!r}", name)
    left = include_boundaries in ("both", "left")
    right = include_boundaries in ("both", "right")
    low_bad = min_val is not None and (value < min_val if left else value <= min_val)
    high_bad = max_val is not None and (value > max_val if right else value >= max_val)
    if low_bad and min_val == 1 and max_val is None and left and bool not in types_ \
            and all(issubclass(t, numbers.Integral) for t in types_):
        raise ParameterError(f"{name} must be a positive integer, got {value!r}", name)
    if low_bad or high_bad:
        lo = "-inf" if min_val is None else min_val
        hi = "inf" if max_val is None else max_val
        interval = f"{'[' if left else '('}{lo}, {hi}{']' if right else ')'}"
        raise ParameterError(f"{name}={value!r} is outside {interval}", name)
    return value


def check_keep(keep):
    """``keep`` is a kept fraction in (0, 1] (a float) or a count >= 1 (an int)."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real):
        raise ParameterError(
            f"keep must be a fraction in (0, 1] such as 0.8, or an integer count such as "
            f"5000, got {keep!r}", "keep")
    if isinstance(keep, numbers.Integral):
        if keep < 1:
            raise ParameterError(f"keep={keep}: a count must be at least 1 (or pass a "
                                 f"fraction such as 0.8)", "keep")
    elif not 0 < keep <= 1:
        raise ParameterError(
            f"keep={keep} is outside (0, 1]: pass a fraction such as 0.8, or an integer count",
            "keep")
    return keep


def parse_keep(text):
    """A kept fraction or count from text (CLI option, App input, panel field).

    As in Python: an integer literal is a count (``"1"`` keeps one sample, ``"5000"``
    5000); anything with a decimal point or exponent is a fraction (``"1.0"`` keeps
    everything, ``"0.8"`` 80 %). A number already parsed is returned checked; the App's
    number inputs send floats, so a whole float > 1 (``5000.0``) is a count.

    Raises:
        ParameterError: (``param="keep"``) for anything else
    """
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        value = text
        if isinstance(value, float) and value > 1 and value.is_integer():
            value = int(value)
        return check_keep(value)
    if isinstance(text, str):
        s = text.strip().rstrip("%")
        try:
            value = int(s)
        except ValueError:
            try:
                value = float(s)
            except ValueError:
                value = None
        if value is not None:
            if text.strip().endswith("%"):
                value = value / 100
            return check_keep(value)
    raise ParameterError(
        f"keep must be a fraction in (0, 1] such as 0.8 (1.0 keeps all) or an integer "
        f"count such as 5000, got {text!r}", "keep")


def parse_num_clusters(text):
    """k for k-means: an int, or several (``"100,500"`` or ``[100, 500]``) to average the
    ranks over; None means "choose from the data".

    Returns:
        None, an int, or a list of ints (each >= 1)
    """
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            ks = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ParameterError(
                f"num_clusters must be an integer or comma-separated integers such as "
                f"100,500, got {text!r}", "num_clusters") from None
    elif isinstance(text, numbers.Integral) and not isinstance(text, bool):
        ks = [int(text)]
    elif isinstance(text, (list, tuple)):
        ks = list(text)
    else:
        raise ParameterError(f"num_clusters must be an integer or a list of integers, "
                             f"got {text!r}", "num_clusters")
    if not ks:
        raise ParameterError("num_clusters is empty: give at least one k", "num_clusters")
    for k in ks:
        check_scalar(k, "num_clusters", numbers.Integral, min_val=1)
    return int(ks[0]) if len(ks) == 1 else [int(k) for k in ks]


def parse_fractions(text) -> list[float]:
    """Kept fractions for an evaluation: ``"0.1,0.5,0.9"`` or a sequence of numbers, each
    in (0, 1]."""
    if isinstance(text, str):
        try:
            fractions = [float(f) for f in text.split(",") if f.strip()]
        except ValueError:
            raise ParameterError(
                f"fractions must be comma-separated numbers in (0, 1] such as 0.1,0.5,0.9, "
                f"got {text!r}", "fractions") from None
    else:
        try:
            fractions = list(text)
        except TypeError:
            raise ParameterError(f"fractions must be a list of numbers in (0, 1], got "
                                 f"{text!r}", "fractions") from None
    if not fractions:
        raise ParameterError("fractions is empty: give at least one kept fraction in (0, 1]",
                             "fractions")
    for f in fractions:
        check_scalar(f, "fractions", numbers.Real, 0, 1, include_boundaries="right")
    return [float(f) for f in fractions]


@dataclass(frozen=True)
class SelectionSpec:
    """What to keep: the parameters every selection shares (plan, select, the histogram,
    each evaluated strategy, the CLI and the App forms build one).

    Args:
        keep (0.8): a kept fraction in (0, 1] or a count >= 1
        strategy ("auto"): one of :data:`STRATEGIES`
        balance ("cluster"): ``"cluster"``, ``"class"`` or None (one global ranking)
        label_field (None): a Classification field, for ``balance="class"`` (defaults to
            the scoring run's)
        balance_ratio (0.5): share of each group's quota guaranteed before the rest is
            spread by score; 0.5 because the paper fixes none (see docs/design.md)
        seed (51): the seed of every random choice
        dedup_eps (None): SemDeDup threshold (cosine distance), or None for no dedup
        ccs_beta (None): CCS hard-cutoff fraction, or None for the CCS paper's table
        ccs_bins (50): CCS strata, as in the CCS paper
        density_temperature (0.5): softmax temperature of the density strategy
    """

    keep: float | int = 0.8
    strategy: str = "auto"
    balance: str | None = "cluster"
    label_field: str | None = None
    balance_ratio: float = 0.5
    seed: int = 51
    dedup_eps: float | None = None
    ccs_beta: float | None = None
    ccs_bins: int = 50
    density_temperature: float = 0.5

    def validate(self) -> "SelectionSpec":
        """Checks every value that needs no dataset; returns ``self``.

        Raises:
            ParameterError: naming the first wrong parameter
        """
        check_keep(self.keep)
        if self.strategy not in STRATEGIES:
            raise ParameterError(f"Unknown strategy {self.strategy!r}; choose one of "
                                 f"{STRATEGIES}", "strategy")
        if self.balance not in BALANCES:
            raise ParameterError(f"Unknown balance {self.balance!r}; choose 'cluster', "
                                 f"'class' or None", "balance")
        check_scalar(self.balance_ratio, "balance_ratio", numbers.Real, 0, 1)
        check_scalar(self.seed, "seed", numbers.Integral, min_val=0)  # numpy's seeds
        if self.dedup_eps is not None:
            check_scalar(self.dedup_eps, "dedup_eps", numbers.Real, 0, 1, "neither")
        if self.ccs_beta is not None:
            check_scalar(self.ccs_beta, "ccs_beta", numbers.Real, 0, 1, "left")
        check_scalar(self.ccs_bins, "ccs_bins", numbers.Integral, min_val=1)
        check_scalar(self.density_temperature, "density_temperature", numbers.Real, 0,
                     include_boundaries="neither")
        return self

    def replace(self, **changes) -> "SelectionSpec":
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def selection_spec_from_inputs(inputs) -> SelectionSpec:
    """The :class:`SelectionSpec` that a front end's inputs describe: the CLI's options
    (``vars(args)``), an App form's values, the panel's state. The one place where their
    textual and optional values become the SDK's.

    A missing key, None or ``""`` means the default; ``keep`` goes through
    :func:`parse_keep` (``"1"`` is a count, ``"1.0"`` a fraction); ``balance="none"`` is
    None (no balance); ``dedup_eps`` 0 is no deduplication; a whole float (the App's
    number inputs send ``51.0``) is an integer where one is expected.

    Args:
        inputs: a mapping with any of ``keep``, ``strategy``, ``balance``,
            ``label_field``, ``balance_ratio``, ``seed``, ``dedup_eps``

    Returns:
        the validated spec

    Raises:
        ParameterError: naming the input that is wrong (its ``param`` is the key above)
    """
    def given(name):
        value = inputs.get(name)
        return None if value is None or value == "" else value

    default = SelectionSpec()
    keep = given("keep")
    balance = given("balance")
    seed = given("seed")
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    eps = given("dedup_eps")
    return SelectionSpec(
        keep=default.keep if keep is None else parse_keep(keep),
        strategy=given("strategy") or default.strategy,
        balance=(default.balance if balance is None
                 else None if balance == "none" else balance),
        label_field=given("label_field"),
        balance_ratio=(default.balance_ratio if given("balance_ratio") is None
                       else given("balance_ratio")),
        seed=default.seed if seed is None else seed,
        dedup_eps=None if not eps else eps,
    ).validate()


def keep_shortfall(budget: int, num_kept: int, num_duplicates: int = 0,
                   dedup_eps: float | None = None) -> str | None:
    """A warning when a selection keeps fewer samples than ``keep`` asked for (None when
    it kept them all): SemDeDup's duplicates are removed before the budget is spent, so
    a large ``dedup_eps`` can leave fewer candidates than asked.

    Args:
        budget: the number of samples ``keep`` asked for
        num_kept: the number kept
        num_duplicates (0): the near-duplicates SemDeDup removed first
        dedup_eps (None): its threshold
    """
    if num_kept >= budget:
        return None
    if num_duplicates and dedup_eps is not None:
        return (f"kept {num_kept} of the {budget} asked: SemDeDup (dedup_eps={dedup_eps}) "
                f"removed {num_duplicates} near-duplicates first and left only {num_kept} "
                f"to choose from; lower dedup_eps to remove fewer")
    return (f"kept {num_kept} of the {budget} asked: only {num_kept} samples could be "
            f"chosen; lower keep, or score more samples")
