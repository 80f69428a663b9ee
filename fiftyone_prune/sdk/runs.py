"""Provenance: every scoring / selection run is a generic FiftyOne run.

The run config records the kind of run, every parameter, the fields the run created and
the versions of what computed it; FiftyOne adds its own version and a timestamp. Generic
runs (no RunConfig subclass) load even where this package is not importable.
"""

from __future__ import annotations

import platform

import fiftyone as fo

from fiftyone_prune.sdk import validation

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
             results: dict, overwrite: bool = False) -> None:
    dataset = samples._dataset
    config = dataset.init_run(method=METHOD_PREFIX + kind, kind=kind, fields=list(fields),
                              versions=versions(), **params)
    dataset.register_run(run_key, config, overwrite=overwrite, cleanup=False)
    run_results = dataset.init_run_results(run_key, **results)
    dataset.save_run_results(run_key, run_results, overwrite=True)


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
    Tags and saved views a selection run created are removed too."""
    _check_ours(samples, run_key)
    dataset = samples._dataset
    cfg = dataset.get_run_info(run_key).config
    deleted = []
    for field in getattr(cfg, "fields", None) or []:
        if dataset.get_field(field) is not None:
            dataset.delete_sample_field(field)
            deleted.append(field)
    for tag in getattr(cfg, "tags", None) or []:
        dataset.untag_samples(tag)
    for view_name in getattr(cfg, "saved_views", None) or []:
        if dataset.has_saved_view(view_name):
            dataset.delete_saved_view(view_name)
    dataset.delete_run(run_key)
    return deleted


def _check_ours(samples, run_key):
    if run_key not in list_runs(samples):
        known = list_runs(samples)
        raise ValueError(
            f"No fiftyone-prune run with key {run_key!r} on dataset "
            f"{samples._dataset.name!r}; existing runs: {known or 'none'}"
        )
