"""One FiftyOne run class per kind of run this package records, as fiftyone-brain does.

Each kind has a config (:class:`fiftyone.core.runs.RunConfig` subclass) holding every
parameter and owning the names of what the run creates, and a run class (the config's
name without ``Config``, as FiftyOne looks it up) with ``get_fields``, ``cleanup`` and
``rename``. So FiftyOne's own ``dataset.delete_run(key)`` removes what a run created,
``dataset.rename_run`` keeps the runs made from a scoring run pointing at it, and
``dataset.list_runs(method="fiftyone_prune.selection")`` (or ``kind="selection"``)
lists ours.

The class paths are stored in the database (``cls``), so the module path and class
names here are part of the stored format. Where this package is not importable,
FiftyOne falls back to its generic ``RunConfig`` (``BaseRunConfig.from_dict``, by the
stored ``type`` ``"run"``): the stored ``method``, ``kind``, parameters and the names of
what the run created stay readable, only the clean-up is then not run.

========================  ==================  =========================================
kind (``method``)         config              owns
========================  ==================  =========================================
``embeddings``            EmbeddingsConfig    its vector field
``prototypes``            PrototypeScores...  ``<prefix>_distance``, ``<prefix>_cluster``
``selection``             SelectionConfig     tags ``<name>:kept|pruned|unscored``, their
                                              staging tags, saved view ``<name>-kept``
``evaluation``            EvaluationConfig    nothing beyond its record
========================  ==================  =========================================

Every name a run creates is computed here (staging fields and tags carry the writer's
lease token, :func:`staging_field`, :func:`staging_tag`; the coordinating record of a
sharded run, :func:`plan_id`; its shards' leases, :func:`shard_lease_key`), and the run
classes' ``cleanup`` and ``rename`` act on exactly those names under the run's lease,
refusing (:class:`RunChangeRefused`) while another process writes the run. This module
sits at the bottom of the run modules: it imports the raw-MongoDB primitives
(:mod:`~fiftyone_prune.sdk.leases`, :mod:`~fiftyone_prune.sdk.storage`) and
:mod:`~fiftyone_prune.sdk.validation`, none of which imports a run module, and nothing
that imports it (``runs``, ``writer``, the pipelines).
"""

from __future__ import annotations

import contextlib
import math
import re

import fiftyone.core.runs as fors
from bson import ObjectId

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import leases, storage, validation

METHOD_PREFIX = "fiftyone_prune."
COMPLETE = "complete"
IN_PROGRESS = "in_progress"
#: a scoring run whose shards are still computing it (see ``fop.shard_status``)
SHARDED = "sharded"


class RunChangeRefused(BaseException):
    """FiftyOne's own ``delete_run`` / ``rename_run`` of one of our runs refused by its run
    class (another process is writing the run, or the new names are taken). A
    ``BaseException`` on purpose: FiftyOne catches every ``Exception`` a run's
    ``cleanup``/``rename`` raises, logs it and deletes (renames) the record anyway, which
    would leave fields, tags or a writer without their run; this one stops FiftyOne
    before it changes the record, so the record and what it owns stay together."""


def staging_field(base: str, token: str) -> str:
    """The field a writer holding lease ``token`` stages the values of field ``base`` in:
    the token in the name, so two writers never share a staging field."""
    return f"{base}_staging_{token[:8]}"


def staging_tag(base: str, token: str) -> str:
    """The tag a writer holding lease ``token`` stages tag ``base`` as."""
    return f"{base}:staging:{token[:8]}"


def is_staging_field(name: str, base: str) -> bool:
    """Whether ``name`` is a staging field of ``base`` (any writer's)."""
    return re.fullmatch(re.escape(base) + r"_staging_[0-9a-f]{8}", name) is not None


def is_staging_tag(tag: str, base: str) -> bool:
    """Whether ``tag`` is a staging tag of ``base`` (any writer's, or ``<base>:staging``
    as versions before per-writer staging wrote it)."""
    return re.fullmatch(re.escape(base) + r":staging(:[0-9a-f]{8})?", tag) is not None


def plan_id(dataset, key: str) -> str:
    """The ``_id`` of the coordinating record of sharded run ``key`` of ``dataset``."""
    return f"{dataset._doc.id}/{key}"


def shard_lease_key(key: str, index: int) -> str:
    """The lease key of shard ``index`` of sharded run ``key``."""
    return f"{key}#shard{index}"


def tail_watch_lease_key(key: str) -> str:
    """The lease key of the one worker that watches the last running shards of sharded
    run ``key`` (to requeue a shard whose worker dies when no other worker is busy)."""
    return f"{key}#watch"


def late_samples_lease_key(key: str) -> str:
    """The lease key of the last step of sharded run ``key``: computing the samples added
    after it was planned, then finishing the run."""
    return f"{key}#late"


def score_field_names(field_prefix: str) -> tuple[str, str]:
    """The distance and cluster fields of a scoring run created under ``field_prefix``
    (its run key when it was created; renaming the run keeps the fields' names)."""
    return f"{field_prefix}_distance", f"{field_prefix}_cluster"


def selection_names(name: str) -> dict:
    """The tags, saved view and run key a selection named ``name`` owns."""
    return {"kept_tag": f"{name}:kept", "pruned_tag": f"{name}:pruned",
            "unscored_tag": f"{name}:unscored", "view": f"{name}-kept",
            "run_key": f"{name}_selection"}


def check_key_free(samples, run_key: str, overwrite: bool, kind: str,
                   param: str = "run_key") -> None:
    """Raises a :class:`~fiftyone_prune.core.params.ParameterError` about ``param``,
    before any work, when ``run_key`` is taken: by a run of another kind or tool
    (always), or by a run of kind ``kind`` without ``overwrite``.

    Args:
        samples: a dataset or view
        run_key: the key the run will be registered under
        overwrite: whether a run of the same kind may be replaced
        kind: ``"embeddings"``, ``"prototypes"``, ``"selection"`` or ``"evaluation"``
        param ("run_key"): the SDK argument that names the key (``"eval_key"``, ...)
    """
    validation.check_run_key(run_key, param)
    if run_key in samples._dataset.list_runs():
        info = samples._dataset.get_run_info(run_key)
        owner = getattr(info.config, "method", None) or "another tool"
        if not overwrite:
            raise ParameterError(
                f"Run key {run_key!r} is already used (by a {owner} run); pass "
                f"overwrite=True to replace it, or choose another run key", param)
        if owner != METHOD_PREFIX + kind:
            raise ParameterError(
                f"Run key {run_key!r} belongs to a {owner} run, not a {kind} run; "
                f"overwrite only replaces runs of the same kind: choose another key", param)


def runs_of_kind(samples, kind: str) -> list[str]:
    """Keys of this package's runs of ``kind`` on the dataset of ``samples``."""
    return samples._dataset.list_runs(method=METHOD_PREFIX + kind)


def dependent_runs(samples, run_key: str) -> list[str]:
    """The runs made from run ``run_key``: the selections and evaluations of a scoring
    run, the scoring runs of an embeddings run's field."""
    dataset = samples._dataset
    cfg = dataset.get_run_info(run_key).config
    if getattr(cfg, "kind", None) == "embeddings":
        return [key for key in runs_of_kind(dataset, "prototypes")
                if dataset.get_run_info(key).config.embeddings_field == cfg.field]
    return [key for kind in ("selection", "evaluation") for key in runs_of_kind(dataset, kind)
            if key != run_key
            and getattr(dataset.get_run_info(key).config, "run_key", None) == run_key]


def selection_owner(samples, name: str) -> str | None:
    """The key of the selection run named ``name`` (whatever its key: FiftyOne's own
    ``rename_run`` may have given it any), or None."""
    dataset = samples._dataset
    for key in runs_of_kind(dataset, "selection"):
        if getattr(dataset.get_run_info(key).config, "name", None) == name:
            return key
    return None


def field_owners(samples) -> dict:
    """``{field: run key}`` for every field a run of this package owns."""
    dataset = samples._dataset
    out = {}
    for kind in ("embeddings", "prototypes"):
        for key in runs_of_kind(dataset, kind):
            for field in run_for(dataset.get_run_info(key).config).get_fields(dataset, key):
                out[field] = key
    return out


def delete_queued_operations(plan: dict) -> list[str]:
    """Deletes the FiftyOne delegated operations still waiting to run a shard of the
    sharded run ``plan`` (what deleting the run does; a worker would otherwise claim one
    later and fail on the missing run). Operations already running are left to end: the
    plan is gone, so their next write is fenced out and they end failed. Returns the
    deleted operations' ids."""
    from bson.errors import InvalidId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    service = DelegatedOperationService()
    deleted = []
    for shard in plan.get("shards", []):
        op_id = shard.get("operation")
        if not op_id:
            continue
        try:
            # by ObjectId: FiftyOne matches a string id against nothing
            op = service.get(ObjectId(op_id))
        except (ValueError, InvalidId):  # already gone
            continue
        if op.run_state in (ExecutionRunState.QUEUED, ExecutionRunState.SCHEDULED):
            service.delete_operation(ObjectId(op_id))
            deleted.append(op_id)
    return deleted


@contextlib.contextmanager
def _lease_for(samples, key: str, action: str):
    """The lease of ``key`` (this thread's if it holds it already), or
    :class:`RunChangeRefused` naming the process that writes the run."""
    try:
        with leases.hold(samples, key) as lease:
            yield lease
    except leases.RunLockedError as e:
        raise RunChangeRefused(f"Cannot {action} run {key!r}: {e}") from None


class PruneRunConfig(fors.RunConfig):
    """Base config of this package's runs.

    Args:
        state ("complete"): ``"complete"``; ``"in_progress"`` while the run's output is
            being switched in; ``"sharded"`` while its shards compute it (readers refuse
            the run until it is complete)
        version (None): a fresh uuid per registration; a selection records its scoring
            run's, to recognise scores recomputed since
        versions (None): versions of the software that computed the run
        check (None): what the run's fields held when it completed (a scoring run:
            ``{"count", "sum"}`` of its distances), to recognise values it did not write
            (e.g. merged in from another dataset)
        **params: every other parameter of the run (JSON serialisable)
    """

    kind = None
    #: names computed from the parameters; serialized, so that they stay readable where
    #: this package is not installed, but never read back (they are recomputed)
    derived = ()

    def __init__(self, state=COMPLETE, version=None, versions=None, check=None, **params):
        self.state = state
        self.version = version
        self.versions = versions
        self.check = check
        fors.BaseRunConfig.__init__(self, **params)

    @property
    def method(self):
        return METHOD_PREFIX + self.kind

    def attributes(self):
        return ["cls", "type", "method", "kind"] + list(self.derived) + [
            a for a in vars(self) if not a.startswith("_")]

    @classmethod
    def _virtual_attributes(cls):
        return ["cls", "type", "method", "kind", *cls.derived]


class PruneRun(fors.Run):
    """Base run class: what a run owns, its clean-up and its renaming (under the run's
    lease, refused while another process writes it), and the package's own rules for
    taking a key (see :meth:`validate_run`)."""

    def validate_run(self, samples, key, overwrite=True):
        """Refuses a key used by a run of another kind or another tool, or by a run of
        this kind without ``overwrite``; a same-kind run recorded by an older version of
        this package (a generic ``RunConfig``) may be overwritten."""
        check_key_free(samples, key, overwrite, self.config.kind)
        if key in samples._dataset.list_runs():
            existing = samples._dataset.get_run_info(key)
            if type(existing.config) is type(self.config):
                self._validate_run(samples, key, existing)

    def _validate_run(self, samples, key, existing_info):
        """An overwrite must own the same names as the run it replaces: replacing the
        run by one with other fields would leave the old ones without an owner."""
        old = run_for(existing_info.config).get_fields(samples, key)
        new = self.get_fields(samples, key)
        if old != new:
            raise ParameterError(
                f"Run {key!r} owns the field(s) {old}, this run would write {new}: "
                f"delete it first (fop.delete_run) or choose another key", "run_key")

    def cleanup(self, samples, key):
        """Deletes what the run created, under its lease; refused
        (:class:`RunChangeRefused`: the record stays) while another process writes it."""
        with _lease_for(samples, key, "delete") as lease:
            dataset = samples._dataset
            # the plan first: its shards still running are fenced out before the fields go
            plan = storage.get_shard_plan(plan_id(dataset, key))
            storage.delete_shard_plan(plan_id(dataset, key))
            if plan is not None:
                delete_queued_operations(plan)
            for field in self.created_fields(dataset, key):
                dataset.delete_sample_field(field)
            self._cleanup_more(dataset, key, storage.Fence.of(lease))

    def created_fields(self, dataset, key) -> list[str]:
        """The fields of :meth:`get_fields` (and staging fields) that exist now."""
        return [f for f in self.get_fields(dataset, key) if dataset.get_field(f) is not None]

    def _cleanup_more(self, dataset, key, fence):
        pass

    def rename(self, samples, key, new_key):
        """Renames what the run owns after the new key (the run's own names: fields,
        tags, saved view) and points the runs made from it at the new key, under the
        leases of both keys; refused (:class:`RunChangeRefused`: nothing changes) while
        another process writes either key, while shards compute the run, or when the new
        names are taken. FiftyOne then moves the record."""
        dataset = samples._dataset
        if getattr(self.config, "state", None) == SHARDED:
            raise RunChangeRefused(
                f"Cannot rename run {key!r}: its shards are still computing it (see "
                f"fop.shard_status); rename it when it is complete")
        with _lease_for(samples, key, "rename") as lease, \
                _lease_for(samples, new_key, "rename"):
            dependents = dependent_runs(dataset, key)  # found by the old names
            self._rename_owned(dataset, key, new_key, storage.Fence.of(lease))
            for dependent in dependents:
                cfg = dataset.get_run_info(dependent).config
                self._follow(cfg, key, new_key)
                dataset.update_run_config(dependent, cfg)

    def _rename_owned(self, dataset, key, new_key, fence):
        pass

    def _follow(self, dependent_config, key, new_key):
        """Points a run made from this one at its new key."""
        dependent_config.run_key = new_key

    def check_value(self, dataset):
        """What :attr:`PruneRunConfig.check` records; None where a run records none."""
        return None

    def check_problem(self, dataset) -> str | None:
        """A line saying how the run's fields differ from what it recorded when it
        completed, or None."""
        return None


def _rename_fields(dataset, mapping: dict, key: str) -> None:
    taken = [new for old, new in mapping.items() if old != new and dataset.get_field(new) is not None]
    if taken:
        raise RunChangeRefused(
            f"Cannot rename run {key!r}: its field(s) would be renamed to {taken}, which "
            f"already exist; delete or rename them first, or choose another key")
    mapping = {old: new for old, new in mapping.items()
               if old != new and dataset.get_field(old) is not None}
    if mapping:
        dataset.rename_sample_fields(mapping)


def embeddings_run_key(embeddings_field: str, patches_field: str | None = None) -> str:
    """The key of the embeddings run that wrote ``embeddings_field``: the field's own
    name (what users already call it), ``<patches_field>_<embeddings_field>`` for the
    vectors of the objects of ``patches_field``."""
    return embeddings_field if patches_field is None else f"{patches_field}_{embeddings_field}"


class EmbeddingsConfig(PruneRunConfig):
    """An embeddings run (:func:`fiftyone_prune.compute_embeddings`); its key is the
    embeddings field's name (the name users already know it by).

    Args:
        embeddings_field: the vector field, or the attribute of each object of
            ``patches_path``
        patches_path (None): the label list path (``"gt.detections"``) whose objects
            carry the vectors, None for one vector per image
    """

    kind = "embeddings"
    derived = ("field",)

    def __init__(self, embeddings_field=None, patches_path=None, **kwargs):
        self.embeddings_field = embeddings_field
        self.patches_path = patches_path
        super().__init__(**kwargs)

    @property
    def field(self):
        return (self.embeddings_field if self.patches_path is None
                else f"{self.patches_path}.{self.embeddings_field}")


class Embeddings(PruneRun):
    def get_fields(self, samples, key):
        return [self.config.field]

    def _rename_owned(self, dataset, key, new_key, fence):
        """The run's key is its field's name: the field is renamed with it."""
        cfg = self.config
        if cfg.patches_path is not None:
            raise RunChangeRefused(
                f"Cannot rename run {key!r}: it holds the vectors of the objects of "
                f"{cfg.patches_path!r}, keyed by their attribute's name; compute them "
                f"again under the new attribute instead")
        _rename_fields(dataset, {cfg.embeddings_field: new_key}, key)
        cfg.embeddings_field = new_key
        dataset.update_run_config(key, cfg)

    def _follow(self, dependent_config, key, new_key):
        dependent_config.embeddings_field = new_key


class PrototypeScoresConfig(PruneRunConfig):
    """A prototype-scores run (:func:`fiftyone_prune.compute_prototype_scores`).

    Args:
        field_prefix: its fields are ``<field_prefix>_distance`` and
            ``<field_prefix>_cluster`` (the run key; renaming the run renames them)
        patches_field (None): an object-level run's Detection(s) field: its fields are
            then attributes of those labels (``gt.detections.<field_prefix>_distance``)
        labels_path (None): with ``patches_field``, the labels' path
            (``"gt.detections"``, or ``"gt"`` for a Detection field)
    """

    kind = "prototypes"
    derived = ("distance_field", "cluster_field")

    def __init__(self, field_prefix=None, patches_field=None, labels_path=None, **kwargs):
        self.field_prefix = field_prefix
        self.patches_field = patches_field
        self.labels_path = labels_path
        super().__init__(**kwargs)

    def _path(self, name):
        return name if not getattr(self, "labels_path", None) else f"{self.labels_path}.{name}"

    @property
    def distance_field(self):
        return self._path(score_field_names(self.field_prefix)[0])

    @property
    def cluster_field(self):
        return self._path(score_field_names(self.field_prefix)[1])

    @property
    def in_lists(self) -> str | None:
        """The labels' list path an object-level run's values sit in (None: one value
        per sample, or one label per sample)."""
        path = getattr(self, "labels_path", None)
        return path if path and path != getattr(self, "patches_field", None) else None


def staging_fields_of(dataset, fields) -> list[str]:
    """The staging fields (any writer's) of ``fields`` in the dataset's schema."""
    return [name for name in dataset.get_field_schema()
            if any(is_staging_field(name, f) for f in fields)]


class PrototypeScores(PruneRun):
    def get_fields(self, samples, key):
        return [self.config.distance_field, self.config.cluster_field]

    def created_fields(self, dataset, key):
        # and what an overwrite killed before it switched its values in staged
        return super().created_fields(dataset, key) + staging_fields_of(
            dataset, self.get_fields(dataset, key))

    def _labels(self):
        path = getattr(self.config, "labels_path", None)
        return None if not path else (path, path == self.config.patches_field)

    def _remove_staged_attributes(self, dataset, fence):
        """An object-level run: the staging attributes a killed overwrite left on the
        labels (never declared, so no schema lists them)."""
        labels = self._labels()
        names = score_field_names(self.config.field_prefix)
        leftovers = storage.label_attribute_names(
            dataset, *labels, "^(" + "|".join(map(re.escape, names)) + r")_staging_[0-9a-f]{8}$")
        if leftovers:
            storage.unset_label_attributes(dataset, *labels, leftovers, fence)

    def _cleanup_more(self, dataset, key, fence):
        if self._labels() is not None:
            self._remove_staged_attributes(dataset, fence)

    def _rename_owned(self, dataset, key, new_key, fence):
        """The fields follow the key (``p_distance`` -> ``q_distance``), so a new run
        under the old key starts fresh and deleting either run deletes its own fields.
        Staging fields a killed overwrite left are removed (this holds the lease)."""
        cfg = self.config
        if self._labels() is not None:
            self._rename_label_attributes(dataset, key, new_key, fence)
            return
        leftovers = staging_fields_of(dataset, self.get_fields(dataset, key))
        if leftovers:
            dataset.delete_sample_fields(leftovers)
        _rename_fields(dataset, dict(zip(map(cfg._path, score_field_names(cfg.field_prefix)),
                                         map(cfg._path, score_field_names(new_key)))), key)
        cfg.field_prefix = new_key
        dataset.update_run_config(key, cfg)

    def _rename_label_attributes(self, dataset, key, new_key, fence):
        """An object-level run's label attributes, renamed in the documents that hold
        them (by the database, fenced), then their declarations."""
        cfg = self.config
        labels = self._labels()
        self._remove_staged_attributes(dataset, fence)
        old = score_field_names(cfg.field_prefix)
        new = score_field_names(new_key)
        taken = [f"{labels[0]}.{n}" for n in new
                 if dataset.get_field(f"{labels[0]}.{n}") is not None]
        if taken:
            raise RunChangeRefused(
                f"Cannot rename run {key!r}: its label attributes would be renamed to "
                f"{taken}, which already exist; delete them first, or choose another key")
        declared = {n: dataset.get_field(f"{labels[0]}.{n}") for n in old}
        storage.rename_label_attributes(dataset, *labels, dict(zip(old, new)), fence)
        for o, n in zip(old, new):
            field = declared[o]
            if field is None:
                continue
            dataset.add_sample_field(f"{labels[0]}.{n}", type(field),
                                     description=field.description)
            dataset.delete_sample_field(f"{labels[0]}.{o}")  # no value left under it
        cfg.field_prefix = new_key
        dataset.update_run_config(key, cfg)

    def check_value(self, dataset):
        count, total = storage.count_and_sum(dataset, self.config.distance_field,
                                             unwind=self.config.in_lists)
        return {"count": count, "sum": total}

    def check_problem(self, dataset):
        recorded = getattr(self.config, "check", None)
        if not recorded:
            return None  # recorded by an earlier version
        count, total = storage.count_and_sum(dataset, self.config.distance_field,
                                             unwind=self.config.in_lists)
        if count > recorded["count"] or (count == recorded["count"] and not math.isclose(
                total, recorded["sum"], rel_tol=1e-9, abs_tol=1e-9)):
            return (f"its fields hold values it did not write ({count} "
                    f"{'labels' if self.config.patches_field else 'samples'} carry "
                    f"{self.config.distance_field!r}, the run scored {recorded['count']}; "
                    f"were samples merged in from another dataset?): re-score with "
                    f"fop.compute_prototype_scores(..., overwrite=True)")
        return None  # fewer: samples deleted since, the others keep this run's values


class SelectionConfig(PruneRunConfig):
    """A selection run (:func:`fiftyone_prune.select_samples`), keyed
    ``<name>_selection`` (FiftyOne's ``rename_run`` may give it any key: the name is
    then the new key without that suffix).

    Args:
        name: the selection's name; it owns the tags ``<name>:kept``,
            ``<name>:pruned``, ``<name>:unscored`` (staged by each writer as
            ``<tag>:staging:<token>``) and the saved view ``<name>-kept``
    """

    kind = "selection"
    derived = ("tags", "saved_views")

    @classmethod
    def _virtual_attributes(cls):  # staging_tags: stored by versions before per-writer staging
        return super()._virtual_attributes() + ["staging_tags"]

    def __init__(self, name=None, **kwargs):
        self.name = name
        super().__init__(**kwargs)

    @property
    def tags(self):
        names = selection_names(self.name)
        return [names["kept_tag"], names["pruned_tag"], names["unscored_tag"]]

    @property
    def saved_views(self):
        return [selection_names(self.name)["view"]]


def selection_name_for_key(run_key: str) -> str:
    """The name of a selection registered (or renamed) under ``run_key``."""
    suffix = "_selection"
    return run_key[: -len(suffix)] if run_key.endswith(suffix) and run_key != suffix else run_key


def recorded_tag_counts(config) -> dict:
    """Each tag of a selection run and the number of samples it recorded for it (None
    where not recorded); reads a config of an older version too."""
    names = selection_names(config.name)
    return {names[f"{part}_tag"]: getattr(config, f"num_{part}", None)
            for part in ("kept", "pruned", "unscored")}


def selection_view_description(name: str) -> str:
    return f"fiftyone-prune: samples kept by selection {name!r}"


def selection_labels(config) -> tuple[str, bool] | None:
    """An object-level selection's labels: ``(labels path, one label per sample)``, or
    None for a selection of samples. Its tags are then label tags."""
    path = getattr(config, "labels_path", None)
    if not path:
        return None
    return path, path == getattr(config, "patches_field", None)


def kept_view(dataset, name: str, labels: tuple[str, bool] | None = None, part="kept"):
    """What a selection's saved view shows: the samples tagged ``<name>:kept``; for an
    object-level selection, the samples with a kept object, showing only their kept
    objects (every exporter then writes the kept objects of their images). ``part``:
    ``"pruned"`` or ``"unscored"`` for those instead."""
    from fiftyone import ViewField as F

    tag = selection_names(name)[f"{part}_tag"]
    if labels is None:
        return dataset.match_tags(tag)
    patches_field = labels[0] if labels[1] else labels[0].rsplit(".", 1)[0]
    return dataset.filter_labels(patches_field, F("tags").contains(tag))


def scored_view(dataset, config):
    """The samples a scoring run scored, or for an object-level run its objects as a
    patches view, with the distance and cluster paths in that view:
    ``(view, distance path, cluster path)``."""
    field = getattr(config, "patches_field", None)
    if not field or getattr(config, "labels_path", None) == field:
        # samples, or one Detection per sample (FiftyOne's patches take Detections):
        # the samples themselves, by their label's score
        return (dataset.exists(config.distance_field), config.distance_field,
                config.cluster_field)
    distance, cluster = (f"{field}.{f.rsplit('.', 1)[-1]}"
                         for f in (config.distance_field, config.cluster_field))
    return dataset.to_patches(field).exists(distance), distance, cluster


class Selection(PruneRun):
    def owned_tags(self, dataset) -> list[str]:
        """Its tags and every writer's staging tags of them present on the dataset (on
        the labels, for an object-level selection)."""
        final = list(self.config.tags)
        labels = selection_labels(self.config)
        present = dataset.distinct("tags" if labels is None else f"{labels[0]}.tags")
        return [t for t in present if t in final or any(is_staging_tag(t, f) for f in final)]

    def _remove_tag(self, dataset, tag, fence):
        labels = selection_labels(self.config)
        if labels is None:
            storage.remove_tag(dataset, tag, fence=fence)
        else:
            storage.remove_label_tag(dataset, *labels, tag, fence=fence)

    def _cleanup_more(self, dataset, key, fence):
        for tag in self.owned_tags(dataset):
            self._remove_tag(dataset, tag, fence)
        for view_name in self.config.saved_views:
            if dataset.has_saved_view(view_name):
                dataset.delete_saved_view(view_name)

    def _rename_owned(self, dataset, key, new_key, fence):
        """Its tags and saved view follow the new name (the key without
        ``_selection``), so a new selection under the old name starts fresh and deleting
        either deletes only its own tags."""
        cfg = self.config
        new_name = selection_name_for_key(new_key)
        if new_name == cfg.name:
            return
        new_cfg = SelectionConfig(name=new_name)
        owner = selection_owner(dataset, new_name)
        labels = selection_labels(cfg)
        present = set(dataset.distinct("tags" if labels is None else f"{labels[0]}.tags"))
        taken = [t for t in new_cfg.tags if t in present] + [
            v for v in new_cfg.saved_views if dataset.has_saved_view(v)]
        if owner is not None or taken:
            raise RunChangeRefused(
                f"Cannot rename selection run {key!r} to {new_key!r}: the name {new_name!r} "
                f"is taken ({'by run ' + repr(owner) if owner else 'by ' + str(taken)}); "
                f"delete that selection first or choose another key")
        for tag in self.owned_tags(dataset):
            if tag not in cfg.tags:  # a killed writer's staging tags: this holds the lease
                self._remove_tag(dataset, tag, fence)
        # one server-side pass renames the three tags, per document atomically
        if labels is None:
            storage.switch_tags(dataset, dict(zip(cfg.tags, new_cfg.tags)), fence=fence)
        else:
            storage.switch_label_tags(dataset, *labels, dict(zip(cfg.tags, new_cfg.tags)),
                                      fence=fence)
        for old_view, new_view in zip(cfg.saved_views, new_cfg.saved_views):
            if dataset.has_saved_view(old_view):
                dataset.delete_saved_view(old_view)
        dataset.save_view(new_cfg.saved_views[0], kept_view(dataset, new_name, labels),
                          description=selection_view_description(new_name), overwrite=True)
        cfg.name = new_name
        dataset.update_run_config(key, cfg)


class EvaluationConfig(PruneRunConfig):
    """An evaluation run (:func:`fiftyone_prune.evaluate_pruning`): its table, verdicts
    and test split are in the run's results; it creates no field, tag or view."""

    kind = "evaluation"


class Evaluation(PruneRun):
    pass


CONFIGS = {cls.kind: cls for cls in (EmbeddingsConfig, PrototypeScoresConfig,
                                     SelectionConfig, EvaluationConfig)}
_RUNS = {"embeddings": Embeddings, "prototypes": PrototypeScores, "selection": Selection,
         "evaluation": Evaluation}


def run_for(config) -> PruneRun:
    """The run class instance for a config of ours, including a run recorded by an
    older version of this package (compatibility: a generic ``RunConfig`` with
    ``method="fiftyone_prune.<kind>"`` and the names it created stored as attributes,
    ``distance_field``, ``tags``, ...: the run classes read the same names from it)."""
    if isinstance(config, PruneRunConfig):
        return config.build()
    run = object.__new__(_RUNS[config.kind])  # its constructor insists on its own config class
    run.config = config
    return run
