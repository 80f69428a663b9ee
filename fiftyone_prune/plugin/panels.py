"""The pruning panel: look at a scoring run, try a selection, apply it, export it.

Everything it computes comes from the SDK (``selection_histogram``, runs, evaluation);
the panel only lays it out and wires buttons to views and operators.
"""

from __future__ import annotations

import contextlib
import json
import logging

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone import ViewField as F

from fiftyone_prune.core.params import (ParameterError, parse_keep,
                                     selection_spec_from_inputs)
from fiftyone_prune.plugin import common
from fiftyone_prune.plugin.common import PLUGIN

logger = logging.getLogger(__name__)

STRATEGIES = ["auto", "hard", "easy", "ccs", "density", "random"]

#: kept/pruned colours (FiftyOne's orange, a grey readable on both themes)
KEPT_COLOR, PRUNED_COLOR, CUT_COLOR = "#FF6D04", "#9E9E9E", "#E53935"
#: one colour, dash and marker per strategy of the pruning curve, readable on the light
#: and dark themes alike (no black or white); random is the dashed grey baseline
CURVE_STYLE = {
    "random": ("#9E9E9E", "dash", "circle"),
    "easy": ("#1E88E5", "solid", "square"),
    "hard": ("#E53935", "solid", "diamond"),
    "ccs": ("#8E24AA", "solid", "triangle-up"),
    "density": ("#00ACC1", "solid", "x"),
    "auto": ("#43A047", "solid", "star"),
}
ALL_DATA_COLOR = "#FBC02D"
#: the selection matched on the random learning curve (scaling plot)
WORTH_COLOR = "#43A047"

#: what every plot of the panel shares: a legend above the plot, room for axis titles,
#: transparent backgrounds (the App's theme shows through)
PLOT_HEIGHT = 270
#: no mode bar; redrawn to the panel's width when the window is resized
_PLOT_CONFIG = {"displayModeBar": False, "responsive": True}


def _layout(title, xtitle, ytitle, **extra):
    layout = {
        "height": PLOT_HEIGHT, "showlegend": True,
        # the title at the very top and room under it for a legend of two lines: in
        # a narrow panel the curve's four entries wrap, and must not cover the title
        "margin": {"t": 76, "b": 48, "l": 56, "r": 16},
        "title": {"text": title, "font": {"size": 13}, "y": 1, "yref": "container",
                  "yanchor": "top", "pad": {"t": 6}},
        # stacked bars list their legend reversed by default: kept first, as drawn
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom",
                   "traceorder": "normal"},
        "xaxis": {"title": {"text": xtitle}}, "yaxis": {"title": {"text": ytitle}},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
    }
    for key, value in extra.items():
        layout[key] = {**layout.get(key, {}), **value} if isinstance(value, dict) else value
    return layout


class PruningPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="pruning_panel",
            label="Data pruning",
            icon="content_cut",
            help_markdown=(
                "Prototype-distance histograms, what a selection keeps per class or "
                "cluster, the easiest/hardest samples, and the pruning curve against random."
            ),
        )

    def execute(self, ctx):
        # the App sends a panel's events at once (a control change and a view change, 17
        # of them while it opens) and the server handles each in a thread of its own;
        # FiftyOne's load_run_results is not thread-safe: the event's reload of the
        # dataset and concurrent reads of one run's stored results fail ("'str' object
        # has no attribute 'decode'"). One event of this panel per dataset at a time.
        with common.reading_runs(ctx):
            return super().execute(ctx)

    # --- events -----------------------------------------------------------------------
    def on_load(self, ctx):
        self._refresh(ctx, force=True)

    def on_change_dataset(self, ctx):
        self._refresh(ctx, force=True)

    def on_change_view(self, ctx):
        # the panel works on what the grid shows, like the rest of the App
        self._refresh(ctx)

    def on_change_run(self, ctx):
        ctx.panel.state.run_key = ctx.params.get("value")
        ctx.panel.state.group = None
        self._refresh(ctx)

    def on_change_keep(self, ctx):
        self._set_and_refresh(ctx, "keep")

    def on_change_strategy(self, ctx):
        self._set_and_refresh(ctx, "strategy")

    def on_change_balance(self, ctx):
        ctx.panel.state.group = None
        self._set_and_refresh(ctx, "balance")

    def on_change_label_field(self, ctx):
        ctx.panel.state.group = None
        self._set_and_refresh(ctx, "label_field")

    def on_change_group(self, ctx):
        self._set_and_refresh(ctx, "group")

    def _set_and_refresh(self, ctx, key):
        ctx.panel.state.set(key, ctx.params.get("value"))
        self._refresh(ctx)

    def show_easiest(self, ctx):
        self._show_sorted(ctx, reverse=False)

    def show_hardest(self, ctx):
        self._show_sorted(ctx, reverse=True)

    def apply_selection(self, ctx):
        s = ctx.panel.state
        try:
            keep = parse_keep(s.keep or 0.8)
        except ParameterError as e:
            _show_error(ctx, e)
            return
        # the form's samples are the panel's: the current view
        params = {"run_key": s.run_key, "keep": keep, "strategy": s.strategy or "auto",
                  "balance": s.balance or "cluster"}
        if params["balance"] == "class" and not _objects(ctx):
            params["label_field"] = _label_field(ctx)
        ctx.prompt(f"{PLUGIN}/select_samples", params=params)

    def open_export(self, ctx):
        ctx.prompt(f"{PLUGIN}/export_kept_samples")

    def open_scores(self, ctx):
        ctx.prompt(f"{PLUGIN}/compute_prototype_scores")

    def open_embeddings(self, ctx):
        ctx.prompt(f"{PLUGIN}/compute_embeddings")

    # --- helpers ------------------------------------------------------------------------
    def _runs(self, ctx):
        return common.runs_newest_first(ctx.dataset, "prototypes")

    def _refresh(self, ctx, force=False):
        # while it mounts the panel, the App sends every control's value and the view
        # again (17 events for one opening, measured), and every refresh costs a
        # histogram here and a redraw of every plot in the App: recompute only when
        # something the panel shows depends on has changed
        inputs = _inputs(ctx)
        if not force and inputs == ctx.panel.state.inputs:
            return
        with _one_patch(ctx):
            try:
                self._recompute(ctx)
            except Exception as e:  # noqa: BLE001 - a message, never a crashed panel
                # (the App replaces the whole panel by an operator error until a reload)
                logger.exception("The pruning panel could not read its runs")
                _show_error(ctx, f"Could not read this dataset's runs "
                                 f"({common.error_line(e)}): change a control or reopen the "
                                 f"panel to try again")
                ctx.panel.state.inputs = None  # the next event tries again
                return
            ctx.panel.state.inputs = _inputs(ctx)  # the run picked by default included

    def _recompute(self, ctx):
        from fiftyone_prune.sdk.evaluation import load_evaluation
        from fiftyone_prune.sdk import runs
        from fiftyone_prune.sdk.selection import selection_histogram

        keys = self._runs(ctx)
        s = ctx.panel.state
        ctx.panel.state.target = (f"Works on {common.describe_target(ctx)}: change the "
                                  f"view in the grid to work on other samples")
        if not keys:
            ctx.panel.state.run_key = None
            return
        if s.run_key not in keys:
            ctx.panel.state.run_key = common.default_scoring_run(common.unpatched(ctx.view),
                                                                 keys)
        keep = s.keep if s.keep else 0.8
        strategy = s.strategy or "auto"
        balance = s.balance or "cluster"
        group = s.group if s.group not in (None, "", "all") else None
        label_field = _label_field(ctx) if balance == "class" else None
        try:
            hist = selection_histogram(common.unpatched(ctx.view), ctx.panel.state.run_key,
                                       group=group,
                                       spec=selection_spec_from_inputs(dict(
                                           keep=keep, strategy=strategy, balance=balance,
                                           label_field=label_field)))
            ctx.panel.state.error = None
            ctx.panel.state.error_param = None
        except ValueError as e:
            _show_error(ctx, e)
            return
        plan = hist["plan"]
        objects = _objects(ctx)
        items = f"objects of '{objects}'" if objects else "samples"
        # one short line above the plots; the (long) reason goes below them, so that
        # the plots, the pruning curve first, are on screen without scrolling
        ctx.panel.state.summary = (
            f"**{plan['strategy']}** keeps **{plan['num_kept']}**, "
            f"prunes {plan['num_pruned']}"
            + (f", {plan['num_unscored']} unscored" if plan["num_unscored"] else "")
            + (f" ({items})" if objects else ""))
        ctx.panel.state.reason = f"Why **{plan['strategy']}**: {plan['strategy_reason']}"
        ctx.panel.state.groups = list(plan["groups"])
        histogram = [
            {"type": "bar", "x": hist["centers"], "y": hist["kept"], "name": "kept",
             "marker": {"color": KEPT_COLOR}},
            {"type": "bar", "x": hist["centers"], "y": hist["pruned"], "name": "pruned",
             "marker": {"color": PRUNED_COLOR}},
        ]
        if hist["cut"] is not None:
            # a trace, not a layout shape, so that the legend names it
            top = max([k + p for k, p in zip(hist["kept"], hist["pruned"])] or [1])
            histogram.append({"type": "scatter", "mode": "lines", "name": "cut",
                              "x": [hist["cut"], hist["cut"]], "y": [0, top],
                              "line": {"color": CUT_COLOR, "dash": "dash", "width": 2}})
        ctx.panel.data.set("plots.histogram", histogram)
        # hard and easy cut each group at its own distance when balance floors bind:
        # the bars' colours are the split, and no single line could be
        split = ("; kept per group, no single cut"
                 if hist["cut"] is None and plan["strategy"] in ("hard", "easy") else "")
        ctx.panel.state.histogram_layout = _layout(
            f"{hist['distance_field']}" + (f" (group {group}{split})" if group
                                           else f" ({split[2:]})" if split else ""),
            "cosine distance to prototype (hard →)", "objects" if objects else "samples",
            barmode="stack")
        groups = list(plan["groups"].items())
        names = [str(g) for g, _ in groups]
        ctx.panel.data.set("plots.groups", [
            {"type": "bar", "x": names, "y": [c["kept"] for _, c in groups],
             "name": "kept", "marker": {"color": KEPT_COLOR}},
            {"type": "bar", "x": names,
             "y": [c["total"] - c["kept"] for _, c in groups], "name": "pruned",
             "marker": {"color": PRUNED_COLOR}},
        ])
        # a supervised run's clusters are its classes
        by_class = balance == "class" or runs.get_run_info(
            ctx.dataset, ctx.panel.state.run_key).config.method_name == "supervised"
        word = "class" if by_class else "cluster"
        # a categorical axis that labels every group (numbers would be read as a range)
        ctx.panel.state.groups_layout = _layout(
            f"kept per {word}", word, "objects" if objects else "samples", barmode="stack",
            xaxis={"type": "category", "tickmode": "array", "tickvals": names,
                   "ticktext": names, "automargin": True})
        evals = [k for k in common.runs_newest_first(ctx.dataset, "evaluation")
                 if runs.get_run_info(ctx.dataset, k).config.run_key == ctx.panel.state.run_key]
        ev = None
        ctx.panel.state.curve_error = None
        if evals:  # the most recent evaluation of this run
            try:
                ev = load_evaluation(ctx.dataset, evals[0])
            except Exception as e:  # noqa: BLE001 - the histogram still shows
                logger.exception("The pruning panel could not load evaluation %r", evals[0])
                ctx.panel.state.curve_error = (
                    f"Could not read evaluation {evals[0]!r} ({common.error_line(e)}): "
                    f"change a control or reopen the panel to try again; if it persists, "
                    f"re-run 'Prune: evaluate pruning against random'")
        if ev is not None:
            traces = []
            for strat in dict.fromkeys(r["strategy"] for r in ev.table):
                rows = [r for r in ev.table if r["strategy"] == strat]
                color, dash, symbol = CURVE_STYLE.get(strat, ("#F4511E", "solid", "circle"))
                traces.append({"type": "scatter", "mode": "lines+markers", "name": strat,
                               "line": {"color": color, "dash": dash},
                               "marker": {"color": color, "symbol": symbol, "size": 7},
                               "x": [r["fraction"] for r in rows], "y": [r["mean"] for r in rows],
                               # 95 % intervals (held-out and seed noise); older
                               # evaluations have only the seed spread
                               "error_y": {"type": "data", "symmetric": False,
                                           "array": [r.get("high", r["mean"] + r["std"])
                                                     - r["mean"] for r in rows],
                                           "arrayminus": [r["mean"] - r.get(
                                               "low", r["mean"] - r["std"]) for r in rows]}})
            fractions = [r["fraction"] for r in ev.table]
            traces.append({"type": "scatter", "mode": "lines", "name": "all data",
                           "x": [min(fractions), 1.0],
                           "y": [ev.full_accuracy["mean"]] * 2,
                           "line": {"color": ALL_DATA_COLOR, "dash": "dot", "width": 2}})
            ctx.panel.data.set("plots.curve", traces)
            ctx.panel.state.verdicts = "\n".join(f"- {v}" for v in ev.verdicts)
            self._scaling(ctx, ev, plan["strategy"], keep)
        else:
            ctx.panel.state.verdicts = None
            ctx.panel.state.worth = None

    def _scaling(self, ctx, ev, strategy, keep):
        """The scaling view next to the pruning curve: each curve's points and fitted
        law on log-log axes, the panel's selection (strategy and kept fraction) matched
        on the random curve, and every selection's worth in random samples."""
        from fiftyone_prune.core.scaling import describe_worth_short
        from fiftyone_prune.sdk.evaluation import scaling_plot_data

        if not ev.scaling:  # evaluated with scaling=False, or before it existed
            ctx.panel.state.worth = None
            return
        selection = None
        try:
            fraction = parse_keep(keep)
        except ParameterError:
            fraction = None
        labels = {w["strategy"] for w in ev.worth}
        label = next((lab for lab in (strategy, f"{strategy}+dedup") if lab in labels), None)
        if label is not None and isinstance(fraction, float):
            selection = (label, fraction)
        data = scaling_plot_data(ev, selection)
        traces = []
        for curve in data["curves"]:
            color, dash, symbol = CURVE_STYLE.get(curve["strategy"].split("+")[0],
                                                  ("#F4511E", "solid", "circle"))
            pts = curve["points"]
            traces.append({
                "type": "scatter", "mode": "markers", "name": curve["strategy"],
                "legendgroup": curve["strategy"], "hovertext": curve["label"],
                "marker": {"color": color, "symbol": symbol, "size": 7},
                "x": [p["kept"] for p in pts], "y": [p["error"] for p in pts],
                "error_y": {"type": "data", "symmetric": False,
                            "array": [p["high"] - p["error"] for p in pts],
                            "arrayminus": [p["error"] - p["low"] for p in pts]}})
            if curve["line"] is not None:
                traces.append({"type": "scatter", "mode": "lines", "showlegend": False,
                               "name": f"{curve['strategy']} law",
                               "legendgroup": curve["strategy"], "hovertext": curve["label"],
                               "line": {"color": color, "dash": dash},
                               "x": curve["line"]["n"], "y": curve["line"]["error"]})
        eq = data["equivalence"]
        if eq is not None and eq["ratio"] is not None:
            # the selection's point, a line across to the random law at the same error,
            # and the equivalent size's 95 % interval as a thick band on that line
            y = eq["error"]
            traces += [
                {"type": "scatter", "mode": "lines", "showlegend": False,
                 "name": "random law (extended)", "line": {"color": CURVE_STYLE["random"][0],
                                                           "dash": "dot", "width": 1},
                 "x": eq["random_line"]["n"], "y": eq["random_line"]["error"]},
                {"type": "scatter", "mode": "lines", "showlegend": False,
                 "name": "equivalent interval", "hoverinfo": "skip",
                 "line": {"color": WORTH_COLOR, "width": 8}, "opacity": 0.35,
                 "x": [eq["equivalent_low"], eq["equivalent_high"]], "y": [y, y]},
                {"type": "scatter", "mode": "lines+markers",
                 "name": f"worth {eq['ratio']:.2f}x",
                 "hovertext": eq["label"],
                 "line": {"color": WORTH_COLOR, "width": 2},
                 "marker": {"color": WORTH_COLOR, "size": [13, 9],
                            "symbol": ["star", "circle-open"]},
                 "x": [eq["kept"], eq["random_equivalent"]], "y": [y, y]}]
        ctx.panel.data.set("plots.scaling", traces)
        xs = [x for t in traces for x in t["x"]]
        ys = [y for t in traces for y in t["y"]]
        # log axes labelled 1-2-5 in plain numbers (plotly's own labels every digit of
        # every decade, unreadable in the ~350 px the panel has beside the grid)
        ctx.panel.state.scaling_layout = _layout(
            "worth: error vs training samples (log-log)", "training samples",
            "held-out error",
            xaxis={"type": "log", **_log_ticks(min(xs), max(xs), lambda v: f"{v:,.0f}")},
            yaxis={"type": "log", **_log_ticks(min(ys), max(ys), lambda v: f"{v:g}")})
        lines = [f"- {describe_worth_short(w)}" for w in ev.worth]
        chosen = f" ({eq['label']})" if eq is not None else ""
        ctx.panel.state.worth = (
            f"**Worth in random samples** (ratio with 95% interval){chosen}:\n"
            + "\n".join(lines))

    def _show_sorted(self, ctx, reverse):
        from fiftyone_prune.sdk import runs

        cfg = runs.get_run_info(ctx.dataset, ctx.panel.state.run_key).config
        group = ctx.panel.state.group
        # an object-level run's objects themselves, as patches
        view, distance, cluster = runs.scored_view(ctx.dataset, cfg)
        if group not in (None, "", "all"):
            label_field = cfg.patches_field if _objects(ctx) else _label_field(ctx)
            if (ctx.panel.state.balance or "cluster") == "class" and label_field:
                view = view.match(F(f"{label_field}.label") == group)
            else:
                value = group if cfg.method_name == "supervised" else int(group)
                view = view.match(F(cluster) == value)
        ctx.ops.set_view(view.sort_by(distance, reverse=reverse))

    # --- layout -------------------------------------------------------------------------
    def render(self, ctx):
        panel = types.Object()
        s = ctx.panel.state
        keys = self._runs(ctx)
        if not keys:
            panel.md(
                "##### No prototype scores yet\n"
                "1. **Prune: compute embeddings** (SwAV ResNet-50, or reuse a vector field)\n"
                "2. **Prune: compute prototype scores**\n\n"
                "Then this panel shows the distance histograms, what a selection keeps per "
                "class or cluster, and the pruning curve.", name="empty")
            panel.btn("embed", label="Compute embeddings", on_click=self.open_embeddings,
                      variant="contained")
            panel.btn("score", label="Compute prototype scores", on_click=self.open_scores)
            return types.Property(panel, view=types.GridView(orientation="vertical", gap=2,
                                                              padding=2))
        # two short rows of controls, each as wide as its content: they fit the panel
        # beside the grid at 1000 px (~350 px) and at 1400 px (~540 px)
        controls = panel.v_stack("controls", gap=1)
        rows = {"run": controls.h_stack("run", align_x="left", gap=2)}
        bad = s.error_param

        def control(row, name, choices, label, default, on_change):
            dropdown = types.DropdownView(componentsProps=_FIT)
            for value, text in choices:
                dropdown.add_choice(value, label=text)
            prop = row.enum(name, dropdown.values(), default=default, label=label,
                            view=dropdown, on_change=on_change)
            if bad == name:
                common.mark_invalid(prop, s.error)

        control(rows["run"], "run_key", [(k, k) for k in keys], "Scoring run",
                s.run_key or keys[0], self.on_change_run)
        keep = rows["run"].str("keep", default=str(s.keep or 0.8), label="Keep",
                               on_change=self.on_change_keep,
                               view=types.TextFieldView(componentsProps={
                                   "item": {"sx": {"width": "88px", "flex": "0 0 auto"}}}))
        if bad == "keep":
            common.mark_invalid(keep, s.error)
        control(rows["run"], "strategy", [(n, n) for n in STRATEGIES], "Strategy",
                s.strategy or "auto", self.on_change_strategy)
        if bad in ("run_key", "keep", "strategy"):
            controls.view("run_error", types.Error(label=s.error))
        rows["groups"] = controls.h_stack("groups", align_x="left", gap=2)
        # "class" needs a Classification field to take the classes from
        objects = _objects(ctx)  # an object-level run: classes are the objects' labels
        label_fields = [] if objects else _classification_fields(ctx)
        balances = ["cluster"] + (["class"] if label_fields or objects else []) + ["none"]
        control(rows["groups"], "balance", [(n, n) for n in balances],
                "Balance", s.balance or "cluster", self.on_change_balance)
        if s.balance == "class" and label_fields:
            control(rows["groups"], "label_field", [(f, f) for f in label_fields],
                    "Label field", _label_field(ctx), self.on_change_label_field)
        control(rows["groups"], "group",
                [("all", "all groups")] + [(str(g), str(g)) for g in s.groups or []],
                "Group", s.group or "all", self.on_change_group)
        if bad in ("balance", "group"):
            controls.view("groups_error", types.Error(label=s.error))
        # the actions sit right under the controls, on one line where the panel is wide
        # enough and on two (whole buttons, never a broken label) where it is not
        buttons = panel.grid("buttons", gap=2)
        buttons.btn("easiest", label="Show easiest", on_click=self.show_easiest,
                    componentsProps=_NOWRAP_BUTTON)
        buttons.btn("hardest", label="Show hardest", on_click=self.show_hardest,
                    componentsProps=_NOWRAP_BUTTON)
        # bad input (e.g. Keep "abc") is explained under its control and can't be applied
        buttons.btn("apply", label="Apply selection", on_click=self.apply_selection,
                    variant="contained", disabled=bool(s.error),
                    componentsProps=_NOWRAP_BUTTON)
        buttons.btn("export", label="Export kept", on_click=self.open_export,
                    componentsProps=_NOWRAP_BUTTON)
        # a markdown property shows the panel state of its name
        panel.md(s.target or "", name="target")
        if s.error and not bad:
            panel.view("error", types.Error(label=s.error))
        elif not s.error:
            panel.md(s.summary or "", name="summary")
        plots = panel.grid("plots", gap=2)
        # the pruning curve first: whether pruning pays is the panel's first question,
        # and it is on screen without scrolling at 1400x900
        if s.curve_error:  # where the curve would be
            plots.view("curve_error", types.Warning(label=s.curve_error))
        if s.verdicts:
            plots.plot("curve", layout=_layout(
                "pruning curve (held-out accuracy, 95% intervals)", "fraction kept",
                "held-out accuracy"), config=_PLOT_CONFIG)
        if s.verdicts and s.worth:
            # right after the pruning curve: what the kept sets are worth in random
            # samples; log-log, where a power law is a straight line
            plots.plot("scaling", layout=s.scaling_layout or {},
                       config=_PLOT_CONFIG)
            plots.md(s.worth, name="worth")
        if not s.error:
            plots.plot("histogram", layout=s.histogram_layout or {},
                       config=_PLOT_CONFIG)
            plots.plot("groups", layout=s.groups_layout or {},
                       config=_PLOT_CONFIG)
            panel.md(s.reason or "", name="reason")
        if s.verdicts:
            panel.md(s.verdicts, name="verdicts")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2,
                                                          padding=2))


def _log_ticks(low, high, text):
    """Tick values 1, 2, 5 x 10^k from ``low`` to ``high`` (positive), and their labels;
    with fewer than three in range, 1-2-3-5 steps."""
    import math

    for mantissas in ((1, 2, 5), (1, 2, 3, 5, 7)):
        values = [round(m * 10 ** k, 10) for k in range(math.floor(math.log10(low)) - 1,
                                             math.ceil(math.log10(high)) + 1)
                  for m in mantissas if low / 1.15 <= m * 10 ** k <= high * 1.15]
        if len(values) >= 3:
            break
    return {"tickvals": values, "ticktext": [text(v) for v in values]}


def _show_error(ctx, error):
    """Puts ``error`` in the panel state; a :class:`ParameterError` about one of the
    panel's controls is shown under that control (``render``), in the App's words (the
    control by its label), any other at the top."""
    param = getattr(error, "param", None)
    ctx.panel.state.error = common.app_words(str(error), param=param,
                                             label=_CONTROL_LABELS.get(param))
    ctx.panel.state.error_param = param if param in _CONTROL_ROWS else None


#: the panel's controls, by the SDK argument each one sets, and the row it sits in
_CONTROL_ROWS = {"run_key": "run", "keep": "run", "strategy": "run",
                 "balance": "groups", "label_field": "groups", "group": "groups"}
#: their labels, as the panel shows them
_CONTROL_LABELS = {"run_key": "Scoring run", "keep": "Keep", "strategy": "Strategy",
                   "balance": "Balance", "label_field": "Label field", "group": "Group"}

#: a control or button as wide as its content (the App's grid items are full width),
#: its text on one line: the panel beside the grid is ~350 px wide in a 1000 px window
_FIT = {"item": {"sx": {"width": "auto", "flex": "0 0 auto"}}}
_NOWRAP_BUTTON = {**_FIT, "button": {"sx": {"whiteSpace": "nowrap"}}}


PANELS = [PruningPanel]


def _inputs(ctx) -> str:
    """What the panel's plots and summary depend on: the App's view, the controls'
    values as the panel reads them, and the runs (a new or re-computed run has a new
    timestamp)."""
    s = ctx.panel.state
    view = [ctx.request_params.get(k) for k in ("view_name", "view", "filters", "extended")]
    runs = sorted((k, _timestamp(ctx.dataset, k)) for k in ctx.dataset.list_runs())
    controls = [s.run_key, str(s.keep or 0.8), s.strategy or "auto", s.balance or "cluster",
                s.label_field, s.group if s.group not in (None, "", "all") else None]
    return json.dumps([view, controls, runs], default=str)


def _classification_fields(ctx) -> list[str]:
    from fiftyone_prune.sdk import validation

    return validation.classification_fields(ctx.dataset)


def _objects(ctx) -> str | None:
    """The Detection(s) field the panel's run scored the objects of, or None (a run of
    samples, or no run)."""
    from fiftyone_prune.sdk import runs

    try:
        return getattr(runs.get_run_info(ctx.dataset, ctx.panel.state.run_key).config,
                       "patches_field", None)
    except Exception:  # noqa: BLE001 - no run (yet)
        return None


def _label_field(ctx):
    """The field whose classes "class" balance uses: the panel's choice, else the
    scoring run's label field, else the first Classification field; None without one
    (and for an object-level run, whose classes are the objects' own labels)."""
    from fiftyone_prune.sdk import runs

    if _objects(ctx):
        return None
    fields = _classification_fields(ctx)
    s = ctx.panel.state
    if s.label_field in fields:
        return s.label_field
    try:
        run_field = runs.get_run_info(ctx.dataset, s.run_key).config.label_field
    except Exception:  # noqa: BLE001 - no run (yet): the first field
        run_field = None
    if run_field in fields:
        return run_field
    return fields[0] if fields else None


def _timestamp(dataset, run_key):
    try:
        return str(dataset.get_run_info(run_key).timestamp)
    except Exception:  # another tool's run whose class does not load here
        return None


@contextlib.contextmanager
def _one_patch(ctx):
    """Sends the panel state and data set in the block as one patch each: the App
    re-renders the panel and redraws its plots on every patch, and a refresh sets a
    dozen values (each a patch of its own, it took the App ~50 s of CPU on a loaded
    2-core machine to show the plots)."""
    pending = {"patch_panel_state": {}, "patch_panel_data": {}}
    sent = {name: getattr(ctx.ops, name) for name in pending}
    for name, values in pending.items():
        setattr(ctx.ops, name, lambda d, panel_id=None, _v=values: _v.update(d))
    try:
        yield
    finally:
        for name, send in sent.items():
            delattr(ctx.ops, name)
            if pending[name]:
                send(pending[name])
