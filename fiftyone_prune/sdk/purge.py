"""Removing everything this package wrote on a dataset: the uninstall step.

``purge`` deletes this package's runs with what each created (fields, tags, saved
views, stored results, a sharded run's record), the queued delegated operations of its
operators on the dataset, and what runs no longer describe: fields, tags and saved views
left by a writer that was killed, or by FiftyOne's own ``delete_run`` on a run whose
class was not importable then (FiftyOne falls back to a base class that knows none of
them). Those are recognised by the marks this package puts on everything it writes (an
embeddings field's ``info["fiftyone_prune"]``, the descriptions of score fields and
saved views, the ``<name>:kept|pruned|unscored`` tags of a selection named by one of
them), never by a guess: a field, tag or view of the user's is left alone.

It needs the package (``pip install fiftyone-prune``), not the plugin: run it before or
after removing the plugin folder.
"""

from __future__ import annotations

import re

import fiftyone as fo

from fiftyone_prune.sdk import leases, runs, shards, storage, validation
from fiftyone_prune.sdk.run_configs import selection_names

#: the plugin's operators: their queued operations are this package's
OPERATOR_PREFIX = "@fiftyone-prune/prune/"

#: descriptions this package gives the fields it writes (``sdk/scores.py``) and the
#: saved views of its selections (``sdk/selection.py``)
_SCORE_FIELD = re.compile(r"^(staging \(being written, not yet valid\): )?"
                          r"prototype (distance|\(cluster/class\)), run \S+$")
_KEPT_VIEW = re.compile(r"^fiftyone-prune: samples kept by selection '(?P<name>.+)'$")


def _operations(dataset, states):
    from fiftyone.operators.delegated import DelegatedOperationService

    return [op for op in DelegatedOperationService().list_operations(
                dataset_name=dataset.name)
            if op.operator.startswith(OPERATOR_PREFIX) and op.run_state in states]


def _leftover_fields(dataset) -> list[str]:
    found = []
    for name, field in dataset.get_field_schema(flat=True).items():  # label attributes too
        if _SCORE_FIELD.match(getattr(field, "description", None) or "") or \
                "fiftyone_prune" in (getattr(field, "info", None) or {}):
            found.append(name)
    return found


def _leftover_views(dataset) -> dict[str, str]:
    """Saved views of selections: {view name: selection name}."""
    found = {}
    for info in dataset.list_saved_views(info=True):
        match = _KEPT_VIEW.match(info.get("description") or "")
        if match:
            found[info["name"]] = match.group("name")
    return found


def _leftover_tags(dataset, selection_names_: set[str]) -> list[str]:
    """The tags of the named selections, and any staging tag of a selection."""
    ours = set()
    for name in selection_names_:
        names = selection_names(name)
        ours.update(names[f"{part}_tag"] for part in ("kept", "pruned", "unscored"))
    # a killed selection writer's: <tag>:staging:<token> (<tag>:staging before 0.1)
    staging = re.compile(r"^.+:(kept|pruned|unscored):staging(:[0-9a-f]{8})?$")
    return sorted(t for t in dataset.distinct("tags") if t in ours or staging.match(t))


def _label_lists(dataset):
    """``(labels path, one label per sample, field)`` of every Detection(s) field."""
    return ([(f"{f}.detections", False, f) for f in dataset.get_field_schema(
        embedded_doc_type=fo.Detections)]
        + [(f, True, f) for f in dataset.get_field_schema(embedded_doc_type=fo.Detection)])


def _staged_label_attributes(dataset) -> dict[tuple, list[str]]:
    """What killed object-level overwrites staged on labels (never declared, so no
    schema lists it): {(labels path, single): attribute names}."""
    found = {}
    for path, single, _ in _label_lists(dataset):
        names = storage.label_attribute_names(
            dataset, path, single, r"_(distance|cluster)_staging_[0-9a-f]{8}$")
        if names:
            found[(path, single)] = names
    return found


def _leftover_label_tags(dataset, selection_names_: set[str]) -> dict[str, list[str]]:
    """The same tags on the labels of Detection(s) fields (object-level selections):
    {label field: tags}."""
    ours = set()
    for name in selection_names_:
        names = selection_names(name)
        ours.update(names[f"{part}_tag"] for part in ("kept", "pruned", "unscored"))
    staging = re.compile(r"^.+:(kept|pruned|unscored):staging(:[0-9a-f]{8})?$")
    found = {}
    for field, doc in ((f, "detections") for f in dataset.get_field_schema(
            embedded_doc_type=fo.Detections)):
        tags = [t for t in dataset.distinct(f"{field}.{doc}.tags")
                if t in ours or staging.match(t)]
        if tags:
            found[field] = sorted(tags)
    for field in dataset.get_field_schema(embedded_doc_type=fo.Detection):
        tags = [t for t in dataset.distinct(f"{field}.tags") if t in ours or staging.match(t)]
        if tags:
            found[field] = sorted(tags)
    return found


def purge(samples, dry_run: bool = False) -> dict:
    """Removes everything fiftyone-prune wrote on the dataset of ``samples``.

    Deleted: every run of this package (:func:`fiftyone_prune.list_runs`) with its
    fields, tags, saved views and results; the queued delegated operations of the
    plugin's operators on this dataset; the records of its sharded runs; and fields,
    tags and saved views this package wrote that no run describes any more (left by a
    killed writer, or by FiftyOne's ``delete_run`` without this package installed).
    Samples, media files and anything without this package's marks are never touched.

    Refused, before anything is removed, while another process writes one of its runs
    or runs one of its operations on the dataset: wait for it to end (or mark a dead
    launcher's operation failed with ``fiftyone delegated fail``) and purge again.

    Args:
        samples: a dataset or view (its whole dataset is purged)
        dry_run (False): list what would be removed, and remove nothing

    Returns:
        a dict of what was (or would be) removed: ``runs``, ``fields`` (label
        attributes of object-level runs too), ``tags``, ``label_tags`` (object-level
        selections' tags, ``"<tag> (labels of <field>)"``), ``saved_views``, ``operations`` (delegated
        operation ids), ``shard_records``

    Raises:
        ValueError: while a run of this package is being written on the dataset

    Example::

        import fiftyone_prune as fop

        print(fop.purge(dataset, dry_run=True))  # what would go
        fop.purge(dataset)
    """
    validation.check_collection(samples, "samples")
    dataset = samples._dataset
    dataset.reload()
    keys = runs.list_runs(dataset)
    busy = [f"run {k!r}: {leases.describe(doc)}" for k in keys
            if (doc := leases.held_by_another(dataset, k)) is not None]
    from fiftyone.operators.executor import ExecutionRunState

    busy += [f"delegated operation {op.id} ({op.operator}) is running"
             for op in _operations(dataset, (
                 ExecutionRunState.RUNNING,
                 getattr(ExecutionRunState, "PROCESSING", ExecutionRunState.RUNNING)))]
    if busy:
        raise ValueError(f"Nothing was removed from dataset {dataset.name!r}: "
                         f"{'; '.join(busy)}. Wait for it to end (a dead launcher's "
                         f"operation: `fiftyone delegated fail <id>`), then purge again")

    report = {"runs": keys, "fields": [], "tags": [], "saved_views": [],
              "operations": [], "shard_records": []}
    queued = _operations(dataset, (ExecutionRunState.QUEUED,
                                          ExecutionRunState.SCHEDULED))
    report["operations"] = [str(op.id) for op in queued]
    summaries = {k: runs.run_summary(dataset, k) for k in keys}
    selections = {s["params"].get("name") for s in summaries.values()
                  if s["kind"] == "selection"} - {None}
    views = _leftover_views(dataset)
    selections |= set(views.values())
    staged = _staged_label_attributes(dataset)
    report["fields"] = sorted({f for s in summaries.values() for f in s["fields"]
                               if dataset.has_field(f)} | set(_leftover_fields(dataset))
                              | {f"{path}.{n}" for (path, _), names in staged.items()
                                 for n in names})
    report["tags"] = sorted({t for s in summaries.values() for t in s["tags"]
                             if t in set(dataset.distinct("tags"))}
                            | set(_leftover_tags(dataset, selections)))
    label_tags = _leftover_label_tags(dataset, selections)
    report["label_tags"] = [f"{tag} (labels of {field})" for field, tags in label_tags.items()
                            for tag in tags]
    report["saved_views"] = sorted({v for s in summaries.values() for v in s["saved_views"]
                                    if dataset.has_saved_view(v)} | set(views))
    report["shard_records"] = [key for key, _ in storage.list_shard_plans(dataset._doc.id)]
    if dry_run:
        return report

    # queued work first, so that no worker starts a run while its traces are removed
    from fiftyone.operators.delegated import DelegatedOperationService

    service = DelegatedOperationService()
    for op in queued:
        service.delete_operation(op.id)
    # selections and evaluations before the scoring runs they were made from
    order = {"selection": 0, "evaluation": 0, "prototypes": 1, "embeddings": 2}
    for key in sorted(keys, key=lambda k: order.get(summaries[k]["kind"], 1)):
        runs.delete_run(dataset, key)
    dataset.reload()
    for field in report["fields"]:
        if dataset.has_field(field):
            dataset.delete_sample_field(field)
    for (path, single), names in staged.items():
        storage.unset_label_attributes(dataset, path, single, names, fence=None)
    for tag in report["tags"]:
        dataset.untag_samples(tag)
    for field, tags in label_tags.items():
        dataset.untag_labels(tags, label_fields=[field])
    for view in report["saved_views"]:
        if dataset.has_saved_view(view):
            dataset.delete_saved_view(view)
    for key in report["shard_records"]:
        storage.delete_shard_plan(shards.plan_id(dataset, key))
    return report
