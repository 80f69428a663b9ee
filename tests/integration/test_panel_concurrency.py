"""The pruning panel under concurrent events, as the App sends them: many events on one
dataset handled at once, each in its own thread and with its own execution context
(which reloads the dataset, as the server's does), on a real dataset with an
evaluation run. FiftyOne's ``load_run_results`` is not thread-safe; the panel must
never crash on it, and a run whose results can't be read is a message, not an error."""

import threading

import pytest

from fiftyone.operators.executor import ExecutionContext, Executor

import fiftyone_prune as fop
from fiftyone_prune.plugin.panels import PruningPanel
from tests.integration.test_panel import plot_data, render, scored  # noqa: F401 (fixture)

STATE = {"run_key": "proto", "keep": "0.5", "strategy": "hard", "balance": "none"}
THREADS = 12
ROUNDS = 3


def panel_event(dataset_name, method, state, params=None):
    """One panel event through the panel's ``execute``, as the App server runs it: a
    fresh context that loads the dataset by name; returns the state and data it sent."""
    executor = Executor()
    ctx = ExecutionContext(request_params={
        "dataset_name": dataset_name,
        "params": dict({"panel_id": "p1", "panel_state": dict(state), "__method__": method},
                       **(params or {}))},
        executor=executor)
    PruningPanel().execute(ctx)
    out = {"state": dict(state), "data": {}}
    for r in executor.to_json()["requests"]:
        if r["operator_uri"] == "patch_panel_state":
            out["state"].update(r["params"]["state"])
        elif r["operator_uri"] == "patch_panel_data":
            out["data"].update(r["params"]["data"])
    return out


def _at_once(calls):
    """Runs every call in its own thread, all released together; returns
    ``(results, errors)``."""
    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), []

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.fixture()
def evaluated(scored):  # noqa: F811
    fop.evaluate_pruning(scored, "ground_truth", "proto", fractions=(0.5,),
                         strategies=("hard",), seeds=1)
    return scored


def test_concurrent_panel_events_load_run_results_safely(evaluated):
    name = evaluated.name
    expected = panel_event(name, "on_load", STATE)
    assert expected["state"]["error"] is None and expected["state"]["verdicts"]
    assert plot_data(expected, "curve")
    for _ in range(ROUNDS):
        # on_load recomputes whatever the state says: every thread loads the run and
        # evaluation results (auto reads the evaluation too, through the SDK's advice)
        calls = [lambda s=dict(STATE, strategy=st): panel_event(name, "on_load", s)
                 for st in ("hard", "auto") * (THREADS // 2)]
        results, errors = _at_once(calls)
        assert not errors, errors
        for out in results:
            assert out["state"]["error"] is None, out["state"]["error"]
            assert out["state"].get("curve_error") is None, out["state"]["curve_error"]
            assert plot_data(out, "curve") == plot_data(expected, "curve")
            assert out["state"]["verdicts"] == expected["state"]["verdicts"]
        hard = [o for o in results if o["state"]["strategy"] == "hard"]
        assert all(plot_data(o, "histogram") == plot_data(expected, "histogram")
                   for o in hard)


@pytest.mark.slow  # 35 s on 2 cores: 720 events, one at a time
def test_the_panel_lock_makes_concurrent_run_result_loads_safe(evaluated):
    """What the panel's events do under ``common.reading_runs``, many at once: load the
    dataset as the server does (a reload, which empties FiftyOne's results cache), then
    load the evaluation's and the scoring run's results. Without the lock this fails
    ("'str' object has no attribute 'decode'": concurrent reads of one stored result)."""
    import fiftyone as fo

    from fiftyone_prune.plugin import common

    eval_key = next(k for k in evaluated.list_runs() if k.endswith("_evaluation"))
    expected = fop.load_evaluation(evaluated, eval_key).table

    def event():
        ctx = ExecutionContext(request_params={"dataset_name": evaluated.name})
        with common.reading_runs(ctx):
            dataset = fo.load_dataset(evaluated.name, reload=True)
            for _ in range(3):
                table = dataset.load_run_results(eval_key, load_view=False).table
                dataset.load_run_results("proto", load_view=False)
            return table

    def events():  # one panel's events in a row
        return [event() for _ in range(3)]

    for _ in range(10):
        results, errors = _at_once([events] * 24)
        assert not errors, errors[:3]
        assert all(t == expected for tables in results for t in tables)


def test_unreadable_evaluation_is_a_message_in_the_panel(evaluated):
    eval_key = next(k for k in evaluated.list_runs() if k.endswith("_evaluation"))
    # its stored results are gone (the run is still registered)
    from fiftyone.core.runs import Run

    Run.save_run_results(evaluated, eval_key, None, overwrite=True)
    out = panel_event(evaluated.name, "on_load", STATE)
    message = out["state"]["curve_error"]
    assert message.startswith(f"Could not read evaluation {eval_key!r}")
    assert "re-run 'Prune: evaluate pruning against random'" in message
    # the rest of the panel still works: the histogram and the summary
    assert out["state"]["error"] is None and "keeps **60**" in out["state"]["summary"]
    assert sum(plot_data(out, "histogram")[0]["y"]) == 60
    plots = render(evaluated, out["state"]).type.properties["plots"].type.properties
    assert plots["curve_error"].view.label == message
    assert "curve" not in plots
