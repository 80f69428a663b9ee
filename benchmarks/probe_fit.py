"""One linear-probe fit: the old torch probe, the current one, and scikit-learn, back to back.

Same data as ``evaluation_cost.py`` (20,000 MNIST-derived samples, 1,280-dimensional
seeded random ReLU features); a seeded 16,000 / 4,000 train / held-out split; the
subset is 8,000 random training samples (a 50 % random selection). Fits, in one process
one after the other so that machine load affects them alike:

* ``torch 100 (old)``: the probe before #13 (full-batch torch L-BFGS, strong-Wolfe line
  search, 100 iterations, float32, from zero weights), reproduced here;
* ``torch cold``: :func:`train_linear_probe` from zero weights (tolerance stop);
* ``torch warm``: the same, started from the probe of the 16,000-sample full set
  (what ``evaluate_pruning`` does; the full set's own fit is timed separately);
* with ``--sklearn``: scikit-learn's ``LogisticRegression`` (lbfgs, float64) on the same
  objective at the same tolerance, cold, the probe #13 briefly used;
* with ``--tols 1e-5,3e-5,...``: cold and warm fits at each of these tolerances;
* with ``--tight``: a tight-tolerance scikit-learn solution (``tol=1e-8``, float64),
  the reference optimum the others' objectives are compared with (slow: ~450 L-BFGS
  iterations).

For each: wall time, L-BFGS iterations, objective (mean cross-entropy +
weight_decay/2 ||W||^2 in float64 on the standardised features) and held-out accuracy.
``--threads N`` sets torch's intra-op threads first (default: torch's own choice).

    .venv/bin/python benchmarks/probe_fit.py [--tight] [--sklearn] [--tols 1e-5,3e-5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_cost import features  # noqa: E402

from fiftyone_prune.core.probe import LINEAR_PROBE_TOL, train_linear_probe  # noqa: E402

WEIGHT_DECAY = 1e-3


def standardise(x, mean=None, std=None):
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if mean is None:
        mean, std = z.mean(axis=0), z.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
    return (z - mean) / std, mean, std


def objective(z, y, weight, bias):
    logits = z @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1))
    return (np.mean(log_norm - logits[np.arange(len(y)), y])
            + WEIGHT_DECAY / 2 * np.sum(weight ** 2))


def torch_probe(z, y, num_classes):
    """The pre-#13 probe: torch L-BFGS, 100 iterations, strong Wolfe, float32."""
    xt = torch.as_tensor(z, dtype=torch.float32)
    yt = torch.as_tensor(y)
    weight = torch.zeros(num_classes, z.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=100, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = (F.cross_entropy(xt @ weight.T + bias, yt)
                + 0.5 * WEIGHT_DECAY * weight.pow(2).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    state = optimizer.state[optimizer._params[0]]
    print(f"(torch: {state['n_iter']} iterations, {state['func_evals']} objective "
          f"evaluations)", flush=True)
    iterations = state["n_iter"]
    return weight.detach().double().numpy(), bias.detach().double().numpy(), iterations


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tight", action="store_true")
    parser.add_argument("--sklearn", action="store_true")
    parser.add_argument("--tols", default="")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = features()
    perm = np.random.default_rng(1).permutation(len(x))
    train, test = perm[:16000], perm[16000:]
    subset = train[:8000]
    xs, ys = x[subset].astype(np.float64), y[subset]
    z, mean, std = standardise(xs)
    zt, _, _ = standardise(x[test].astype(np.float64), mean, std)
    print(f"one fit on {len(subset):,} x {x.shape[1]:,}, held out {len(test):,}; "
          f"torch threads {torch.get_num_threads()}; load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)

    rows = []

    def report(name, seconds, iterations, weight, bias):
        value = objective(z, ys, weight, bias)
        accuracy = np.mean(np.argmax(zt @ weight.T + bias, axis=1) == y[test])
        rows.append((name, seconds, iterations, value, accuracy))
        print(f"{name:18s} {seconds:7.2f} s  {iterations:4d} iterations  objective "
              f"{value:.6f}  held-out accuracy {accuracy:.4f}  (load "
              f"{os.getloadavg()[0]:.1f})", flush=True)

    def probe_fit(name, **kwargs):
        t = time.perf_counter()
        probe = train_linear_probe(x[subset], ys, **kwargs)
        seconds = time.perf_counter() - t
        weight, bias, _, _ = probe.logit_parameters()
        # the probe's own statistics match ours (same data): same feature space
        report(name, seconds, probe.n_iter, weight, bias)

    t = time.perf_counter()
    weight, bias, iterations = torch_probe(z, ys, 10)
    report("torch 100 (old)", time.perf_counter() - t, iterations, weight, bias)
    probe_fit("torch cold")
    t = time.perf_counter()
    full = train_linear_probe(x[train], y[train])
    print(f"{'(full 16,000)':18s} {time.perf_counter() - t:7.2f} s  {full.n_iter:4d} "
          f"iterations (fitted once per evaluation)", flush=True)
    probe_fit("torch warm", init=full)
    for tol in [float(v) for v in args.tols.split(",") if v]:
        probe_fit(f"torch cold {tol:g}", tol=tol)
        probe_fit(f"torch warm {tol:g}", tol=tol,
                  init=train_linear_probe(x[train], y[train], tol=tol))
    if args.sklearn:
        from sklearn.linear_model import LogisticRegression

        t = time.perf_counter()
        model = LogisticRegression(C=1 / (len(ys) * WEIGHT_DECAY), tol=LINEAR_PROBE_TOL,
                                   max_iter=1000)
        model.fit(z, ys)
        report("sklearn cold", time.perf_counter() - t, int(model.n_iter_[0]),
               model.coef_, model.intercept_)
    if args.tight:
        from sklearn.linear_model import LogisticRegression

        t = time.perf_counter()
        model = LogisticRegression(C=1 / (len(ys) * WEIGHT_DECAY), tol=1e-8, max_iter=5000)
        model.fit(z, ys)
        report("tight 1e-8", time.perf_counter() - t, int(model.n_iter_[0]), model.coef_,
               model.intercept_)
        best = rows[-1][3]
        for name, _, _, value, _ in rows[:-1]:
            print(f"objective gap {name:18s} {value - best:+.2e} "
                  f"({100 * (value - best) / best:+.4f} %)")
    old = rows[0][1]
    for name, seconds, *_ in rows[1:]:
        print(f"time {name} / torch 100 (old): {seconds / old:.2f}")


if __name__ == "__main__":
    main()
