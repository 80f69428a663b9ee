"""The pruning panel sends what one event computes as one patch of state and one of
data: the App re-renders the panel and redraws every plot per patch, and a dozen patches
per refresh kept a loaded 2-core machine's browser busy for tens of seconds (the App's
clicks timed out behind it)."""

import numpy as np
from fiftyone.operators.executor import ExecutionContext, Executor

import fiftyone_prune as fop
from fiftyone_prune.plugin.panels import PruningPanel


def requests_of(dataset, method, state=None, params=None):
    executor = Executor()
    ctx = ExecutionContext(request_params={
        "dataset_name": dataset.name,
        "params": dict({"panel_id": "p1", "panel_state": dict(state or {})}, **(params or {}))},
        executor=executor)
    getattr(PruningPanel(), method)(ctx)
    return [(r["operator_uri"], r["params"]) for r in executor.to_json()["requests"]]


def test_a_refresh_is_one_state_patch_and_one_data_patch(digits_dataset):
    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8))
                                          .astype(np.float32)))
    fop.compute_prototype_scores(digits_dataset, "emb", run_key="proto", num_clusters=4,
                                 label_field="ground_truth")
    fop.evaluate_pruning(digits_dataset, "ground_truth", run_key="proto",
                         fractions=[0.5, 0.9], strategies=["random", "hard"], seeds=1)
    for method, params in (("on_load", None), ("on_change_keep", {"value": 0.5})):
        sent = requests_of(digits_dataset, method, params=params)
        uris = [uri for uri, _ in sent]
        # on_change_keep first records the control's value, then refreshes
        assert uris.count("patch_panel_state") == (1 if method == "on_load" else 2), uris
        assert uris.count("patch_panel_data") == 1, uris
        state = [p["state"] for uri, p in sent if uri == "patch_panel_state"][-1]
        data = next(p["data"] for uri, p in sent if uri == "patch_panel_data")
        # everything the refresh computes is in those patches
        assert {"run_key", "summary", "reason", "groups", "histogram_layout",
                "groups_layout", "verdicts"} <= set(state), sorted(state)
        assert {"plots.histogram", "plots.groups", "plots.curve"} <= set(data), sorted(data)
        assert state["summary"].startswith("**")


def test_events_that_change_nothing_recompute_nothing(digits_dataset):
    """Mounting the panel, the App sends each control's value and the view again (17
    events for one opening, measured in the browser): those send nothing; a change of
    a control, of the view or of the runs recomputes."""
    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8))
                                          .astype(np.float32)))
    fop.compute_prototype_scores(digits_dataset, "emb", run_key="proto", num_clusters=4)

    def event(method, state, params=None, view=None):
        executor = Executor()
        ctx = ExecutionContext(request_params={
            "dataset_name": digits_dataset.name, "view": view,
            "params": dict({"panel_id": "p1", "panel_state": state}, **(params or {}))},
            executor=executor)
        getattr(PruningPanel(), method)(ctx)
        for r in executor.to_json()["requests"]:
            if r["operator_uri"] == "patch_panel_state":
                state.update(r["params"]["state"])
        return [r["operator_uri"] for r in executor.to_json()["requests"]]

    state = {}
    assert "patch_panel_data" in event("on_load", state)
    assert state["run_key"] == "proto"
    # what the App sends while mounting: the values the panel already works with
    for method, value in (("on_change_run", "proto"), ("on_change_keep", "0.8"),
                          ("on_change_strategy", "auto"), ("on_change_balance", "cluster"),
                          ("on_change_group", "all")):
        assert "patch_panel_data" not in event(method, state, {"value": value}), method
    assert event("on_change_view", state, {"value": []}) == []
    # a control, the view and the runs changing each recompute
    assert "patch_panel_data" in event("on_change_keep", state, {"value": "0.5"})
    assert "keeps **60**" in state["summary"]
    limit = [{"_cls": "fiftyone.core.stages.Limit", "kwargs": [["limit", 50]]}]
    assert "patch_panel_data" in event("on_change_view", state, {"value": limit}, view=limit)
    assert "keeps **25**" in state["summary"]
    assert event("on_change_view", state, {"value": limit}, view=limit) == []
    fop.compute_prototype_scores(digits_dataset, "emb", run_key="proto", num_clusters=3,
                                 overwrite=True)
    assert "patch_panel_data" in event("on_change_view", state, {"value": limit}, view=limit)
    # on_load always recomputes (the panel reopened on changed data)
    assert "patch_panel_data" in event("on_load", state)
