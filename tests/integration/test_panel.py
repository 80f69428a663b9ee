"""The pruning panel's Python side on real datasets: what it sends to the App (panel
state and plot data) and the views its buttons open. The browser tests render it."""

import numpy as np
import pytest

import fiftyone as fo
from fiftyone.operators.executor import ExecutionContext, Executor

import fiftyone_prune as fop
from fiftyone_prune.plugin.panels import PruningPanel


def run_event(dataset, method, state=None, params=None):
    executor = Executor()
    ctx = ExecutionContext(request_params={
        "dataset_name": dataset.name,
        "params": dict({"panel_id": "p1", "panel_state": dict(state or {})}, **(params or {}))},
        executor=executor)
    getattr(PruningPanel(), method)(ctx)
    out = {"state": dict(state or {}), "data": {}, "other": []}
    for r in executor.to_json()["requests"]:
        if r["operator_uri"] == "patch_panel_state":
            out["state"].update(r["params"]["state"])
        elif r["operator_uri"] == "patch_panel_data":
            out["data"].update(r["params"]["data"])
        else:
            out["other"].append(r)
    return out


def render(dataset, state):
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name,
                                           "params": {"panel_id": "p1", "panel_state": state}},
                           executor=Executor())
    return PruningPanel().render(ctx)


def plot_data(out, name):
    """A plot's traces: the panel keeps them under its "plots" grid."""
    data = out["data"]
    return data.get(f"plots.{name}") or data.get("plots", {}).get(name) or data[name]


def test_panel_without_runs_says_what_to_run_first(digits_dataset):
    out = run_event(digits_dataset, "on_load")
    assert out["state"].get("run_key") is None
    prop = render(digits_dataset, out["state"])
    text = str(prop.to_json())
    assert "No prototype scores yet" in text and "compute embeddings" in text.lower()


@pytest.fixture()
def scored(digits_dataset):
    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8)).astype(np.float32)))
    fop.compute_prototype_scores(digits_dataset, "emb", run_key="proto", num_clusters=4,
                                 label_field="ground_truth")
    return digits_dataset


def test_panel_histogram_matches_the_selection(scored):
    out = run_event(scored, "on_load", state={"keep": "0.25", "strategy": "hard",
                                              "balance": "none"})
    hist = plot_data(out, "histogram")
    kept, pruned = hist[0]["y"], hist[1]["y"]
    assert sum(kept) == 30 and sum(pruned) == 90
    # hard without balance is a threshold: the cut is drawn at the smallest kept distance
    dist = np.sort(scored.values("proto_distance"))[::-1]
    cut = [t for t in hist if t["name"] == "cut"]
    assert cut and cut[0]["x"][0] == pytest.approx(dist[29], abs=1e-6)
    # every plot has a legend and axis titles
    layout = out["state"]["histogram_layout"]
    assert layout["showlegend"] and layout["xaxis"]["title"]["text"]
    assert layout["yaxis"]["title"]["text"] == "samples"
    groups = plot_data(out, "groups")
    assert sum(groups[0]["y"]) == 30
    assert [t["name"] for t in groups] == ["kept", "pruned"]
    # a categorical axis labelling every group
    axis = out["state"]["groups_layout"]["xaxis"]
    assert axis["type"] == "category" and axis["tickvals"] == groups[0]["x"]
    assert "keeps **30**" in out["state"]["summary"]
    prop = render(scored, out["state"])
    assert {"controls", "plots", "buttons"} <= set(prop.type.properties)
    assert {"histogram", "groups"} <= set(prop.type.properties["plots"].type.properties)
    # the buttons come before the plots: no scrolling past them to reach the curve
    order = list(prop.type.properties)
    assert order.index("buttons") < order.index("plots")


def test_panel_group_filter_and_sorted_views(scored):
    out = run_event(scored, "on_change_group", state={"keep": "0.5", "balance": "class",
                                                      "run_key": "proto"},
                    params={"value": "3"})
    n3 = len(scored.match(fo.ViewField("ground_truth.label") == "3"))
    hist = plot_data(out, "histogram")
    assert sum(hist[0]["y"]) + sum(hist[1]["y"]) == n3
    views = run_event(scored, "show_hardest", state=out["state"])["other"]
    assert views and views[0]["operator_uri"] == "set_view"
    stages = str(views[0]["params"]["view"])
    assert "SortBy" in stages and "proto_distance" in stages


def test_panel_bad_keep_is_shown_under_keep_not_raised(scored):
    out = run_event(scored, "on_change_keep", state={"run_key": "proto"}, params={"value": "2.5"})
    assert out["state"]["error"].startswith("keep=2.5 is outside (0, 1]")
    assert out["state"]["error_param"] == "keep"
    # rendered under the row holding Keep, Keep marked invalid, nothing to apply
    props = render(scored, out["state"]).type.properties
    controls = props["controls"].type.properties
    assert list(controls) == ["run", "run_error", "groups"]
    assert controls["run_error"].view.label == out["state"]["error"]
    keep = controls["run"].type.properties["keep"]
    assert keep.invalid and keep.error_message == out["state"]["error"]
    assert props["buttons"].type.properties["apply"].view.to_json()["disabled"]
    assert "error" not in props and "summary" not in props
    # a valid value clears it
    out = run_event(scored, "on_change_keep", state=out["state"], params={"value": "0.5"})
    assert out["state"]["error"] is None and "keeps **60**" in out["state"]["summary"]
    props = render(scored, out["state"]).type.properties
    assert "run_error" not in props["controls"].type.properties
    assert not props["buttons"].type.properties["apply"].view.to_json()["disabled"]


def test_panel_apply_with_bad_keep_prompts_nothing(scored):
    out = run_event(scored, "apply_selection", state={"run_key": "proto", "keep": "abc"})
    assert out["other"] == []
    assert "keep must be a fraction" in out["state"]["error"]
    assert out["state"]["error_param"] == "keep"
