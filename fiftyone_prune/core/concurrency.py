"""Every thread of the package, each closing what it opens.

- :class:`Prefetcher` reads ahead: a background thread pulls items (or batches of items)
  from an iterable, e.g. a MongoDB cursor, while the caller works on the previous ones.
- :class:`OrderedBatchWriter` writes behind: batches handed to it are written by worker
  threads while the caller prepares the next, with a bounded number in flight, and their
  completion is accounted in submission order.
- :class:`Heartbeat` calls a few functions periodically in one thread (a lease's
  renewal, a shard's progress beat), until stopped.
- :class:`ReportingCall` runs a call in a worker thread while the caller drains its
  progress reports (the App's progress bar for an immediate operator run).

Why one module: reading vectors, inflating them, writing scores and writing embeddings
each had its own thread, queue and error hand-off, and one of them left a MongoDB
cursor open when its consumer stopped early. Here every thread is joined, every source
closed and every error re-raised in the caller's thread, in one place that is tested
once. Pure: threads and queues only, nothing about FiftyOne or MongoDB.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: how long a blocked producer waits before it looks again whether it was stopped
_POLL_S = 0.05


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Generic[T]):
    """Iterates ``source`` in a background thread that keeps up to ``depth`` items ahead.

    Args:
        source: an iterable; the thread calls ``iter(source)`` and owns the iterator
        depth (2): how many items (or batches) may wait, read but not yet consumed;
            two let the next read overlap the caller's work on the current item
            without holding more than two extra items in memory
        batch_size (None): ``None`` yields the source's items one by one; an integer
            yields lists of up to that many items (the last may be shorter), so a
            cursor's documents are handed over a batch at a time
        name ("prefetcher"): the thread's name, for debuggers and logs

    An error raised by the source is re-raised in the consumer, after the items read
    before it. :meth:`close` (also on leaving a ``with`` block, on an exception in the
    consumer or when the iteration ends) stops the thread, joins it and closes the
    source: ``close()`` of the iterator and of ``source`` when they have one (a pymongo
    cursor, a generator), called in the thread that iterated them.

    Example::

        from fiftyone_prune.core.concurrency import Prefetcher

        with Prefetcher(range(10), batch_size=4) as batches:
            assert list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """

    def __init__(self, source: Iterable[T], depth: int = 2, batch_size: int | None = None,
                 name: str = "prefetcher"):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        self._source = source
        self._batch_size = batch_size
        self._items: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Hands ``item`` over; False when the consumer stopped first."""
        while not self._stop.is_set():
            try:
                self._items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self):
        iterator = None
        try:
            iterator = iter(self._source)
            if self._batch_size is None:
                for item in iterator:
                    if not self._put(item):
                        return
            else:
                batch = []
                for item in iterator:
                    if self._stop.is_set():  # don't read on into a batch nobody takes
                        return
                    batch.append(item)
                    if len(batch) >= self._batch_size:
                        if not self._put(batch):
                            return
                        batch = []
                if batch and not self._put(batch):
                    return
            self._put(_End)
        except BaseException as e:  # re-raised in the consumer
            self._put(_Failure(e))
        finally:
            self._close_source(iterator)

    def _close_source(self, iterator):
        closed = set()
        for obj in (iterator, self._source):
            close = getattr(obj, "close", None)
            if close is None or id(obj) in closed:
                continue
            closed.add(id(obj))
            try:
                close()
            except Exception:  # the items were read; a failed close must not hide them
                logger.warning("closing %r failed", obj, exc_info=True)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        try:
            item = self._items.get()
        except BaseException:  # e.g. KeyboardInterrupt while waiting
            self.close()
            raise
        if item is _End:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stops reading, joins the thread (which closes the source); idempotent."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            try:  # frees the memory of unread items; the thread sees the stop flag
                self._items.get_nowait()
            except queue.Empty:
                self._thread.join(_POLL_S)

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OrderedBatchWriter:
    """Writes batches with ``write(*batch)`` on ``num_threads`` worker threads, at most
    ``max_in_flight`` submitted and not yet accounted at a time.

    Args:
        write: the function that writes one batch, called with the arguments given to
            :meth:`submit`; runs in a worker thread
        num_threads (1): worker threads; one keeps the writes themselves in order
        max_in_flight (None): batches submitted and not yet accounted; :meth:`submit`
            waits for the oldest when there are this many. ``None``: ``2 * num_threads``,
            so each thread has a batch queued behind the one it writes
        on_written (None): called in the caller's thread with what ``write`` returned,
            once per batch and in submission order (e.g. to move a progress bar)
        name ("writer"): prefix of the threads' names

    Completion is accounted in submission order: :attr:`num_written` is the number of
    leading batches all written, so what an interruption can lose is bounded by the
    batches in flight. The first error a write raises is re-raised by the next
    :meth:`submit`, :meth:`flush` or :meth:`close` (and by every later one), after the
    batches not yet started are dropped. :meth:`close` waits for every submitted batch;
    :meth:`cancel` drops those not started. Either way the threads are joined; leaving
    a ``with`` block closes the writer (re-raising a write error only when the block
    itself did not raise).

    Example::

        from fiftyone_prune.core.concurrency import OrderedBatchWriter

        written = []
        with OrderedBatchWriter(lambda ids, values: written.extend(ids) or len(ids),
                                num_threads=2) as writer:
            for s in range(0, 10, 4):
                writer.submit(list(range(s, min(s + 4, 10))), None)
        assert sorted(written) == list(range(10)) and writer.num_written == 3
    """

    def __init__(self, write: Callable[..., Any], num_threads: int = 1,
                 max_in_flight: int | None = None,
                 on_written: Callable[[Any], None] | None = None, name: str = "writer"):
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        if max_in_flight is None:
            max_in_flight = 2 * num_threads
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        self._write = write
        self._max_in_flight = max_in_flight
        self._on_written = on_written
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            num_threads, thread_name_prefix=name)
        self._pending: deque = deque()
        self._error: BaseException | None = None
        self.num_written = 0

    @property
    def num_in_flight(self) -> int:
        """Batches submitted and not yet accounted as written."""
        return len(self._pending)

    def submit(self, *batch) -> None:
        """Queues ``write(*batch)``; waits while ``max_in_flight`` batches are pending.
        Raises the first error of an earlier write (nothing is queued then)."""
        self._raise_if_failed()
        if self._pool is None:
            raise RuntimeError("submit() on a closed OrderedBatchWriter")
        self._account_written()
        while len(self._pending) >= self._max_in_flight:
            self._account_oldest()
        self._pending.append(self._pool.submit(self._write, *batch))

    def flush(self) -> None:
        """Waits until every submitted batch is written; raises a write error."""
        self._raise_if_failed()
        while self._pending:
            self._account_oldest()

    def close(self) -> None:
        """Writes every submitted batch, joins the threads; raises a write error."""
        try:
            self.flush()
        finally:
            self._shutdown(cancel=self._error is not None)
        self._raise_if_failed()

    def cancel(self) -> None:
        """Drops the batches not yet started, waits for those being written, joins the
        threads. Raises nothing: for a caller already handling a failure."""
        self._shutdown(cancel=True)
        self._pending.clear()

    def _shutdown(self, cancel: bool) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def _account_written(self) -> None:
        """Accounts the leading batches already written; raises any failed write's
        error, also one behind a batch still being written."""
        for future in self._pending:
            if future.done() and not future.cancelled() and future.exception() is not None:
                self._fail(future.exception())
        while self._pending and self._pending[0].done():
            self._account_oldest()

    def _account_oldest(self) -> None:
        future = self._pending[0]
        try:
            result = future.result()
        except BaseException as e:
            if future.done() and not future.cancelled() and future.exception() is e:
                self._fail(e)
            raise  # e.g. KeyboardInterrupt while waiting: not the write's error
        self._pending.popleft()
        self.num_written += 1
        if self._on_written is not None:
            self._on_written(result)

    def _fail(self, error: BaseException):
        if self._error is None:
            self._error = error
            for future in self._pending:
                future.cancel()  # not yet started: never written
        raise self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "OrderedBatchWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except BaseException as e:  # the block's own exception is the one to see
            if e is not exc:
                logger.warning("a write failed too: %s", e)


class ReportingCall(Generic[T]):
    """Runs ``work(report)`` in a daemon thread while the caller's thread relays what it
    reports: iterating yields the newest report made since the previous one (a backlog
    collapses to its last item: a progress bar only shows the newest), and ends when
    ``work`` returns or raises; :meth:`result` then returns its value or re-raises its
    error in the caller's thread.

    The App's progress bridge: an operator's generator must stay in the request's thread
    to stream, while the SDK call it makes reports from the thread that works.

    Args:
        work: called with ``report``, a function taking one item; its return value is
            :meth:`result`
        name ("work"): the thread's name

    Example::

        from fiftyone_prune.core.concurrency import ReportingCall

        call = ReportingCall(lambda report: [report(i) for i in range(3)] and "done")
        seen = list(call)  # the newest of each backlog: ends with 2
        assert seen[-1] == 2 and call.result() == "done"
    """

    def __init__(self, work: Callable[[Callable[[Any], None]], T], name: str = "work"):
        self._work = work
        self._reports: queue.SimpleQueue = queue.SimpleQueue()
        self._outcome: dict = {}
        # a daemon: a run whose browser went away goes on, but never holds up exit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome["result"] = self._work(self._reports.put)
        except BaseException as e:  # handed to the caller's thread by result()
            self._outcome["error"] = e
        finally:
            self._reports.put(_END)

    def __iter__(self) -> Iterator[Any]:
        done = False
        while not done:
            backlog = [self._reports.get()]
            while not self._reports.empty():
                backlog.append(self._reports.get())
            done = backlog[-1] is _END
            pending = [r for r in backlog if r is not _END]
            if pending:
                yield pending[-1]
        self._thread.join()

    def result(self) -> T:
        """``work``'s return value, or its error raised here; waits for it to end."""
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]


_END = _End()


class Heartbeat:
    """Calls each of its beats every ``interval`` seconds in one daemon thread.

    Args:
        interval: seconds between beats (the first beat comes one interval after
            :meth:`start`)
        *beats: functions called without arguments, in order, on every beat; one that
            returns ``False`` is dropped (e.g. a lease renewal that found the lease
            lost); one that raises is logged and called again on the next beat (a
            database hiccup must not stop a lease from being renewed)
        name ("heartbeat"): the thread's name

    Why one class: a lease renews itself and a shard reports its progress on the same
    rhythm; one thread per worker does both (:meth:`add`), and stopping joins it.
    :meth:`stop` (also on leaving a ``with`` block) wakes the thread at once, so a
    writer never waits out an interval to finish.

    Example::

        import threading
        from fiftyone_prune.core.concurrency import Heartbeat

        beaten = threading.Event()
        with Heartbeat(0.01, beaten.set):
            assert beaten.wait(10)
    """

    def __init__(self, interval: float, *beats: Callable[[], Any], name: str = "heartbeat"):
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self._beats = list(beats)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(self, beat: Callable[[], Any]) -> None:
        """Adds a function to call on every beat from the next one on."""
        with self._lock:
            self._beats.append(beat)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                beats = list(self._beats)
            for beat in beats:
                if self._stop.is_set():
                    return
                try:
                    keep = beat()
                except Exception as e:  # try again next beat
                    logger.warning("heartbeat %s failed: %s", getattr(beat, "__name__", beat), e)
                    continue
                if keep is False:
                    with self._lock:
                        self._beats.remove(beat)

    def stop(self) -> None:
        """Stops beating and joins the thread (a beat in progress finishes first);
        idempotent; a no-op when called from a beat itself."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
