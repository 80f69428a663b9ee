"""auto without an evaluation: random, with a reason derived from the data."""

import pytest

from fiftyone_prune.core import advice


@pytest.mark.parametrize("kept, total, classes", [
    (3200, 16000, 10),   # issue 15: hard lost 6.5 points here
    (12800, 16000, 100),
    (240, 1200, 10),
    (20, 400, 10),
    (900, 1000, None),
])
def test_never_a_strategy_measured_losing_to_random(kept, total, classes):
    strategy, reason = advice.auto_without_evaluation(kept, total, classes)
    assert strategy == "random"
    assert f"{kept:,} of {total:,}" in reason and "evaluation" in reason
    regime = advice.data_regime(kept, total, classes)
    setting, _, _, fraction, gaps = advice.nearest_measurement(regime)
    assert f"{setting} at {fraction:.0%} kept" in reason


def test_the_regime_is_per_class_not_per_cluster():
    # the same data gives the same reason: clusters are not an input at all
    assert advice.data_regime(3200, 16000, 10)["kept_per_class"] == 320
    assert advice.data_regime(3200, 16000, None)["kept_per_class"] == 3200


def test_nearest_measurement_follows_fraction_then_data_size():
    assert advice.nearest_measurement(advice.data_regime(800, 4000, 10))[3] == 0.2
    assert advice.nearest_measurement(advice.data_regime(20, 400, 10))[0] == "399 MNIST digits"
