"""One run-writer: every writer of a run (embeddings, scores, selection, evaluation, a
sharded run's coordinator) goes through :func:`run_writer`.

It takes the run key's lease (:mod:`~fiftyone_prune.sdk.leases`, renewed by a heartbeat),
reloads the dataset, checks the key free under the lease, and hands the writer a
:class:`RunWriter`: its fencing token, the :class:`~fiftyone_prune.sdk.storage.Fence` to
pass to every storage write (the database then refuses the write once the lease is
lost), staging names owned by this writer only, and the registration of the run. The
lease is released when the block ends, on every path.

Example::

    from fiftyone_prune.sdk import storage, writer

    with writer.run_writer(dataset, "prototypes", "prototypes", overwrite=True) as w:
        field = w.staging_name("prototypes_distance")
        storage.write_scalars(dataset, {field: values}, ids, fence=w.fence)
        w.register(params, results, state="in_progress")
        storage.swap_fields(dataset, {field: "prototypes_distance"}, fence=w.fence)
        w.set_state("complete")
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Callable, Iterator

from fiftyone_prune.sdk import leases, run_configs, runs, storage, validation
from fiftyone_prune.sdk.run_configs import COMPLETE


class RunWriter:
    """The writer of run ``run_key`` while :func:`run_writer` holds its lease.

    Attributes:
        samples, dataset, run_key, kind, overwrite: as given to :func:`run_writer`
        lease: the held :class:`~fiftyone_prune.sdk.leases.Lease`
        fence: the :class:`~fiftyone_prune.sdk.storage.Fence` of every write of the run
        replaces_run: whether a run was registered under ``run_key`` when the lease was
            taken (what an overwrite must keep whole until its switch)
        heartbeat: the lease's heartbeat thread; other periodic work of this writer
            joins it (``w.heartbeat.add(fn)``) instead of starting a thread
    """

    def __init__(self, samples, run_key: str, kind: str, lease, overwrite: bool):
        self.samples, self.dataset = samples, samples._dataset
        self.run_key, self.kind, self.overwrite = run_key, kind, overwrite
        self.lease = lease
        self.fence = storage.Fence.of(lease)
        self.replaces_run = run_key in self.dataset.list_runs()
        self.heartbeat = lease.heartbeat

    @property
    def token(self) -> str:
        """This writer's fencing token (its lease token)."""
        return self.lease.token

    def check(self) -> None:
        """Raises :class:`~fiftyone_prune.sdk.leases.LeaseLostError` unless the lease still
        holds (checked, and renewed, by the database)."""
        self.lease.check()

    def staging_name(self, base: str) -> str:
        """A field name owned by this writer only: ``<base>_staging_<token[:8]>``."""
        return run_configs.staging_field(base, self.token)

    def staging_tag(self, base: str) -> str:
        """A tag owned by this writer only: ``<base>:staging:<token[:8]>``."""
        return run_configs.staging_tag(base, self.token)

    def register(self, params: dict, results: dict, state: str = COMPLETE) -> None:
        """Registers the run (refused with ``LeaseLostError`` once the lease is lost);
        replaces a run of the same kind only when the writer was opened with
        ``overwrite=True``."""
        self.check()
        runs.register(self.samples, self.run_key, self.kind, params, results,
                      overwrite=self.overwrite, state=state)

    def set_state(self, state: str, **updates) -> None:
        """Records ``state`` (and other config values) of the registered run, after
        checking the lease."""
        self.check()
        runs.set_state(self.samples, self.run_key, state, **updates)


@contextlib.contextmanager
def run_writer(samples, run_key: str, kind: str, overwrite: bool = False,
               param: str = "run_key") -> Iterator[RunWriter]:
    """Holds the lease of ``run_key`` for the ``with`` block and yields its
    :class:`RunWriter`.

    Args:
        samples: the dataset or view the run writes
        run_key: the run key (checked valid before the lease is taken)
        kind: ``"embeddings"``, ``"prototypes"``, ``"selection"`` or ``"evaluation"``
        overwrite (False): whether a run of the same kind under ``run_key`` may be
            replaced
        param ("run_key"): the public argument naming the key, for errors

    Raises:
        ~fiftyone_prune.core.params.ParameterError: (``.param`` = ``param``) when the key
            is invalid, or taken (by another kind, or without ``overwrite``), checked
            under the lease after reloading the dataset
        ~fiftyone_prune.sdk.leases.RunLockedError: when another writer holds the lease
    """
    validation.check_run_key(run_key, param)
    with leases.hold(samples, run_key) as lease:
        runs.check_key_free(samples, run_key, overwrite, kind, param)
        yield RunWriter(samples, run_key, kind, lease, overwrite)


def holds_run(kind: str, key: Callable[[dict], str], param: str,
              overwrite: str = "overwrite"):
    """Decorates a public function that writes one run so that its whole body runs inside
    :func:`run_writer` (the lease held and renewed from the first check to the
    registration).

    Args:
        kind: the run's kind
        key: computes the run key from the call's arguments (by name, defaults applied)
        param: the argument that names the key, for errors
        overwrite ("overwrite"): the argument saying whether a run may be replaced

    The first argument of the function is the samples. Example::

        @holds_run("evaluation", lambda a: a["eval_key"] or f"{a['run_key']}_evaluation",
                   param="eval_key")
        def evaluate_pruning(samples, label_field, run_key="prototypes", eval_key=None,
                             overwrite=False, ...):
            ...
    """
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            samples = next(iter(arguments.values()))
            with run_writer(samples, key(arguments), kind,
                            overwrite=bool(arguments.get(overwrite)), param=param):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
