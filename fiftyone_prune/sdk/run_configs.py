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
"""

from __future__ import annotations

import re

import fiftyone.core.runs as fors

METHOD_PREFIX = "fiftyone_prune."
COMPLETE = "complete"
IN_PROGRESS = "in_progress"


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


def score_field_names(field_prefix: str) -> tuple[str, str]:
    """The distance and cluster fields of a scoring run created under ``field_prefix``
    (its run key when it was created; renaming the run keeps the fields' names)."""
    return f"{field_prefix}_distance", f"{field_prefix}_cluster"


def selection_names(name: str) -> dict:
    """The tags, saved view and run key a selection named ``name`` owns."""
    return {"kept_tag": f"{name}:kept", "pruned_tag": f"{name}:pruned",
            "unscored_tag": f"{name}:unscored", "view": f"{name}-kept",
            "run_key": f"{name}_selection"}


class PruneRunConfig(fors.RunConfig):
    """Base config of this package's runs.

    Args:
        state ("complete"): ``"complete"``, or ``"in_progress"`` while the run's output
            is being switched in (readers refuse the run until it is complete)
        version (None): a fresh uuid per registration; a selection records its scoring
            run's, to recognise scores recomputed since
        versions (None): versions of the software that computed the run
        **params: every other parameter of the run (JSON serialisable)
    """

    kind = None
    #: names computed from the parameters; serialized, so that they stay readable where
    #: this package is not installed, but never read back (they are recomputed)
    derived = ()

    def __init__(self, state=COMPLETE, version=None, versions=None, **params):
        self.state = state
        self.version = version
        self.versions = versions
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
    """Base run class: the lease, the coordinating record of a sharded run, and the
    package's own rules for taking a key (see :meth:`validate_run`)."""

    def validate_run(self, samples, key, overwrite=True):
        """Refuses a key used by a run of another kind or another tool, or by a run of
        this kind without ``overwrite``; a same-kind run recorded by an older version of
        this package (a generic ``RunConfig``) may be overwritten."""
        from fiftyone_prune.sdk import runs

        runs.check_key_free(samples, key, overwrite, self.config.kind)
        if key in samples._dataset.list_runs():
            existing = samples._dataset.get_run_info(key)
            if type(existing.config) is type(self.config):
                self._validate_run(samples, key, existing)

    def _validate_run(self, samples, key, existing_info):
        """An overwrite must own the same names as the run it replaces: the fields of a
        renamed scoring run keep their old names, and replacing the run by one with new
        fields would leave the old ones without an owner."""
        from fiftyone_prune.core.params import ParameterError

        old = run_for(existing_info.config).get_fields(samples, key)
        new = self.get_fields(samples, key)
        if old != new:
            raise ParameterError(
                f"Run {key!r} owns the field(s) {old}, this run would write {new} (was it "
                f"renamed?): delete it first (fop.delete_run) or choose another key",
                "run_key")

    def cleanup(self, samples, key):
        from fiftyone_prune.sdk import leases, shards, storage

        with leases.hold(samples, key):
            dataset = samples._dataset
            for field in self.created_fields(dataset, key):
                dataset.delete_sample_field(field)
            self._cleanup_more(dataset, key)
            storage.delete_shard_plan(shards.plan_id(dataset, key))

    def created_fields(self, dataset, key) -> list[str]:
        """The fields of :meth:`get_fields` (and staging fields) that exist now."""
        return [f for f in self.get_fields(dataset, key) if dataset.get_field(f) is not None]

    def _cleanup_more(self, dataset, key):
        pass


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


class PrototypeScoresConfig(PruneRunConfig):
    """A prototype-scores run (:func:`fiftyone_prune.compute_prototype_scores`).

    Args:
        field_prefix: the run key the run was created under; its fields are
            ``<field_prefix>_distance`` and ``<field_prefix>_cluster``
    """

    kind = "prototypes"
    derived = ("distance_field", "cluster_field")

    def __init__(self, field_prefix=None, **kwargs):
        self.field_prefix = field_prefix
        super().__init__(**kwargs)

    @property
    def distance_field(self):
        return score_field_names(self.field_prefix)[0]

    @property
    def cluster_field(self):
        return score_field_names(self.field_prefix)[1]


class PrototypeScores(PruneRun):
    def get_fields(self, samples, key):
        return [self.config.distance_field, self.config.cluster_field]

    def created_fields(self, dataset, key):
        from fiftyone_prune.sdk.scores import staging_fields  # scores imports runs

        # and what an overwrite killed before it switched its values in staged
        return super().created_fields(dataset, key) + staging_fields(dataset, key)

    def rename(self, samples, key, new_key):
        """The selections and evaluations made from this run follow it (else they would
        turn stale); its fields keep their names (the config records them)."""
        from fiftyone_prune.sdk import runs

        dataset = samples._dataset
        for dependent in runs.dependent_runs(samples, key):
            cfg = dataset.get_run_info(dependent).config
            cfg.run_key = new_key
            dataset.update_run_config(dependent, cfg)


class SelectionConfig(PruneRunConfig):
    """A selection run (:func:`fiftyone_prune.select_samples`), keyed
    ``<name>_selection``.

    Args:
        name: the selection's name; it owns the tags ``<name>:kept``,
            ``<name>:pruned``, ``<name>:unscored`` (written first as ``<tag>:staging``)
            and the saved view ``<name>-kept``
    """

    kind = "selection"
    derived = ("tags", "staging_tags", "saved_views")

    def __init__(self, name=None, **kwargs):
        self.name = name
        super().__init__(**kwargs)

    @property
    def tags(self):
        names = selection_names(self.name)
        return [names["kept_tag"], names["pruned_tag"], names["unscored_tag"]]

    @property
    def staging_tags(self):
        return [f"{tag}:staging" for tag in self.tags]

    @property
    def saved_views(self):
        return [selection_names(self.name)["view"]]



def recorded_tag_counts(config) -> dict:
    """Each tag of a selection run and the number of samples it recorded for it (None
    where not recorded); reads a config of an older version too."""
    names = selection_names(config.name)
    return {names[f"{part}_tag"]: getattr(config, f"num_{part}", None)
            for part in ("kept", "pruned", "unscored")}


class Selection(PruneRun):
    def _cleanup_more(self, dataset, key):
        from fiftyone_prune.sdk import storage

        cfg = self.config  # an older version's config may lack staging_tags
        for tag in list(cfg.tags) + list(getattr(cfg, "staging_tags", None) or []):
            storage.remove_tag(dataset, tag)
        for view_name in cfg.saved_views:
            if dataset.has_saved_view(view_name):
                dataset.delete_saved_view(view_name)


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
