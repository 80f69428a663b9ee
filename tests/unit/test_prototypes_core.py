"""core.prototypes numerics that the integration tests do not pin down."""

import numpy as np

from fiftyone_prune.core import prototypes as core


def test_l2_normalize_in_chunks_equals_numpy_and_works_in_place():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1001, 33)).astype(np.float32)
    x[[0, 500, 1000]] = 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    expected = x / np.where(norms > 0, norms, 1)
    copy = core.l2_normalize(x, chunk_rows=64)  # 16 chunks, the last one short
    np.testing.assert_allclose(copy, expected, rtol=1e-6)
    assert not np.shares_memory(copy, x)
    same = core.l2_normalize(x, out=x, chunk_rows=100)
    assert same is x
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    assert (x[[0, 500, 1000]] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(np.delete(x, [0, 500, 1000], 0), axis=1), 1,
                               rtol=1e-5)


def test_class_prototypes_and_own_distance_in_chunks_equal_a_direct_computation():
    rng = np.random.default_rng(1)
    x = core.l2_normalize(rng.normal(size=(777, 16)).astype(np.float32))
    labels = rng.choice(np.array(["cat", "dog", "eel"]), size=len(x))
    classes, protos = core.class_prototypes(x, labels, chunk_rows=50)
    assert classes.tolist() == ["cat", "dog", "eel"]
    for c, p in zip(classes, protos):
        mean = x[labels == c].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(p, mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    index = np.searchsorted(classes, labels)
    distance = core.distance_to_own_prototype(x, index, protos, chunk_rows=50)
    np.testing.assert_allclose(distance, 1 - (x * protos[index]).sum(axis=1), atol=1e-6)
