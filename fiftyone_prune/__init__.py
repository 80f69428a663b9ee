"""fiftyone-prune: data pruning by self-supervised prototypes for FiftyOne datasets.

Layers (imports go one way, down): front ends (:mod:`fiftyone_prune.plugin`,
:mod:`fiftyone_prune.cli`) -> the FiftyOne layer (:mod:`fiftyone_prune.sdk`) -> the pure
algorithms (:mod:`fiftyone_prune.core`: numpy, faiss, torch; no FiftyOne).

The public SDK is imported lazily, so ``fiftyone_prune.core`` stays usable (and fast to
import) without loading FiftyOne.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "compute_embeddings": "fiftyone_prune.sdk.embeddings",
    "EmbeddingResult": "fiftyone_prune.sdk.embeddings",
    "load_demo_dataset": "fiftyone_prune.sdk.demo",
    "compute_prototype_scores": "fiftyone_prune.sdk.scores",
    "ScoreResult": "fiftyone_prune.sdk.scores",
    "load_centroids": "fiftyone_prune.sdk.scores",
    "list_runs": "fiftyone_prune.sdk.runs",
    "get_run_info": "fiftyone_prune.sdk.runs",
    "load_run_results": "fiftyone_prune.sdk.runs",
    "delete_run": "fiftyone_prune.sdk.runs",
    "rename_run": "fiftyone_prune.sdk.runs",
    "run_status": "fiftyone_prune.sdk.runs",
    "shard_status": "fiftyone_prune.sdk.shards",
    "requeue_stale_shards": "fiftyone_prune.sdk.shards",
    "run_shard": "fiftyone_prune.sdk.shards",
    "select_samples": "fiftyone_prune.sdk.selection",
    "plan_selection": "fiftyone_prune.sdk.selection",
    "deduplicate": "fiftyone_prune.sdk.selection",
    "export_kept_samples": "fiftyone_prune.sdk.export",
    "purge": "fiftyone_prune.sdk.purge",
    "evaluate_pruning": "fiftyone_prune.sdk.evaluation",
    "load_evaluation": "fiftyone_prune.sdk.evaluation",
    "recommend_strategy": "fiftyone_prune.sdk.advice",
    "quick_evaluation_offer": "fiftyone_prune.sdk.advice",
    "selection_histogram": "fiftyone_prune.sdk.selection",
    "SelectionSpec": "fiftyone_prune.core.params",
    "ParameterError": "fiftyone_prune.core.params",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fiftyone_prune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(list(globals()) + __all__)
