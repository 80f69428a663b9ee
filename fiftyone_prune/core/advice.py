"""What ``strategy="auto"`` keeps when no evaluation of the user's data exists.

The rule (:func:`auto_without_evaluation`): **random**, at every kept fraction and data
size. Why, from the evidence:

* Sorscher et al. (2022): keep-hard beats random only with abundant data *and* modest
  pruning, keep-easy only with very little data; the crossover depends on the task and
  is not known before measuring it.
* Zheng et al. (CCS, ICLR 2023): keep-hard collapses under aggressive pruning (CIFAR-10,
  forgetting scores: 34 % accuracy at 90 % pruned, far below random).
* Our curves on real labelled images (``docs/evaluation/``, :data:`MEASURED`): hard
  loses to random at every kept fraction up to 70 % on 4,000 MNIST images (by 19 points
  at 5 %), easy at every fraction but one, CCS by 1-5 points at 5-30 % kept on 4,000
  MNIST images and on the scikit-learn digits. Where a strategy is ahead (easy and CCS
  at 5 % of 400 images, hard on the digits at 70 %, CCS on MNIST at 50 % and 90 %) the
  lead is within the noise of the 101-1,000 held-out images it was measured on. An
  independent check on 16,000 unseen images (issue 15) found hard 6.5 and easy 4.8
  points below random at 20 % kept.

So no regime of the data -- samples per class, or in total without labels, and the kept
fraction -- has a measurement that shows a prototype strategy beating random, and most
regimes have one that shows it losing. The regime is still worked out from the data
(never from the number of clusters, so class and cluster balance get the same answer):
it picks the nearest measurement to quote in the explanation. Only an evaluation on the
user's own labelled data (``evaluate_pruning``) can justify another strategy, and
``auto`` follows one when it matches the request.

Arrays and numbers only: no FiftyOne here.
"""

from __future__ import annotations

import math

#: Measured gaps to random selection, in accuracy points, at a kept fraction:
#: ``(setting, training samples, classes, kept fraction, {strategy: points})``.
#: From docs/evaluation/ (linear probe on EfficientNet-Lite0 embeddings, k-means k=10,
#: cluster balance) and issue 15's check on 16,000 unseen labelled images.
MEASURED = (
    ("4,000 MNIST digits", 4000, 10, 0.05, {"hard": -18.9, "easy": -9.0, "ccs": -1.3}),
    ("4,000 MNIST digits", 4000, 10, 0.1, {"hard": -14.0, "easy": -6.0, "ccs": -1.0}),
    ("4,000 MNIST digits", 4000, 10, 0.2, {"hard": -13.2, "easy": -7.9, "ccs": -2.5}),
    ("4,000 MNIST digits", 4000, 10, 0.3, {"hard": -4.0, "easy": -6.0, "ccs": -0.9}),
    ("4,000 MNIST digits", 4000, 10, 0.5, {"hard": -0.8, "easy": -3.7, "ccs": 0.3}),
    ("4,000 MNIST digits", 4000, 10, 0.7, {"hard": -1.2, "easy": -2.2, "ccs": -0.8}),
    ("4,000 MNIST digits", 4000, 10, 0.9, {"hard": 0.2, "easy": -0.3, "ccs": 0.4}),
    ("399 MNIST digits", 399, 10, 0.05, {"hard": -11.6, "easy": 8.3, "ccs": 6.9}),
    ("399 MNIST digits", 399, 10, 0.2, {"hard": -21.5, "easy": -4.6, "ccs": -2.0}),
    ("399 MNIST digits", 399, 10, 0.5, {"hard": -3.3, "easy": -7.3, "ccs": -1.3}),
    ("399 MNIST digits", 399, 10, 0.7, {"hard": -1.0, "easy": -7.9, "ccs": -3.0}),
    ("399 MNIST digits", 399, 10, 0.9, {"hard": 1.3, "easy": -1.7, "ccs": -1.3}),
    ("1,438 scikit-learn digits", 1438, 10, 0.05, {"hard": -20.1, "easy": -4.2, "ccs": -4.6}),
    ("1,438 scikit-learn digits", 1438, 10, 0.2, {"hard": -7.9, "easy": -4.0, "ccs": -0.7}),
    ("1,438 scikit-learn digits", 1438, 10, 0.5, {"hard": -1.5, "easy": -4.8, "ccs": -0.7}),
    ("1,438 scikit-learn digits", 1438, 10, 0.7, {"hard": 0.7, "easy": -0.1, "ccs": 0.3}),
    ("16,000 unseen labelled images", 16000, 10, 0.2, {"hard": -6.5, "easy": -4.8}),
)


def data_regime(num_kept: int, num_total: int, num_classes: int | None) -> dict:
    """The pruning regime from the data alone: kept fraction and kept samples per
    class (per the whole set when there are no labels)."""
    if num_total < 1 or num_kept < 0:
        raise ValueError(f"need num_total >= 1 and num_kept >= 0, got {num_kept}/{num_total}")
    per_class = num_kept / num_classes if num_classes else float(num_kept)
    return {"kept": int(num_kept), "total": int(num_total), "fraction": num_kept / num_total,
            "classes": num_classes, "kept_per_class": per_class}


def nearest_measurement(regime: dict):
    """The measurement of :data:`MEASURED` nearest this regime: kept fraction first,
    then kept samples per class on a log scale (tenfold more data counts like 0.25 of
    kept fraction)."""
    per_class = max(regime["kept_per_class"], 1.0)

    def distance(m):
        measured_per_class = m[1] * m[3] / m[2]
        return abs(m[3] - regime["fraction"]) + 0.25 * abs(
            math.log10(measured_per_class) - math.log10(per_class))

    return min(MEASURED, key=distance)


def auto_without_evaluation(num_kept: int, num_total: int,
                            num_classes: int | None) -> tuple[str, str]:
    """``(strategy, reason)`` for ``auto`` when no evaluation of the data fits: always
    ``"random"`` (see the module docstring for the evidence); the reason names the
    regime, the nearest measurement and that an evaluation would tell."""
    regime = data_regime(num_kept, num_total, num_classes)
    setting, _, _, fraction, gaps = nearest_measurement(regime)
    per = (f"about {regime['kept_per_class']:,.0f} per class" if num_classes
           else "no labels to count per class")
    quoted = ", ".join(f"{s} {g:+.1f}" for s, g in sorted(gaps.items(), key=lambda x: x[1]))
    reason = (
        f"random: no evaluation of your data fits this request, and without one random is "
        f"the safe choice. Keeping {regime['fraction']:.0%} ({num_kept:,} of {num_total:,}, "
        f"{per}), no prototype strategy has been measured beating random beyond the noise, "
        f"and they often lose to it (nearest measurement, {setting} at {fraction:.0%} kept: "
        f"{quoted} points vs random; keep-hard pays only with abundant data and mild "
        f"pruning, and collapses at high pruning). An evaluation on your labelled data "
        f"(fop.evaluate_pruning / 'fiftyone-prune evaluate') would tell whether one "
        f"beats random here; auto follows it once it exists"
    )
    return "random", reason
