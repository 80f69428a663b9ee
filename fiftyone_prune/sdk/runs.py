"""Provenance: every embeddings / scoring / selection / evaluation run is a FiftyOne run.

Each kind has its own run class (:mod:`fiftyone_prune.sdk.run_configs`), registered on
the view it ran on (``load_run_view`` gives it back). The config records every
parameter, the names of what the run created and the versions of what computed it;
FiftyOne adds its own version and a timestamp. FiftyOne's own ``delete_run`` and
``rename_run`` then do what this module's do, under the run's lease too (refused while
another process writes the run); runs load where this package is not importable (as
FiftyOne's generic ``RunConfig``).

Every run also records a ``state`` (``"complete"``; ``"in_progress"`` while its output
is switched in; ``"sharded"`` while shards compute it) and a ``version`` (a fresh uuid
per registration): a selection records the ``version`` of the scoring run it was made
from, so a selection whose scores were recomputed since is recognised as stale
(:func:`run_status`); a complete scoring run records what its fields hold (``check``),
so values it did not write (merged in from another dataset) are recognised too.
Writers go through :mod:`fiftyone_prune.sdk.writer`, which holds the run's lease
(:mod:`fiftyone_prune.sdk.leases`) and fences every write.
"""

from __future__ import annotations

import logging
import platform
import uuid

import fiftyone as fo
import fiftyone.core.runs as fors

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import leases, shard_plans, storage, validation
from fiftyone_prune.sdk.run_configs import (  # check_key_free, dependent_runs, kept_view,
    # scored_view, selection_labels: re-exported
    COMPLETE, CONFIGS, IN_PROGRESS, METHOD_PREFIX, SHARDED, RunChangeRefused, check_key_free,
    dependent_runs, kept_view, plan_id, recorded_tag_counts, run_for, scored_view,
    selection_labels, selection_owner, selection_names)

logger = logging.getLogger(__name__)

KINDS = tuple(CONFIGS)


def versions() -> dict:
    import fiftyone_prune

    out = {"fiftyone": fo.__version__, "fiftyone_prune": fiftyone_prune.__version__,
           "python": platform.python_version()}
    try:
        from fiftyone_prune.core.faiss_loader import load_faiss

        faiss = load_faiss()

        out["faiss"] = faiss.__version__
    except Exception:
        pass
    try:
        import numpy

        out["numpy"] = numpy.__version__
    except Exception:
        pass
    return out


def owned_fields(samples, run_key: str) -> list[str]:
    """The sample fields run ``run_key`` created (by its run class); [] without it."""
    if run_key not in list_runs(samples):
        return []
    return run_for(samples._dataset.get_run_info(run_key).config).get_fields(samples, run_key)


def register(samples, run_key: str, kind: str, params: dict, results: dict,
             overwrite: bool = False, state: str = COMPLETE) -> None:
    """Registers a run of ``kind`` on ``samples`` (the view it ran on) under its lease
    (taken here unless the caller holds it). The run class checks again, under the
    lease, that the key may be written: a writer that checked before another one
    registered the same key then gets the clear error, not a silent replacement.

    Args:
        samples: the dataset or view the run ran on
        run_key: the run key
        kind: one of :data:`KINDS`
        params: the config's parameters (see the config classes of
            :mod:`~fiftyone_prune.sdk.run_configs`)
        results: JSON-serialisable values stored as the run's results
        overwrite (False): replace a run of the same kind under ``run_key`` (what it
            created is not cleaned up: the caller has replaced it)
        state ("complete"): the recorded state; a complete run also records its
            ``check`` (what its fields hold: see :func:`set_state`; ``params`` may
            carry it)
    """
    with leases.hold(samples, run_key) as lease:
        lease.check()
        config = CONFIGS[kind](state=state, version=uuid.uuid4().hex, versions=versions(),
                               **params)
        if state == COMPLETE and params.get("check") is None:  # a writer may pass it
            config.check = run_for(config).check_value(samples._dataset)
        samples.register_run(run_key, config,
                             results=fors.RunResults(samples, config, run_key, **results),
                             overwrite=overwrite, cleanup=False)


def set_state(samples, run_key: str, state: str, **updates) -> None:
    """Changes the recorded ``state`` (and other config values) of a run; on
    ``"complete"`` also records what its fields hold (``check``: one aggregation over
    the dataset, unless the writer passes ``check=`` itself, e.g. a scoring writer's
    ``{"count": n, "sum": s}`` of the distances it wrote)."""
    dataset = samples._dataset
    config = dataset.get_run_info(run_key).config
    config.state = state
    for name, value in updates.items():
        setattr(config, name, value)
    if state == COMPLETE and updates.get("check") is None:
        config.check = run_for(config).check_value(dataset)
    dataset.update_run_config(run_key, config)


def list_runs(samples, kind: str | None = None) -> list[str]:
    """Run keys of this package's runs: FiftyOne's ``list_runs`` filtered by
    ``method`` (``"fiftyone_prune.<kind>"``, shared by runs of older versions).

    Args:
        samples: a dataset or view (runs are listed for its dataset)
        kind (None): ``"embeddings"``, ``"prototypes"``, ``"selection"`` or
            ``"evaluation"``; None for every kind

    Returns:
        a sorted list of run keys

    Example::

        import fiftyone_prune as fop

        fop.list_runs(dataset, "prototypes")  # == dataset.list_runs(method="fiftyone_prune.prototypes")
    """
    dataset = samples._dataset
    if kind is not None:
        return dataset.list_runs(method=METHOD_PREFIX + kind)
    return sorted(set().union(*(dataset.list_runs(method=METHOD_PREFIX + k) for k in KINDS)))


def get_run_info(samples, run_key: str):
    """FiftyOne's ``RunInfo`` of run ``run_key`` of this package.

    Args:
        samples: a dataset or view
        run_key: a run of this package

    Returns:
        a ``fiftyone.core.runs.RunInfo``: ``config`` (a config class of
        :mod:`~fiftyone_prune.sdk.run_configs`), ``timestamp``, ``version``

    Example::

        import fiftyone_prune as fop

        info = fop.get_run_info(dataset, "prototypes")
        print(info.config.method, info.timestamp)
    """
    _check_ours(samples, run_key)
    return samples._dataset.get_run_info(run_key)


def load_run_results(samples, run_key: str):
    """The stored results of run ``run_key`` of this package (centroids and skipped ids
    of a scoring run, an evaluation's table, ...).

    Args:
        samples: a dataset or view
        run_key: a run of this package

    Returns:
        a ``fiftyone.core.runs.RunResults`` (None if the run stored none)

    Example::

        import fiftyone_prune as fop

        print(fop.load_run_results(dataset, "prototypes").cluster_sizes)
    """
    _check_ours(samples, run_key)
    return samples._dataset.load_run_results(run_key, load_view=False)


def run_params(samples, run_key: str) -> dict:
    """The run's config as a plain dict."""
    return get_run_info(samples, run_key).config.serialize()


def delete_run(samples, run_key: str) -> list[str]:
    """Deletes run ``run_key`` and exactly what it created; returns the deleted fields.

    What the run created is its run class's (:mod:`~fiftyone_prune.sdk.run_configs`):
    the fields of an embeddings or scoring run (and a killed overwrite's staging
    fields), the tags and saved view of a selection, a sharded run's coordinating
    record. FiftyOne's ``dataset.delete_run`` does the same; this one holds the run's
    lease (refused while another process writes the run) and lets a failed clean-up
    raise instead of only logging it.

    Args:
        samples: a dataset or view
        run_key: a run of this package

    Returns:
        the names of the deleted sample fields

    Example::

        import fiftyone_prune as fop

        fop.delete_run(dataset, "prototypes")  # its _distance/_cluster fields too
    """
    _check_ours(samples, run_key)
    dataset = samples._dataset
    with leases.hold(samples, run_key):
        run = run_for(dataset.get_run_info(run_key).config)
        deleted = run.created_fields(dataset, run_key)
        run.cleanup(dataset, run_key)
        fors.Run.delete_run(dataset, run_key, cleanup=False)  # done just above
    return deleted


def run_status(samples, run_key: str) -> str:
    """``"complete"``, or one line saying why the run must not be used as it is:
    ``"being written by <host/pid/..> since <time>"``, ``"interrupted ..."`` (a
    selection killed while switching its tags), ``"stale: ..."`` (a selection whose
    scoring run was recomputed or deleted since), ``"tag counts do not match ..."``.

    Args:
        samples: a dataset or view
        run_key: a run of this package

    Returns:
        ``"complete"`` or the reason, as one line

    Example::

        import fiftyone_prune as fop

        fop.run_status(dataset, "prototypes_selection")  # "complete"
    """
    _check_ours(samples, run_key)
    dataset = samples._dataset
    cfg = dataset.get_run_info(run_key).config
    live = leases.held_by_another(samples, run_key)
    if live is not None:
        return f"being written by {leases.describe(live)}"
    state = getattr(cfg, "state", COMPLETE)
    if state == SHARDED or (state != COMPLETE and _unfinished_shards(dataset, run_key)):
        return _sharded_status(dataset, run_key)
    if state != COMPLETE:
        rerun = ("rerun fop.compute_prototype_scores(..., overwrite=True)"
                 if getattr(cfg, "kind", None) == "prototypes" else "rerun it")
        return (f"interrupted while it was being written (state {state!r}); {rerun} to "
                f"complete it, or delete it with fop.delete_run")
    if getattr(cfg, "kind", None) != "selection":
        problem = run_for(cfg).check_problem(dataset)
        return COMPLETE if problem is None else f"mismatched: {problem}"
    source = getattr(cfg, "run_key", None)
    if source not in list_runs(samples, "prototypes"):
        return f"stale: its scoring run {source!r} was deleted"
    recorded = getattr(cfg, "scoring_version", None)
    current = getattr(dataset.get_run_info(source).config, "version", None)
    if recorded != current:
        return (f"stale: scoring run {source!r} was recomputed after this selection was "
                f"made; select again to select from the current scores")
    labels = selection_labels(cfg)
    counts = (dataset.count_sample_tags() if labels is None
              else dataset.count_label_tags(getattr(cfg, "patches_field", None)
                                            or labels[0].split(".")[0]))
    expected = recorded_tag_counts(cfg)
    wrong = {tag: (counts.get(tag, 0), n) for tag, n in expected.items()
             if n is not None and counts.get(tag, 0) != n}
    if wrong:
        detail = ", ".join(f"{t}: {got} tagged, {n} recorded" for t, (got, n) in wrong.items())
        return (f"tag counts do not match the run ({detail}): the tags were changed after "
                f"the selection; select again")
    return COMPLETE


def _unfinished_shards(dataset, run_key) -> bool:
    plan = storage.get_shard_plan(plan_id(dataset, run_key))
    return plan is not None and not shard_plans.is_complete(plan)


def _sharded_status(dataset, run_key) -> str:
    """A run its shards are computing: in progress, with the counts and the time left,
    and what to do only when something needs a person (a shard out of tries)."""
    try:
        status = shard_plans.shard_status(dataset, run_key)
    except ParameterError:  # its record is gone: the shards can no longer finish it
        return (f"interrupted: its shards' record is gone; delete it with fop.delete_run "
                f"and run it again")
    progress = shard_plans.describe_progress(status)
    # what no worker will pick up by itself: out of tries, or run in a process that
    # ended (never queued, so nothing requeues it)
    stuck = [s for s in status["shards"]
             if s["state"] in (shard_plans.FAILED, shard_plans.STALE)
             and not s.get("retries_left")]
    if stuck:
        return (f"sharded, stopped: {progress}. Fix the cause, then run `fiftyone-prune "
                f"requeue {dataset.name} {run_key}` (fop.requeue_stale_shards)")
    return (f"in progress: still being computed by its shards ({progress}); wait for "
            f"them to finish (nothing to do by hand: the workers requeue a shard whose "
            f"worker dies); follow them with fop.shard_status(dataset, {run_key!r}) or "
            f"`fiftyone-prune runs {dataset.name}`")


def check_selection_usable(samples, run_key: str, allow_stale: bool = False) -> None:
    """Raises a ``ValueError`` naming the problem and the fix unless selection run
    ``run_key`` is complete and current (with ``allow_stale=True`` a stale selection
    only logs a warning)."""
    status = run_status(samples, run_key)
    if status == COMPLETE:
        return
    if status.startswith("stale") and allow_stale:
        logger.warning("Selection run %r is %s", run_key, status)
        return
    name = getattr(samples._dataset.get_run_info(run_key).config, "name", run_key)
    fix = (" (or pass allow_stale=True to use it anyway)" if status.startswith("stale")
           else "")
    raise ValueError(f"Selection {name!r} cannot be used: {status}{fix}")


def _check_ours(samples, run_key):
    if run_key not in list_runs(samples):
        known = list_runs(samples)
        raise ParameterError(
            f"No fiftyone-prune run with key {run_key!r} on dataset "
            f"{samples._dataset.name!r}; existing runs: {known or 'none'}", "run_key")


def run_summary(samples, run_key: str) -> dict:
    """What a run is and what it created, for listing runs.

    Args:
        samples: a dataset or view
        run_key: a run of this package

    Returns:
        a dict: ``run_key``, ``kind``, ``status`` (:func:`run_status`), ``timestamp``,
        ``params`` (every parameter), the ``fields``, ``tags`` and ``saved_views`` it
        owns (what :func:`delete_run` removes) and ``dependents`` (the runs made from
        it)
    """
    info = get_run_info(samples, run_key)
    cfg = info.config
    params = cfg.serialize()
    for name in ("method", "cls", "type", "versions", "fields", "tags",
                 "staging_tags", "saved_views", "field"):
        params.pop(name, None)
    return {"run_key": run_key, "kind": getattr(cfg, "kind", None),
            "status": run_status(samples, run_key),
            "timestamp": info.timestamp.isoformat(sep=" ", timespec="seconds")
            if info.timestamp is not None else None,
            "params": params, "dependents": dependent_runs(samples, run_key),
            "fields": run_for(cfg).get_fields(samples, run_key),
            "tags": list(getattr(cfg, "tags", None) or []),
            "saved_views": list(getattr(cfg, "saved_views", None) or [])}


def rename_run(samples, run_key: str, new_run_key: str) -> None:
    """Renames a run and what it owns after the new key: a scoring run's fields
    (``<key>_distance`` / ``<key>_cluster``), an embeddings run's field (its key is the
    field's name), a selection's tags and saved view (its name is the new key without
    ``_selection``); the runs made from it follow (their recorded scoring run or
    embeddings field is renamed too, so they do not turn stale). A new run under the old
    key then starts fresh. FiftyOne's own ``dataset.rename_run`` does the same through
    the run classes; this one refuses with errors that name the argument.

    Args:
        samples: a dataset or view
        run_key: a run of this package
        new_run_key: a free run key

    Returns:
        None

    Raises:
        ParameterError: before any change, when ``run_key`` is not a run of this
            package, ``new_run_key`` is not a valid run key or is already used, or the
            names the run would be renamed to are taken
        ~fiftyone_prune.sdk.leases.RunLockedError: when another writer holds the
            lease of either key

    Example::

        import fiftyone_prune as fop

        fop.rename_run(dataset, "prototypes", "prototypes_k10")  # prototypes_k10_distance
    """
    _check_ours(samples, run_key)
    validation.check_run_key(new_run_key, "new_run_key")
    dataset = samples._dataset
    if new_run_key in dataset.list_runs():
        raise ParameterError(f"Run key {new_run_key!r} is already used: choose another key",
                             "new_run_key")
    with leases.hold(samples, run_key), leases.hold(samples, new_run_key):
        if new_run_key in dataset.list_runs():  # taken while we waited for the leases
            raise ParameterError(f"Run key {new_run_key!r} is already used: choose another "
                                 f"key", "new_run_key")
        try:
            # explicitly, not only through FiftyOne's rename_run, which logs a failure of
            # it and does not call it for a run recorded by an older version of this
            # package; a second call (FiftyOne's) finds everything renamed: a no-op
            run_for(dataset.get_run_info(run_key).config).rename(dataset, run_key, new_run_key)
        except RunChangeRefused as e:
            raise ParameterError(str(e), "new_run_key") from None
        dataset.rename_run(run_key, new_run_key)


def selection_key(samples, name: str) -> str:
    """The run key of the selection named ``name``: ``<name>_selection``, or the key
    FiftyOne's ``rename_run`` gave it."""
    return selection_owner(samples, name) or selection_names(name)["run_key"]
