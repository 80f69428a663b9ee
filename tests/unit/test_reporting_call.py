"""core.concurrency.ReportingCall, the App's progress bridge: reports reach the caller's
thread while the work runs, a backlog collapses to its newest report, and the work's
result or error comes back in the caller's thread. Events, no sleeps."""

import threading

import pytest

from fiftyone_prune.core.concurrency import ReportingCall


def test_reports_arrive_while_the_work_runs_and_its_result_after():
    relayed = threading.Event()
    seen = []

    def work(report):
        report("first")
        assert relayed.wait(30), "the caller never received the first report"
        report("second")
        return "done"

    call = ReportingCall(work, name="test-work")
    for item in call:
        seen.append(item)
        relayed.set()  # the work goes on only once the caller has the first report
    assert seen == ["first", "second"] and call.result() == "done"


def test_a_backlog_collapses_to_its_newest_report():
    queued = threading.Event()

    def work(report):
        for i in range(5):
            report(i)
        queued.set()
        return 5

    call = ReportingCall(work)
    assert queued.wait(30)  # all five are queued before the caller reads
    assert list(call) == [4] and call.result() == 5


def test_the_works_error_is_raised_in_the_callers_thread():
    def work(report):
        report("started")
        raise KeyError("missing")

    call = ReportingCall(work, name="failing-work")
    assert list(call) == ["started"]
    with pytest.raises(KeyError, match="missing"):
        call.result()
    assert "failing-work" not in [t.name for t in threading.enumerate()]  # joined
