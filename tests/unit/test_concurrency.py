"""The concurrency module with real threads: sources closed, threads ended, errors and
order as documented."""

import logging
import sys
import threading
import time

import pytest

from fiftyone_prune.core.concurrency import Heartbeat, OrderedBatchWriter, Prefetcher


class Source:
    """An iterable with a ``close()``, like a pymongo cursor; records what happened."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at
        self.read = 0
        self.closed_in = None

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"connection lost at {i}")
            self.read += 1
            yield i

    def close(self):
        self.closed_in = threading.current_thread().name


def _threads(prefix):
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def _wait_until_blocked_in(thread, function, timeout=30):
    """Waits until ``thread`` is inside a call of ``function`` (read from its live stack):
    the moment a test acts on, instead of a sleep that guesses it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if frame.f_code.co_name == function:
                return
            frame = frame.f_back
        time.sleep(0.001)
    raise AssertionError(f"{thread.name} never reached {function}()")


def test_prefetcher_yields_everything_in_order_and_in_batches():
    source = Source(10)
    with Prefetcher(source, batch_size=4, name="pf-all") as batches:
        assert list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert source.closed_in == "pf-all"
    assert list(Prefetcher(iter([]))) == []
    assert list(Prefetcher((i * i for i in range(5)), depth=1)) == [0, 1, 4, 9, 16]


def test_early_close_stops_the_thread_and_closes_the_source():
    source = Source(100_000)
    prefetcher = Prefetcher(source, depth=2, name="pf-early")
    assert next(prefetcher) == 0
    prefetcher.close()
    assert not _threads("pf-early")
    assert source.closed_in == "pf-early"  # closed by the thread that iterated it
    # read ahead by at most the queue's depth plus the one item being handed over
    assert source.read <= 1 + 2 + 1
    with pytest.raises(StopIteration):
        next(prefetcher)
    prefetcher.close()  # idempotent


def test_a_consumer_exception_in_a_with_block_closes_the_source():
    source = Source(100_000)
    with pytest.raises(KeyError):
        with Prefetcher(source, batch_size=10, name="pf-raise") as batches:
            for _ in batches:
                raise KeyError("consumer failed")
    assert not _threads("pf-raise")
    assert source.closed_in == "pf-raise" and source.read < 100


def test_an_abandoned_generator_closes_its_prefetcher():
    """What storage does: a generator around a prefetcher, dropped half-way."""
    source = Source(100_000)

    def batches():
        with Prefetcher(source, batch_size=5, name="pf-gen") as prefetched:
            yield from prefetched

    gen = batches()
    assert next(gen) == [0, 1, 2, 3, 4]
    gen.close()
    assert not _threads("pf-gen") and source.closed_in == "pf-gen"


def test_producer_error_is_re_raised_in_the_consumer_after_the_items_before_it():
    source = Source(10, fail_at=7)
    got = []
    with pytest.raises(OSError, match="connection lost at 7"):
        for batch in Prefetcher(source, batch_size=3, name="pf-fail"):
            got.extend(batch)
    assert got == [0, 1, 2, 3, 4, 5]  # the full batches read before the error
    assert not _threads("pf-fail") and source.closed_in == "pf-fail"


def test_prefetcher_reads_ahead_while_the_consumer_works():
    """The point of it: the next items are read while the consumer holds this one."""
    read = [threading.Event() for _ in range(4)]

    def source():
        for i in range(4):
            read[i].set()
            yield i

    prefetcher = Prefetcher(source(), depth=2)
    assert next(prefetcher) == 0
    # without read-ahead item 1 would be read only when the consumer asks for it
    assert read[1].wait(5) and read[2].wait(5)
    assert list(prefetcher) == [1, 2, 3]


def test_bad_arguments_are_refused_before_a_thread_starts():
    before = threading.active_count()
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([], depth=0)
    with pytest.raises(ValueError, match="batch_size"):
        Prefetcher([], batch_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        OrderedBatchWriter(print, num_threads=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        OrderedBatchWriter(print, max_in_flight=0)
    assert threading.active_count() == before


def test_writer_accounts_in_submission_order_and_bounds_what_is_in_flight():
    written, accounted, most_in_flight = [], [], [0]
    release = {i: threading.Event() for i in range(8)}
    done = {i: threading.Event() for i in range(8)}

    def write(i):
        release[i].wait(30)
        written.append(i)
        done[i].set()
        return i

    writer = OrderedBatchWriter(write, num_threads=3, max_in_flight=3,
                                on_written=accounted.append, name="w-order")
    for i in range(3):
        writer.submit(i)
    release[2].set()  # the third finishes first: not accounted before 0 and 1
    assert done[2].wait(30)
    assert written == [2]
    assert writer.num_written == 0 and writer.num_in_flight == 3
    # a fourth waits for the oldest, released (in reverse) by another thread: whether
    # they are released before or while submit() waits, it returns with at most 3 in flight
    releaser = threading.Thread(target=lambda: (release[1].set(), release[0].set()))
    releaser.start()
    writer.submit(3)
    assert writer.num_in_flight <= 3 and accounted[:1] == [0]
    releaser.join()
    for i in range(3, 8):
        release[i].set()
    for i in range(4, 8):
        writer.submit(i)
        most_in_flight[0] = max(most_in_flight[0], writer.num_in_flight)
    writer.close()
    assert accounted == list(range(8))  # callbacks in submission order
    assert sorted(written) == list(range(8)) and writer.num_written == 8
    assert most_in_flight[0] <= 3
    assert not _threads("w-order")


def test_one_thread_writes_in_order_and_a_with_block_writes_everything():
    written = []
    with OrderedBatchWriter(lambda ids, values: written.append((ids, values)),
                            name="w-one") as writer:
        for s in range(0, 20, 5):
            writer.submit(list(range(s, s + 5)), s)
    assert [v for _, v in written] == [0, 5, 10, 15]
    assert not _threads("w-one")


def test_a_write_error_surfaces_on_the_next_submit_and_later_batches_are_dropped():
    written = []
    fail, gate, probe_started = threading.Event(), threading.Event(), threading.Event()

    def write(i):
        if i == 1:
            fail.wait(30)
            raise OSError("disk full")
        if i == 2:  # one thread: batch 2 starts only once batch 1 has failed
            probe_started.set()
            gate.wait(30)
        written.append(i)

    writer = OrderedBatchWriter(write, num_threads=1, max_in_flight=10, name="w-fail")
    for i in range(4):  # queued before batch 1 fails; 3 waits behind 2
        writer.submit(i)
    fail.set()
    assert probe_started.wait(30)
    with pytest.raises(OSError, match="disk full"):
        writer.submit(4)
    with pytest.raises(OSError, match="disk full"):  # and again on every later call
        writer.submit(5)
    gate.set()
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    # 2 was being written when the error surfaced; 3 (queued, not started) was dropped
    assert written == [0, 2] and writer.num_written == 1
    assert not _threads("w-fail")


def test_a_write_error_behind_a_slow_batch_surfaces_without_waiting_for_it():
    gate, fail, probe_started = threading.Event(), threading.Event(), threading.Event()

    def write(i):
        if i == 0:
            gate.wait(30)
        if i == 1:
            fail.wait(30)
            raise OSError("bad batch")
        if i == 2:  # on batch 1's thread (the other holds batch 0): after 1 failed
            probe_started.set()

    writer = OrderedBatchWriter(write, num_threads=2, max_in_flight=10, name="w-behind")
    for i in range(3):
        writer.submit(i)
    fail.set()
    assert probe_started.wait(30)
    with pytest.raises(OSError, match="bad batch"):  # batch 0 is still being written
        writer.submit(3)
    gate.set()
    writer.cancel()
    assert not _threads("w-behind")


def test_a_write_error_surfaces_on_close_and_a_block_error_wins_over_it(caplog):
    writer = OrderedBatchWriter(lambda i: 1 / i, name="w-close")
    writer.submit(0)
    with pytest.raises(ZeroDivisionError):
        writer.close()
    # leaving the block closes the writer, which waits for the failing write
    with caplog.at_level(logging.WARNING), pytest.raises(KeyError):
        with OrderedBatchWriter(lambda i: 1 / i, name="w-block") as writer:
            writer.submit(0)
            raise KeyError("the caller's failure")  # what the caller sees
    assert "a write failed too: division by zero" in caplog.text  # and the other is logged
    assert not _threads("w-close") and not _threads("w-block")


def test_cancel_drops_what_has_not_started_and_joins():
    started = []
    gate, first_started = threading.Event(), threading.Event()

    def write(i):
        started.append(i)
        first_started.set()
        gate.wait(30)

    writer = OrderedBatchWriter(write, num_threads=1, max_in_flight=5, name="w-cancel")
    for i in range(5):
        writer.submit(i)
    assert first_started.wait(30)
    caller = threading.current_thread()

    def release_once_cancelled():
        # cancel() drops the queued batches, then joins the thread writing batch 0
        _wait_until_blocked_in(caller, "join")
        gate.set()

    releaser = threading.Thread(target=release_once_cancelled)
    releaser.start()
    writer.cancel()
    releaser.join()
    assert started == [0]
    assert not _threads("w-cancel")
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(5)


def test_heartbeat_beats_every_function_in_one_thread_drops_a_finished_one_survives_errors(
        caplog):
    calls = {"renew": 0, "progress": 0, "flaky": 0}
    progressed = threading.Event()
    threads = set()

    def renew():  # a lease renewal that finds the lease lost on its second beat
        threads.add(threading.current_thread().name)
        calls["renew"] += 1
        return calls["renew"] < 2

    def flaky():  # a database hiccup: logged, called again on the next beat
        calls["flaky"] += 1
        raise ConnectionError("hiccup")

    def progress():
        threads.add(threading.current_thread().name)
        calls["progress"] += 1
        if calls["progress"] >= 5:
            progressed.set()

    with caplog.at_level(logging.WARNING):
        with Heartbeat(0.001, renew, flaky, name="hb-test") as heartbeat:
            heartbeat.add(progress)
            assert progressed.wait(30)
    assert calls["renew"] == 2  # returned False once: never called again
    assert calls["flaky"] >= 5 and "hiccup" in caplog.text
    assert threads == {"hb-test"} and not _threads("hb-test") and not heartbeat.running


def test_heartbeat_stop_wakes_it_at_once_and_is_idempotent():
    beats = []
    heartbeat = Heartbeat(3600, lambda: beats.append(1), name="hb-long").start()
    assert heartbeat.running
    heartbeat.stop()  # does not wait out the hour: the thread waits on the stop event
    heartbeat.stop()
    assert not heartbeat.running and not _threads("hb-long") and beats == []
    stopped = threading.Event()

    def stop_from_a_beat():  # stopping from inside a beat does not join itself
        heartbeat_in.stop()
        stopped.set()

    heartbeat_in = Heartbeat(0.001, stop_from_a_beat, name="hb-self").start()
    assert stopped.wait(30)
    heartbeat_in.stop()
    assert not _threads("hb-self")
    with pytest.raises(ValueError, match="positive"):
        Heartbeat(0, lambda: None)
