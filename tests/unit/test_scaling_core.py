"""The scaling view's arithmetic (no FiftyOne, no probe): power-law fits with refitted
bootstrap intervals, random-equivalent sizes, projections, and the refusals.

Curves here are drawn from a known law: each held-out sample of a point is right with
probability ``1 - law(n)``, so the answers are known. The known-answer tests on real
data and a real probe are in tests/integration/test_scaling.py."""

import math

import numpy as np
import pytest

from fiftyone_prune.core import scaling
from fiftyone_prune.core.significance import HeldoutBootstrap

TRUE = (3.0, 0.5, 0.05)  # error(n) = 3 n^-0.5 + 0.05: 0.35 at 100, 0.07 at 25,000
SIZES = [100, 200, 400, 800, 1600, 3200, 6400]


def _correct(error, fits, num_heldout, rng):
    return rng.random((fits, num_heldout)) >= error


def _curve(sizes=SIZES, params=TRUE, num_heldout=5000, fits=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(n, _correct(scaling.law(params, n), fits, num_heldout, rng)) for n in sizes]


def _fit(points, num_heldout=5000, name="random"):
    return scaling.fit_curve(name, points, HeldoutBootstrap(num_heldout, seed=0),
                             np.random.default_rng(1))


def test_fit_recovers_a_known_law_within_its_intervals():
    fit = _fit(_curve())
    assert fit["status"] == "ok" and fit["reason"] is None
    for name, true in zip("abc", TRUE):
        assert fit[f"{name}_low"] <= true <= fit[f"{name}_high"], (name, fit)
    assert fit["form"] == "plateau" and "levelling off" in fit["form_reason"]
    assert fit["misfit"] < fit["misfit_limit"] and fit["rmse"] < 0.01
    assert [p["kept"] for p in fit["points"]] == SIZES
    assert all(p["low"] < p["error"] < p["high"] for p in fit["points"])
    assert "_draws_errors" in fit and scaling.unpack_draws(fit["draws"]).shape[1] == 3


def test_a_pure_power_law_is_reported_as_one():
    fit = _fit(_curve(params=(3.0, 0.5, 0.0)))
    assert fit["status"] == "ok"
    assert fit["c_low"] == 0.0 and fit["c"] < 0.01
    if fit["c"] == 0:
        assert fit["form"] == "power" and "pure power law" in fit["form_reason"]


def test_same_inputs_same_fit():
    first, second = _fit(_curve()), _fit(_curve())
    first.pop("_draws_errors"), second.pop("_draws_errors")
    assert first == second


def test_random_equivalent_of_a_known_selection():
    """A selection of 400 whose error is random's at 1,200 is worth 3x; one drawn from
    the random law at its own size is worth 1x; both intervals say so."""
    boot = HeldoutBootstrap(5000, seed=0)
    rng = np.random.default_rng(7)
    fit = scaling.fit_curve("random", _curve(), boot, rng)
    better = _correct(scaling.law(TRUE, 1200), 3, 5000, rng)
    row = scaling.selection_worth(fit, "hard", 0.1, 400, better, boot, rng)
    assert row["status"] == "ok" and row["reason"] is None
    assert row["ratio_low"] < 3 < row["ratio_high"] and row["ratio_low"] > 1.5
    assert row["random_equivalent"] == pytest.approx(1200, rel=0.35)
    assert row["equivalent_low"] < row["random_equivalent"] < row["equivalent_high"]
    assert "worth more than random data of its size" in scaling.describe_worth(row)
    same = _correct(scaling.law(TRUE, 400), 3, 5000, rng)
    row = scaling.selection_worth(fit, "random2", 0.1, 400, same, boot, rng)
    assert row["ratio_low"] < 1 < row["ratio_high"]


def test_flat_curve_gives_no_ratio_and_says_why():
    boot = HeldoutBootstrap(2000, seed=0)
    rng = np.random.default_rng(3)
    flat = [(n, _correct(0.2, 3, 2000, rng)) for n in SIZES]
    fit = scaling.fit_curve("random", flat, boot, rng)
    assert fit["status"] == "flat" and fit["reason"].startswith("flat:")
    assert scaling.describe_fit(fit).startswith("random: no law (7 sizes")  # no law shown
    row = scaling.selection_worth(fit, "hard", 0.2, 400, _correct(0.1, 1, 2000, rng), boot, rng)
    assert row["ratio"] is None and row["random_equivalent"] is None
    assert row["status"] == "no_curve" and "flat" in row["reason"]
    needed = scaling.samples_needed(fit, 0.1)
    assert needed["samples"] is None and "flat" in needed["reason"]


def test_curve_that_rises_is_not_monotone():
    boot = HeldoutBootstrap(5000, seed=0)
    rng = np.random.default_rng(4)
    errors = [0.40, 0.30, 0.22, 0.30, 0.12, 0.10]  # 0.22 -> 0.30: 8 points on 5,000
    points = [(n, _correct(e, 3, 5000, rng)) for n, e in zip(SIZES, errors)]
    fit = scaling.fit_curve("random", points, boot, rng)
    assert fit["status"] == "not_monotone"
    assert "rises from 0.2" in fit["reason"] and "400 samples" in fit["reason"]


def test_a_step_is_a_poor_fit():
    boot = HeldoutBootstrap(20000, seed=0)
    rng = np.random.default_rng(5)
    errors = [0.40, 0.40, 0.40, 0.40, 0.10, 0.10, 0.10]
    points = [(n, _correct(e, 3, 20000, rng)) for n, e in zip(SIZES, errors)]
    fit = scaling.fit_curve("random", points, boot, rng)
    assert fit["status"] == "poor_fit" and fit["misfit"] > fit["misfit_limit"]
    assert "poor fit" in fit["reason"]
    assert scaling.samples_needed(fit, 0.2)["samples"] is None


def test_too_few_sizes_fit_nothing():
    fit = _fit(_curve(sizes=[100, 400, 1600]))
    assert fit["status"] == "too_few_sizes" and fit["a"] is None
    assert "at least 4" in fit["reason"]
    assert "random: no law (3 sizes, 100 to 1,600)" in scaling.describe_fit(fit)


def test_projection_inside_outside_and_beyond_the_measured_sizes():
    fit = _fit(_curve(num_heldout=20000), num_heldout=20000)
    inside = scaling.samples_needed(fit, scaling.law(TRUE, 1000))
    assert inside["status"] == "ok" and not inside["extrapolated"]
    assert inside["low"] <= 1000 <= inside["high"]
    assert inside["target_accuracy"] == pytest.approx(1 - scaling.law(TRUE, 1000))
    # twice the largest size: given, marked as an extrapolation
    outside = scaling.samples_needed(fit, scaling.law(TRUE, 12800))
    if outside["samples"] is not None:
        assert outside["extrapolated"] and outside["low"] <= 12800 <= outside["high"]
        assert "extrapolation" in scaling.describe_projection(outside)
    else:
        assert outside["status"] in ("noisy", "beyond_fit")
    # far below the measured errors' range, or below the plateau: refused, with why
    far = scaling.samples_needed(fit, scaling.law(TRUE, 10 ** 6))
    assert far["samples"] is None and far["status"] in ("beyond_fit", "unbounded")
    below = scaling.samples_needed(fit, 0.01)
    assert below["status"] == "below_plateau" and "plateau" in below["reason"]
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        scaling.samples_needed(fit, 1.5)


def test_a_strategy_is_not_projected_beyond_the_pool_it_selects_from():
    fit = _fit(_curve(num_heldout=20000), num_heldout=20000, name="hard")
    inside = scaling.samples_needed(fit, scaling.law(TRUE, 1000))
    assert inside["samples"] is not None and inside["low"] <= 1000 <= inside["high"]
    beyond = scaling.samples_needed(fit, scaling.law(TRUE, 12800))
    assert beyond["samples"] is None and beyond["status"] == "beyond_pool"
    assert "more than the 6,400 it selects from here" in beyond["reason"]


def test_forward_prediction_from_half_the_sizes_covers_the_larger_one():
    points = _curve(num_heldout=5000)
    half = [(n, c) for n, c in points if n <= 3200]
    fit = _fit(half)
    error, low, high = scaling.predicted_error(fit, 6400)
    measured = 1 - points[-1][1].mean()
    assert low <= measured <= high and low < error < high


def test_selection_far_below_the_curve_is_refused_but_said_to_be_worth_less():
    boot = HeldoutBootstrap(5000, seed=0)
    rng = np.random.default_rng(8)
    fit = scaling.fit_curve("random", _curve(), boot, rng)
    awful = _correct(0.8, 1, 5000, rng)  # worse than random at 100 by far
    row = scaling.selection_worth(fit, "hard", 0.3, 2000, awful, boot, rng)
    assert row["ratio"] is None and row["status"] == "beyond_fit"
    assert "worth less than random data of its size" in row["reason"]


def test_curve_sizes_add_only_the_missing_small_sizes():
    pool = 16000
    existing = [round(f * pool) for f in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)]
    added = scaling.curve_sizes(pool, 10, existing)
    assert added == [320, 716]  # 2 % of the pool, and one size between it and 10 %
    everything = sorted(set(added) | set(existing) | {pool})
    steps = np.diff(np.log(everything))
    assert steps.max() < math.log(2.7)  # no gap wider than 1.5 steps (1.9x each)
    # a small pool: at least 5 per class at the smallest size
    assert min(scaling.curve_sizes(480, 10, [])) == 50
    # a curve that already has every size needs nothing
    wanted = scaling.curve_sizes(16000, 10, [])
    assert scaling.curve_sizes(16000, 10, wanted) == []
    with pytest.raises(ValueError, match="empty"):
        scaling.curve_sizes(0, 10)
