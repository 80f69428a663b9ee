"""Unit and property tests for fiftyone_prune.core.selection (numpy only)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fiftyone_prune.core import selection as sel
from fiftyone_prune.core.selection import (
    ccs_select,
    cluster_complexity,
    default_ccs_beta,
    density_budgets,
    density_select,
    group_floors,
    kept_count,
    select,
    semdedup,
)

# database=None: no .hypothesis/ folder left in the checkout.
FAST = settings(max_examples=60, deadline=None, database=None)
QUICK = settings(deadline=None, database=None)


def _rank_hard(s):
    """Indices from hardest to easiest, lower index first among equal scores."""
    return sorted(range(len(s)), key=lambda i: (-s[i], i))


def _rank_easy(s):
    return sorted(range(len(s)), key=lambda i: (s[i], i))


# ---------------------------------------------------------------------------
# kept_count
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, keep, expected",
    [
        (10, 0.25, 3),    # 2.5 rounds half up
        (10, 0.15, 2),    # 1.5 rounds half up (Python's round gives 2 too, see next)
        (10, 0.45, 5),    # 4.5 -> 5; round() would give 4
        (3, 0.5, 2),      # 1.5 -> 2
        (100, 0.29, 29),  # 0.29 * 100 is 28.999999999999996 in binary floats
        (10, 0.01, 1),    # 0.1 -> at least one sample
        (10, 1.0, 10),    # float 1.0 is "everything"
        (10, 1, 1),       # int 1 is one sample
        (10, 10, 10),
        (10, 3, 3),
        (10, np.int64(4), 4),
        (10, np.float64(0.5), 5),
        (7, 0.5, 4),      # 3.5 -> 4
    ],
)
def test_kept_count_examples(n, keep, expected):
    assert kept_count(n, keep) == expected


@pytest.mark.parametrize(
    "n, keep, match",
    [
        (10, 0, "keeps nothing"),
        (10, -3, "keeps nothing"),
        (10, 0.0, "keeps nothing"),
        (10, -0.5, "keeps nothing"),
        (10, 1.5, "fraction above 1"),
        (10, 11, "more than the 10 samples"),
        (10, True, "bool"),
        (10, False, "bool"),
        (10, np.bool_(True), "bool"),
        (10, "0.5", "not a number"),
        (10, None, "not a number"),
        (10, float("nan"), "not finite"),
        (10, float("inf"), "not finite"),
        (0, 0.5, "num_samples is 0"),
        (0, 1, "num_samples is 0"),
    ],
)
def test_kept_count_errors(n, keep, match):
    with pytest.raises(ValueError, match=match):
        kept_count(n, keep)


@QUICK
@given(n=st.integers(1, 10**6), keep=st.floats(1e-6, 1.0))
def test_kept_count_fraction_is_round_half_up(n, keep):
    k = kept_count(n, keep)
    assert 1 <= k <= n
    exact = keep * n
    # Within half a sample of the exact product (or the minimum of 1).
    assert k == 1 or abs(k - exact) <= 0.5 + 1e-9


# ---------------------------------------------------------------------------
# group_floors
# ---------------------------------------------------------------------------


def _floors_by_loop(sizes, budget, ratio, priority=None):
    """Literal reading of the rule: ceil share, then cut largest-first one at a
    time; among equal floors the smallest priority (default: index) first."""
    sizes = list(sizes)
    priority = list(range(len(sizes))) if priority is None else list(priority)
    k = sum(1 for s in sizes if s > 0)
    if k == 0:
        return [0] * len(sizes)
    from fractions import Fraction

    share = math.ceil(Fraction(repr(float(ratio))) * budget / k)
    floors = [min(s, share) for s in sizes]
    while sum(floors) > budget:
        top = max(floors)
        cut = min((i for i in range(len(floors)) if floors[i] == top),
                  key=lambda i: (priority[i], i))
        floors[cut] -= 1
    return floors


@pytest.mark.parametrize(
    "sizes, budget, ratio, expected",
    [
        ([10, 10, 10, 10], 20, 0.5, [3, 3, 3, 3]),   # ceil(0.5*20/4) = ceil(2.5) = 3
        ([1, 10, 0, 10], 9, 1.0, [1, 3, 0, 3]),      # empty group: 0 and not counted (k=3)
        ([5, 5, 5], 4, 1.0, [1, 1, 2]),              # ceil(4/3)=2, sum 6 > 4: cut largest
        ([10, 10, 10], 10, 0.3, [1, 1, 1]),          # 0.3*10/3 is exactly 1
        ([10, 10, 10], 10, 0.0, [0, 0, 0]),          # ratio 0 disables floors
        ([2, 100, 100], 30, 0.5, [2, 5, 5]),         # ceil(15/3)=5, capped by size 2
        ([0, 0], 5, 0.5, [0, 0]),
        ([4, 6], 0, 0.5, [0, 0]),
        ([3, 3, 3, 3], 3, 1.0, [0, 1, 1, 1]),        # ceil(3/4)=1 each, sum 4 > 3
    ],
)
def test_group_floors_examples(sizes, budget, ratio, expected):
    out = group_floors(np.array(sizes), budget, ratio)
    assert out.dtype == np.int64
    assert out.tolist() == expected


@pytest.mark.parametrize("ratio", [-0.1, 1.1, float("nan"), "0.5", None])
def test_group_floors_rejects_bad_ratio(ratio):
    with pytest.raises(ValueError, match="balance_ratio"):
        group_floors(np.array([3, 3]), 4, ratio)


def test_group_floors_rejects_negative_sizes():
    with pytest.raises(ValueError, match="negative"):
        group_floors(np.array([3, -1]), 2, 0.5)


@QUICK
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=12),
    budget=st.integers(0, 400),
    ratio=st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0]),
)
def test_group_floors_matches_literal_rule(sizes, budget, ratio):
    budget = min(budget, sum(sizes))
    out = group_floors(np.array(sizes), budget, ratio)
    assert out.tolist() == _floors_by_loop(sizes, budget, ratio)
    assert out.sum() <= budget
    assert np.all((out >= 0) & (out <= np.array(sizes)))


# ---------------------------------------------------------------------------
# select: invariants for every strategy
# ---------------------------------------------------------------------------


@st.composite
def selection_case(draw):
    n = draw(st.integers(1, 60))
    # Integer-valued scores force plenty of ties.
    scores = np.array(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), float)
    budget = draw(st.integers(0, n))
    use_groups = draw(st.booleans())
    groups = (np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
              if use_groups else None)
    strategy = draw(st.sampled_from(sel.STRATEGIES))
    ratio = draw(st.sampled_from([0.0, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    return scores, budget, strategy, groups, ratio, seed


@FAST
@given(case=selection_case())
def test_select_invariants(case):
    scores, budget, strategy, groups, ratio, seed = case
    out = select(scores, budget, strategy, groups=groups, balance_ratio=ratio, seed=seed)
    assert out.dtype == np.int64
    assert out.size == budget
    assert np.all(np.diff(out) > 0)  # sorted and no duplicates
    if budget:
        assert out.min() >= 0 and out.max() < scores.size
    again = select(scores, budget, strategy, groups=groups, balance_ratio=ratio, seed=seed)
    assert np.array_equal(out, again)
    if groups is not None:
        labels, counts = np.unique(groups, return_counts=True)
        floors = group_floors(counts, budget, ratio)
        kept_per_group = np.array([np.isin(out, np.flatnonzero(groups == g)).sum()
                                   for g in labels])
        assert np.all(kept_per_group >= floors)


@FAST
@given(scores=st.lists(st.integers(0, 5), min_size=1, max_size=50), data=st.data())
def test_hard_and_easy_without_groups_are_exact_top_and_bottom(scores, data):
    s = np.array(scores, float)
    budget = data.draw(st.integers(0, s.size))
    assert select(s, budget, "hard").tolist() == sorted(_rank_hard(s)[:budget])
    assert select(s, budget, "easy").tolist() == sorted(_rank_easy(s)[:budget])


@FAST
@given(case=selection_case())
def test_hard_and_easy_with_groups_keep_a_prefix_of_each_group(case):
    # Floors and the fill both take the hardest remaining, so inside every
    # group the kept samples are exactly its hardest |kept| (resp. easiest).
    scores, budget, _, groups, ratio, _ = case
    assume(groups is not None)
    for strategy, rank in (("hard", _rank_hard), ("easy", _rank_easy)):
        out = set(select(scores, budget, strategy, groups=groups, balance_ratio=ratio).tolist())
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            order = [members[i] for i in rank(scores[members])]
            kept = [i for i in order if i in out]
            assert kept == order[: len(kept)]


def test_groups_change_the_result_when_floors_bind():
    # Without groups "hard" takes all of group 1; the floor forces group 0 in.
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7])
    groups = np.array([0, 0, 0, 1, 1, 1])
    assert select(scores, 3, "hard").tolist() == [3, 4, 5]
    # floor = ceil(1.0 * 3 / 2) = 2 each, cut to [1, 2]: group 0 keeps 1 (its hardest, 2)
    assert select(scores, 3, "hard", groups=groups, balance_ratio=1.0).tolist() == [2, 3, 4]


def test_string_group_labels_work():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7])
    groups = np.array(["cat", "cat", "cat", "dog", "dog", "dog"])
    assert select(scores, 2, "easy", groups=groups, balance_ratio=1.0).tolist() == [0, 5]


def test_random_depends_on_seed_and_is_uniform():
    s = np.linspace(0, 1, 100)
    a = select(s, 50, "random", seed=0)
    b = select(s, 50, "random", seed=1)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, select(s, 50, "random", seed=0))
    # Every index is kept with probability budget / n = 0.3.
    hits = np.zeros(10)
    for seed in range(2000):
        hits[select(np.zeros(10), 3, "random", seed=seed)] += 1
    assert np.all(np.abs(hits - 600) < 90)


def test_random_with_groups_depends_on_seed():
    s = np.zeros(200)
    groups = np.arange(200) % 4
    a = select(s, 40, "random", groups=groups, seed=3)
    assert np.array_equal(a, select(s, 40, "random", groups=groups, seed=3))
    assert not np.array_equal(a, select(s, 40, "random", groups=groups, seed=4))


def test_select_ccs_uses_default_beta_and_same_stream_as_ccs_select():
    rng = np.random.default_rng(7)
    s = rng.random(500)
    out = select(s, 50, "ccs", seed=11)
    assert np.array_equal(out, ccs_select(s, 50, default_ccs_beta(0.1), seed=11))
    # default beta at 10 % kept is 0.3: none of the 150 hardest survive
    assert not np.isin(out, np.argsort(-s)[:150]).any()
    assert np.array_equal(select(s, 50, "ccs", seed=11, ccs_beta=0.0),
                          ccs_select(s, 50, 0.0, seed=11))
    assert not np.array_equal(out, select(s, 50, "ccs", seed=12))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scores=[0.1, 0.2], budget=1, strategy="hardest"), "strategy"),
        (dict(scores=[0.1, 0.2], budget=3, strategy="hard"), "exceeds"),
        (dict(scores=[0.1, 0.2], budget=-1, strategy="hard"), "negative"),
        (dict(scores=[0.1, 0.2], budget=1.0, strategy="hard"), "not an integer"),
        (dict(scores=[[0.1, 0.2]], budget=1, strategy="hard"), "1-D"),
        (dict(scores=[0.1, float("nan")], budget=1, strategy="hard"), "NaN"),
        (dict(scores=[0.1, 0.2], budget=1, strategy="hard", groups=[0]), "one entry per"),
        (dict(scores=[0.1, 0.2], budget=1, strategy="hard", groups=[0, 1],
              balance_ratio=2.0), "balance_ratio"),
        (dict(scores=[0.1, 0.2], budget=1, strategy="ccs", ccs_beta=1.0), "ccs_beta"),
        (dict(scores=[0.1, 0.2], budget=1, strategy="ccs", ccs_bins=0), "num_bins"),
    ],
)
def test_select_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select(**kwargs)


# ---------------------------------------------------------------------------
# CCS
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keep, beta",
    [(0.05, 0.3), (0.1, 0.3), (0.2, 0.2), (0.3, 0.1), (0.4, 0.0), (0.5, 0.0), (1.0, 0.0)],
)
def test_default_ccs_beta_anchors(keep, beta):
    assert default_ccs_beta(keep) == beta


def test_default_ccs_beta_is_monotone_and_validated():
    keeps = np.linspace(0.01, 1.0, 200)
    betas = [default_ccs_beta(k) for k in keeps]
    assert all(a >= b for a, b in zip(betas, betas[1:]))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="keep_fraction"):
            default_ccs_beta(bad)


def test_ccs_bin_allocation_hand_example():
    # Range [0, 4] in 4 bins of width 1; bin sizes 1, 10, 3, 6.
    # Smallest first with budget 12: bin0 share 12//4=3 -> takes 1 (rest 11);
    # bin2 share 11//3=3 -> takes 3 (rest 8); bin3 share 8//2=4 -> 4 (rest 4);
    # bin1 share 4 -> 4. Expected per-bin counts: [1, 4, 3, 4].
    s = np.r_[0.0, np.linspace(1.1, 1.9, 10), [2.5] * 3, np.linspace(3.1, 3.9, 5), 4.0]
    rng = np.random.default_rng(0)
    perm = rng.permutation(s.size)  # position must not matter
    s = s[perm]
    for seed in range(5):
        out = ccs_select(s, 12, 0.0, num_bins=4, seed=seed)
        assert out.size == 12
        per_bin = np.bincount(np.minimum(s[out].astype(int), 3), minlength=4)
        assert per_bin.tolist() == [1, 4, 3, 4]


def test_ccs_beta_drops_the_hardest():
    s = np.random.default_rng(1).permutation(100).astype(float)
    out = ccs_select(s, 10, 0.3, seed=0)
    assert out.size == 10
    assert s[out].max() < 70  # the 30 hardest (scores 70..99) are gone


def test_ccs_never_drops_below_the_budget():
    s = np.random.default_rng(2).permutation(100).astype(float)
    # beta 0.9 would leave 10 < 50 candidates; only 50 are dropped, so the
    # remaining candidates are exactly the 50 easiest and all of them are kept.
    out = ccs_select(s, 50, 0.9, seed=0)
    assert sorted(s[out].tolist()) == list(range(50))


def test_ccs_constant_scores_and_extremes():
    s = np.full(20, 0.4)
    assert ccs_select(s, 7, 0.0, seed=0).size == 7
    assert ccs_select(s, 0, 0.2, seed=0).size == 0
    assert ccs_select(s, 20, 0.2, seed=0).tolist() == list(range(20))


@FAST
@given(
    scores=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=80),
    data=st.data(),
)
def test_ccs_invariants(scores, data):
    s = np.array(scores)
    budget = data.draw(st.integers(0, s.size))
    beta = data.draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
    bins = data.draw(st.integers(1, 60))
    seed = data.draw(st.integers(0, 1000))
    out = ccs_select(s, budget, beta, num_bins=bins, seed=seed)
    assert out.size == budget and np.all(np.diff(out) > 0)
    assert np.array_equal(out, ccs_select(s, budget, beta, num_bins=bins, seed=seed))
    dropped = _rank_hard(s)[: min(math.floor(beta * s.size + 1e-9), s.size - budget)]
    assert not np.isin(out, dropped).any()


# ---------------------------------------------------------------------------
# DBP: cluster_complexity, density_budgets, density_select
# ---------------------------------------------------------------------------


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_cluster_complexity_hand_example():
    # Centroids at 0, 30 and 90 degrees: sims c0c1 = .866, c0c2 = 0, c1c2 = .5.
    cents = np.array([_unit(0), _unit(30), np.multiply(_unit(90), 5.0)])  # c2 unnormalised
    scores = np.array([0.1, 0.3, 0.2, 0.6])
    clusters = np.array([0, 0, 1, 1])  # cluster 2 empty
    d_intra, d_inter = cluster_complexity(scores, clusters, cents, num_neighbors=1)
    np.testing.assert_allclose(d_intra, [0.2, 0.4, 0.0])
    c30 = 1 - math.cos(math.radians(30))
    np.testing.assert_allclose(d_inter, [c30, c30, 0.5], atol=1e-12)
    _, d_inter_all = cluster_complexity(scores, clusters, cents, num_neighbors=20)
    np.testing.assert_allclose(d_inter_all, [(c30 + 1) / 2, (c30 + 0.5) / 2, 0.75],
                               atol=1e-12)


def test_cluster_complexity_single_cluster():
    d_intra, d_inter = cluster_complexity([0.2, 0.4], [0, 0], [[0.0, 2.0]])
    np.testing.assert_allclose(d_intra, [0.3])
    assert d_inter.tolist() == [1.0]


def test_cluster_complexity_blocked_matches_dense(monkeypatch):
    rng = np.random.default_rng(3)
    cents = rng.normal(size=(37, 8))
    unit = cents / np.linalg.norm(cents, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expected = 1 - np.sort(sims, axis=1)[:, ::-1][:, :5].mean(axis=1)
    clusters = rng.integers(0, 37, size=100)
    monkeypatch.setattr(sel, "_MAX_BLOCK_ELEMENTS", 50)  # one row per block
    _, d_inter = cluster_complexity(rng.random(100), clusters, cents, num_neighbors=5)
    np.testing.assert_allclose(d_inter, expected, atol=1e-12)


def test_cluster_complexity_rejects_bad_cluster_ids():
    with pytest.raises(ValueError, match="clusters"):
        cluster_complexity([0.1, 0.2], [0, 2], np.eye(2))


def test_density_budgets_hand_example_with_clipping():
    # C = [2, 0, 0], T = 0.5 -> p0 = e^4 / (e^4 + 2) ~ 0.965: target ~96 > size 5.
    # Floors: ceil(0.5 * 100 / 3) = 17. Cluster 0 is clipped to 5; the other
    # 95 split equally (47.5 each), the tie on .5 goes to the lower index.
    out = density_budgets(np.array([5, 1000, 1000]), np.array([1.0, 0, 0]),
                          np.array([2.0, 1, 1]), 100)
    assert out.tolist() == [5, 48, 47]


def test_density_budgets_equal_complexity_splits_evenly():
    out = density_budgets(np.array([100, 100]), np.array([0.3, 0.3]), np.array([0.5, 0.5]), 50)
    assert out.tolist() == [25, 25]


def test_density_budgets_floor_binds():
    # Cluster 1 has far lower complexity: softmax would give it ~0, the floor
    # ceil(0.5 * 40 / 2) = 10 holds it up.
    out = density_budgets(np.array([100, 100]), np.array([1.0, 0.0]), np.array([1.0, 1.0]),
                          40, temperature=0.05)
    assert out.tolist() == [30, 10]


def test_density_budgets_empty_cluster_gets_nothing():
    out = density_budgets(np.array([0, 50, 50]), np.array([5.0, 0.2, 0.2]),
                          np.array([1.0, 0.5, 0.5]), 20)
    assert out.tolist() == [0, 10, 10]


@pytest.mark.parametrize(
    "args, match",
    [
        (([5, 5], [0.1, 0.1], [0.1, 0.1], 11), "exceeds"),
        (([5, 5], [0.1, 0.1], [0.1], 4), "one entry per cluster"),
        (([5, 5], [0.1, 0.1], [0.1, 0.1], 4, 0.0), "temperature"),
        (([5, -1], [0.1, 0.1], [0.1, 0.1], 4), "negative"),
    ],
)
def test_density_budgets_errors(args, match):
    sizes, *rest = args
    with pytest.raises(ValueError, match=match):
        density_budgets(np.array(sizes), *[np.array(r) if isinstance(r, list) else r
                                           for r in rest])


def _softmax_targets(sizes, c, temperature, budget):
    present = sizes > 0
    z = np.where(present, c / temperature, -np.inf)
    p = np.exp(z - z[present].max())
    return p / p.sum() * budget


@FAST
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    c=st.lists(st.floats(0, 2), min_size=4, max_size=4),
    temperature=st.sampled_from([0.1, 0.5, 2.0]),
    ratio=st.sampled_from([0.0, 0.5, 1.0]),
    data=st.data(),
)
def test_density_budgets_is_the_integer_optimum(sizes, c, temperature, ratio, data):
    sizes = np.array(sizes)
    assume(sizes.sum() > 0)
    c = np.array(c[: sizes.size])
    budget = data.draw(st.integers(0, int(sizes.sum())))
    out = density_budgets(sizes, c, np.ones_like(c), budget, temperature, ratio)
    assert out.sum() == budget
    if budget == 0:
        assert not out.any()
        return
    target = _softmax_targets(sizes, c, temperature, budget)
    # Floors: the group_floors rule, cutting the smallest targets first.
    lower = np.array(_floors_by_loop(sizes, budget, ratio, priority=target))
    assert np.all((out >= lower) & (out <= sizes))
    # Brute force over every feasible integer vector.
    grid = np.array(list(itertools.product(*[range(lo, hi + 1)
                                             for lo, hi in zip(lower, sizes)])))
    grid = grid[grid.sum(axis=1) == budget]
    best = ((grid - target) ** 2).sum(axis=1).min()
    assert ((out - target) ** 2).sum() <= best + 1e-9


@FAST
@given(c=st.lists(st.integers(0, 1000), min_size=2, max_size=12, unique=True),
       budget=st.integers(1, 10**5))
def test_density_budgets_more_complex_gets_at_least_as_much(c, budget):
    # Complexities at least 1e-3 apart, so their softmax weights differ in floats.
    c = np.array(c) / 1000.0
    sizes = np.full(c.size, 10**6)  # sizes never bind
    out = density_budgets(sizes, c, np.ones_like(c), budget, temperature=0.5)
    order = np.argsort(c)
    assert np.all(np.diff(out[order]) >= 0)
    assert out.sum() == budget


def test_density_select_keeps_the_hardest_per_cluster_budget():
    rng = np.random.default_rng(5)
    cents = rng.normal(size=(6, 4))
    clusters = rng.integers(0, 5, size=300)  # cluster 5 empty
    scores = rng.random(300)
    out = density_select(scores, clusters, cents, 90)
    assert out.size == 90 and np.all(np.diff(out) > 0)
    d_intra, d_inter = cluster_complexity(scores, clusters, cents)
    sizes = np.bincount(clusters, minlength=6)
    budgets = density_budgets(sizes, d_intra, d_inter, 90)
    for j in range(6):
        members = np.flatnonzero(clusters == j)
        kept = np.intersect1d(out, members)
        assert kept.size == budgets[j]
        hardest = members[np.argsort(-scores[members], kind="stable")[: budgets[j]]]
        assert set(kept.tolist()) == set(hardest.tolist())
    assert not np.array_equal(out, density_select(scores, clusters, cents, 90,
                                                  temperature=0.01))


# ---------------------------------------------------------------------------
# SemDeDup
# ---------------------------------------------------------------------------


def _semdedup_brute(emb, clusters, distances, eps):
    x = emb.astype(np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float64)
    keep = np.zeros(len(x), bool)
    for g in np.unique(clusters):
        members = np.flatnonzero(clusters == g).tolist()
        seen = set()
        for start in members:
            if start in seen:
                continue
            comp, stack = [], [start]
            seen.add(start)
            while stack:
                i = stack.pop()
                comp.append(i)
                for j in members:
                    if j not in seen and float(x[i] @ x[j]) > 1 - eps:
                        seen.add(j)
                        stack.append(j)
            keep[max(comp, key=lambda i: (distances[i], -i))] = True
    return keep


def _planted(seed, n_base, dim, n_clusters):
    """Random base points plus near-copies; sims are either > .99 or < .9."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_base, dim))
    copies = rng.integers(0, n_base, size=n_base)
    near = base[copies] + rng.normal(scale=0.01, size=(n_base, dim))
    emb = np.vstack([base, near]) * rng.uniform(0.5, 3.0, size=(2 * n_base, 1))
    clusters = np.r_[rng.integers(0, n_clusters, n_base), np.zeros(n_base, int)]
    clusters[n_base:] = clusters[copies]  # copies mostly share the original's cluster
    flip = rng.random(n_base) < 0.2
    clusters[n_base:][flip] = rng.integers(0, n_clusters, flip.sum())
    distances = np.round(rng.random(2 * n_base), 1)  # coarse: ties happen
    return emb.astype(np.float32), clusters, distances


def _margin_ok(emb, clusters, eps, margin=1e-4):
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for g in np.unique(clusters):
        m = x[clusters == g].astype(np.float64)
        sims = m @ m.T
        np.fill_diagonal(sims, 0)
        if np.any(np.abs(sims - (1 - eps)) < margin):
            return False
    return True


@FAST
@given(seed=st.integers(0, 10**6), n_base=st.integers(1, 40),
       n_clusters=st.integers(1, 4), eps=st.sampled_from([0.01, 0.05, 0.2]))
def test_semdedup_matches_brute_force(seed, n_base, n_clusters, eps):
    emb, clusters, distances = _planted(seed, n_base, 16, n_clusters)
    assume(_margin_ok(emb, clusters, eps))
    keep = semdedup(emb, clusters, distances, eps)
    assert keep.dtype == bool and keep.shape == (emb.shape[0],)
    assert np.array_equal(keep, _semdedup_brute(emb, clusters, distances, eps))


def test_semdedup_blocked_path_matches_brute_force(monkeypatch):
    emb, clusters, distances = _planted(9, 60, 8, 2)
    expected = _semdedup_brute(emb, clusters, distances, 0.05)
    assert expected.sum() < emb.shape[0]  # the test really removes something
    monkeypatch.setattr(sel, "_BLOCK_ROWS", 7)
    assert np.array_equal(semdedup(emb, clusters, distances, 0.05), expected)
    monkeypatch.setattr(sel, "_MAX_BLOCK_ELEMENTS", 1)  # one row per block
    assert np.array_equal(semdedup(emb, clusters, distances, 0.05), expected)


def test_semdedup_survivor_is_farthest_and_ties_go_to_lowest_index():
    e = np.array([[1.0, 0.0], [1.0, 1e-4], [1.0, -1e-4], [0.0, 1.0]], np.float32)
    c = np.zeros(4, int)
    assert semdedup(e, c, np.array([0.1, 0.3, 0.2, 0.0]), 0.01).tolist() == [
        False, True, False, True]
    assert semdedup(e, c, np.array([0.2, 0.1, 0.2, 0.0]), 0.01).tolist() == [
        True, False, False, True]


def test_semdedup_groups_are_connected_components():
    # A~B and B~C above the threshold, A and C below it: one group, one survivor.
    deg = [0.0, 5.0, 10.0]
    e = np.array([_unit(d) for d in deg], np.float32)
    eps = 1 - math.cos(math.radians(7))  # 5 deg apart are duplicates, 10 deg are not
    assert float(e[0] @ e[2]) < 1 - eps < float(e[0] @ e[1])
    keep = semdedup(e, np.zeros(3, int), np.array([0.5, 0.1, 0.2]), eps)
    assert keep.tolist() == [True, False, False]


def test_semdedup_never_compares_across_clusters():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    d = np.array([0.1, 0.2, 0.3])
    assert semdedup(e, np.array([0, 1, 2]), d, 0.1).tolist() == [True, True, True]
    assert semdedup(e, np.array([5, 5, 2]), d, 0.1).tolist() == [False, True, True]


def test_semdedup_normalises_its_input():
    emb, clusters, distances = _planted(4, 30, 8, 2)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert np.array_equal(semdedup(emb * 7.0, clusters, distances, 0.05),
                          semdedup(unit, clusters, distances, 0.05))


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, 1.5, float("nan"), True])
def test_semdedup_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        semdedup(np.eye(2, dtype=np.float32), [0, 0], [0.1, 0.2], eps)
