"""The panel shows an evaluation's 95 % intervals (error bars) and its verdicts."""

import pytest

import fiftyone_prune as fop
from tests.integration.test_panel import run_event, scored  # noqa: F401 (fixture)


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
    assert list(props["plots"].type.properties) == ["curve", "histogram", "groups"]
    order = list(props)
    assert order.index("summary") < order.index("plots") < order.index("reason")
    assert out["state"]["reason"].startswith("Why **hard**")
