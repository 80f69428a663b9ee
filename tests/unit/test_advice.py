"""auto without an evaluation: random, with a reason derived from the data."""

import inspect
import math

import pytest

from fiftyone_prune.core import advice

#: regimes auto may meet: every measured one, and a grid of kept fractions, data sizes
#: and label counts around and far beyond them (no labels: ``None``)
REGIMES = sorted(
    {(max(1, round(m[1] * m[3])), m[1], m[2]) for m in advice.MEASURED}
    | {(max(1, round(total * f)), total, classes)
       for f in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
       for total in (10, 400, 1200, 16000, 1_000_000)
       for classes in (None, 2, 10, 100, 1000)},
    key=lambda r: (r[0], r[1], r[2] or 0))


def quoted(measurement):
    setting, _, _, fraction, gaps = measurement
    return f"{setting} at {fraction:.0%} kept: " + ", ".join(
        f"{s} {g:+.1f}" for s, g in sorted(gaps.items(), key=lambda x: x[1]))


@pytest.mark.parametrize("kept, total, classes", [
    (3200, 16000, 10),   # issue 15: hard lost 6.5 points here
    (12800, 16000, 100),
    (240, 1200, 10),
    (20, 400, 10),
    (900, 1000, None),
])
def test_the_reason_names_the_regime_and_the_nearest_measurement(kept, total, classes):
    strategy, reason = advice.auto_without_evaluation(kept, total, classes)
    assert strategy == "random"
    per = f"about {kept / classes:,.0f} per class" if classes else "no labels"
    assert f"Keeping {kept / total:.0%} ({kept:,} of {total:,}, {per}" in reason
    assert quoted(advice.nearest_measurement(advice.data_regime(kept, total, classes))) \
        in reason
    assert "fop.evaluate_pruning" in reason


def test_never_a_strategy_measured_losing_to_random():
    losing = {s for m in advice.MEASURED for s, gap in m[4].items() if gap < 0}
    assert losing == {"hard", "easy", "ccs"}  # every strategy has lost somewhere
    for kept, total, classes in REGIMES:
        strategy, _ = advice.auto_without_evaluation(kept, total, classes)
        assert strategy not in losing, (kept, total, classes, strategy)
        # random is the baseline: it is never measured against itself
        assert all(strategy not in m[4] for m in advice.MEASURED)


def test_the_regime_is_per_class_not_per_cluster():
    # clusters are not an input at all: class and cluster balance get the same answer
    assert list(inspect.signature(advice.auto_without_evaluation).parameters) == [
        "num_kept", "num_total", "num_classes"]
    assert advice.data_regime(3200, 16000, 10)["kept_per_class"] == 320
    assert advice.data_regime(3200, 16000, None)["kept_per_class"] == 3200
    # the count per class decides the quoted measurement: 20 % kept of 16,000 images is
    # issue 15's regime with 10 classes (320 per class); with 100 classes it is nearest
    # the 1,438 digits (about 29 per class measured, 32 here)
    _, ten = advice.auto_without_evaluation(3200, 16000, 10)
    _, hundred = advice.auto_without_evaluation(3200, 16000, 100)
    assert "about 320 per class" in ten and "16,000 unseen labelled images at 20%" in ten
    assert "about 32 per class" in hundred
    assert "1,438 scikit-learn digits at 20%" in hundred


def test_nearest_measurement_follows_fraction_then_data_size():
    by_fraction = {}
    for m in advice.MEASURED:
        by_fraction.setdefault(m[3], []).append(m)
        kept, total, classes = round(m[1] * m[3]), m[1], m[2]
        # a regime that is a measured one gets that measurement
        assert advice.nearest_measurement(advice.data_regime(kept, total, classes)) == m
    for fraction, measured in by_fraction.items():
        for m in measured:
            for factor in (0.8, 1.25):  # a little less or more data than measured:
                per_class = factor * m[1] * m[3] / m[2]
                got = advice.nearest_measurement(dict(fraction=fraction,
                                                      kept_per_class=per_class))
                # the kept fraction first (a measurement at this fraction) ...
                assert got[3] == fraction, (m, factor, got)
                # ... then, among those, the one nearest in data size (log per class)
                assert got == min(measured, key=lambda x: abs(
                    math.log10(x[1] * x[3] / x[2]) - math.log10(per_class)))
    # between measured fractions the nearer one wins ...
    assert advice.nearest_measurement(advice.data_regime(1080, 4000, 10))[3] == 0.3
    assert advice.nearest_measurement(advice.data_regime(800, 4000, 10))[3] == 0.2
    # ... unless the data size is far off (tenfold counts like 0.25 of kept fraction):
    # at 9 % kept, 40 per class is the 4,000 digits at 10 %; 4,000 per class is nearer
    # the 16,000 images at 20 % (0.11 + 0.25 x 1.1) than the digits (0.01 + 0.25 x 2)
    assert advice.nearest_measurement(dict(fraction=0.09, kept_per_class=40))[:4] == (
        "4,000 MNIST digits", 4000, 10, 0.1)
    assert advice.nearest_measurement(dict(fraction=0.09, kept_per_class=4000))[:4] == (
        "16,000 unseen labelled images", 16000, 10, 0.2)
    assert advice.nearest_measurement(advice.data_regime(20, 400, 10))[0] == "399 MNIST digits"
