"""What every operator of the plugin does the same way: target view, delegation,
progress (a live bar in the App, the operation's record when delegated), field
dropdowns, and showing an SDK validation error in the form."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import traceback

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.operators.message import GeneratedMessage, MessageType

PLUGIN = "@fiftyone-prune/prune"

logger = logging.getLogger(__name__)

#: views larger than this default to delegated execution (a few hundred images take
#: minutes on a CPU, longer than a user should wait on an open form)
DELEGATION_THRESHOLD = 500


#: one lock per dataset (by id, else name): see :func:`reading_runs`
_DATASET_LOCKS: dict = {}
_DATASET_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def reading_runs(ctx):
    """Holds the dataset's lock while the block loads run results.

    The App server handles every request in a thread of its own, and each context
    reloads the dataset, which FiftyOne keeps as one object per process; FiftyOne's
    ``load_run_results`` is not thread-safe on it (concurrent loads of one run's
    results read one stored file at once and fail with "'str' object has no attribute
    'decode'"). The pruning panel's events and the select form's preview (whose "auto"
    reads the evaluations) load them one at a time per dataset."""
    key = ctx.request_params.get("dataset_id") or ctx.request_params.get("dataset_name")
    with _DATASET_LOCKS_GUARD:
        lock = _DATASET_LOCKS.setdefault(key, threading.Lock())
    with lock:
        yield


def target_view(ctx):
    return ctx.target_view()


def add_view_target(ctx, inputs):
    inputs.view_target(ctx)


def operator_config(name: str, label: str, description: str, icon: str, **extra):
    """What every operator of the plugin declares: a dynamic form, immediate or delegated
    execution, and (for ``execute_with_progress``) running as a generator in the App.
    ``icon`` is ``/assets/<name>.svg``; its ``-light``/``-dark`` variants follow the theme."""
    options = dict(allow_immediate_execution=True, allow_delegated_execution=True,
                   execute_as_generator=True)
    options.update(extra)  # quick operators (run management) run immediately, not streamed
    return foo.OperatorConfig(
        name=name, label=label, description=description, icon=icon, dynamic=True,
        light_icon=icon.replace(".svg", "-light.svg"),
        dark_icon=icon.replace(".svg", "-dark.svg"), **options,
    )


def execution_options(ctx, always_delegate_above=DELEGATION_THRESHOLD):
    """Immediate and delegated are both allowed; large views default to delegated."""
    from fiftyone.operators.executor import ExecutionOptions

    try:
        n = len(ctx.target_view())
    except Exception:
        n = 0
    return ExecutionOptions(
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        default_choice_to_delegated=n > always_delegate_above,
    )


#: seconds between progress updates: the App's bar is cheap to update, a delegated
#: operation's progress is a database write
APP_PROGRESS_DT = 0.25
DELEGATED_PROGRESS_DT = 2.0


class Progress:
    """What an operator's work reports progress through: named stages (``stage``) and
    ``progress`` arguments for SDK calls (``bar``)."""

    def __init__(self, emit, dt):
        self._emit = emit
        self._dt = dt

    def stage(self, label: str):
        """A step without a measurable fraction: the App shows a moving bar and ``label``."""
        self._emit(None, label)

    def bar(self, label: str):
        """A ``progress`` argument for an SDK call; ``label`` may use ``{done}`` and
        ``{total}``."""

        def report(pb):
            total = pb.total if pb.has_total else None
            self._emit(pb.progress, label.format(done=pb.iteration,
                                                 total="?" if total is None else total))

        return fo.report_progress(report, dt=self._dt)


def streams_to_app(operator, ctx) -> bool:
    """Whether this run's messages stream to the App's progress dialog.

    Only the App's own request does: its server endpoint requires the operator's URI in
    the request (``operator_uri``) and streams the generator ``execute`` returns. Python's
    ``execute_operator`` (which exhausts a generator, dropping what it returns and
    anything it yields), a delegated run and a stage of a pipeline get the plain call:
    its result, or its exception, which FiftyOne records as the run's error."""
    return (not ctx.delegated
            and ctx.request_params.get("operator_uri") == getattr(operator, "uri", None))


def execute_with_progress(operator, ctx, work, after=None):
    """What every long operator's ``execute`` returns.

    ``work(progress)`` does the SDK call and returns the results dict; ``after(ctx,
    result)`` returns the App actions (reload, set view) to send after an immediate run.

    In the App (:func:`streams_to_app`) ``execute`` returns a generator: ``work`` runs
    in a thread while the App's progress dialog is fed from it, and at the end the
    dialog shows the operator's output, or the failure as one line (an exception here
    would cut the stream: the browser would lose the message and keep the bar running).
    Everywhere else ``work`` runs here: its dict is the run's result and its exception
    the run's error (``ExecutionResult.error``, ``raise_exceptions()``, a delegated run
    FAILED), as for any operator that does not stream.
    """
    if streams_to_app(operator, ctx):
        return _stream(operator, ctx, work, after)

    def emit(progress, label):
        ctx.set_progress(progress=progress, label=label)

    return work(Progress(emit, DELEGATED_PROGRESS_DT))


def _stream(operator, ctx, work, after):
    from fiftyone_prune.core.concurrency import ReportingCall

    call = ReportingCall(lambda report: work(Progress(lambda p, l: report((p, l)),
                                                      APP_PROGRESS_DT)),
                         name=f"{operator.config.name}-work")
    for progress, label in call:
        yield ctx.ops.set_progress(label=label, progress=progress)
    try:
        result = call.result()
    except Exception as e:
        yield show_failure(operator, ctx, e)
        yield ErrorMessage(e)
        return
    for message in after(ctx, result) if after is not None else ():
        yield message
    yield show_result(operator, ctx, result)


def error_line(exception) -> str:
    """What the App shows for a failed run: one line. A ``ValueError`` is an SDK check
    that names the problem and the fix, so its message is all; anything else says its
    type too (the traceback goes to the server's log, not to the user)."""
    message = str(exception).strip()
    if isinstance(exception, ValueError) and message:
        return message
    return f"{type(exception).__name__}: {message}" if message else type(exception).__name__


class ErrorMessage(GeneratedMessage):
    """A failed run, as the App reads it from a generator's stream: ``error`` (which the
    App shows) and ``error_message``, both the one-line :func:`error_line`; the full
    traceback is logged."""

    def __init__(self, exception):
        super().__init__(MessageType.ERROR)
        logger.error("Operator run failed:\n%s",
                     "".join(traceback.format_exception(exception)))
        self.error = error_line(exception)
        self.error_message = self.error

    def to_json(self):
        return {"type": str(self.type), "cls": None, "error": self.error,
                "error_message": self.error_message}


def show_result(operator, ctx, result):
    """The operator's output dialog for ``result``, as a message: it replaces the
    progress dialog (the form closes by itself when a generator returns nothing)."""
    ctx.request_params["results"] = result  # what resolve_output reads, as when delegated
    return _show(ctx, operator.resolve_output(ctx), result)


def show_failure(operator, ctx, exception):
    """The progress dialog's last word on a failed run (one line; the log has the
    traceback)."""
    outputs = types.Object()
    outputs.view("error", types.Error(label=error_line(exception)))
    return _show(ctx, types.Property(
        outputs, view=types.View(label=f"{operator.config.label} failed")), {})


def _show(ctx, outputs, results):
    # that dialog drops the top-level label (a form shows it as its title): nest it
    wrapper = types.Object()
    wrapper.add_property("output", outputs)
    return ctx.ops.show_output(types.Property(wrapper).to_json(), {"output": results})


#: views above this many samples get the schedule hint in the long operators' forms
SCHEDULE_HINT_ABOVE = 200


def schedule_hint(ctx, inputs, above=SCHEDULE_HINT_ABOVE):
    """FiftyOne 1.22 cannot stop an immediate run from the App (only a scheduled one can
    be marked failed or deleted), so a form whose run may be long says to schedule it."""
    try:
        n = len(ctx.target_view())
    except Exception:
        n = 0
    if n > above:
        inputs.view("schedule_hint", types.Notice(label=(
            f"{n} samples: an immediate run cannot be stopped once started. For a large "
            f"view choose 'Schedule' and run it with 'fiftyone delegated launch'")))


def mark_invalid(prop, message: str):
    """Show ``message`` under the input and keep Execute disabled."""
    prop.invalid = True
    prop.error_message = message
    return prop


def error_notice(inputs, name: str, message: str):
    """A visible error at the top of the form (under the view target, the samples it is
    about); an invalid property disables Execute."""
    prop = inputs.view(name, types.Error(label=message))
    prop.invalid = True
    prop.error_message = message
    # added last, it would sit at the bottom, under inputs it is not about
    first = [k for k in ("view_target",) if k in inputs.properties]
    order = first + [name] + [k for k in inputs.properties if k not in first and k != name]
    inputs.properties = {k: inputs.properties[k] for k in order}
    return prop


def show_error(inputs, error, default: str | None = None,
               tick: str = "Replace an existing run"):
    """Shows an SDK check's error in the form, in the App's words, and keeps Execute
    disabled.

    A :class:`~fiftyone_prune.core.params.ParameterError` is shown under the input it
    names (its ``param``: the form's inputs are named as the SDK's arguments); any other
    error under ``default``, the one input the failed check is about, or at the top of
    the form when there is none.

    Args:
        inputs: the form's ``types.Object``
        error: the exception an SDK check raised
        default (None): the input a plain ``ValueError`` is about
        tick ("Replace an existing run"): the checkbox that stands for ``overwrite=True``
    """
    param = getattr(error, "param", None) or default
    prop = inputs.properties.get(param)
    label = getattr(getattr(prop, "view", None), "label", None)
    message = app_words(str(error), tick, param=param, label=label)
    if prop is None:
        return error_notice(inputs, "input_error", message)
    return mark_invalid(prop, message)


def form(ctx, inputs, label: str, description: str | None = None):
    """The form's property, with every input the caller left out set to its default.

    The App sends every input's value, defaults included; FiftyOne's ``execute_operator``
    sends only what the caller passed and validates that against ``required`` without
    applying defaults. Filling them in here (``resolve_input`` runs before validation,
    and before a delegated run's parameters are stored) lets a Python caller leave out
    what has a default, and gives ``execute`` one set of values wherever it was called
    from. A key the caller passed (even as None) is theirs."""
    params = ctx.request_params.setdefault("params", ctx.params)
    for name, prop in inputs.properties.items():
        # the view target is FiftyOne's input: left out, the caller's view is the target
        if name == "view_target":
            continue
        if name not in params and getattr(prop, "default", None) is not None:
            params[name] = prop.default
    return types.Property(inputs, view=types.View(label=label, description=description))


def call_operator(uri, sample_collection, params, delegate=False):
    """The SDK-facing ``__call__`` convention of the official plugins: FiftyOne's
    documented ``execute_operator``, whose result it returns (a failure raises
    ``ExecutionError``)."""
    ctx = {"view": sample_collection.view()}
    result = foo.execute_operator(uri, ctx, params=params, request_delegation=delegate)
    result.raise_exceptions()
    return result.result


# --- defaults: the most recent run that fits what the user looks at --------------------

def runs_newest_first(samples, kind: str | None) -> list[str]:
    """This package's runs of ``kind`` (all with None), the most recently registered first (FiftyOne
    stamps each run; alphabetical order would pick an old run over a new one)."""
    from fiftyone_prune.sdk import runs

    dataset = samples._dataset

    def stamp(key):
        ts = dataset.get_run_info(key).timestamp
        return ts.timestamp() if ts is not None else 0.0

    return sorted(runs.list_runs(samples, kind), key=stamp, reverse=True)


def default_scoring_run(view, keys=None):
    """The most recent prototype-score run that scored every sample of ``view``, else the
    most recent one; None without runs."""
    from fiftyone_prune.sdk import runs

    keys = runs_newest_first(view, "prototypes") if keys is None else keys
    total = len(view)
    for key in keys:
        field = runs.get_run_info(view, key).config.distance_field
        if field and view._dataset.has_field(field) and view.exists(field).count() == total:
            return key
    return keys[0] if keys else None


def selections_newest_first(samples) -> list[tuple[str, object]]:
    """(selection name, run config) of every selection, the most recent first."""
    from fiftyone_prune.sdk import runs

    return [(runs.get_run_info(samples, k).config.name, runs.get_run_info(samples, k).config)
            for k in runs_newest_first(samples, "selection")]


def free_key(samples, base: str) -> str:
    """``base`` if no run uses it, else ``base_2``, ``base_3``, ..."""
    taken = set(samples._dataset.list_runs())
    if base not in taken:
        return base
    i = 2
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def unpatched(view):
    """The collection a patches view was made from (the panel's *Show hardest* opens an
    object run's objects as patches; selecting works on their source, whose labels the
    run scored), else ``view``."""
    if getattr(view, "_is_patches", False):
        return view._source_collection
    return view


def describe_target(ctx) -> str:
    """Which samples a panel or form works on, in the App's words."""
    view = ctx.view
    if getattr(view, "_is_patches", False):
        source = unpatched(view)
        return (f"the objects of {'the whole dataset' if not source._stages else 'the view'}"
                f" ({len(source)} samples) shown as patches")
    n = len(view)
    if not getattr(view, "_stages", None):
        return f"the whole dataset ({n} samples)"
    return f"the current view ({n} of {len(ctx.dataset)} samples)"


def app_words(message: str, tick: str = "Replace an existing run", param=None,
              label=None) -> str:
    """An SDK message in the App's words: a checkbox to tick, not a Python argument,
    and an input by its label (``label``, the input of SDK argument ``param``), not by
    the argument's name; a type or range check says what to enter.

    The SDK's messages stay in Python's words for Python users."""
    message = (message.replace("pass overwrite=True", f"tick '{tick}'")
               .replace("overwrite=True", f"'{tick}'"))
    if not param or not label:
        return message
    label = label.replace(" (optional)", "")
    name = re.escape(param)
    # check_scalar: "<param> must be <types>, got <value>"
    match = re.fullmatch(rf"{name} must be ([\w ]+), got (.*)", message, re.S)
    if match:
        kinds, got = match.groups()
        if "positive integer" in kinds:
            return f"{label} must be a whole number, 1 or more (got {got})"
        what = "a whole number" if re.search(r"\bint|Integral", kinds) else "a number"
        return (f"{label} is empty: enter {what}" if got == "None"
                else f"{label} must be {what} (got {got})")
    # check_scalar: "<param>=<value> is outside [lo, hi)"
    match = re.fullmatch(rf"{name}=(.*) is outside ([\[(])([^,]+), ([^\])]+)([\])])",
                         message, re.S)
    if match:
        got, left, low, high, right = match.groups()
        low_words = (f"at least {low}" if left == "[" else f"more than {low}")
        high_words = (f"at most {high}" if right == "]" else f"less than {high}")
        if low == "-inf":
            bound = high_words
        elif high == "inf":
            bound = low_words
        elif left + right == "[]":
            bound = f"between {low} and {high}"
        else:
            bound = f"{low_words} and {high_words}"
        return f"{label} must be {bound} (got {got})"
    # any other message that names the argument: name the input instead (a plain word
    # such as "keep" only where it is the argument: first, or followed by "=")
    anywhere = rf"\b{name}\b(=?)" if "_" in param else rf"^{name}\b(=?)|\b{name}(=)"
    return re.sub(anywhere, lambda m: (label if m.start() == 0 else f"'{label}'")
                  + (" " if "=" in m[0] else ""), message)
