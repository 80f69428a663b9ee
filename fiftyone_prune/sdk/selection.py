"""Turn prototype scores into a selection: tags, a saved view and a selection run.

Selecting never deletes a sample. A selection named ``name`` (default: the scoring run's
key) owns the tags ``<name>:kept``, ``<name>:pruned`` (and ``<name>:unscored`` for
samples of the view without a score), the saved view ``<name>-kept`` and the run
``<name>_selection``; re-running replaces exactly those.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field as dc_field

import numpy as np

from fiftyone_prune.core import selection as core
from fiftyone_prune.sdk import leases, runs, storage, validation

STRATEGIES = ("auto", "hard", "easy", "random", "ccs", "density")
BALANCES = ("cluster", "class", None)


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

    def summary(self) -> dict:
        return {
            "name": self.name, "run_key": self.run_key, "strategy": self.strategy,
            "strategy_reason": self.strategy_reason, "num_kept": len(self.kept_ids),
            "num_pruned": len(self.pruned_ids), "num_unscored": len(self.unscored_ids),
            "num_duplicates": len(self.duplicate_ids), "groups": self.groups,
        }


def selection_names(name: str) -> dict:
    return {"kept_tag": f"{name}:kept", "pruned_tag": f"{name}:pruned",
            "unscored_tag": f"{name}:unscored", "view": f"{name}-kept",
            "run_key": f"{name}_selection"}


def _scoring_config(samples, run_key):
    if run_key not in runs.list_runs(samples, "prototypes"):
        raise ValueError(
            f"No prototype-score run {run_key!r} on this dataset; compute one with "
            f"fop.compute_prototype_scores() (existing: {runs.list_runs(samples, 'prototypes') or 'none'})"
        )
    status = runs.run_status(samples, run_key)
    if status != runs.COMPLETE:
        raise ValueError(f"Prototype-score run {run_key!r} cannot be used: {status} "
                         f"(rerun fop.compute_prototype_scores(..., overwrite=True) if it "
                         f"was interrupted)")
    validation.check_run_fields(samples, run_key, runs.owned_fields(samples, run_key))
    return runs.get_run_info(samples, run_key).config


def _check(samples, run_key, keep, strategy, balance, label_field, balance_ratio, dedup_eps,
           name):
    validation.check_collection(samples)
    validation.check_not_empty(samples)
    cfg = _scoring_config(samples, run_key)
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if balance not in BALANCES:
        raise ValueError(f"Unknown balance {balance!r}; choose 'cluster', 'class' or None")
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise ValueError(f"keep must be a fraction in (0, 1] or a count >= 1, got {keep!r}")
    if isinstance(keep, (float, np.floating)) and not 0 < keep <= 1:
        raise ValueError(
            f"keep={keep} is outside (0, 1]: pass a fraction such as 0.8, or an integer count"
        )
    if isinstance(keep, (int, np.integer)) and keep < 1:
        raise ValueError(f"keep={keep}: a count must be at least 1")
    if not isinstance(balance_ratio, (int, float)) or not 0 <= balance_ratio <= 1:
        raise ValueError(f"balance_ratio must be in [0, 1], got {balance_ratio!r}")
    if dedup_eps is not None and (not isinstance(dedup_eps, (int, float)) or not 0 < dedup_eps < 1):
        raise ValueError(f"dedup_eps must be in (0, 1) (e.g. 0.05), got {dedup_eps!r}")
    if balance == "class" or label_field is not None:
        lf = label_field or cfg.label_field
        if lf is None:
            raise ValueError(
                "balance='class' needs label_field= (a Classification field); the scoring "
                "run used no labels"
            )
        f = samples.get_field(lf)
        import fiftyone as fo

        if f is None or not (isinstance(f, fo.EmbeddedDocumentField)
                             and f.document_type is fo.Classification):
            raise ValueError(
                f"Label field {lf!r} {'does not exist' if f is None else 'is not a Classification field'}; "
                f"Classification fields here: {validation.classification_fields(samples) or 'none'}"
            )
    if strategy == "density" and cfg.method_name != "kmeans":
        raise ValueError("strategy='density' needs a k-means scoring run (method='kmeans')")
    if name is not None:
        validation.check_run_key(name)
    return cfg


def _group_key(value):
    return "none" if value is None else str(value)


def plan_selection(samples, run_key: str = "prototypes", keep=0.8, strategy: str = "auto",
                   balance="cluster", label_field=None, balance_ratio: float = 0.5,
                   seed: int = 51, dedup_eps=None, ccs_beta=None, ccs_bins: int = 50,
                   density_temperature: float = 0.5, name: str | None = None) -> SelectionPlan:
    """Computes a selection without touching the dataset (the App form's preview and
    the first half of :func:`select_samples`; same arguments)."""
    cfg = _check(samples, run_key, keep, strategy, balance, label_field, balance_ratio,
                 dedup_eps, name)
    label_field = label_field or cfg.label_field
    table = read_score_table(samples, cfg, balance, label_field)
    return plan_from_table(samples, cfg, table, keep, strategy, balance, label_field,
                           balance_ratio, seed, dedup_eps, ccs_beta, ccs_bins,
                           density_temperature, name or run_key, run_key)


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
    fields = ["id", cfg.distance_field, cfg.cluster_field]
    if balance == "class":
        fields.append(f"{label_field}.label")
    values = samples.values(fields)
    ids = values[0]
    dist = np.array([np.nan if v is None else v for v in values[1]], dtype=np.float64)
    scored = ~np.isnan(dist)
    if not scored.any():
        raise ValueError(f"No sample of this view has a score in run {cfg.distance_field[:-9]!r}")
    idx = np.flatnonzero(scored)
    clusters = [values[2][i] for i in idx]
    if balance == "class":
        groups = [_group_key(values[3][i]) for i in idx]
    elif balance == "cluster":
        groups = [_group_key(c) for c in clusters]
    else:
        groups = None
    return ScoreTable([ids[i] for i in idx], dist[idx], clusters, groups,
                      [i for i, ok in zip(ids, scored) if not ok])


def plan_from_table(samples, cfg, table: ScoreTable, keep, strategy, balance, label_field,
                    balance_ratio, seed, dedup_eps, ccs_beta, ccs_bins, density_temperature,
                    name, run_key) -> SelectionPlan:
    """The selection of :func:`plan_selection` on already-read scores (also used by the
    evaluation, which selects many times from one read)."""
    ids_s, dist_s, clusters_s, groups_s = table.ids, table.distances, table.clusters, table.groups
    unscored_ids = table.unscored_ids
    n = len(ids_s)
    try:
        budget = core.kept_count(n, int(keep) if isinstance(keep, (int, np.integer)) else float(keep))
    except ValueError as e:
        raise ValueError(f"{e} (the view has {n} scored samples)") from None

    # SemDeDup first (the D4 recipe): duplicates are pruned before any strategy runs
    candidates = np.arange(n)
    duplicate_ids = []
    if dedup_eps is not None:
        survivors = _dedup_mask(samples, cfg, ids_s, dist_s, clusters_s, dedup_eps)
        duplicate_ids = [ids_s[i] for i in np.flatnonzero(~survivors)]
        candidates = np.flatnonzero(survivors)
    budget_eff = min(budget, len(candidates))

    chosen, reason = strategy, "requested"
    if strategy == "auto":
        chosen, reason = _auto_strategy(samples, cfg, run_key, budget_eff, n, balance,
                                        label_field)
    sub_scores = dist_s[candidates]
    sub_groups = None if groups_s is None else [groups_s[i] for i in candidates]
    actual_beta = None
    if chosen == "density":
        centroids = _centroids(samples, run_key)
        sub_clusters = np.array([clusters_s[i] for i in candidates], dtype=np.int64)
        local = core.density_select(sub_scores, sub_clusters, centroids, budget_eff,
                                    temperature=density_temperature,
                                    balance_ratio=balance_ratio)
    else:
        if chosen == "ccs":
            actual_beta = (ccs_beta if ccs_beta is not None
                           else core.default_ccs_beta(budget_eff / max(1, len(candidates))))
        local = core.select(sub_scores, budget_eff, chosen, groups=sub_groups,
                            balance_ratio=balance_ratio, seed=seed, ccs_beta=actual_beta,
                            ccs_bins=ccs_bins)
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
                  balance=balance, label_field=label_field if balance == "class" else None,
                  balance_ratio=balance_ratio, seed=seed, dedup_eps=dedup_eps,
                  ccs_beta=actual_beta, ccs_bins=ccs_bins if chosen == "ccs" else None,
                  density_temperature=density_temperature if chosen == "density" else None,
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
    from fiftyone_prune.core.advice import auto_without_evaluation
    from fiftyone_prune.sdk.evaluation import recommend_strategy

    chosen, reason, _ = recommend_strategy(samples, run_key, budget / max(1, num_scored),
                                           balance, label_field)
    if chosen is not None:
        return chosen, reason
    label_field = label_field or cfg.label_field
    num_classes = None
    if label_field and samples.get_field(label_field) is not None:
        num_classes = len(samples.distinct(f"{label_field}.label")) or None
    chosen, rule = auto_without_evaluation(budget, num_scored, num_classes)
    return chosen, f"{rule} (no matching evaluation: {reason})"


def _centroids(samples, run_key):
    from fiftyone_prune.sdk.scores import load_centroids

    return load_centroids(samples, run_key)


def _dedup_mask(samples, cfg, ids, distances, clusters, eps):
    from fiftyone_prune.sdk.scores import _read_embeddings

    emb_ids, x, _ = _read_embeddings(samples.select(ids, ordered=False), cfg.embeddings_field)
    row = {sid: i for i, sid in enumerate(emb_ids)}
    order = np.array([row[i] for i in ids])
    cluster_codes = np.unique(np.array([str(c) for c in clusters]), return_inverse=True)[1]
    return core.semdedup(x[order], cluster_codes, distances, eps)


def select_samples(samples, run_key: str = "prototypes", keep=0.8, strategy: str = "auto",
                   balance="cluster", label_field=None, balance_ratio: float = 0.5,
                   seed: int = 51, dedup_eps=None, ccs_beta=None, ccs_bins: int = 50,
                   density_temperature: float = 0.5, name: str | None = None,
                   progress=None):
    """Selects the samples to keep from the prototype scores of run ``run_key``.

    Args:
        samples: the dataset or view to select from
        run_key: a :func:`compute_prototype_scores` run
        keep: a fraction in (0, 1] (rounded half up, at least 1) or an absolute count;
            the kept count is exact
        strategy: ``"hard"`` (largest distances: prune the easy, redundant samples; for
            abundant data), ``"easy"`` (smallest distances; for scarce data), ``"auto"``
            (what a matching evaluation of this data found best, else random: see
            :mod:`fiftyone_prune.core.advice`), ``"random"`` (the seeded baseline),
            ``"ccs"`` (coverage-centric:
            drop the hardest ``ccs_beta`` fraction, fill equal-width score bins from the
            smallest up) or ``"density"`` (DBP per-cluster budgets, hardest per cluster)
        balance: ``"cluster"`` (default), ``"class"`` (with ``label_field``) or None; each
            group keeps at least ``balance_ratio`` of its fair share
            (``kept / number of groups``, all of it when the group is smaller)
        label_field: Classification field for ``balance="class"`` (default: the scoring
            run's label field)
        balance_ratio: the floor's fraction of the fair share (0.5 as in the authors'
            follow-up code; 0 disables floors)
        seed: for random choices (random, ccs, ties)
        dedup_eps: run SemDeDup first (cosine similarity > 1 - eps inside a cluster makes
            a duplicate group; the one farthest from the centroid survives)
        ccs_beta, ccs_bins: CCS hard cut-off rate (default from the kept fraction) and bins
        density_temperature: DBP softmax temperature
        name: names the tags ``<name>:kept`` / ``<name>:pruned``, the saved view
            ``<name>-kept`` and the run ``<name>_selection`` (default: ``run_key``)

    Returns:
        the view of the kept samples (of ``samples``); ``plan`` details are in the run
    """
    plan = plan_selection(samples, run_key, keep, strategy, balance, label_field,
                          balance_ratio, seed, dedup_eps, ccs_beta, ccs_bins,
                          density_temperature, name)
    apply_plan(samples, plan)
    return samples.match_tags(selection_names(plan.name)["kept_tag"])


def apply_plan(samples, plan: SelectionPlan) -> None:
    """Writes a plan's tags, saved view and run, replacing only the previous ones of the
    same selection name.

    Atomic as seen by readers, exclusive between writers: under the lease of the run
    key, the new tags are first written as staging tags (``<tag>:staging``) while the
    previous selection stays whole; the run is then registered "in progress" and one
    server-side pass replaces the old tags by the staged ones, per document atomically;
    the run is marked complete last. A kill leaves the old selection (staging tags are
    removed by the next run) or a run marked in progress, which export refuses until a
    rerun completes it."""
    dataset = samples._dataset
    names = selection_names(plan.name)
    with leases.hold(samples, names["run_key"]) as lease:
        existing = dataset.list_runs()
        if (names["run_key"] in existing
                and names["run_key"] not in runs.list_runs(samples, "selection")):
            raise ValueError(
                f"Run key {names['run_key']!r} is used by another tool; pass another name="
            )
        current = getattr(runs.get_run_info(samples, plan.run_key).config, "version", None)
        if plan.params.get("scoring_version", current) != current:
            raise ValueError(
                f"Scoring run {plan.run_key!r} was recomputed after this selection was "
                f"planned; plan it again")
        t0 = time.perf_counter()
        final = [names["kept_tag"], names["pruned_tag"], names["unscored_tag"]]
        staging = [f"{tag}:staging" for tag in final]
        for tag in staging:  # what a killed earlier run left
            storage.remove_tag(dataset, tag)
        for tag, ids in zip(staging, (plan.kept_ids, plan.pruned_ids, plan.unscored_ids)):
            storage.add_tag(dataset, ids, tag)
        params = dict(plan.params, name=plan.name, tags=final, staging_tags=staging,
                      saved_views=[names["view"]], num_kept=len(plan.kept_ids),
                      num_pruned=len(plan.pruned_ids), num_unscored=len(plan.unscored_ids),
                      num_duplicates=len(plan.duplicate_ids),
                      strategy_reason=plan.strategy_reason)
        lease.check()
        runs.register(samples, names["run_key"], "selection", params, [],
                      dict(groups=plan.groups, duplicate_ids=plan.duplicate_ids,
                           seconds=round(time.perf_counter() - t0, 3)),
                      overwrite=True, state=runs.IN_PROGRESS)
        storage.switch_tags(dataset, dict(zip(staging, final)))
        dataset.save_view(names["view"], dataset.match_tags(names["kept_tag"]),
                          description=f"fiftyone-prune: samples kept by selection {plan.name!r}",
                          overwrite=True)
        runs.set_state(samples, names["run_key"], runs.COMPLETE)


def deduplicate(samples, run_key: str = "prototypes", eps: float = 0.05, name=None):
    """SemDeDup alone: inside each cluster of run ``run_key``, keeps one sample per
    group of near-duplicates (cosine similarity > 1 - eps), the one farthest from the
    centroid. Tags ``<name>:kept`` / ``<name>:pruned`` like :func:`select_samples`
    (default name ``<run_key>_dedup``) and returns the kept view."""
    name = name or f"{run_key}_dedup"
    cfg = _check(samples, run_key, 1.0, "hard", None, None, 0.5, eps, name)
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
    apply_plan(samples, plan)
    return samples.match_tags(selection_names(name)["kept_tag"])


def selection_histogram(samples, run_key: str = "prototypes", keep=0.8, strategy="auto",
                        balance="cluster", group=None, num_bins: int = 40, **kwargs) -> dict:
    """Histogram data of a run's distances split into kept / pruned by a selection plan
    (no change to the dataset): what the App panel draws. ``group`` restricts the
    histogram to one class/cluster. Binned here so only ``num_bins`` numbers per series
    travel to the browser, whatever the dataset size."""
    label_field = kwargs.pop("label_field", None)
    cfg = _check(samples, run_key, keep, strategy, balance, label_field,
                 kwargs.get("balance_ratio", 0.5), kwargs.get("dedup_eps"), kwargs.get("name"))
    label_field = label_field or cfg.label_field
    # one read of the scores serves both the plan and the histogram
    table = read_score_table(samples, cfg, balance, label_field)
    plan = plan_from_table(samples, cfg, table, keep, strategy, balance, label_field,
                           kwargs.get("balance_ratio", 0.5), kwargs.get("seed", 51),
                           kwargs.get("dedup_eps"), kwargs.get("ccs_beta"),
                           kwargs.get("ccs_bins", 50), kwargs.get("density_temperature", 0.5),
                           kwargs.get("name") or run_key, run_key)
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
