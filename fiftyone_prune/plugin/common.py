"""What every operator of the plugin does the same way: target view, delegation,
progress, field dropdowns, and showing an SDK validation error in the form."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

#: views larger than this default to delegated execution (a few hundred images take
#: minutes on a CPU, longer than a user should wait on an open form)
DELEGATION_THRESHOLD = 500


def target_view(ctx):
    return ctx.target_view()


def add_view_target(ctx, inputs):
    inputs.view_target(ctx)


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


def progress_callback(ctx, label: str):
    """A ``progress`` argument for SDK calls that forwards to the operation's progress:
    the delegated-operation record when delegated, the App's console otherwise."""

    def report(pb):
        try:
            fraction = pb.progress
        except Exception:
            fraction = None
        ctx.set_progress(progress=fraction, label=label)

    return fo.report_progress(report, dt=2.0)


def mark_invalid(prop, message: str):
    """Show ``message`` under the input and keep Execute disabled."""
    prop.invalid = True
    prop.error_message = message
    return prop


def error_notice(inputs, name: str, message: str):
    """A visible error at the top of the form; an invalid property disables Execute."""
    prop = inputs.view(name, types.Error(label=message))
    prop.invalid = True
    prop.error_message = message
    return prop


def form(inputs, label: str, description: str | None = None):
    return types.Property(inputs, view=types.View(label=label, description=description))


def call_operator(uri, sample_collection, params, delegate=False):
    """The SDK-facing ``__call__`` convention of the official plugins."""
    ctx = {"view": sample_collection.view()}
    result = foo.execute_operator(uri, ctx, params=params, request_delegation=delegate)
    result.raise_exceptions()
    return result.result
