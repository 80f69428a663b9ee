"""Turn prototype scores into a selection: tags, a saved view and a selection run.

Selecting never deletes a sample. A selection named ``name`` (default: the scoring run's
key) owns the tags ``<name>:kept``, ``<name>:pruned`` (and ``<name>:unscored`` for
samples of the view without a score), the saved view ``<name>-kept`` and the run
``<name>_selection``; re-running replaces exactly those.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections import Counter
from dataclasses import dataclass, field as dc_field

import numpy as np

from fiftyone_prune.core import selection as core
from fiftyone_prune.core.advice import auto_without_evaluation
from fiftyone_prune.core.params import (  # STRATEGIES, BALANCES are re-exported
    BALANCES, STRATEGIES, ParameterError, SelectionSpec, check_scalar, keep_shortfall)
from fiftyone_prune.sdk import (advice, object_scores, run_configs, runs, scores, storage,
                                validation, writer)

logger = logging.getLogger(__name__)


@dataclass
class SelectionPlan:
    """What a selection would do, computed without changing the dataset."""

    name: str
    run_key: str
    strategy: str
    strategy_reason: str
    budget: int
    kept_ids: list
    pruned_ids: list
    unscored_ids: list
    duplicate_ids: list = dc_field(default_factory=list)
    groups: dict = dc_field(default_factory=dict)  # group -> {"total": n, "kept": k}
    params: dict = dc_field(default_factory=dict)

    @property
    def warning(self) -> str | None:
        """Why the plan keeps fewer samples than ``keep`` asked for, with the fix (e.g.
        SemDeDup removed so many near-duplicates that 14 of the 150 asked were left), or
        None when it keeps them all."""
        return keep_shortfall(self.budget, len(self.kept_ids), len(self.duplicate_ids),
                              self.params.get("dedup_eps"))

    def summary(self) -> dict:
        return {
            "name": self.name, "run_key": self.run_key, "strategy": self.strategy,
            "strategy_reason": self.strategy_reason, "num_kept": len(self.kept_ids),
            "num_pruned": len(self.pruned_ids), "num_unscored": len(self.unscored_ids),
            "num_duplicates": len(self.duplicate_ids), "groups": self.groups,
            "warning": self.warning,
        }


def selection_names(name: str) -> dict:
    """The tags, saved view and run key a selection named ``name`` owns."""
    return run_configs.selection_names(name)


def check_scoring_run(samples, run_key: str):
    """The config of the complete prototype-score run ``run_key``, whose fields all
    still exist: what a selection or an evaluation reads.

    Raises:
        ParameterError: (``param="run_key"``) naming the runs that exist, or the rerun
            that completes an interrupted one
    """
    existing = runs.list_runs(samples, "prototypes")
    if run_key not in existing:
        raise ParameterError(
            f"No prototype-score run {run_key!r} on this dataset; compute one with "
            f"fop.compute_prototype_scores() (existing: {existing or 'none'})", "run_key")
    status = runs.run_status(samples, run_key)
    if status != runs.COMPLETE:  # the status names the fix for its case
        raise ParameterError(f"Prototype-score run {run_key!r} cannot be used: {status}",
                             "run_key")
    try:
        validation.check_run_fields(samples, run_key, runs.owned_fields(samples, run_key))
    except ValueError as e:
        raise ParameterError(str(e), "run_key") from None
    return runs.get_run_info(samples, run_key).config


def check_selection(samples, run_key: str, spec: SelectionSpec, name: str | None = None):
    """Checks a selection request against ``samples`` without reading any score: what
    :func:`plan_selection` and :func:`select_samples` check first, and what the App form
    calls on every change.

    Args:
        samples: the dataset or view to select from
        run_key: a complete prototype-score run
        spec: the :class:`~fiftyone_prune.core.params.SelectionSpec` to check
        name (None): the selection name (a valid run key), or None for ``run_key``

    Returns:
        the scoring run's config

    Raises:
        ParameterError: naming the first wrong argument (``.param``)

    Example::

        from fiftyone_prune.core.params import ParameterError, SelectionSpec
        from fiftyone_prune.sdk.selection import check_selection

        try:
            check_selection(dataset, "prototypes", SelectionSpec(keep=1.5))
        except ParameterError as e:
            print(e.param, e)  # keep keep=1.5 is outside (0, 1]: ...
    """
    validation.check_collection(samples)
    if getattr(samples, "_is_patches", False):
        raise ParameterError(
            "Got a patches view (to_patches): its samples are copies; select from the "
            "dataset or view it was made from (an object-level run's selection tags the "
            "labels there)", "samples")
    validation.check_not_empty(samples)
    if not isinstance(spec, SelectionSpec):
        raise ParameterError(f"spec must be a SelectionSpec, got {type(spec).__name__}",
                             "spec")
    cfg = check_scoring_run(samples, run_key)
    spec.validate()
    if getattr(cfg, "patches_field", None):
        _check_object_selection(cfg, spec)
    elif spec.balance == "class" or spec.label_field is not None:
        validation.check_classification_field(samples, spec.label_field or cfg.label_field,
                                              required_by="balance='class'")
    if spec.strategy == "density" and cfg.method_name != "kmeans":
        raise ParameterError("strategy='density' needs a k-means scoring run "
                             "(method='kmeans')", "strategy")
    if name is not None:
        validation.check_run_key(name, "name")
    return cfg


def _check_object_selection(cfg, spec):
    """What a selection of an object-level run (one item per label) cannot take."""
    if spec.label_field is not None and spec.label_field != cfg.patches_field:
        raise ParameterError(
            f"Run {cfg.field_prefix!r} scored the objects of {cfg.patches_field!r}: "
            f"balance='class' groups them by their own labels; leave label_field unset",
            "label_field")
    if spec.dedup_eps is not None:
        raise ParameterError(
            f"dedup_eps (SemDeDup) compares per-sample vectors; run {cfg.field_prefix!r} "
            f"scored objects: leave dedup_eps unset", "dedup_eps")


def _checked_spec(samples, run_key, spec, name, **knobs):
    """The scoring run's config and the checked spec (its label field defaulting to the
    scoring run's): the common start of planning and of the histogram."""
    spec = as_selection_spec(spec, **knobs)
    cfg = check_selection(samples, run_key, spec, name)
    if getattr(cfg, "patches_field", None):
        return cfg, spec.replace(label_field=None)
    return cfg, spec.replace(label_field=spec.label_field or cfg.label_field)


def as_selection_spec(spec, **knobs) -> SelectionSpec:
    """``spec``, or one built from the keyword arguments ``knobs`` (the fields of
    :class:`~fiftyone_prune.core.params.SelectionSpec`); both at once only where the
    keywords are left at their defaults (else which one wins would be a guess).

    Raises:
        ParameterError: naming a keyword passed together with ``spec``
    """
    if spec is None:
        return SelectionSpec(**knobs)
    if not isinstance(spec, SelectionSpec):
        raise ParameterError(f"spec must be a SelectionSpec, got {type(spec).__name__}",
                             "spec")
    default = SelectionSpec()
    for key, value in knobs.items():
        if value is not getattr(default, key) and value != getattr(default, key):
            raise ParameterError(
                f"{key}={value!r} was passed with spec=: give the selection either as "
                f"spec= or as keyword arguments, e.g. spec=spec.replace({key}={value!r})",
                key)
    return spec


def _group_key(value):
    return "none" if value is None else str(value)


def plan_selection(samples, run_key: str = "prototypes", keep=0.8, strategy: str = "auto",
                   balance="cluster", label_field=None, balance_ratio: float = 0.5,
                   seed: int = 51, dedup_eps=None, ccs_beta=None, ccs_bins: int = 50,
                   density_temperature: float = 0.5, name: str | None = None,
                   spec: SelectionSpec | None = None) -> SelectionPlan:
    """Computes a selection without touching the dataset: the App form's preview and
    the first half of :func:`select_samples`.

    Args:
        samples, run_key, keep, strategy, balance, label_field, balance_ratio, seed,
        dedup_eps, ccs_beta, ccs_bins, density_temperature, name: as in
            :func:`select_samples`
        spec (None): a :class:`~fiftyone_prune.core.params.SelectionSpec` instead of the
            keyword arguments ``keep`` ... ``density_temperature``

    Returns:
        a :class:`SelectionPlan` (kept, pruned, unscored and duplicate ids; per-group
        counts; the parameters it was made with)

    Example::

        import fiftyone_prune as fop

        plan = fop.plan_selection(dataset, "prototypes", keep=0.5, strategy="random")
        print(plan.summary()["num_kept"])
    """
    cfg, spec = _checked_spec(samples, run_key, spec, name, keep=keep, strategy=strategy,
                              balance=balance, label_field=label_field,
                              balance_ratio=balance_ratio, seed=seed, dedup_eps=dedup_eps,
                              ccs_beta=ccs_beta, ccs_bins=ccs_bins,
                              density_temperature=density_temperature)
    table = read_score_table(samples, cfg, spec.balance, spec.label_field)
    return plan_from_table(samples, cfg, table, spec, name=name or run_key, run_key=run_key)


@dataclass
class ScoreTable:
    """The scored samples of a view as arrays, in view order."""

    ids: list
    distances: np.ndarray
    clusters: list
    groups: list | None  # balance groups (class or cluster), None when unbalanced
    unscored_ids: list

    def subset(self, index) -> "ScoreTable":
        index = np.asarray(index)
        return ScoreTable([self.ids[i] for i in index], self.distances[index],
                          [self.clusters[i] for i in index],
                          None if self.groups is None else [self.groups[i] for i in index],
                          [])


def read_score_table(samples, cfg, balance, label_field) -> ScoreTable:
    """The scores of run ``cfg`` on ``samples``; for an object-level run one row per
    label (ids are label ids; ``balance="class"`` groups by the objects' own labels)."""
    labels = run_configs.selection_labels(cfg)
    if labels is not None:  # one row per label; its class is its own label
        names = [f.rsplit(".", 1)[-1] for f in (cfg.distance_field, cfg.cluster_field)]
        _, ids, columns = object_scores.read_labels(samples, labels[0], labels[1],
                                                    names + ["label"])
        distances, clusters, classes = (columns[names[0]], columns[names[1]],
                                        columns["label"])
        what = "object"
    else:
        fields = ["id", cfg.distance_field, cfg.cluster_field]
        if balance == "class":
            fields.append(f"{label_field}.label")
        ids, distances, clusters, *rest = samples.values(fields)
        classes = rest[0] if rest else None
        what = "sample"
    dist = np.array([np.nan if v is None else v for v in distances], dtype=np.float64)
    scored = ~np.isnan(dist)
    if not scored.any():
        raise ValueError(f"No {what} of this view has a score in {cfg.distance_field!r}")
    idx = np.flatnonzero(scored)
    clusters = [clusters[i] for i in idx]
    if balance == "class":
        groups = [_group_key(classes[i]) for i in idx]
    elif balance == "cluster":
        groups = [_group_key(c) for c in clusters]
    else:
        groups = None
    return ScoreTable([ids[i] for i in idx], dist[idx], clusters, groups,
                      [i for i, ok in zip(ids, scored) if not ok])


def plan_from_table(samples, cfg, table: ScoreTable, spec: SelectionSpec, *, name: str,
                    run_key: str) -> SelectionPlan:
    """The selection of :func:`plan_selection` on already-read scores (the evaluation
    selects many times from one read). ``spec`` must be checked already
    (:func:`check_selection`), its ``label_field`` resolved."""
    ids_s, dist_s, clusters_s, groups_s = table.ids, table.distances, table.clusters, table.groups
    unscored_ids = table.unscored_ids
    n = len(ids_s)
    keep, strategy, balance = spec.keep, spec.strategy, spec.balance
    try:
        budget = core.kept_count(n, int(keep) if isinstance(keep, numbers.Integral)
                                 else float(keep))
    except ValueError as e:
        raise ParameterError(f"{e} (the view has {n} scored samples)", "keep") from None

    # SemDeDup first (the D4 recipe): duplicates are pruned before any strategy runs
    candidates = np.arange(n)
    duplicate_ids = []
    if spec.dedup_eps is not None:
        survivors = _dedup_mask(samples, cfg, ids_s, dist_s, clusters_s, spec.dedup_eps)
        duplicate_ids = [ids_s[i] for i in np.flatnonzero(~survivors)]
        candidates = np.flatnonzero(survivors)
    budget_eff = min(budget, len(candidates))

    chosen, reason = strategy, "requested"
    if strategy == "auto":
        chosen, reason = _auto_strategy(samples, cfg, run_key, budget_eff, n, balance,
                                        spec.label_field)
    sub_scores = dist_s[candidates]
    sub_groups = None if groups_s is None else [groups_s[i] for i in candidates]
    actual_beta = None
    if chosen == "density":
        centroids = _centroids(samples, run_key)
        sub_clusters = np.array([clusters_s[i] for i in candidates], dtype=np.int64)
        local = core.density_select(sub_scores, sub_clusters, centroids, budget_eff,
                                    temperature=spec.density_temperature,
                                    balance_ratio=spec.balance_ratio)
    else:
        if chosen == "ccs":
            actual_beta = (spec.ccs_beta if spec.ccs_beta is not None
                           else core.default_ccs_beta(budget_eff / max(1, len(candidates))))
        local = core.select(sub_scores, budget_eff, chosen, groups=sub_groups,
                            balance_ratio=spec.balance_ratio, seed=spec.seed,
                            ccs_beta=actual_beta, ccs_bins=spec.ccs_bins)
    kept_mask = np.zeros(n, dtype=bool)
    kept_mask[candidates[local]] = True
    kept_ids = [ids_s[i] for i in np.flatnonzero(kept_mask)]
    pruned_ids = [ids_s[i] for i in np.flatnonzero(~kept_mask)]

    report_groups = groups_s if groups_s is not None else [_group_key(c) for c in clusters_s]
    totals = Counter(report_groups)
    kept_counts = Counter(g for g, k in zip(report_groups, kept_mask) if k)
    groups = {g: {"total": int(totals[g]), "kept": int(kept_counts.get(g, 0))}
              for g in sorted(totals, key=_natural)}
    params = dict(run_key=run_key, scoring_version=getattr(cfg, "version", None),
                  keep=keep, strategy=strategy, chosen_strategy=chosen,
                  balance=balance, label_field=spec.label_field if balance == "class" else None,
                  balance_ratio=spec.balance_ratio, seed=spec.seed, dedup_eps=spec.dedup_eps,
                  ccs_beta=actual_beta, ccs_bins=spec.ccs_bins if chosen == "ccs" else None,
                  density_temperature=(spec.density_temperature if chosen == "density"
                                       else None),
                  budget=budget)
    return SelectionPlan(name, run_key, chosen, reason, budget, kept_ids, pruned_ids,
                         unscored_ids, duplicate_ids, groups, params)


def _natural(key):
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)


def _auto_strategy(samples, cfg, run_key, budget, num_scored, balance, label_field):
    """What ``auto`` keeps: the advice of an evaluation matching this request (same
    scoring run and version, balance, a kept fraction within 0.1), else the rule of
    :func:`fiftyone_prune.core.advice.auto_without_evaluation` (random), whose regime
    comes from the data (kept per class, or in total), never from the clusters."""
    chosen, reason, _ = advice.recommend_strategy(samples, run_key,
                                                  budget / max(1, num_scored), balance,
                                                  label_field)
    if chosen is not None:
        return chosen, reason
    label_field = label_field or cfg.label_field
    num_classes = None
    labels = run_configs.selection_labels(cfg)
    if labels is not None:  # an object-level run: the objects' own classes
        num_classes = len(samples.distinct(f"{labels[0]}.label")) or None
    elif label_field and samples.get_field(label_field) is not None:
        num_classes = len(samples.distinct(f"{label_field}.label")) or None
    chosen, rule = auto_without_evaluation(budget, num_scored, num_classes)
    return chosen, f"{rule} (no matching evaluation: {reason})"


def _centroids(samples, run_key):
    return scores.load_centroids(samples, run_key)


def _dedup_mask(samples, cfg, ids, distances, clusters, eps):
    emb_ids, x, _ = scores.read_embeddings(samples.select(ids, ordered=False),
                                           cfg.embeddings_field)
    row = {sid: i for i, sid in enumerate(emb_ids)}
    order = np.array([row[i] for i in ids])
    cluster_codes = np.unique(np.array([str(c) for c in clusters]), return_inverse=True)[1]
    return core.semdedup(x[order], cluster_codes, distances, eps)


def check_selection_name_free(samples, name: str, overwrite: bool) -> None:
    """Refuses, before any work, a selection name that is taken unless ``overwrite``.

    Raises:
        ParameterError: (``param="name"``) when a selection named ``name`` exists and
            ``overwrite`` is False, or its run key is used by a run that is not a
            selection
    """
    validation.check_collection(samples)
    validation.check_run_key(name, "name")
    key = runs.selection_key(samples, name)
    if key not in samples._dataset.list_runs():
        return
    if key not in runs.list_runs(samples, "selection"):
        raise ParameterError(
            f"Run key {key!r} (of selection {name!r}) is used by a run that is not a "
            f"selection: choose another name", "name")
    if not overwrite:
        raise ParameterError(
            f"Selection {name!r} already exists (run {key!r}); pass overwrite=True to "
            f"replace it, or choose another name", "name")


def select_samples(samples, run_key: str = "prototypes", keep=0.8, strategy: str = "auto",
                   balance="cluster", label_field=None, balance_ratio: float = 0.5,
                   seed: int = 51, dedup_eps=None, ccs_beta=None, ccs_bins: int = 50,
                   density_temperature: float = 0.5, name: str | None = None,
                   progress=None, spec: SelectionSpec | None = None,
                   overwrite: bool = False):
    """Selects the samples to keep from the prototype scores of run ``run_key``.

    Args:
        samples: the dataset or view to select from
        run_key ("prototypes"): a :func:`compute_prototype_scores` run
        keep (0.8): a fraction in (0, 1] (rounded half up, at least 1) or an absolute
            count; the kept count is exact
        strategy ("auto"): ``"hard"`` (largest distances: prune the easy, redundant samples; for
            abundant data), ``"easy"`` (smallest distances; for scarce data), ``"auto"``
            (what a matching evaluation of this data found best, else random: see
            :mod:`fiftyone_prune.core.advice`), ``"random"`` (the seeded baseline),
            ``"ccs"`` (coverage-centric:
            drop the hardest ``ccs_beta`` fraction, fill equal-width score bins from the
            smallest up) or ``"density"`` (DBP per-cluster budgets, hardest per cluster)
        balance ("cluster"): ``"cluster"``, ``"class"`` (with ``label_field``) or None;
            each group keeps at least ``balance_ratio`` of its fair share
            (``kept / number of groups``, all of it when the group is smaller)
        label_field (None): Classification field for ``balance="class"`` (default: the
            scoring run's label field)
        balance_ratio (0.5): the floor's fraction of the fair share (0.5 as in the
            authors' follow-up code; 0 disables floors)
        seed (51): for random choices (random, ccs, ties)
        dedup_eps (None): run SemDeDup first (cosine similarity > 1 - eps inside a
            cluster makes a duplicate group; the one farthest from the centroid survives)
        ccs_beta (None): CCS hard cut-off rate (default from the kept fraction)
        ccs_bins (50): CCS score bins
        density_temperature (0.5): DBP softmax temperature
        name (None): names the tags ``<name>:kept`` / ``<name>:pruned``, the saved view
            ``<name>-kept`` and the run ``<name>_selection`` (default: ``run_key``)
        progress (None): unused; kept so existing calls still work
        spec (None): a :class:`~fiftyone_prune.core.params.SelectionSpec` instead of the
            keyword arguments ``keep`` ... ``density_temperature`` (not both)
        overwrite (False): replace a selection of the same name (its tags, saved view
            and run; atomically for readers: see :func:`apply_plan`)

    Returns:
        the view of the kept samples (of ``samples``); ``plan`` details are in the run.
        When fewer samples are kept than ``keep`` asked for (``dedup_eps`` removed
        more near-duplicates than the budget leaves room for), the reason and the fix
        are logged as a warning and stored in the run's results (``warning``), as in
        :meth:`SelectionPlan.summary`

    Raises:
        ParameterError: (a ``ValueError`` with ``.param``) before any change, naming the
            wrong argument; ``param="name"`` when the selection name is taken and
            ``overwrite`` is False

    Example::

        import fiftyone_prune as fop
        from fiftyone_prune.core.params import SelectionSpec

        dataset = fop.load_demo_dataset()
        fop.compute_embeddings(dataset, embeddings_field="emb")
        fop.compute_prototype_scores(dataset, "emb", run_key="prototypes")
        kept = fop.select_samples(dataset, "prototypes", keep=0.5, strategy="random")
        same = fop.select_samples(dataset, "prototypes",
                                  spec=SelectionSpec(keep=0.5, strategy="random"))
    """
    check_selection_name_free(samples, name or run_key, overwrite)
    plan = plan_selection(samples, run_key, name=name, spec=as_selection_spec(
        spec, keep=keep, strategy=strategy, balance=balance, label_field=label_field,
        balance_ratio=balance_ratio, seed=seed, dedup_eps=dedup_eps, ccs_beta=ccs_beta,
        ccs_bins=ccs_bins, density_temperature=density_temperature))
    apply_plan(samples, plan, overwrite=overwrite)
    if plan.warning:  # also in the run's results ("warning") and the plan's summary
        logger.warning("Selection %r %s", plan.name, plan.warning)
    return run_configs.kept_view(samples, plan.name, run_configs.selection_labels(
        runs.get_run_info(samples, run_key).config))


def apply_plan(samples, plan: SelectionPlan, overwrite: bool = False) -> None:
    """Writes a plan's tags, saved view and run, replacing (with ``overwrite=True``)
    only the previous ones of the same selection name.

    Atomic as seen by readers, exclusive between writers, fenced: through the run-writer
    (:func:`fiftyone_prune.sdk.writer.run_writer`) of the selection's key, the new tags
    are first written as this writer's own staging tags (``<tag>:staging:<token>``)
    while the previous selection stays whole; the run is then registered "in progress"
    and one server-side pass replaces the old tags by the staged ones, per document
    atomically; the run is marked complete last. Every tag write is fenced: a writer
    that lost its lease (stalled past it while another took over) writes nothing more.
    A kill leaves the old selection (staging tags are removed by the next writer) or a
    run marked in progress, which export refuses until a rerun completes it.

    Raises:
        ParameterError: (``param="name"``) when the name is taken and ``overwrite`` is
            False (checked again under the lease)
    """
    dataset = samples._dataset
    check_selection_name_free(samples, plan.name, overwrite)
    key = runs.selection_key(samples, plan.name)
    with writer.run_writer(samples, key, "selection", overwrite=True, param="name") as w:
        check_selection_name_free(samples, plan.name, overwrite)  # under the lease
        current = getattr(runs.get_run_info(samples, plan.run_key).config, "version", None)
        if plan.params.get("scoring_version", current) != current:
            raise ValueError(
                f"Scoring run {plan.run_key!r} was recomputed after this selection was "
                f"planned; plan it again")
        t0 = time.perf_counter()
        owned = run_configs.SelectionConfig(name=plan.name)  # the names the run owns
        final = owned.tags
        staging = [w.staging_tag(tag) for tag in final]
        scoring = runs.get_run_info(samples, plan.run_key).config
        labels = run_configs.selection_labels(scoring)  # an object-level run: label tags
        present = dataset.distinct("tags" if labels is None else f"{labels[0]}.tags")
        for tag in present:  # what killed (or fenced-out) writers left
            if any(run_configs.is_staging_tag(tag, f) for f in final):
                if labels is None:
                    storage.remove_tag(dataset, tag, fence=w.fence)
                else:
                    storage.remove_label_tag(dataset, *labels, tag, fence=w.fence)
        for tag, ids in zip(staging, (plan.kept_ids, plan.pruned_ids, plan.unscored_ids)):
            if labels is None:
                storage.add_tag(dataset, ids, tag, fence=w.fence)
            else:
                storage.add_label_tag(dataset, *labels, ids, tag, fence=w.fence)
        objects = {} if labels is None else dict(patches_field=scoring.patches_field,
                                                 labels_path=labels[0])
        params = dict(plan.params, **objects, name=plan.name, num_kept=len(plan.kept_ids),
                      num_pruned=len(plan.pruned_ids), num_unscored=len(plan.unscored_ids),
                      num_duplicates=len(plan.duplicate_ids),
                      strategy_reason=plan.strategy_reason)
        w.register(params, dict(groups=plan.groups, duplicate_ids=plan.duplicate_ids,
                                warning=plan.warning,
                                seconds=round(time.perf_counter() - t0, 3)),
                   state=runs.IN_PROGRESS)
        if labels is None:
            storage.switch_tags(dataset, dict(zip(staging, final)), fence=w.fence)
        else:
            storage.switch_label_tags(dataset, *labels, dict(zip(staging, final)),
                                      fence=w.fence)
        w.check()
        dataset.save_view(owned.saved_views[0],
                          run_configs.kept_view(dataset, plan.name, labels),
                          description=run_configs.selection_view_description(plan.name),
                          overwrite=True)
        w.set_state(runs.COMPLETE)


def deduplicate(samples, run_key: str = "prototypes", eps: float = 0.05, name=None,
                overwrite: bool = False):
    """SemDeDup alone: inside each cluster of run ``run_key``, keeps one sample per
    group of near-duplicates (cosine similarity > 1 - eps), the one farthest from the
    centroid. Tags ``<name>:kept`` / ``<name>:pruned`` like :func:`select_samples`
    (default name ``<run_key>_dedup``) and returns the kept view.

    Args:
        samples: the dataset or view to deduplicate
        run_key ("prototypes"): a :func:`compute_prototype_scores` run
        eps (0.05): a float in (0, 1); two samples of one cluster are duplicates when
            their cosine similarity exceeds ``1 - eps``
        name (None): names the tags ``<name>:kept`` / ``<name>:pruned``, the saved view
            ``<name>-kept`` and the run ``<name>_selection`` (default:
            ``<run_key>_dedup``)
        overwrite (False): replace a selection of the same name

    Returns:
        the view of the kept samples (of ``samples``)

    Raises:
        ParameterError: (a ``ValueError`` with ``.param``) before any change, naming the
            wrong argument

    Example::

        import fiftyone_prune as fop

        kept = fop.deduplicate(dataset, "prototypes", eps=0.05)
        print(len(kept), dataset.count_sample_tags())
    """
    check_scalar(eps, "eps", numbers.Real, 0, 1, "neither")
    name = name or f"{run_key}_dedup"
    check_selection_name_free(samples, name, overwrite)
    cfg = check_selection(samples, run_key, SelectionSpec(keep=1.0, balance=None,
                                                          dedup_eps=eps), name)
    ids, dist, clusters = samples.exists(cfg.distance_field).values(
        ["id", cfg.distance_field, cfg.cluster_field])
    survivors = _dedup_mask(samples, cfg, ids, np.asarray(dist), clusters, eps)
    kept = [i for i, s in zip(ids, survivors) if s]
    pruned = [i for i, s in zip(ids, survivors) if not s]
    unscored = samples.exists(cfg.distance_field, False).values("id")
    totals = Counter(_group_key(c) for c in clusters)
    kept_counts = Counter(_group_key(c) for c, s in zip(clusters, survivors) if s)
    plan = SelectionPlan(
        name, run_key, "semdedup", "requested", len(kept), kept, pruned, unscored, pruned,
        {g: {"total": totals[g], "kept": kept_counts.get(g, 0)} for g in sorted(totals, key=_natural)},
        dict(run_key=run_key, scoring_version=getattr(cfg, "version", None), keep=None,
             strategy="semdedup", chosen_strategy="semdedup",
             dedup_eps=eps, budget=len(kept)),
    )
    apply_plan(samples, plan, overwrite=overwrite)
    return samples.match_tags(selection_names(name)["kept_tag"])


def selection_histogram(samples, run_key: str = "prototypes", keep=0.8, strategy="auto",
                        balance="cluster", group=None, num_bins: int = 40, *,
                        label_field=None, balance_ratio: float = 0.5, seed: int = 51,
                        dedup_eps=None, ccs_beta=None, ccs_bins: int = 50,
                        density_temperature: float = 0.5, name: str | None = None,
                        spec: SelectionSpec | None = None) -> dict:
    """Histogram data of a run's distances split into kept / pruned by a selection plan
    (no change to the dataset): what the App panel draws. Binned here so only
    ``num_bins`` numbers per series travel to the browser, whatever the dataset size.

    Args:
        samples, run_key, keep, strategy, balance, label_field, balance_ratio, seed,
        dedup_eps, ccs_beta, ccs_bins, density_temperature, name, spec: as in
            :func:`plan_selection`
        group (None): restrict the histogram to one class/cluster
        num_bins (40): number of equal-width distance bins

    Returns:
        a dict: ``edges``, ``centers``, ``kept``, ``pruned`` (counts per bin), ``cut``
        (the distance threshold where the selection is one, else None), ``plan`` (the
        plan's summary), ``distance_field`` and ``cluster_field``

    Example::

        import fiftyone_prune as fop

        hist = fop.selection_histogram(dataset, "prototypes", keep=0.5, strategy="hard")
        print(sum(hist["kept"]), sum(hist["pruned"]), hist["cut"])
    """
    cfg, spec = _checked_spec(samples, run_key, spec, name, keep=keep, strategy=strategy,
                              balance=balance, label_field=label_field,
                              balance_ratio=balance_ratio, seed=seed, dedup_eps=dedup_eps,
                              ccs_beta=ccs_beta, ccs_bins=ccs_bins,
                              density_temperature=density_temperature)
    balance = spec.balance
    check_scalar(num_bins, "num_bins", int, min_val=1)
    # one read of the scores serves both the plan and the histogram
    table = read_score_table(samples, cfg, balance, spec.label_field)
    plan = plan_from_table(samples, cfg, table, spec, name=name or run_key, run_key=run_key)
    ids, dist = table.ids, table.distances
    kept = set(plan.kept_ids)
    in_group = np.ones(len(ids), dtype=bool)
    if group is not None:
        keys = table.groups if balance == "class" else [_group_key(c) for c in table.clusters]
        in_group = np.array([k == str(group) for k in keys])
    is_kept = np.array([i in kept for i in ids])
    lo, hi = (float(dist.min()), float(dist.max())) if len(dist) else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, num_bins + 1)
    kept_hist = np.histogram(dist[in_group & is_kept], edges)[0]
    pruned_hist = np.histogram(dist[in_group & ~is_kept], edges)[0]
    # where the selection is a plain threshold on the distance (hard/easy without binding
    # balance floors), report it so the histogram can draw the cut
    cut = None
    if is_kept.any() and (~is_kept).any():
        if dist[is_kept].min() >= dist[~is_kept].max():
            cut = float(dist[is_kept].min())
        elif dist[is_kept].max() <= dist[~is_kept].min():
            cut = float(dist[is_kept].max())
    return {
        "edges": edges.tolist(), "centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "kept": kept_hist.tolist(), "pruned": pruned_hist.tolist(), "cut": cut,
        "plan": plan.summary(), "distance_field": cfg.distance_field,
        "cluster_field": cfg.cluster_field,
    }
