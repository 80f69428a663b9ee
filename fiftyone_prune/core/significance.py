"""How sure is a difference in held-out accuracy? Intervals for pruning curves.

A point of a pruning curve is the held-out accuracy of probes trained on one selection.
It is uncertain for two reasons:

* **held-out sampling**: the held-out part is a sample of the data; with 300 held-out
  images one image is 0.33 points, and the accuracy itself has a standard error of
  about 1.5-2 points. Repeating the probe with other seeds does not show this noise at
  all: every seed is scored on the same held-out images.
* **selection and training seeds**: random (and CCS) selections differ from seed to seed,
  and so does a stochastic probe.

Both are combined here. The held-out part is a **paired bootstrap**: the held-out
indices are resampled (seeded, the same resamples for every strategy) and the mean of
the per-sample correctness -- averaged over the strategy's fits -- is recomputed on each
resample; a difference to random is resampled *per sample* (strategy minus random on the
same images), which removes the part of the noise both share. The seed part is the
variance of the per-seed accuracies divided by the number of seeds (sample variance,
``ddof=1``), for each side that has more than one distinct fit. The two variances add
(they are independent: one is over images, the other over training subsets) and the
interval is the normal one, ``estimate +- 1.96 sd``. A percentile bootstrap over three
seeds would understate the seed variance (three values cannot show their own spread
well), which is why the seed part is not bootstrapped.

Arrays in, numbers out: no FiftyOne here.
"""

from __future__ import annotations

import base64

import numpy as np

#: 95 % two-sided normal quantile.
Z95 = 1.959963984540054
#: Bootstrap resamples of the held-out part: the standard error of a bootstrap
#: standard deviation is about ``sd / sqrt(2 B)``, 1.6 % of it at 2,000.
NUM_RESAMPLES = 2000
#: The resample weights are kept in memory (float32): at most this many entries
#: (64 MB); larger held-out parts get fewer resamples (their noise is small anyway).
MAX_WEIGHTS = 16_000_000


def _heldout_resample_weights(num_heldout, num_resamples, seed):
    """``(num_resamples, num_heldout)`` counts: how often each held-out sample is drawn
    in each resample. The same ``seed`` gives the same resamples for every call, which
    is what makes the comparisons of one evaluation paired."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_heldout, np.full(num_heldout, 1.0 / num_heldout),
                           size=num_resamples).astype(np.float32)


class HeldoutBootstrap:
    """Paired bootstrap over one held-out part (resamples drawn once, reused)."""

    def __init__(self, num_heldout: int, seed: int = 0, num_resamples: int = NUM_RESAMPLES):
        if num_heldout < 1:
            raise ValueError("the held-out part is empty")
        self.num_heldout = int(num_heldout)
        num_resamples = min(num_resamples, max(200, MAX_WEIGHTS // self.num_heldout))
        self.weights = _heldout_resample_weights(self.num_heldout, num_resamples, seed)

    def sd_of_mean(self, per_sample) -> float:
        """Bootstrap standard deviation of the mean of ``per_sample`` (one value per
        held-out sample)."""
        values = np.asarray(per_sample, dtype=np.float32)
        if values.shape != (self.num_heldout,):
            raise ValueError(f"expected {self.num_heldout} per-sample values, got {values.shape}")
        means = self.weights @ values / self.num_heldout
        return float(np.std(means.astype(np.float64), ddof=1))


def seed_variance(correct) -> float:
    """Variance of the mean accuracy over fits (0 for a single, deterministic fit).

    Args:
        correct: ``(num_fits, num_heldout)`` per-sample correctness, one row per fit
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    if len(correct) < 2:
        return 0.0
    accuracies = correct.mean(axis=1)
    return float(np.var(accuracies, ddof=1) / len(accuracies))


def accuracy_interval(bootstrap: HeldoutBootstrap, correct) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the held-out accuracy of one curve point.

    Args:
        correct: ``(num_fits, num_heldout)`` booleans, one row per distinct fit (a
            deterministic selection fitted once has one row)
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    mean = float(correct.mean())
    sd = np.sqrt(bootstrap.sd_of_mean(correct.mean(axis=0)) ** 2 + seed_variance(correct))
    return mean, mean - Z95 * sd, mean + Z95 * sd


def difference_interval(bootstrap: HeldoutBootstrap, correct,
                        reference) -> tuple[float, float, float]:
    """``(difference, low, high)`` of accuracy(correct) - accuracy(reference), paired on
    the held-out samples. Each argument is ``(num_fits, num_heldout)`` booleans."""
    a = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    b = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    per_sample = a.mean(axis=0) - b.mean(axis=0)
    diff = float(per_sample.mean())
    sd = np.sqrt(bootstrap.sd_of_mean(per_sample) ** 2 + seed_variance(a) + seed_variance(b))
    return diff, diff - Z95 * sd, diff + Z95 * sd


def pack_correct(correct) -> str:
    """Per-sample correctness as a short string (1 bit per held-out sample) to store
    with a run."""
    bits = np.packbits(np.asarray(correct, dtype=bool))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(text: str, num_heldout: int) -> np.ndarray:
    bits = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(bits)[:num_heldout].astype(bool)
