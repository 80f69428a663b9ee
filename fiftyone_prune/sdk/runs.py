"""Provenance: every scoring / selection run is a generic FiftyOne run.

The run config records the kind of run, every parameter, the fields the run created and
the versions of what computed it; FiftyOne adds its own version and a timestamp. Generic
runs (no RunConfig subclass) load even where this package is not importable.

Every run also records a ``state`` (``"complete"``, or ``"in_progress"`` while a
selection switches its tags) and a ``version`` (a fresh uuid per registration): a
selection records the ``version`` of the scoring run it was made from, so a selection
whose scores were recomputed since is recognised as stale (:func:`run_status`).
Registering (and deleting) a run holds its lease (:mod:`fiftyone_prune.sdk.leases`).
"""

from __future__ import annotations

import logging
import platform
import uuid

import fiftyone as fo

from fiftyone_prune.sdk import leases, validation

logger = logging.getLogger(__name__)

COMPLETE = "complete"
IN_PROGRESS = "in_progress"

METHOD_PREFIX = "fiftyone_prune."


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


def check_key_free(samples, run_key: str, overwrite: bool, kind: str) -> None:
    """A clear error, before any work, when ``run_key`` is taken."""
    validation.check_run_key(run_key)
    if run_key in samples._dataset.list_runs():
        info = samples._dataset.get_run_info(run_key)
        owner = getattr(info.config, "method", None) or "another tool"
        if not overwrite:
            raise ValueError(
                f"Run key {run_key!r} is already used (by a {owner} run); pass "
                f"overwrite=True to replace it, or choose another run key"
            )
        if owner != METHOD_PREFIX + kind:
            raise ValueError(
                f"Run key {run_key!r} belongs to a {owner} run, not a {kind} run; "
                f"overwrite only replaces runs of the same kind: choose another key"
            )


def owned_fields(samples, run_key: str) -> list[str]:
    if run_key not in samples._dataset.list_runs():
        return []
    cfg = samples._dataset.get_run_info(run_key).config
    return list(getattr(cfg, "fields", None) or [])


def register(samples, run_key: str, kind: str, params: dict, fields: list[str],
             results: dict, overwrite: bool = False, state: str = COMPLETE) -> None:
    """Registers the run under its lease (taken here unless the caller holds it), after
    checking again, under the lease, that the key may be written: a writer that checked
    before another one registered the same key then gets the clear error, not a silent
    replacement."""
    dataset = samples._dataset
    with leases.hold(samples, run_key) as lease:
        check_key_free(samples, run_key, overwrite, kind)
        lease.check()
        config = dataset.init_run(method=METHOD_PREFIX + kind, kind=kind, fields=list(fields),
                                  versions=versions(), state=state, version=uuid.uuid4().hex,
                                  **params)
        dataset.register_run(run_key, config, overwrite=overwrite, cleanup=False)
        run_results = dataset.init_run_results(run_key, **results)
        dataset.save_run_results(run_key, run_results, overwrite=True)


def set_state(samples, run_key: str, state: str, **updates) -> None:
    """Changes the recorded ``state`` (and other config values) of a run."""
    dataset = samples._dataset
    config = dataset.get_run_info(run_key).config
    config.state = state
    for name, value in updates.items():
        setattr(config, name, value)
    dataset.update_run_config(run_key, config)


def list_runs(samples, kind: str | None = None) -> list[str]:
    """Run keys of this package's runs (optionally of one kind: ``"prototypes"``,
    ``"selection"``, ``"evaluation"``)."""
    dataset = samples._dataset
    keys = []
    for key in dataset.list_runs():
        method = getattr(dataset.get_run_info(key).config, "method", "") or ""
        if method.startswith(METHOD_PREFIX) and (kind is None or method == METHOD_PREFIX + kind):
            keys.append(key)
    return keys


def get_run_info(samples, run_key: str):
    _check_ours(samples, run_key)
    return samples._dataset.get_run_info(run_key)


def load_run_results(samples, run_key: str):
    _check_ours(samples, run_key)
    return samples._dataset.load_run_results(run_key, load_view=False)


def run_params(samples, run_key: str) -> dict:
    """The run's config as a plain dict."""
    return get_run_info(samples, run_key).config.serialize()


def delete_run(samples, run_key: str) -> list[str]:
    """Deletes the run and exactly the sample fields it created; returns those fields.
    Tags and saved views a selection run created are removed too. Refused while another
    process writes the run (its lease)."""
    _check_ours(samples, run_key)
    dataset = samples._dataset
    with leases.hold(samples, run_key):
        cfg = dataset.get_run_info(run_key).config
        deleted = []
        fields = list(getattr(cfg, "fields", None) or [])
        if getattr(cfg, "kind", None) == "prototypes":  # and what a killed overwrite staged
            from fiftyone_prune.sdk.scores import staging_fields

            fields += staging_fields(dataset, run_key)
        for field in fields:
            if dataset.get_field(field) is not None:
                dataset.delete_sample_field(field)
                deleted.append(field)
        for tag in (getattr(cfg, "tags", None) or []) + (getattr(cfg, "staging_tags", None)
                                                         or []):
            dataset.untag_samples(tag)
        for view_name in getattr(cfg, "saved_views", None) or []:
            if dataset.has_saved_view(view_name):
                dataset.delete_saved_view(view_name)
        dataset.delete_run(run_key)
        from fiftyone_prune.sdk import shards, storage  # shards imports this module

        storage.delete_shard_plan(shards.plan_id(dataset, run_key))
    return deleted


def run_status(samples, run_key: str) -> str:
    """``"complete"``, or one line saying why the run must not be used as it is:
    ``"being written by <host/pid/..> since <time>"``, ``"interrupted ..."`` (a
    selection killed while switching its tags), ``"stale: ..."`` (a selection whose
    scoring run was recomputed or deleted since), ``"tag counts do not match ..."``."""
    _check_ours(samples, run_key)
    dataset = samples._dataset
    cfg = dataset.get_run_info(run_key).config
    live = leases.current(dataset, run_key)
    if live is not None and leases.held_here(samples, run_key) is None:
        return f"being written by {leases.describe(live)}"
    if getattr(cfg, "state", COMPLETE) != COMPLETE:
        return (f"interrupted while it was being written (state {cfg.state!r}); "
                f"rerun it to complete it, or delete it with fop.delete_run")
    if getattr(cfg, "kind", None) != "selection":
        return COMPLETE
    source = getattr(cfg, "run_key", None)
    if source not in list_runs(samples, "prototypes"):
        return f"stale: its scoring run {source!r} was deleted"
    recorded = getattr(cfg, "scoring_version", None)
    current = getattr(dataset.get_run_info(source).config, "version", None)
    if recorded != current:
        return (f"stale: scoring run {source!r} was recomputed after this selection was "
                f"made; select again to select from the current scores")
    counts = dataset.count_sample_tags()
    expected = {tag: getattr(cfg, f"num_{tag.rsplit(':', 1)[1]}", None)
                for tag in getattr(cfg, "tags", None) or []}
    wrong = {tag: (counts.get(tag, 0), n) for tag, n in expected.items()
             if n is not None and counts.get(tag, 0) != n}
    if wrong:
        detail = ", ".join(f"{t}: {got} tagged, {n} recorded" for t, (got, n) in wrong.items())
        return (f"tag counts do not match the run ({detail}): the tags were changed after "
                f"the selection; select again")
    return COMPLETE


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
        raise ValueError(
            f"No fiftyone-prune run with key {run_key!r} on dataset "
            f"{samples._dataset.name!r}; existing runs: {known or 'none'}"
        )


def run_summary(samples, run_key: str) -> dict:
    """What a run is and what it created, for listing runs: its kind, status, when it
    was registered, every parameter, and the fields, tags and saved views it owns (what
    :func:`delete_run` removes), plus the runs made from it."""
    info = get_run_info(samples, run_key)
    cfg = info.config
    params = cfg.serialize()
    created = {name: list(params.pop(name, None) or [])
               for name in ("fields", "tags", "saved_views")}
    for name in ("method", "cls", "type", "versions", "staging_tags"):
        params.pop(name, None)
    return {"run_key": run_key, "kind": getattr(cfg, "kind", None),
            "status": run_status(samples, run_key),
            "timestamp": info.timestamp.isoformat(sep=" ", timespec="seconds")
            if info.timestamp is not None else None,
            "params": params, "dependents": dependent_runs(samples, run_key), **created}


def dependent_runs(samples, run_key: str) -> list[str]:
    """The selection and evaluation runs made from scoring run ``run_key``."""
    dataset = samples._dataset
    return [key for key in list_runs(samples)
            if key != run_key and getattr(dataset.get_run_info(key).config, "kind", None)
            in ("selection", "evaluation")
            and getattr(dataset.get_run_info(key).config, "run_key", None) == run_key]


def rename_run(samples, run_key: str, new_run_key: str) -> None:
    """Renames a scoring or evaluation run; the selections and evaluations made from a
    scoring run follow it (their recorded scoring run is renamed too, so they do not turn
    stale). Its fields keep their names (the run records them). A selection is named by
    its tags and saved view: select again under the new name instead."""
    _check_ours(samples, run_key)
    validation.check_run_key(new_run_key)
    dataset = samples._dataset
    kind = getattr(dataset.get_run_info(run_key).config, "kind", None)
    if kind == "selection":
        raise ValueError(
            f"Run {run_key!r} is a selection, named by its tags and saved view: select "
            f"again under the new name (and delete this one) instead of renaming it")
    if new_run_key in dataset.list_runs():
        raise ValueError(f"Run key {new_run_key!r} is already used: choose another key")
    with leases.hold(samples, run_key), leases.hold(samples, new_run_key):
        if new_run_key in dataset.list_runs():  # taken while we waited for the leases
            raise ValueError(f"Run key {new_run_key!r} is already used: choose another key")
        dependents = dependent_runs(samples, run_key)
        dataset.rename_run(run_key, new_run_key)
        for key in dependents:
            cfg = dataset.get_run_info(key).config
            cfg.run_key = new_run_key
            dataset.update_run_config(key, cfg)
