"""Budgeted sample selection from per-sample prototype scores.

Arrays in, arrays out (numpy only, no FiftyOne). Every function that draws
random numbers takes an integer ``seed`` and builds its own
``np.random.default_rng(seed)``, so a call is a pure function of its inputs.

Scores follow the SSP convention of Sorscher et al. (2022): cosine distance of
a sample to its prototype, so *large = hard* (atypical) and *small = easy*
(prototypical).

What is here:

* :func:`kept_count` -- turn a user's "keep" (fraction or count) into a count.
* :func:`group_floors` -- per-class / per-cluster minimum counts
  (the ``--cls-bal-ratio`` rule of the Sorscher et al. follow-up code).
* :func:`select` -- keep exactly ``budget`` samples by one strategy
  (``"hard"``, ``"easy"``, ``"random"``, ``"ccs"``), optionally with
  balance floors per group.
* :func:`ccs_select` / :func:`default_ccs_beta` -- Coverage-centric Coreset
  Selection (Zheng et al., ICLR 2023).
* :func:`cluster_complexity` / :func:`density_budgets` /
  :func:`density_select` -- Density-Based Pruning (Abbas et al., ICLR 2024).
* :func:`semdedup` -- semantic deduplication (Abbas et al., 2023).

Tie-breaking is always by sample index (lower index first) so results never
depend on sort-algorithm details or platform.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Integral, Real

import numpy as np

from fiftyone_prune.core.prototypes import l2_normalize

__all__ = [
    "STRATEGIES",
    "ccs_select",
    "cluster_complexity",
    "default_ccs_beta",
    "density_budgets",
    "density_select",
    "group_floors",
    "kept_count",
    "select",
    "semdedup",
]

STRATEGIES = ("hard", "easy", "random", "ccs")

# SemDeDup similarity blocks: at most this many rows per block, and at most
# this many float32 similarities alive at once (64 MiB), so memory stays
# bounded however large one cluster is. Module-level so tests can shrink them
# to exercise the blocked path on tiny inputs.
_BLOCK_ROWS = 4096
_MAX_BLOCK_ELEMENTS = 1 << 24


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _is_int(x) -> bool:
    # bool is an Integral subclass, but True as "keep one sample" is almost
    # certainly a bug on the caller's side, so it never counts as an int.
    return isinstance(x, Integral) and not isinstance(x, (bool, np.bool_))


def _is_real(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, (bool, np.bool_))


def _exact_decimal(x: float) -> Fraction:
    """The decimal a user typed, as an exact fraction.

    ``repr`` gives the shortest string that round-trips the float, i.e. what
    the user wrote (``0.29``), not its binary approximation
    (``0.28999999999999998``). Rounding rules stated in decimal ("round half
    up", "ceil") then behave as a person computing by hand expects:
    ``0.29 * 100`` is 29, not 28.
    """
    return Fraction(repr(float(x)))


def _check_fraction(name: str, value, low_open: bool, high_open: bool) -> float:
    if not _is_real(value) or not math.isfinite(float(value)):
        raise ValueError(f"{name}={value!r} is not a finite number; pass a number in "
                         f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}")
    v = float(value)
    too_low = v <= 0 if low_open else v < 0
    too_high = v >= 1 if high_open else v > 1
    if too_low or too_high:
        raise ValueError(f"{name}={value!r} is out of range; pass a number in "
                         f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}")
    return v


def _check_count(name: str, value, upper: int, upper_name: str) -> int:
    if not _is_int(value):
        raise ValueError(f"{name}={value!r} is not an integer; pass an int in [0, {upper}]")
    v = int(value)
    if v < 0:
        raise ValueError(f"{name}={v} is negative; pass an int in [0, {upper}]")
    if v > upper:
        raise ValueError(f"{name}={v} exceeds {upper_name} ({upper}); lower {name} "
                         f"to at most {upper}")
    return v


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {s.shape}; "
                         f"pass one score per sample")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or inf; recompute the scores or drop "
                         f"those samples before selecting")
    return s


def _as_labels(labels, n: int, name: str) -> np.ndarray:
    g = np.asarray(labels)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per sample "
                         f"({n}), got shape {g.shape}")
    return g


def _group_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sizes and member indices (ascending) of each distinct label, in label order."""
    uniq, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)  # numpy 2.0/2.1 keep the input's shape here
    sizes = np.bincount(inverse, minlength=uniq.size)
    order = np.argsort(inverse, kind="stable")
    return sizes, np.split(order, np.cumsum(sizes)[:-1])


# ---------------------------------------------------------------------------
# Counts and floors
# ---------------------------------------------------------------------------


def kept_count(num_samples: int, keep: float | int) -> int:
    """Number of samples to keep out of ``num_samples``.

    Args:
        num_samples: dataset size, an int >= 1.
        keep: a float in (0, 1] is a fraction of ``num_samples``; an int >= 1
            is an absolute count (at most ``num_samples``). ``1.0`` keeps
            everything, ``1`` keeps one sample.

    Returns:
        For a fraction, ``floor(keep * n + 0.5)`` (round half up, evaluated on
        the decimal the caller wrote, see :func:`_exact_decimal`) and at least
        1: a pruning run that keeps nothing is never what was meant, and
        Python's ``round`` (half to even) would make 0.5 of 3 samples keep 2
        but 0.5 of 5 keep 2 as well, which surprises people.

    Raises:
        ValueError: keep <= 0, a fraction above 1, a count above
            ``num_samples``, a bool, a non-number, or ``num_samples`` == 0.
    """
    if not _is_int(num_samples) or int(num_samples) < 0:
        raise ValueError(f"num_samples={num_samples!r} must be a non-negative int")
    n = int(num_samples)
    if n == 0:
        raise ValueError("num_samples is 0: there is nothing to keep; select from a "
                         "non-empty dataset or view")
    if isinstance(keep, (bool, np.bool_)):
        raise ValueError(f"keep={keep!r} is a bool; pass a fraction in (0, 1] such as "
                         f"0.5, or a sample count such as 100")
    if _is_int(keep):
        k = int(keep)
        if k <= 0:
            raise ValueError(f"keep={k} keeps nothing; pass a count >= 1 or a fraction "
                             f"in (0, 1]")
        if k > n:
            raise ValueError(f"keep={k} is more than the {n} samples available; pass a "
                             f"count <= {n}, or 1.0 to keep everything")
        return k
    if _is_real(keep):
        x = float(keep)
        if not math.isfinite(x):
            raise ValueError(f"keep={keep!r} is not finite; pass a fraction in (0, 1] "
                             f"or a count in [1, {n}]")
        if x <= 0:
            raise ValueError(f"keep={keep!r} keeps nothing; pass a fraction in (0, 1] "
                             f"or a count in [1, {n}]")
        if x > 1:
            raise ValueError(f"keep={keep!r} is a fraction above 1; pass a fraction in "
                             f"(0, 1] (1.0 keeps everything) or an int count <= {n}")
        count = math.floor(_exact_decimal(x) * n + Fraction(1, 2))
        return max(1, min(n, count))
    raise ValueError(f"keep={keep!r} is not a number; pass a fraction in (0, 1] or an "
                     f"int count in [1, {n}]")


def _cut_largest_first(floors: np.ndarray, budget: int,
                       priority: np.ndarray | None = None) -> np.ndarray:
    """Lower ``floors`` one unit at a time, always the largest, until they sum
    to ``budget``. Among equal floors the smallest ``priority`` (default: the
    group index) is cut first.

    Closed form of that loop, so it is O(k log max) rather than O(k * excess):
    the loop first levels every floor down to some height L + 1, then takes
    one more unit from the first ``r`` groups standing at L + 1.
    """
    lo, hi = 0, int(floors.max())
    while lo < hi:  # largest L with sum(min(floors, L)) <= budget
        mid = (lo + hi + 1) // 2
        if int(np.minimum(floors, mid).sum()) <= budget:
            lo = mid
        else:
            hi = mid - 1
    level = lo
    if int(np.minimum(floors, level).sum()) == budget:
        return np.minimum(floors, level)
    out = np.minimum(floors, level + 1)
    excess = int(out.sum()) - budget
    at_top = np.flatnonzero(out == level + 1)
    if priority is not None:
        at_top = at_top[np.argsort(priority[at_top], kind="stable")]
    out[at_top[:excess]] -= 1
    return out


def group_floors(group_sizes: np.ndarray, budget: int, balance_ratio: float) -> np.ndarray:
    """Minimum number of kept samples per group (class or cluster).

    Each non-empty group keeps at least
    ``min(size_g, ceil(balance_ratio * budget / num_groups))``, the rule of the
    Sorscher et al. follow-up code (amro-kamal/effective_pruning,
    ``--cls-bal-ratio``, default 0.5): pruning by a difficulty metric
    otherwise empties whole easy classes. Empty groups get 0 and do not count
    in ``num_groups`` -- a cluster k-means left empty should not dilute the
    others' floors.

    ``ceil`` can push the floors' sum above ``budget`` (e.g. 3 groups sharing
    a budget of 4 at ratio 1 each get 2). Then the largest floors are lowered
    one unit at a time, lowest group index first among equals, until the sum
    fits: this keeps the floors as even as possible, which is the point of a
    balance floor. The ratio product is evaluated on the decimal written
    (0.3 * 10 / 3 is exactly 1, not 1.0000000000000002 -> 2).

    Args:
        group_sizes: 1-D non-negative ints, samples per group.
        budget: total number of samples that will be kept (int >= 0).
        balance_ratio: in [0, 1]; 0 disables floors, 1 asks for an even split.

    Returns:
        int64 array shaped like ``group_sizes``, each entry in [0, size_g],
        summing to at most ``budget``.
    """
    sizes = np.asarray(group_sizes)
    if sizes.ndim != 1 or (sizes.size and not np.issubdtype(sizes.dtype, np.integer)):
        raise ValueError("group_sizes must be a 1-D array of ints (samples per group)")
    sizes = sizes.astype(np.int64)
    if np.any(sizes < 0):
        raise ValueError("group_sizes contains negative sizes; pass counts >= 0")
    budget = _check_count("budget", budget, np.iinfo(np.int64).max, "the int64 range")
    ratio = _check_fraction("balance_ratio", balance_ratio, low_open=False, high_open=False)
    return _balanced_floors(sizes, budget, ratio)


def _balanced_floors(sizes: np.ndarray, budget: int, ratio: float,
                     priority: np.ndarray | None = None) -> np.ndarray:
    floors = np.zeros(sizes.shape, dtype=np.int64)
    num_groups = int(np.count_nonzero(sizes))
    if num_groups == 0 or budget == 0:
        return floors
    share = _exact_decimal(ratio) * budget / num_groups
    floors = np.minimum(sizes, math.ceil(share)).astype(np.int64)
    if int(floors.sum()) > budget:
        floors = _cut_largest_first(floors, budget, priority)
    return floors


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def _hardest(s: np.ndarray, k: int) -> np.ndarray:
    # Stable sort of -s: among equal scores the lower index ranks first.
    return np.sort(np.argsort(-s, kind="stable")[:k])


def _easiest(s: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(s, kind="stable")[:k])


def default_ccs_beta(keep_fraction: float) -> float:
    """Default CCS hard-cutoff rate ``beta`` for a kept fraction.

    Zheng et al. (ICLR 2023) tune ``beta`` per dataset and pruning rate; the
    values quoted for ImageNet are 0.3 at 90 % pruning and 0.2 at 80 %
    (0.3 at 90 % for CIFAR-10 too), with smaller cutoffs at lower pruning
    rates, where plain score-based selection already does well. No single
    formula is given, so this uses the line through the two ImageNet
    anchors, ``beta = prune_rate - 0.6``, clipped to [0, 0.3]:

    ========  =====  =====  =====  =====  =====  ======
    prune     <=60%  70%    80%    90%    95%    99%
    beta      0      0.1    0.2    0.3    0.3    0.3
    ========  =====  =====  =====  =====  =====  ======

    * It reproduces both published anchors exactly.
    * It reaches 0 at 60 % pruning (keep >= 40 %): at low pruning rates the
      paper finds CCS and hard-keeping comparable, and dropping the hardest
      tail then only throws away informative samples.
    * It stops growing beyond 90 % pruning: no setting above 0.3 is reported
      for these datasets, and extrapolating would discard ever more of the
      (SSP-)hardest tail on no evidence.

    The SSP score is not the training-dynamics score (AUM/forgetting) the
    paper used; the anchors are a starting point, not a tuned value, which is
    why :func:`select` accepts an explicit ``ccs_beta``.

    Args:
        keep_fraction: kept fraction in (0, 1].

    Returns:
        beta in [0, 0.3], rounded to 6 decimals so that e.g. 80 % pruning
        gives exactly 0.2 rather than 0.20000000000000007.
    """
    keep = _check_fraction("keep_fraction", keep_fraction, low_open=True, high_open=False)
    prune = 1.0 - keep
    return round(min(max(prune - 0.6, 0.0), 0.3), 6)


def _equal_width_bins(x: np.ndarray, num_bins: int) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.int64)
    # Bin j covers [lo + j*w, lo + (j+1)*w); the max lands in the last bin by
    # the clip rather than by stretching the range (the reference code's
    # max * 1.0001 misbehaves for negative or zero maxima).
    idx = np.floor((x - lo) / (hi - lo) * num_bins).astype(np.int64)
    return np.clip(idx, 0, num_bins - 1)


def _allocate_bins(counts: np.ndarray, budget: int) -> np.ndarray:
    """CCS budget allocation over strata, smallest stratum first.

    Each stratum in turn (ascending size, lower bin index first among equals)
    gets ``min(size, remaining // strata_left)``: a stratum at or under its
    fair share is taken whole and its unused share flows to the strata after
    it. Integer division leaves the rounding remainder to the largest strata,
    which always have room for it; the result sums to ``budget`` whenever
    ``budget <= counts.sum()``.
    """
    order = np.argsort(counts, kind="stable")
    quotas = np.zeros(counts.shape, dtype=np.int64)
    remaining = int(budget)
    num_bins = counts.size
    for i, b in enumerate(order):
        take = min(int(counts[b]), remaining // (num_bins - i))
        quotas[b] = take
        remaining -= take
    return quotas


def _ccs(s: np.ndarray, budget: int, beta: float, num_bins: int,
         rng: np.random.Generator) -> np.ndarray:
    n = s.size
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    # Never cut so deep that fewer than `budget` candidates remain.
    num_drop = min(math.floor(_exact_decimal(beta) * n), n - budget)
    candidates = np.sort(np.argsort(-s, kind="stable")[num_drop:])
    bins = _equal_width_bins(s[candidates], num_bins)
    counts = np.bincount(bins, minlength=num_bins)
    quotas = _allocate_bins(counts, budget)
    order = np.argsort(bins, kind="stable")
    members_per_bin = np.split(candidates[order], np.cumsum(counts)[:-1])
    picked = [rng.choice(members, size=int(q), replace=False)
              for members, q in zip(members_per_bin, quotas) if q > 0]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _check_beta(beta) -> float:
    return _check_fraction("ccs_beta", beta, low_open=False, high_open=True)


def _check_bins(num_bins) -> int:
    if not _is_int(num_bins) or int(num_bins) < 1:
        raise ValueError(f"num_bins={num_bins!r} must be an int >= 1 (the paper uses 50)")
    return int(num_bins)


def ccs_select(scores, budget, beta, num_bins=50, seed=0) -> np.ndarray:
    """Coverage-centric Coreset Selection (Zheng et al., ICLR 2023).

    1. Drop the hardest ``floor(beta * n)`` samples (largest scores; among
       equal scores the higher index goes first), but never so many that
       fewer than ``budget`` remain -- then only ``n - budget`` are dropped.
    2. Split the remaining score range [min, max] into ``num_bins``
       equal-width strata (50 in the paper).
    3. Spread the budget over strata smallest-first (see
       :func:`_allocate_bins`), so sparse score ranges are fully covered.
    4. Sample uniformly without replacement inside each stratum.

    Args:
        scores: 1-D finite scores, large = hard.
        budget: number to keep, in [0, n].
        beta: hard-cutoff rate in [0, 1); ``None`` uses
            :func:`default_ccs_beta` of ``budget / n``.
        num_bins: number of strata, >= 1.
        seed: seed for ``np.random.default_rng``.

    Returns:
        Sorted int64 indices of exactly ``budget`` samples.
    """
    s = _as_scores(scores)
    budget = _check_count("budget", budget, s.size, "the number of samples")
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    if beta is None:
        beta = default_ccs_beta(budget / s.size) if budget else 0.0
    else:
        beta = _check_beta(beta)
    return _ccs(s, budget, beta, _check_bins(num_bins), np.random.default_rng(seed))


def _by_strategy(s, k, strategy, rng, beta, num_bins) -> np.ndarray:
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "hard":
        return _hardest(s, k)
    if strategy == "easy":
        return _easiest(s, k)
    if strategy == "random":
        return np.sort(rng.choice(s.size, size=k, replace=False)).astype(np.int64)
    return _ccs(s, k, beta, num_bins, rng)


def select(scores, budget, strategy, groups=None, balance_ratio=0.5, seed=0,
           ccs_beta=None, ccs_bins=50) -> np.ndarray:
    """Keep exactly ``budget`` samples according to ``strategy``.

    Strategies (scores are distances to a prototype, large = hard):

    * ``"hard"`` -- the ``budget`` largest scores (ties: lower index kept),
      Sorscher et al.'s choice when data is abundant.
    * ``"easy"`` -- the ``budget`` smallest scores, their choice when data is
      scarce.
    * ``"random"`` -- uniform without replacement.
    * ``"ccs"`` -- :func:`ccs_select` with ``ccs_beta`` (default
      :func:`default_ccs_beta` of ``budget / n``) and ``ccs_bins`` strata.

    With ``groups`` (cluster ids or class labels, any sortable values), the
    balance floors of :func:`group_floors` apply: each group first keeps its
    floor, chosen by the strategy *inside the group*; the rest of the budget
    is then filled by the strategy applied to the pool of all samples not yet
    kept. For CCS the same ``beta`` is used in every call: it describes how
    much of the hard tail is untrustworthy, a property of the scores, not of
    the group size.

    Randomness comes from one ``np.random.default_rng(seed)`` consumed group
    by group in sorted label order, then by the fill step, so the result is a
    function of the inputs and ``seed``.

    Returns:
        Sorted int64 indices into ``scores``, exactly ``budget`` of them,
        without duplicates.
    """
    s = _as_scores(scores)
    n = s.size
    budget = _check_count("budget", budget, n, "the number of samples")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; use one of {STRATEGIES}")
    beta, num_bins = None, None
    if strategy == "ccs":
        num_bins = _check_bins(ccs_bins)
        if ccs_beta is not None:
            beta = _check_beta(ccs_beta)
        else:
            beta = default_ccs_beta(budget / n) if budget else 0.0
    rng = np.random.default_rng(seed)

    if groups is None:
        return _by_strategy(s, budget, strategy, rng, beta, num_bins)

    labels = _as_labels(groups, n, "groups")
    sizes, members = _group_members(labels)
    floors = group_floors(sizes, budget, balance_ratio)
    kept = np.zeros(n, dtype=bool)
    for idx, floor in zip(members, floors):
        if floor:
            kept[idx[_by_strategy(s[idx], int(floor), strategy, rng, beta, num_bins)]] = True
    rest = budget - int(floors.sum())
    if rest:
        pool = np.flatnonzero(~kept)
        kept[pool[_by_strategy(s[pool], rest, strategy, rng, beta, num_bins)]] = True
    return np.flatnonzero(kept).astype(np.int64)


# ---------------------------------------------------------------------------
# Density-Based Pruning
# ---------------------------------------------------------------------------


def cluster_complexity(scores, clusters, centroids, num_neighbors=20
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster intra- and inter-cluster distances (Abbas et al., ICLR 2024).

    * ``d_intra_j`` -- mean score of cluster j's members. ``scores`` must be
      each sample's cosine distance to its own centroid (the SSP score), so
      this is the paper's mean member-to-centroid distance without touching
      the embeddings again. Empty clusters get 0: they receive no budget
      anyway, and 0 keeps the array finite.
    * ``d_inter_j`` -- mean cosine distance (``1 - dot`` of L2-normalised
      rows) from centroid j to its ``min(num_neighbors, k - 1)`` nearest other
      centroids (20 in the paper). With a single cluster there is no
      neighbour; it gets 1, the distance to an orthogonal direction, and its
      weight is 1 whatever the value.

    Centroids are normalised defensively. Similarities are computed in row
    blocks so k = 50,000 clusters do not need a k x k matrix; the mean of the
    top-m similarities does not depend on how ties among them are broken.

    Returns:
        ``(d_intra, d_inter)``, float64 arrays of length k.
    """
    c = np.asarray(centroids, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"centroids must be a non-empty (k, d) array, got shape {c.shape}")
    k = c.shape[0]
    s = _as_scores(scores)
    cl = _as_labels(clusters, s.size, "clusters")
    if cl.size and (not np.issubdtype(cl.dtype, np.integer) or cl.min() < 0 or cl.max() >= k):
        raise ValueError(f"clusters must be ints in [0, {k}) indexing the centroid rows")
    if not _is_int(num_neighbors) or int(num_neighbors) < 1:
        raise ValueError(f"num_neighbors={num_neighbors!r} must be an int >= 1 (paper: 20)")

    sizes = np.bincount(cl, minlength=k)
    sums = np.bincount(cl, weights=s, minlength=k)
    d_intra = np.where(sizes > 0, sums / np.maximum(sizes, 1), 0.0)

    if k == 1:
        return d_intra, np.ones(1)
    c = l2_normalize(c)
    m = min(int(num_neighbors), k - 1)
    d_inter = np.empty(k)
    rows = max(1, min(k, _MAX_BLOCK_ELEMENTS // k))
    for i0 in range(0, k, rows):
        i1 = min(k, i0 + rows)
        sims = c[i0:i1] @ c.T
        sims[np.arange(i1 - i0), np.arange(i0, i1)] = -np.inf  # not its own neighbour
        top = -np.partition(-sims, m - 1, axis=1)[:, :m]
        d_inter[i0:i1] = 1.0 - top.mean(axis=1)
    return d_intra, d_inter


def _water_fill(target: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                total: float) -> np.ndarray:
    """argmin sum (x - target)^2  s.t.  sum x = total, lower <= x <= upper.

    The KKT conditions of this separable problem give
    ``x = clip(target + lam, lower, upper)`` for one common shift ``lam``
    (the water level); ``sum x`` is non-decreasing in ``lam``, so bisection
    brackets it and one exact solve on the free set finishes it.
    """
    def filled(lam):
        return np.clip(target + lam, lower, upper)

    a = float(np.min(lower - target))
    b = float(np.max(upper - target))
    for _ in range(200):
        mid = 0.5 * (a + b)
        if mid in (a, b):
            break
        if filled(mid).sum() < total:
            a = mid
        else:
            b = mid
    lam = 0.5 * (a + b)
    x = filled(lam)
    free = (target + lam > lower) & (target + lam < upper)
    if free.any():
        fixed = x[~free].sum()
        lam = (total - fixed - target[free].sum()) / free.sum()
        x = filled(lam)
    return x


def _round_to_total(x: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                    total: int, target: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``x`` to ints in [lower, upper] summing to ``total``.

    Floor everything, then hand out the missing units by descending
    fractional part; this is also the integer optimum of the squared loss,
    since a unit's marginal cost falls as the fractional part grows. Equal
    fractions go to the larger ``target`` first (then the lower index), so a
    cluster never ends up below one with a smaller target and the same
    bounds. Loops only to absorb float error.
    """
    n = np.clip(np.floor(x), lower, upper).astype(np.int64)
    frac = x - np.floor(x)
    idx = np.arange(x.size)
    missing = total - int(n.sum())
    while missing > 0:
        room = np.flatnonzero(n < upper)
        room = room[np.lexsort((idx[room], -target[room], -frac[room]))][:missing]
        n[room] += 1
        missing -= room.size
    while missing < 0:
        spare = np.flatnonzero(n > lower)
        spare = spare[np.lexsort((-idx[spare], target[spare], frac[spare]))][:-missing]
        n[spare] -= 1
        missing += spare.size
    return n


def density_budgets(cluster_sizes, d_intra, d_inter, budget, temperature=0.5,
                    balance_ratio=0.5) -> np.ndarray:
    """Per-cluster kept counts of Density-Based Pruning (Abbas et al., ICLR 2024).

    Complexity ``C_j = d_intra_j * d_inter_j``: sparse clusters far from
    others hold more distinct concepts and keep more. Weights
    ``p = softmax(C / temperature)`` (paper: T = 0.5) over the non-empty
    clusters -- an empty cluster can hold nothing, so it takes no share --
    and targets ``N_j = p_j * budget``.

    The paper turns targets into counts with a small quadratic program: sum
    equal to ``budget``, each count between the balance floor
    ``min(size_j, ceil(balance_ratio * budget / k))`` (the rule of
    :func:`group_floors`, ratio 0.5; where ``ceil`` overshoots the budget the
    clusters with the smallest targets give up a unit first, instead of
    group_floors' index order) and the cluster size. Here that program is
    solved directly:
    water-filling (:func:`_water_fill`) gives the continuous minimiser of the
    squared distance to the targets under the box and sum constraints --
    the same solution a QP solver returns for this separable squared loss --
    and largest-remainder rounding within the bounds turns it into integers,
    avoiding a QP-solver dependency.

    Args:
        cluster_sizes: 1-D ints >= 0, members per cluster.
        d_intra, d_inter: 1-D finite floats, see :func:`cluster_complexity`.
        budget: total kept, at most ``sum(cluster_sizes)``.
        temperature: softmax temperature > 0; lower concentrates the budget
            on the most complex clusters.
        balance_ratio: floor ratio in [0, 1].

    Returns:
        int64 counts with ``sum == budget`` and ``floor_j <= N_j <= size_j``.
    """
    sizes = np.asarray(cluster_sizes)
    if sizes.ndim != 1 or (sizes.size and not np.issubdtype(sizes.dtype, np.integer)):
        raise ValueError("cluster_sizes must be a 1-D array of ints")
    sizes = sizes.astype(np.int64)
    if np.any(sizes < 0):
        raise ValueError("cluster_sizes contains negative sizes; pass counts >= 0")
    intra = _as_scores(d_intra, "d_intra")
    inter = _as_scores(d_inter, "d_inter")
    if not (intra.shape == inter.shape == sizes.shape):
        raise ValueError(f"cluster_sizes, d_intra and d_inter must have one entry per "
                         f"cluster; got {sizes.shape}, {intra.shape}, {inter.shape}")
    budget = _check_count("budget", budget, int(sizes.sum()), "the number of samples")
    if not _is_real(temperature) or not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a finite number > 0 "
                         f"(paper: 0.5)")
    ratio = _check_fraction("balance_ratio", balance_ratio, low_open=False, high_open=False)
    if budget == 0:
        return np.zeros(sizes.shape, dtype=np.int64)

    present = sizes > 0
    z = (intra * inter) / float(temperature)
    z = np.where(present, z - z[present].max(), -np.inf)  # shift: exp cannot overflow
    p = np.exp(z)
    p /= p.sum()
    target = p * budget
    # When ceil pushes the floors over the budget, the clusters with the
    # smallest targets give up their extra unit (group_floors would cut by
    # index), so a more complex cluster never gets the lower floor.
    lower = _balanced_floors(sizes, budget, ratio, priority=target)
    x = _water_fill(target, lower.astype(np.float64), sizes.astype(np.float64),
                    float(budget))
    return _round_to_total(x, lower, sizes, budget, target)


def density_select(scores, clusters, centroids, budget, temperature=0.5,
                   balance_ratio=0.5, num_neighbors=20) -> np.ndarray:
    """Density-Based Pruning: per-cluster budgets, then the hardest inside each.

    Budgets come from :func:`cluster_complexity` and :func:`density_budgets`;
    cluster j then keeps its ``N_j`` largest scores (ties: lower index), as in
    the paper, which keeps the least prototypical members of every concept.

    Args:
        scores: 1-D cosine distance of each sample to its own centroid.
        clusters: 1-D ints in [0, k), the centroid row of each sample.
        centroids: (k, d) cluster centres (normalised defensively).
        budget: number to keep, in [0, n].

    Returns:
        Sorted int64 indices of exactly ``budget`` samples.
    """
    s = _as_scores(scores)
    budget = _check_count("budget", budget, s.size, "the number of samples")
    d_intra, d_inter = cluster_complexity(s, clusters, centroids, num_neighbors)
    cl = np.asarray(clusters).astype(np.int64)
    k = d_intra.size
    sizes = np.bincount(cl, minlength=k)
    counts = density_budgets(sizes, d_intra, d_inter, budget, temperature, balance_ratio)
    order = np.argsort(cl, kind="stable")
    kept = [idx[_hardest(s[idx], int(c))]
            for idx, c in zip(np.split(order, np.cumsum(sizes)[:-1]), counts) if c]
    if not kept:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(kept)).astype(np.int64)


# ---------------------------------------------------------------------------
# SemDeDup
# ---------------------------------------------------------------------------


def _compress(parent: np.ndarray) -> None:
    # Pointer doubling: every node ends up pointing straight at its root.
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the components of every edge (a[i], b[i]), vectorised.

    Roots are hooked under the smallest root they share an edge with, so
    parents always point to lower indices (no cycles) and each component's
    root is its lowest member. Edges are replaced by root pairs each round;
    a round finishes every edge whose higher root picked its partner, so
    few rounds are needed even for long chains.
    """
    while a.size:
        _compress(parent)
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return
        ra, rb = ra[differ], rb[differ]
        a, b = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, b, a)


def _duplicate_components(x: np.ndarray, threshold: float) -> np.ndarray:
    """Component root of each row of unit-norm ``x`` under ``sim > threshold``."""
    m = x.shape[0]
    parent = np.arange(m)
    rows = max(1, min(_BLOCK_ROWS, _MAX_BLOCK_ELEMENTS // m))
    for i0 in range(0, m, rows):
        i1 = min(m, i0 + rows)
        # Only columns j >= i0 are needed: pairs (i, j) with j < i0 were seen
        # by an earlier block.
        sims = x[i0:i1] @ x[i0:].T
        r, c = np.nonzero(sims > threshold)
        upper = c > r  # column c is sample i0 + c, row r is sample i0 + r
        _union(parent, r[upper] + i0, c[upper] + i0)
    _compress(parent)
    return parent


def semdedup(embeddings, clusters, distances, eps) -> np.ndarray:
    """Semantic deduplication (Abbas et al., 2023). Returns a keep mask.

    Inside each cluster, two samples are duplicates when their cosine
    similarity exceeds ``1 - eps``. Duplicate groups are the connected
    components of that relation (so A~B and B~C put A, B, C in one group even
    when A and C are further apart), and each group keeps exactly one
    survivor: the member with the largest ``distances`` (farthest from the
    centroid, i.e. least prototypical, as in the paper), lowest index among
    equals. Samples in different clusters are never compared -- that is what
    makes SemDeDup affordable.

    Embeddings are normalised defensively (all-zero rows stay zero, so they
    are never anyone's duplicate) and compared in float32 row blocks of at
    most 4096 rows and 2**24 similarities, so memory is bounded even for one
    huge cluster.

    Args:
        embeddings: (n, d) array.
        clusters: (n,) cluster labels.
        distances: (n,) cosine distance of each sample to its own centroid.
        eps: in (0, 1); larger removes more (LAION: ~0.001 keeps ~80 %,
            ~0.12 keeps ~50 %).

    Returns:
        Boolean array of length n, True for survivors.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {x.shape}")
    n = x.shape[0]
    dist = _as_scores(distances, "distances")
    if dist.size != n:
        raise ValueError(f"distances has {dist.size} entries for {n} embeddings; pass "
                         f"one per sample")
    labels = _as_labels(clusters, n, "clusters")
    eps = _check_fraction("eps", eps, low_open=True, high_open=True)
    threshold = 1.0 - eps

    x = l2_normalize(x)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    _, members = _group_members(labels)
    for idx in members:
        if idx.size == 1:
            keep[idx] = True
            continue
        roots = _duplicate_components(np.ascontiguousarray(x[idx]), threshold)
        local = np.arange(idx.size)
        order = np.lexsort((local, -dist[idx], roots))
        first = np.ones(idx.size, dtype=bool)
        first[1:] = roots[order][1:] != roots[order][:-1]
        keep[idx[order[first]]] = True
    return keep
