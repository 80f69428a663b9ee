"""Prototype distances (Sorscher et al., NeurIPS 2022, "Beyond neural scaling laws").

Self-supervised prototypes (SSP): L2-normalise the embeddings, run spherical k-means,
score each sample by the cosine distance ``1 - cos(x, c)`` to its nearest centroid.
Supervised prototypes: one prototype per class, the mean of the class's normalised
embeddings; score = cosine distance to the sample's own class prototype.
Small distance = easy / prototypical, large = hard / atypical.

Pure numpy + faiss; nothing here knows about FiftyOne.
"""

from __future__ import annotations

import math

import numpy as np

from fiftyone_prune.core.faiss_loader import load_faiss

#: faiss's own default; SemDeDup uses 100. 25 iterations of Lloyd on a subsample already
#: converge to within a fraction of a percent of the final objective on image embeddings,
#: and the paper reports scores robust to k over an order of magnitude, so more
#: iterations buy little. Raise it for final runs if you like.
DEFAULT_NITER = 25

#: faiss's default training subsample per centroid (k-means cost then depends on k, not N)
DEFAULT_MAX_POINTS_PER_CENTROID = 256


def l2_normalize(x: np.ndarray, out: np.ndarray | None = None,
                 chunk_rows: int = 16384) -> np.ndarray:
    """Row-normalises ``x``; ``out=x`` normalises in place, no copy. All-zero rows stay
    zero (similarity 0 to everything, instead of NaN). The package's one L2 normaliser.

    float64 input stays float64 (centroid geometry, where the density strategy compares
    small differences); anything else becomes float32, the embeddings' type.

    Works ``chunk_rows`` rows at a time: ``np.linalg.norm`` squares its whole input into
    a temporary, which for a 1M x 2048 matrix is a second 8 GB copy (that is what sent
    the 1M benchmark into the OOM killer)."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    if out is None:
        out = np.empty_like(x)
    for s in range(0, len(x), chunk_rows):
        block = x[s: s + chunk_rows]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        np.divide(block, norms, out=out[s: s + chunk_rows])
    return out


def default_num_clusters(num_samples: int, num_classes: int | None = None) -> int:
    """Number of k-means prototypes when the user gives none.

    With labels: the number of classes, as in the paper (k centred on the 1,000 ImageNet
    classes). Without labels: ``round(sqrt(n / 2))``, the classic rule of thumb for k,
    capped at 1,000. It gives ~800 for ImageNet's 1.28 M images, within the range (k off
    by an order of magnitude either way) over which the paper found the metric robust,
    and keeps ~2 sqrt(n/2) samples per cluster on small datasets, so that distances to a
    centroid mean something.
    """
    if num_classes:
        return max(1, min(int(num_classes), num_samples))
    k = int(round(math.sqrt(num_samples / 2.0)))
    return max(1, min(k, 1000, num_samples))


def training_subsample(num_samples: int, num_clusters: int, max_points_per_centroid: int,
                       seed: int) -> np.ndarray | None:
    """Sorted row indices of the k-means training subsample, or None to train on all rows.

    Same rule as faiss (at most ``max_points_per_centroid * k`` points, drawn uniformly at
    random), drawn here, seeded, so that only those rows need to be read to train and
    every row can then be assigned in a streamed pass."""
    limit = num_clusters * max_points_per_centroid
    if num_samples <= limit:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_samples, size=limit, replace=False))


def spherical_kmeans(
    x: np.ndarray,
    num_clusters: int,
    niter: int = DEFAULT_NITER,
    seed: int = 51,
    max_points_per_centroid: int = DEFAULT_MAX_POINTS_PER_CENTROID,
    use_gpu: bool | None = None,
    verbose: bool = False,
) -> np.ndarray:
    """Unit-norm centroids ``(k, d)`` of spherical k-means on L2-normalised rows ``x``.

    faiss trains on a seeded random subsample of at most ``max_points_per_centroid * k``
    rows (faiss's default), so the cost depends on k, not on N. Deterministic for a seed
    on the CPU. ``use_gpu=None`` uses a GPU when faiss was built with one.
    """
    faiss = load_faiss()

    n, d = x.shape
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be between 1 and {n}, got {num_clusters}")
    if use_gpu is None:
        use_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    kmeans = faiss.Kmeans(
        d,
        num_clusters,
        niter=niter,
        seed=seed,
        spherical=True,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,
        gpu=bool(use_gpu),
        verbose=verbose,
    )
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return l2_normalize(kmeans.centroids)


def nearest_prototype(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cluster, distance)`` of each normalised row: the nearest unit centroid by
    cosine, and ``1 - cos`` to it. (faiss's inner-product search returns similarities.)"""
    faiss = load_faiss()

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sims, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64), (1.0 - sims[:, 0]).astype(np.float32)


def class_sums(x: np.ndarray, labels: np.ndarray,
               chunk_rows: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, sums, counts)``: per class (sorted), the float64 sum of its rows and
    their number, a chunk of rows at a time (a one-hot product per chunk: no copy of the
    matrix). What :func:`class_prototypes` normalises, and what each shard of a sharded
    run adds up before one step normalises the total."""
    from scipy import sparse

    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), x.shape[1]), dtype=np.float64)
    for s in range(0, len(x), chunk_rows):
        rows = inverse[s: s + chunk_rows]
        onehot = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(len(classes), len(rows))
        )
        sums += onehot @ x[s: s + chunk_rows].astype(np.float64)
    return classes, sums, counts


def class_prototypes(x: np.ndarray, labels: np.ndarray,
                     chunk_rows: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, prototypes)``: per class, the mean of its normalised rows, scaled to
    unit norm so that a dot product is a cosine (sums in float64: :func:`class_sums`)."""
    classes, sums, _ = class_sums(x, labels, chunk_rows)
    return classes, l2_normalize(sums.astype(np.float32))


def distance_to_own_prototype(x: np.ndarray, label_index: np.ndarray,
                              prototypes: np.ndarray, chunk_rows: int = 16384) -> np.ndarray:
    """``1 - cos(x_i, prototype[label_index[i]])`` for normalised rows, in chunks (the
    gathered prototypes would otherwise be a second matrix as large as ``x``)."""
    distance = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), chunk_rows):
        own = prototypes[label_index[s: s + chunk_rows]]
        distance[s: s + len(own)] = 1.0 - np.einsum("ij,ij->i", x[s: s + chunk_rows], own)
    return distance


def normalized_rank(scores: np.ndarray) -> np.ndarray:
    """Rank of each score scaled to [0, 1] (0 = smallest); ties share their mean rank."""
    from scipy.stats import rankdata

    n = len(scores)
    if n == 1:
        return np.zeros(1, dtype=np.float32)
    return ((rankdata(scores, method="average") - 1.0) / (n - 1)).astype(np.float32)


def combine_by_mean_rank(distances: list[np.ndarray]) -> np.ndarray:
    """Combines the distances of several k-means runs (different k) into one score: the
    mean of their normalised ranks. Ranks, not raw distances, because distances shrink
    as k grows, so a plain mean would let the smallest k dominate."""
    return np.mean([normalized_rank(np.asarray(d)) for d in distances], axis=0).astype(np.float32)
