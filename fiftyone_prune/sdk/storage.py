"""Fast bulk reads and writes of ``VectorField`` values.

FiftyOne stores a vector as ``zlib(numpy.save(array))`` bytes inside the sample document.
Its own ``values()`` decodes one vector at a time through ``np.load`` (header parsing,
BytesIO), which measured ~6.5 s of the 7.9 s it takes to read 50,000 x 2048-d vectors;
``set_values`` serialises the same way on the write side. This module speaks the same
format directly against the sample collection: documents stream from a MongoDB cursor
in batches, the ``.npy`` header is parsed once per distinct header, and the rest is
``zlib`` plus ``np.frombuffer`` into a preallocated matrix. Anything it writes is read
back by FiftyOne's own ``deserialize_numpy_array`` and vice versa.
"""

from __future__ import annotations

import io
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
from bson import Binary, ObjectId
from pymongo import UpdateOne

import fiftyone as fo

#: zlib level for writes: 0 ("stored" blocks, still valid zlib that FiftyOne reads) makes
#: every later read ~6x faster to inflate (12.6 vs 72 us per 2048-d vector here) for 8 %
#: more bytes: float32 embeddings barely compress (7,597 vs 8,203 bytes at level 1 vs 0).
_ZLIB_LEVEL = 0


def _npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def encode_vector(vector: np.ndarray, header: bytes | None = None) -> bytes:
    """``fiftyone.core.utils.serialize_numpy_array`` for a 1-D array, without BytesIO."""
    vector = np.ascontiguousarray(vector)
    if header is None:
        header = _npy_header(vector.dtype, vector.shape)
    return zlib.compress(header + vector.tobytes(), _ZLIB_LEVEL)


class _Decoder:
    """Decodes serialized vectors, parsing each distinct ``.npy`` header once."""

    def __init__(self):
        self._headers: dict[bytes, tuple[int, np.dtype, tuple]] = {}

    def decode(self, raw: bytes) -> np.ndarray:
        data = zlib.decompress(raw)
        # v1 headers are padded to a multiple of 64 bytes; their length is in bytes 8-9
        if data[:6] == b"\x93NUMPY" and data[6] == 1:
            header_len = 10 + int.from_bytes(data[8:10], "little")
            key = data[:header_len]
            parsed = self._headers.get(key)
            if parsed is None:
                f = io.BytesIO(data)
                np.lib.format.read_magic(f)
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                if fortran or len(shape) != 1 or dtype.hasobject:
                    return np.load(io.BytesIO(data), allow_pickle=False)
                parsed = (header_len, dtype, shape)
                self._headers[key] = parsed
            header_len, dtype, shape = parsed
            return np.frombuffer(data, dtype=dtype, offset=header_len, count=shape[0])
        return np.load(io.BytesIO(data), allow_pickle=False)


def decode_value(value, decoder: _Decoder):
    """A stored field value as a 1-D array, or None when absent/unusable."""
    if value is None:
        return None
    if isinstance(value, (bytes, Binary)):
        return decoder.decode(bytes(value))
    if isinstance(value, list):  # ListField of floats also counts as a vector
        return np.asarray(value, dtype=np.float32)
    return None


def iter_vector_batches(
    samples, field: str, batch_size: int = 2048, num_threads: int | None = None
) -> Iterator[tuple[list[str], list[np.ndarray | None]]]:
    """Yields ``(ids, vectors)`` for every sample of ``samples`` in view order, one batch
    of documents at a time; a vector is None where the sample has no value. Memory is
    bounded by four batches in flight (~130 MB of 2048-d vectors at the default size),
    whatever the size of the collection.

    A thread drains the MongoDB cursor while the caller's thread decodes the previous
    batch (zlib releases the GIL), so reading and decoding overlap.
    """
    import queue
    import threading

    if num_threads is None:
        num_threads = max(1, min(8, os.cpu_count() or 1))
    cursor = samples._aggregate(post_pipeline=[{"$project": {"_id": 1, field: 1}}])
    batches: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce():
        try:
            ids, raws = [], []
            for doc in cursor:
                if stop.is_set():
                    return
                ids.append(str(doc["_id"]))
                raws.append(doc.get(field))
                if len(ids) >= batch_size:
                    batches.put((ids, raws))
                    ids, raws = [], []
            if ids:
                batches.put((ids, raws))
            batches.put(None)
        except BaseException as e:  # re-raised in the consumer
            batches.put(e)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    decoder = _Decoder()
    pool = ThreadPoolExecutor(num_threads) if num_threads > 1 else None

    def decode_all(values):
        if pool is None or len(values) < 256:
            return [decode_value(v, decoder) for v in values]
        step = (len(values) + num_threads - 1) // num_threads
        parts = pool.map(
            lambda s: [decode_value(v, decoder) for v in values[s : s + step]],
            range(0, len(values), step),
        )
        return [v for part in parts for v in part]

    try:
        while True:
            item = batches.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            ids, raws = item
            yield ids, decode_all(raws)
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                producer.join(0.05)
        if pool is not None:
            pool.shutdown()


def write_vectors(dataset: fo.Dataset, field: str, ids, vectors: np.ndarray) -> None:
    """Sets ``field`` of the samples ``ids`` to the rows of ``vectors`` in one bulk write.

    The field must already be declared on the dataset (``VectorField``)."""
    if len(ids) == 0:
        return
    vectors = np.ascontiguousarray(vectors)
    header = _npy_header(vectors.dtype, vectors.shape[1:])
    now = datetime.now(timezone.utc)
    ops = [
        UpdateOne(
            {"_id": ObjectId(_id)},
            {"$set": {field: Binary(encode_vector(v, header)), "last_modified_at": now}},
        )
        for _id, v in zip(ids, vectors)
    ]
    dataset._sample_collection.bulk_write(ops, ordered=False)


def write_scalars(dataset: fo.Dataset, updates: dict[str, list], ids) -> None:
    """Sets several scalar fields of the samples ``ids`` in one unordered bulk write:
    ``updates[field][i]`` is the value for ``ids[i]``. (Measured here on 50,000 samples:
    2.5 s, vs 3.5 s for insert + server-side ``$merge`` and 3.8 s for ``set_values``.)"""
    if len(ids) == 0:
        return
    now = datetime.now(timezone.utc)
    fields = list(updates)
    ops = []
    for i, _id in enumerate(ids):
        doc = {f: updates[f][i] for f in fields}
        doc["last_modified_at"] = now
        ops.append(UpdateOne({"_id": ObjectId(_id)}, {"$set": doc}))
    dataset._sample_collection.bulk_write(ops, ordered=False)


def add_tag(dataset: fo.Dataset, ids, tag: str, chunk_size: int = 50000) -> None:
    """Adds ``tag`` to the samples ``ids`` in chunked bulk updates (a single ``$in`` of a
    million ids would exceed MongoDB's 16 MB command limit)."""
    ids = list(ids)
    now = datetime.now(timezone.utc)
    for s in range(0, len(ids), chunk_size):
        chunk = [ObjectId(i) for i in ids[s : s + chunk_size]]
        dataset._sample_collection.update_many(
            {"_id": {"$in": chunk}},
            {"$addToSet": {"tags": tag}, "$set": {"last_modified_at": now}},
        )


def remove_tag(dataset: fo.Dataset, tag: str) -> None:
    """Removes ``tag`` from every sample of the dataset that has it."""
    dataset._sample_collection.update_many(
        {"tags": tag},
        {"$pull": {"tags": tag}, "$set": {"last_modified_at": datetime.now(timezone.utc)}},
    )
