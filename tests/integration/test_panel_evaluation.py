"""The panel shows an evaluation's 95 % intervals (error bars) and its verdicts."""

import pytest

import fiftyone_prune as fop
from tests.integration.test_panel import plot_data, run_event, scored  # noqa: F401 (fixture)


def test_panel_curve_has_interval_error_bars_and_honest_verdicts(scored):  # noqa: F811
    result = fop.evaluate_pruning(scored, "ground_truth", "proto", fractions=(0.5,),
                                  strategies=("hard",), seeds=2)
    out = run_event(scored, "on_load", state={"run_key": "proto", "keep": "0.5",
                                              "strategy": "hard", "balance": "none"})
    data = out["data"]
    # the panel's data path ("curve" or "plots.curve") belongs to the panel's layout
    curve = data.get("curve") or data.get("plots.curve") or data.get("plots", {}).get("curve")
    traces = {t["name"]: t for t in curve}
    for row in result.table:
        bars = traces[row["strategy"]]["error_y"]
        assert bars["array"] == [pytest.approx(row["high"] - row["mean"])]
        assert bars["arrayminus"] == [pytest.approx(row["mean"] - row["low"])]
        assert bars["array"][0] > 0.05  # ~24 held-out digits: several points wide
    assert "Held out: " in out["state"]["verdicts"]
    assert "Warning: " in out["state"]["verdicts"]
    # the curve comes first among the plots, the strategy's long reason after them
    from tests.integration.test_panel import render

    props = render(scored, out["state"]).type.properties
    # the scaling view comes right after the pruning curve: its plot and the ratios
    assert list(props["plots"].type.properties) == ["curve", "scaling", "worth",
                                                    "histogram", "groups"]
    scaling = plot_data(out, "scaling")
    random = next(t for t in scaling if t["name"] == "random")
    stored = result.scaling[0]["points"]
    assert random["x"] == [p["kept"] for p in stored]
    assert random["y"] == [pytest.approx(max(p["error"], 0.5 / result.num_test))
                           for p in stored]
    assert random["error_y"]["array"][0] > 0  # 95 % intervals as error bars
    layout = out["state"]["scaling_layout"]
    assert layout["xaxis"]["type"] == layout["yaxis"]["type"] == "log"
    assert layout["xaxis"]["title"]["text"] == "training samples"
    # plain 1-2-5 (or 1-2-3-5-7) tick labels within the plotted range
    ticks = layout["xaxis"]["tickvals"]
    assert len(ticks) >= 3 and all(str(t)[0] in "12357" for t in ticks)
    # every evaluated selection is listed, with its ratio or why it has none
    worth = out["state"]["worth"]
    assert worth.startswith("**Worth in random samples**")
    assert worth.count("\n- hard 50%") == 1
    order = list(props)
    assert order.index("summary") < order.index("plots") < order.index("reason")
    assert out["state"]["reason"].startswith("Why **hard**")
