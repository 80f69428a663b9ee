"""Intervals of held-out accuracy and of differences to random (no FiftyOne)."""

import numpy as np
import pytest

from fiftyone_prune.core import significance as sig


def test_bootstrap_matches_the_binomial_standard_error():
    rng = np.random.default_rng(0)
    correct = rng.random(2000) < 0.8
    boot = sig.HeldoutBootstrap(len(correct), seed=1)
    expected = np.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))
    assert boot.sd_of_mean(correct) == pytest.approx(expected, rel=0.1)


def test_one_differing_sample_in_fifty_is_no_win_and_forty_in_a_thousand_is():
    ref = np.zeros(50, dtype=bool)
    ref[:40] = True
    better = ref.copy()
    better[45] = True  # one more sample right: +2 points
    diff, low, high = sig.difference_interval(sig.HeldoutBootstrap(50), better[None], ref[None])
    assert diff == pytest.approx(0.02) and low < 0 < high

    ref = np.zeros(1000, dtype=bool)
    ref[:800] = True
    better = ref.copy()
    better[900:940] = True  # 40 more right, none wrong: +4 points, paired
    diff, low, high = sig.difference_interval(sig.HeldoutBootstrap(1000), better[None], ref[None])
    assert diff == pytest.approx(0.04) and low > 0.02


def test_seed_variance_widens_the_interval():
    rng = np.random.default_rng(3)
    base = rng.random(500) < 0.85
    one = base[None]
    # three random seeds whose accuracies spread by several points
    seeds = np.stack([base ^ (rng.random(500) < p) for p in (0.01, 0.06, 0.12)])
    boot = sig.HeldoutBootstrap(500)
    _, lo1, hi1 = sig.accuracy_interval(boot, one)
    _, lo3, hi3 = sig.accuracy_interval(boot, seeds)
    assert hi3 - lo3 > 1.5 * (hi1 - lo1)


def test_same_seed_same_interval_and_packing_roundtrips():
    rng = np.random.default_rng(5)
    a, b = rng.random((2, 3, 301)) < 0.7
    first = sig.difference_interval(sig.HeldoutBootstrap(301, seed=7), a, b)
    second = sig.difference_interval(sig.HeldoutBootstrap(301, seed=7), a, b)
    assert first == second
    assert (sig.unpack_correct(sig.pack_correct(a[0]), 301) == a[0]).all()
