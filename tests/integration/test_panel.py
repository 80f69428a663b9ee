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
    # from the axis to the tallest (stacked) bar: never hidden behind the bars
    assert cut[0]["y"] == [0, max(k + p for k, p in zip(kept, pruned))]
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
    # in the App's words: the control by its label, not the SDK's argument
    assert out["state"]["error"].startswith("Keep 2.5 is outside (0, 1]")
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
    assert out["state"]["error"].startswith("Keep must be a fraction")
    assert out["state"]["error_param"] == "keep"


def _controls(dataset, state):
    groups = render(dataset, state).type.properties["controls"].type.properties["groups"]
    return groups.type.properties


def test_panel_offers_class_balance_only_with_a_label_field(scored):
    """"class" balance takes its classes from a Classification field: offered only where
    one exists, with a Label field control to pick it."""
    unlabelled = scored.clone()
    try:
        unlabelled.delete_sample_field("ground_truth")
        out = run_event(unlabelled, "on_load")
        controls = _controls(unlabelled, out["state"])
        assert controls["balance"].type.values == ["cluster", "none"]
        assert "label_field" not in controls
    finally:
        unlabelled.delete()

    scored.add_sample_field("coarse", fo.EmbeddedDocumentField,
                            embedded_doc_type=fo.Classification)
    scored.set_values("coarse", [fo.Classification(label="low" if int(g) < 5 else "high")
                                 for g in scored.values("ground_truth.label")])
    out = run_event(scored, "on_change_balance", state={"run_key": "proto", "keep": "0.5"},
                    params={"value": "class"})
    controls = _controls(scored, out["state"])
    assert controls["balance"].type.values == ["cluster", "class", "none"]
    # the run's own label field by default
    assert controls["label_field"].type.values == ["coarse", "ground_truth"]
    assert controls["label_field"].default == "ground_truth"
    assert set(out["state"]["groups"]) == set(scored.distinct("ground_truth.label"))
    # another field: its classes are the groups, and what the Group filter shows
    out = run_event(scored, "on_change_label_field", state=out["state"],
                    params={"value": "coarse"})
    assert out["state"]["error"] is None
    assert set(out["state"]["groups"]) == {"low", "high"}
    out = run_event(scored, "on_change_group", state=out["state"], params={"value": "low"})
    hist = plot_data(out, "histogram")
    assert sum(hist[0]["y"]) + sum(hist[1]["y"]) == len(scored.match(
        fo.ViewField("coarse.label") == "low"))
    views = run_event(scored, "show_hardest", state=out["state"])["other"]
    assert "coarse.label" in str(views[0]["params"]["view"])
    # Apply selection pre-fills the select form with that field
    prompt = run_event(scored, "apply_selection", state=out["state"])["other"]
    assert prompt[0]["params"]["params"]["label_field"] == "coarse"


def test_panel_draws_a_cut_only_where_the_split_is_one(scored):
    """Per-cluster balance floors make hard keep each cluster's hardest: the split is
    then no single distance, and the histogram says so instead of drawing a line that
    would not match its kept/pruned bars."""
    seen = set()
    for keep in ("0.1", "0.25", "0.5", "0.75"):
        out = run_event(scored, "on_load", state={"run_key": "proto", "keep": keep,
                                                  "strategy": "hard", "balance": "cluster"})
        hist = plot_data(out, "histogram")
        cut = [t for t in hist if t["name"] == "cut"]
        title = out["state"]["histogram_layout"]["title"]["text"]
        assert bool(cut) != ("no single cut" in title), (keep, title)
        if cut:  # then every kept bar lies on the kept side of it
            kept_x = [x for x, k in zip(hist[0]["x"], hist[0]["y"]) if k]
            assert min(kept_x) >= cut[0]["x"][0] - (hist[0]["x"][1] - hist[0]["x"][0])
        seen.add(bool(cut))
    assert False in seen  # the fixture has a keep whose split is per cluster
