"""What is a pruned set worth? Learning curves, power laws and random-equivalent sizes.

Sorscher et al. (2022) frame pruning as a change of the *scaling law*: held-out error
falls as a power of the training-set size, ``error(n) = a * n^(-b) + c``, and a good
pruning metric bends that curve. Three questions follow for a user, answered here from
the per-held-out-sample correctness the evaluation already measures:

* **random learning curve**: the law fitted to random subsets of the training pool at
  geometrically spaced sizes (:func:`curve_sizes`), and the same law per strategy;
* **random-equivalent size** of a selection: the number of random samples whose fitted
  error equals the selection's measured error, and its **worth ratio** (equivalent /
  kept) (:func:`selection_worth`);
* **inverse projection**: the samples a curve needs to reach a target error
  (:func:`samples_needed`), marked as an extrapolation outside the measured sizes and
  refused beyond what the fit supports.

Honest by construction
----------------------
Every interval comes from the evaluation's own noise model
(:mod:`fiftyone_prune.core.significance`): the **paired bootstrap over the held-out
samples** (one set of resamples for every curve point and selection, so that a hard
held-out set moves the random curve and the selection together) plus the **seed
variance** of each point (a normal draw per resample with the variance the evaluation
uses). The law is **refitted on every resample**, so the fit's own uncertainty is in the
intervals. A number is withheld, with the reason, when the random curve is too short to
fit, flat (its error does not fall beyond the noise), not monotone, or poorly fitted; or
when the answer lies at or below the curve's plateau, farther than
:data:`MAX_EXTRAPOLATION` times outside the measured sizes, or so noisy that its
interval spans more than a factor :data:`NOISY_SPAN`.

The fit
-------
For a fixed exponent ``b`` the law is linear in ``a`` and ``c``, so a weighted least
squares (weights ``1 / sd^2`` of each point) has a closed form; ``b`` is searched on a
grid (:data:`EXPONENTS`) and refined on a finer one, for all bootstrap resamples at once
(arrays of resamples x exponents x sizes: a few milliseconds for 2,000 resamples).
Constraints ``a >= 0``, ``c >= 0``. One form is fitted, the law with its plateau
``c``; where the data put ``c`` at its bound 0 the fit is reported as a pure power law
(``form="power"``), otherwise as levelling off (``form="plateau"``). Why not choose
between the two by AIC: measured on MNIST (docs/evaluation/scaling.md), fits that
dropped the plateau on sizes up to a third of the pool predicted the full pool's error
at 0.07 against 0.11 measured, with intervals that missed it; the law with ``c`` refitted
on every resample covered it. The points of one curve share the held-out set, so a
misfit judged against each point's own noise looks too small to a chi-square test, yet
three seeds per size understate the spread between random subsets (see
:func:`relative_seed_spread`), which makes the same test reject laws that are right:
on 1,000 MNIST digits it rejected, at p = 3e-4, a law whose worst miss (at 126 samples,
2.7 points) was 1.2 standard deviations of that point's mean over ten seeds. The fit
quality is therefore the plainer figure: the largest miss, in standard deviations of
the point missed (``misfit``); a law is poor when it leaves the 95 % interval of a
measured point, widened for the number of points (Bonferroni, ``misfit_limit``).

Arrays in, dicts of numbers out: no FiftyOne here.
"""

from __future__ import annotations

import base64
import math
from statistics import NormalDist

import numpy as np

from fiftyone_prune.core import significance

#: The forms fitted; each fit records which one it kept and why.
FORMS = {"plateau": "a * n^(-b) + c", "power": "a * n^(-b)"}
#: Exponents searched (then refined between the best grid neighbours). Learning-curve
#: exponents of error against data size reported for vision and language models lie in
#: about 0.05-0.7 (Hestness et al. 2017); the grid is much wider so that the edge is
#: never what decides a fit.
EXPONENTS = np.geomspace(0.02, 4.0, 80)
#: The random learning curve: sizes spaced geometrically from max(MIN_FRACTION of the
#: training pool, MIN_PER_CLASS per class) to the whole pool, NUM_SIZES of them.
MIN_FRACTION = 0.02
MIN_PER_CLASS = 5
NUM_SIZES = 7
#: A fit needs this many distinct sizes: three parameters and one more to judge them.
MIN_SIZES = 4
#: Answers (random-equivalent sizes, projections) are given up to this factor beyond the
#: measured sizes (marked as extrapolations) and refused farther out. 4 = two doublings:
#: the projection check of docs/evaluation/scaling.md (fit on sizes up to a half and up
#: to a quarter of the pool, predict the whole pool) is what supports it.
MAX_EXTRAPOLATION = 4.0
#: A ratio or projection whose 95 % interval spans more than this factor (high / low) is
#: called too noisy to give.
NOISY_SPAN = 4.0
_NORMAL = NormalDist()
Z95 = significance.Z95


# ---------------------------------------------------------------------------
# Which sizes the random curve needs
# ---------------------------------------------------------------------------


def curve_sizes(pool: int, num_classes: int, existing=()) -> list[int]:
    """The random-subset sizes to add to ``existing`` ones for a learning curve.

    The curve spans ``max(MIN_FRACTION * pool, MIN_PER_CLASS * num_classes)`` to
    ``pool`` in geometric steps of ``(pool / smallest)^(1 / (NUM_SIZES - 1))`` (about
    1.9x for the defaults). Only what is missing is added: the smallest size, and
    geometrically spaced sizes inside every gap between neighbouring measured sizes that
    is about two steps or wider (a gap of ``r`` gets ``round(log r / log step) - 1``);
    the evaluation's random points at its kept fractions already form most of the curve.

    Args:
        pool: the training pool's size (the full set is always a point)
        num_classes: the number of classes (a probe needs a few samples of each before
            its error follows a power law)
        existing (()): sizes already measured

    Returns:
        the sizes to add, ascending (may be empty)
    """
    if pool < 1:
        raise ValueError(f"the training pool is empty (pool={pool})")
    smallest = min(pool, max(math.ceil(MIN_FRACTION * pool),
                             MIN_PER_CLASS * max(1, num_classes)))
    if smallest >= pool:
        return []
    step = (pool / smallest) ** (1 / (NUM_SIZES - 1))
    have = {int(s) for s in existing} | {int(pool)}
    # a measured size within half a step of the smallest wanted one stands in for it
    near = [s for s in have if smallest / math.sqrt(step) <= s <= smallest * math.sqrt(step)]
    bottom = min(near) if near else smallest
    anchors = sorted({bottom} | {s for s in have if s >= bottom})
    added = {bottom} - have
    for low, high in zip(anchors, anchors[1:]):
        intervals = round(math.log(high / low) / math.log(step))
        if intervals > 1:
            added.update(int(round(v)) for v in np.geomspace(low, high, intervals + 1)[1:-1])
    return sorted(added - have)


# ---------------------------------------------------------------------------
# Points: measured error and its paired resamples
# ---------------------------------------------------------------------------


def relative_seed_spread(points) -> float | None:
    """The spread of held-out error between fits of one size, relative to the error,
    pooled over the points of a curve that have several fits (None when none has).

    Why pooled: three seeds estimate a variance with two degrees of freedom, which is
    often off by a factor of three either way; a curve of seven sizes pools fourteen.
    Measured on 1,000 MNIST digits (1,500 held out), ten random subsets of 126 spread
    by 2.3 points of accuracy where the evaluation's three seeds had spread by 1.2, and
    a law that was right looked like a poor fit. The spread between random subsets
    shrinks with the error (ten subsets each at 79, 126, 200, 316: sd 2.5, 2.3, 1.4, 0.9
    points at errors 35, 27, 22, 18 %), so it is pooled relative to the error.

    Args:
        points: ``[(num_fits, num_heldout) correctness]``

    Returns:
        ``sqrt(sum((fits - 1) * var / error^2) / sum(fits - 1))``, the per-fit standard
        deviation of the error divided by the error
    """
    num, den = 0.0, 0
    for correct in points:
        correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
        if len(correct) < 2:
            continue
        errors = 1.0 - correct.mean(axis=1)
        if errors.mean() <= 0:
            continue
        num += (len(correct) - 1) * float(np.var(errors, ddof=1)) / errors.mean() ** 2
        den += len(correct) - 1
    return math.sqrt(num / den) if den else None


def point_draws(bootstrap: significance.HeldoutBootstrap, correct, rng,
                relative_spread: float | None = None):
    """A curve point's held-out error, its standard deviation, and one error per
    bootstrap resample (the same held-out resamples for every point: paired).

    Args:
        bootstrap: the evaluation's :class:`~fiftyone_prune.core.significance.HeldoutBootstrap`
        correct: ``(num_fits, num_heldout)`` per-sample correctness of the point's fits
        rng: a numpy Generator for the seed-noise draws
        relative_spread (None): a pooled per-fit spread relative to the error
            (:func:`relative_seed_spread`); a point of several fits then uses the larger
            of its own seed variance and the pooled one (a single, deterministic fit
            has none)

    Returns:
        ``(error, sd, draws)``: ``draws`` has one error per resample, the held-out
        resample's error plus a normal draw with the point's seed variance
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    per_sample = correct.mean(axis=0)
    error = 1.0 - float(per_sample.mean())
    accuracy = bootstrap.weights.astype(np.float64) @ per_sample / bootstrap.num_heldout
    seed_var = significance.seed_variance(correct)
    if relative_spread is not None and len(correct) > 1:
        seed_var = max(seed_var, (relative_spread * error) ** 2 / len(correct))
    draws = 1.0 - accuracy + math.sqrt(seed_var) * rng.standard_normal(len(accuracy))
    sd = math.sqrt(float(np.var(accuracy, ddof=1)) + seed_var)
    return error, sd, draws


# ---------------------------------------------------------------------------
# Fitting error(n) = a * n^(-b) + c, all resamples at once
# ---------------------------------------------------------------------------


def _solve(x, errors, weights):
    """Weighted least squares of ``errors ~ a * x + c`` for every (resample, exponent).

    Args:
        x: ``(R or 1, G, m)`` the regressor ``(n / n_max)^(-b)`` per exponent
        errors: ``(R, m)``
        weights: ``(m,)``

    Returns:
        ``(a, c, sse)``, each ``(R, G)``
    """
    w = weights
    s_w = w.sum()
    s_x = (x * w).sum(-1)
    s_xx = (x * x * w).sum(-1)
    s_y = (errors @ w)[:, None]
    s_xy = np.einsum("rgm,rm->rg", x * w, errors) if x.shape[0] > 1 else \
        (errors * w) @ x[0].T
    s_yy = ((errors ** 2) @ w)[:, None]
    a_pure = s_xy / s_xx
    det = s_w * s_xx - s_x ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (s_w * s_xy - s_x * s_y) / det
        c = (s_xx * s_y - s_x * s_xy) / det
    # c < 0 (or a singular system, b -> 0): the best admissible fit has c = 0
    bad = ~np.isfinite(a) | ~np.isfinite(c) | (c < 0)
    a = np.where(bad, a_pure, a)
    c = np.where(bad, 0.0, c)
    # a < 0: error grows with n; the best admissible fit is flat, c = mean error
    flat = a < 0
    a = np.where(flat, 0.0, a)
    c = np.where(flat, np.broadcast_to(s_y / s_w, a.shape), c)
    sse = s_yy - 2 * a * s_xy - 2 * c * s_y + a * a * s_xx + 2 * a * c * s_x + c * c * s_w
    return a, c, np.maximum(sse, 0.0)


def _fit(sizes, errors, weights):
    """``(a, b, c, sse)`` per row of ``errors`` (``(R, m)``): weighted least squares of
    ``a * n^(-b) + c`` with ``a, c >= 0``."""
    sizes = np.asarray(sizes, dtype=np.float64)
    log_rel = np.log(sizes / sizes.max())  # <= 0
    rows = np.arange(len(errors))
    x = np.exp(-EXPONENTS[:, None] * log_rel[None, :])[None]  # (1, G, m)
    a, c, sse = _solve(x, errors, weights)
    best = np.argmin(sse, axis=1)
    # refine between the best exponent's grid neighbours, per resample
    low = EXPONENTS[np.maximum(best - 1, 0)]
    high = EXPONENTS[np.minimum(best + 1, len(EXPONENTS) - 1)]
    fine = np.linspace(0.0, 1.0, 41)
    exps = low[:, None] * (high / low)[:, None] ** fine[None, :]  # (R, 41)
    x = np.exp(-exps[:, :, None] * log_rel[None, None, :])
    a, c, sse = _solve(x, errors, weights)
    best = np.argmin(sse, axis=1)
    b = exps[rows, best]
    # a * (n / n_max)^(-b) = (a * n_max^b) * n^(-b)
    return a[rows, best] * sizes.max() ** b, b, c[rows, best], sse[rows, best]


def law(params, n):
    """``a * n^(-b) + c`` at sizes ``n`` (``params`` = ``(a, b, c)``)."""
    a, b, c = params
    return a * np.asarray(n, dtype=np.float64) ** (-b) + c


def inverse_law(a, b, c, error):
    """The size at which ``a * n^(-b) + c`` equals ``error`` (element-wise; ``inf``
    where the law never gets that low: ``error <= c`` or a flat law)."""
    a, b, c, error = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                           for v in (a, b, c, error)))
    out = np.full(a.shape, np.inf)
    ok = (error > c) & (a > 0) & (b > 0)
    with np.errstate(over="ignore", divide="ignore"):
        out[ok] = ((error[ok] - c[ok]) / a[ok]) ** (-1.0 / b[ok])
    return out


def _interval(values):
    """The 2.5 % and 97.5 % order statistics (infinities allowed)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    return float(v[int(math.floor(0.025 * (len(v) - 1)))]), \
        float(v[int(math.ceil(0.975 * (len(v) - 1)))])


def pack_draws(draws) -> str:
    """Per-resample ``(a, b, c)`` as base64 float32, to store with a run."""
    return base64.b64encode(np.asarray(draws, dtype=np.float32).tobytes()).decode("ascii")


def unpack_draws(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).astype(
        np.float64).reshape(-1, 3)


def fit_curve(strategy: str, points, bootstrap: significance.HeldoutBootstrap, rng) -> dict:
    """Fits ``error(n) = a * n^(-b) + c`` to one curve, with intervals by refitting on
    every paired bootstrap resample, and says when the curve supports no answers.

    Args:
        strategy: the curve's name (``"random"``, ``"hard"``, ...)
        points: ``[(kept, correct)]``, ``correct`` ``(num_fits, num_heldout)`` booleans;
            points of equal size are merged (their fits pooled)
        bootstrap: the evaluation's held-out bootstrap (paired across curves)
        rng: numpy Generator for the seed-noise draws

    Returns:
        a dict: ``strategy``, ``form`` (``"plateau"`` or ``"power"``), ``formula``,
        ``form_reason``; ``a``, ``b``, ``c`` each with ``_low``/``_high`` (95 %);
        ``misfit`` (the fit-quality figure: the largest miss in standard deviations of
        the point missed) and ``misfit_limit`` (above it the fit is poor), ``rmse``
        (in error, not points); ``seed_spread`` (:func:`relative_seed_spread`);
        ``points`` (``kept``, ``error``, ``low``, ``high``, ``fits``); ``status``
        (``"ok"``, ``"too_few_sizes"``,
        ``"flat"``, ``"not_monotone"``, ``"poor_fit"``) and ``reason`` (None when
        ``ok``); ``draws`` (packed per-resample parameters, for projections later).
        The per-resample errors are returned under the private key ``_draws_errors``
        (not stored).
    """
    merged = {}
    for kept, correct in points:
        merged.setdefault(int(kept), []).append(np.atleast_2d(np.asarray(correct, dtype=bool)))
    sizes = np.array(sorted(merged), dtype=np.float64)
    merged = [np.concatenate(merged[int(size)]) for size in sizes]
    spread = relative_seed_spread(merged)
    errs, sds, draws, fits = [], [], [], []
    for correct in merged:
        e, sd, d = point_draws(bootstrap, correct, rng, spread)
        errs.append(e), sds.append(sd), draws.append(d), fits.append(len(correct))
    errs, sds = np.array(errs), np.array(sds)
    draws = np.stack(draws, axis=1) if len(draws) else np.zeros((0, 0))  # (R, m)
    row = dict(strategy=strategy, seed_spread=spread, points=[
        dict(kept=int(n), error=float(e), low=float(e - Z95 * s), high=float(e + Z95 * s),
             fits=int(f)) for n, e, s, f in zip(sizes, errs, sds, fits)])
    m = len(sizes)
    if m < MIN_SIZES:
        return _refused(row, "too_few_sizes",
                        f"{m} sizes measured; a law of 3 parameters needs at least "
                        f"{MIN_SIZES}")
    # weights: 1 / sd^2, with a floor of half a held-out sample's worth of error (a
    # point where every fit got every held-out sample right has a zero-width interval)
    floor = 0.5 / bootstrap.num_heldout
    weights = 1.0 / np.maximum(sds, floor) ** 2

    status, reason = _shape_check(sizes, errs, draws)
    a, b, c, _ = (float(v[0]) for v in _fit(sizes, errs[None], weights))
    ra, rb, rc, _ = _fit(sizes, draws, weights)
    resampled = np.stack([ra, rb, rc], axis=1)
    predicted = law((a, b, c), sizes)
    residuals = errs - predicted
    # fit quality: the largest miss in units of the point's own standard deviation (the
    # one of its 95 % interval); the law must stay inside every point's interval,
    # widened for the number of points (Bonferroni)
    standardised = np.abs(residuals) / np.maximum(sds, floor)
    misfit_limit = _NORMAL.inv_cdf(1 - 0.025 / m)
    if c > 0:
        form = "plateau"
        form_reason = (f"the least-squares plateau is c = {c:.4f} (95 % interval "
                       f"{_interval(rc)[0]:.4f} to {_interval(rc)[1]:.4f}): the measured "
                       f"sizes show the error levelling off")
    else:
        form = "power"
        form_reason = ("the plateau c (constrained to c >= 0) fits best at 0: no levelling "
                       "off is visible in the measured sizes, so the law is a pure power "
                       "law; the resamples refit c, so its uncertainty is in the intervals")
    row.update(form=form, formula=FORMS[form], form_reason=form_reason,
               a=a, b=b, c=c, misfit=float(standardised.max()),
               misfit_limit=float(misfit_limit),
               rmse=float(np.sqrt(np.mean(residuals ** 2))),
               draws=pack_draws(resampled), _draws_errors=draws)
    for name, values in zip("abc", (ra, rb, rc)):
        row[f"{name}_low"], row[f"{name}_high"] = _interval(values)
    if status == "ok" and standardised.max() > misfit_limit:
        worst = int(np.argmax(standardised))
        status, reason = "poor_fit", (
            f"poor fit: at {int(sizes[worst]):,} samples the law gives error "
            f"{predicted[worst]:.3f} where {errs[worst]:.3f} was measured, "
            f"{standardised[worst]:.1f} standard deviations off (more than the "
            f"{misfit_limit:.1f} that {m} points allow by chance at 95 %)")
    row.update(status=status, reason=reason)
    return row


def _refused(row, status, reason):
    row.update(form=None, formula=None, form_reason=None, a=None, b=None, c=None,
               a_low=None, a_high=None, b_low=None, b_high=None, c_low=None, c_high=None,
               misfit=None, misfit_limit=None, rmse=None, draws=None, status=status,
               reason=reason)
    return row


def _shape_check(sizes, errs, draws):
    """``("flat" | "not_monotone" | "ok", reason)``: does the error fall with size
    beyond the noise, and never rise beyond it? Differences are paired (the same
    resamples), their sd read from the resamples."""
    drop = errs[0] - errs[-1]
    drop_sd = float(np.std(draws[:, 0] - draws[:, -1], ddof=1))
    if drop - Z95 * drop_sd <= 0:
        return "flat", (
            f"flat: the error goes from {errs[0]:.3f} at {int(sizes[0]):,} samples to "
            f"{errs[-1]:.3f} at {int(sizes[-1]):,}, a fall within the noise (95 % "
            f"interval of the fall {drop - Z95 * drop_sd:+.3f} to {drop + Z95 * drop_sd:+.3f}): "
            f"more data does not measurably help here (saturated), so no size can be "
            f"matched to an error")
    # a rise between neighbouring sizes, beyond the noise of m - 1 comparisons
    z = _NORMAL.inv_cdf(1 - 0.025 / (len(sizes) - 1))
    for i in range(len(sizes) - 1):
        rise = errs[i + 1] - errs[i]
        rise_sd = float(np.std(draws[:, i + 1] - draws[:, i], ddof=1))
        if rise - z * rise_sd > 0:
            return "not_monotone", (
                f"not monotone: the error rises from {errs[i]:.3f} at {int(sizes[i]):,} "
                f"samples to {errs[i + 1]:.3f} at {int(sizes[i + 1]):,}, beyond the noise; "
                f"a law that falls with size does not describe this curve")
    return "ok", None


# ---------------------------------------------------------------------------
# Answers: random-equivalent size and samples needed
# ---------------------------------------------------------------------------


def _measured_range(fit):
    kept = [p["kept"] for p in fit["points"]]
    return min(kept), max(kept)


def _count(x) -> str:
    x = int(round(x))
    return f"{x:,} sample{'' if x == 1 else 's'}"


def _size_answer(fit, target, target_draws, what):
    """``(value, low, high, status, reason)`` of the size at which ``fit``'s law reaches
    error ``target`` (per resample: ``target_draws``, paired), with the refusals and the
    extrapolation mark shared by worth ratios and projections. ``value`` is None when
    refused; ``low``/``high`` are the interval whenever one exists (for the words of a
    refusal)."""
    if fit["status"] != "ok":
        return None, None, None, "no_curve", (
            f"no {what}: the {fit['strategy']} curve gives none ({fit['reason']})")
    resampled = unpack_draws(fit["draws"])
    value = float(inverse_law(fit["a"], fit["b"], fit["c"], target))
    low, high = _interval(inverse_law(resampled[:, 0], resampled[:, 1], resampled[:, 2],
                                      target_draws))
    smallest, largest = _measured_range(fit)
    if not math.isfinite(value):
        return None, low, high, "below_plateau", (
            f"no {what}: error {target:.3f} is at or below the {fit['strategy']} curve's "
            f"plateau (c = {fit['c']:.3f}): by the fit, no number of {fit['strategy']} "
            f"samples reaches it")
    if not math.isfinite(high):
        return None, low, high, "unbounded", (
            f"no {what}: error {target:.3f} is within the noise of the {fit['strategy']} "
            f"curve's plateau (c = {fit['c']:.3f}, 95 % interval {fit['c_low']:.3f} to "
            f"{fit['c_high']:.3f}): the size's interval has no upper end")
    if high > MAX_EXTRAPOLATION * largest:
        return None, low, high, "beyond_fit", (
            f"no {what}: it could be as many as {_count(high)}, more than "
            f"{MAX_EXTRAPOLATION:g}x the largest size measured ({largest:,}): beyond what "
            f"the fit supports")
    if low < smallest / MAX_EXTRAPOLATION:
        return None, low, high, "beyond_fit", (
            f"no {what}: it could be as few as {_count(low)}, under 1/{MAX_EXTRAPOLATION:g} "
            f"of the smallest size measured ({smallest:,}): beyond what the fit supports")
    if low <= 0 or high / low > NOISY_SPAN:
        return None, low, high, "noisy", (
            f"no {what}: too noisy, anywhere from {_count(low)} to {_count(high)} (95 %); "
            f"hold out more samples or run more seeds")
    status = "extrapolated" if (low < smallest or high > largest) else "ok"
    return value, low, high, status, None


def selection_worth(random_fit: dict, strategy: str, fraction: float, kept: int, correct,
                    bootstrap: significance.HeldoutBootstrap, rng) -> dict:
    """The random-equivalent size of one selection and its worth ratio.

    The selection's measured held-out error is matched on the random curve's law; on
    every resample the selection's error (paired: the same held-out resample) is matched
    on that resample's refitted law, which gives the 95 % interval.

    Args:
        random_fit: :func:`fit_curve` of the random curve (with ``_draws_errors`` not
            needed; its ``draws`` are)
        strategy, fraction, kept: the selection (``kept`` samples)
        correct: ``(num_fits, num_heldout)`` per-sample correctness of its fits
        bootstrap: the same bootstrap the random curve was fitted with
        rng: numpy Generator for the seed-noise draws

    Returns:
        ``{strategy, fraction, kept, error, random_equivalent, equivalent_low,
        equivalent_high, ratio, ratio_low, ratio_high, status, reason}``: numbers None
        and a ``reason`` when none is given; ``status`` is ``"ok"``, ``"extrapolated"``
        (the interval reaches outside the measured random sizes) or why none is given
    """
    # a selection of several seeds is random subsets of some kind: its seed noise is
    # judged with the random curve's pooled spread too (the larger of the two)
    error, _, draws = point_draws(bootstrap, correct, rng, random_fit.get("seed_spread"))
    value, low, high, status, reason = _size_answer(random_fit, error, draws,
                                                    "random-equivalent size")
    if value is None and high is not None and math.isfinite(high) and high < kept:
        # no number, but the whole interval is below the selection's size: that much
        # is known whatever the exact equivalent
        reason += (f"; either way it is worth less than random data of its size (at most "
                   f"{int(round(high)):,} random samples, 95 %)")
    elif value is None and low is not None and low > kept:
        reason += (f"; either way it is worth more than random data of its size (at least "
                   f"{int(round(low)):,} random samples, 95 %)")
    row = dict(strategy=strategy, fraction=float(fraction), kept=int(kept), error=error,
               random_equivalent=None, equivalent_low=None, equivalent_high=None,
               ratio=None, ratio_low=None, ratio_high=None, status=status, reason=reason)
    if value is not None:
        row.update(random_equivalent=int(round(value)), equivalent_low=int(round(low)),
                   equivalent_high=int(round(high)), ratio=value / kept,
                   ratio_low=low / kept, ratio_high=high / kept)
    return row


def samples_needed(fit: dict, target_error: float) -> dict:
    """The inverse projection: samples ``fit``'s law needs to reach ``target_error``,
    with a 95 % interval from the refitted laws of the resamples.

    Args:
        fit: a :func:`fit_curve` row (as stored: ``draws`` packed)
        target_error: held-out error to reach, in (0, 1)

    Returns:
        ``{strategy, target_error, target_accuracy, samples, low, high, extrapolated,
        status, reason}``; ``samples`` None and a ``reason`` when refused
    """
    target_error = float(target_error)
    if not 0 < target_error < 1:
        raise ValueError(f"target error must be in (0, 1), got {target_error}")
    # the target is a number, not a measurement: every resample's law is inverted at it
    value, low, high, status, reason = _size_answer(fit, target_error, target_error,
                                                    "projection")
    largest = _measured_range(fit)[1] if fit.get("points") else None
    if value is not None and fit["strategy"] != "random" and high > largest:
        # a strategy's curve ends where it keeps the whole pool it selects from: keeping
        # more needs a larger pool, whose curve nobody measured (random's law is about
        # more data; a strategy's is about pruning this pool)
        value, status, reason = None, "beyond_pool", (
            f"no projection: {fit['strategy']} could need up to {_count(high)}, more than "
            f"the {largest:,} it selects from here; keeping more needs a larger pool, "
            f"whose {fit['strategy']} curve was not measured (random's row extrapolates "
            f"to more data)")
    given = value is not None
    return dict(strategy=fit["strategy"], target_error=target_error,
                target_accuracy=1.0 - target_error,
                samples=int(round(value)) if given else None,
                low=int(round(low)) if given else None,
                high=int(round(high)) if given else None,
                extrapolated=status == "extrapolated", status=status, reason=reason)


def predicted_error(fit: dict, size) -> tuple[float, float, float]:
    """The law's held-out error at ``size`` samples with its 95 % interval (the refitted
    laws of the resamples): the forward projection, e.g. to check a law fitted on small
    sizes against a larger one measured later.

    Returns:
        ``(error, low, high)``

    Raises:
        ValueError: when the curve has no law (``fit["a"]`` is None)
    """
    if fit.get("a") is None:
        raise ValueError(f"the {fit['strategy']} curve has no law: {fit['reason']}")
    resampled = unpack_draws(fit["draws"])
    low, high = _interval(law(resampled.T, float(size)))
    return float(law((fit["a"], fit["b"], fit["c"]), float(size))), low, high


# ---------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------


def describe_worth(row: dict) -> str:
    """``"hard at 40% (8,000 kept) is worth 10,400 random samples (1.30x, 95 % CI
    1.12x-1.49x)"``, or why no number is given."""
    head = f"{row['strategy']} at {row['fraction']:.0%} ({row['kept']:,} kept)"
    if row["ratio"] is None:
        return f"{head}: {row['reason']}"
    text = (f"{head} is worth {row['random_equivalent']:,} random samples "
            f"({row['ratio']:.2f}x, 95 % CI {row['ratio_low']:.2f}x-{row['ratio_high']:.2f}x)")
    if row["ratio_high"] < 1:
        text += ": worth less than random data of its size"
    elif row["ratio_low"] > 1:
        text += ": worth more than random data of its size"
    if row["status"] == "extrapolated":
        text += " (extrapolated beyond the measured random sizes)"
    return text


#: A refusal in a few words, for narrow places (the App panel); ``reason`` has the rest.
SHORT_REASONS = {
    "no_curve": "no random curve", "below_plateau": "below random's plateau",
    "unbounded": "at random's plateau", "beyond_fit": "beyond the fit", "noisy": "too noisy",
    "beyond_pool": "beyond the pool",
}


def describe_worth_short(row: dict) -> str:
    """``"hard 40% (8,000): 1.30x (1.12-1.49), 10,400 random"`` or ``"hard 10% (1,600):
    no ratio, too noisy"``."""
    head = f"{row['strategy']} {row['fraction']:.0%} ({row['kept']:,})"
    if row["ratio"] is None:
        return f"{head}: no ratio, {SHORT_REASONS.get(row['status'], row['status'])}"
    return (f"{head}: {row['ratio']:.2f}x ({row['ratio_low']:.2f}-{row['ratio_high']:.2f}), "
            f"{row['random_equivalent']:,} random"
            + (", extrapolated" if row["status"] == "extrapolated" else ""))


def describe_fit(row: dict) -> str:
    """One line: the law, its intervals and quality, or why it gives no answers."""
    sizes = [p["kept"] for p in row["points"]]
    where = f"{len(sizes)} sizes, {min(sizes):,} to {max(sizes):,}"
    if row.get("a") is None or row["status"] in ("flat", "not_monotone"):
        # a law fitted to a flat or rising curve describes nothing: not shown
        return f"{row['strategy']}: no law ({where}): {row['reason']}"
    law_text = (f"error(n) = {row['a']:.3g} * n^(-{row['b']:.3f})"
                + (f" + {row['c']:.4f}" if row["form"] == "plateau" else ""))
    text = (f"{row['strategy']}: {law_text} ({where}; b 95 % CI {row['b_low']:.3f} to "
            f"{row['b_high']:.3f}"
            + (f", c {row['c_low']:.4f} to {row['c_high']:.4f}" if row["form"] == "plateau"
               else "")
            + f"; rmse {100 * row['rmse']:.2f} points, largest miss "
              f"{row['misfit']:.1f} sd of its point)")
    if row["status"] != "ok":
        text += f": {row['reason']}"
    return text


def describe_projection(row: dict) -> str:
    head = f"{row['strategy']}: accuracy {row['target_accuracy']:.3f}"
    if row["samples"] is None:
        return f"{head}: {row['reason']}"
    text = (f"{head} needs about {row['samples']:,} samples (95 % CI {row['low']:,} to "
            f"{row['high']:,})")
    if row["extrapolated"]:
        text += ", an extrapolation beyond the measured sizes"
    return text
