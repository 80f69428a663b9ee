"""The vector reader on a real MongoDB cursor: stopping early closes the cursor on the
server side and leaves no reader or inflating thread behind."""

import threading

import numpy as np
import pytest

from fiftyone_prune.sdk import storage
from tests.conftest import unique_name


@pytest.fixture()
def vectors_dataset():
    import fiftyone as fo

    dataset = fo.Dataset(unique_name("reader"))
    ids = dataset.add_samples([fo.Sample(filepath=f"/none/{i}.jpg") for i in range(300)])
    dataset.add_sample_field("v", fo.VectorField)
    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    storage.write_vectors(dataset, "v", ids, vectors)
    yield dataset, ids, vectors
    fo.delete_dataset(dataset.name)


def _reader_threads():
    return [t.name for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(("vector-reader", "vector-inflater"))]


@pytest.mark.parametrize("stop", ["close", "consumer error"])
def test_stopping_early_kills_the_cursor_and_ends_the_threads(vectors_dataset, stop,
                                                                monkeypatch):
    dataset, ids, vectors = vectors_dataset
    view = dataset.view()
    cursors = []
    aggregate = type(view)._aggregate

    def recording_aggregate(self, *args, **kwargs):  # the real cursor, remembered
        cursors.append(aggregate(self, *args, **kwargs))
        return cursors[-1]

    monkeypatch.setattr(type(view), "_aggregate", recording_aggregate)
    blocks = storage.iter_vector_blocks(view, "v", batch_size=5, num_threads=2)
    batch_ids, block, _, _ = next(blocks)
    assert batch_ids == ids[:5] and np.array_equal(block, vectors[:5])
    if stop == "close":
        blocks.close()
    else:
        with pytest.raises(KeyError):
            blocks.throw(KeyError("consumer failed"))
    # MongoDB's first batch holds 101 documents: the cursor is still open on the server
    # until the reader closes it (else it would stay there until its 10-minute timeout)
    assert len(cursors) == 1 and cursors[0]._killed
    assert _reader_threads() == []
