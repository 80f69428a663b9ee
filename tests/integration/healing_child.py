"""The FiftyOne side of ``test_shards_healing``'s outage test, run in child processes
against the test's own mongod (``FIFTYONE_DATABASE_URI``), which the test stops and
restarts; the test process itself stays on the session's database.

    python -m tests.integration.healing_child setup NUM_SAMPLES NUM_SHARDS
    python -m tests.integration.healing_child check DATASET

``setup`` makes a persistent dataset of clustered vectors, the single-process scoring
run ``ref`` and the sharded run ``d`` queued for workers (``delegate=True``), and prints
``{"dataset", "plan_id", "operations"}``. ``check`` prints, as JSON, the run's status,
its shards, whether every score equals ``ref``'s, and the FiftyOne operations of the
dataset with their state and label.
"""

import json
import sys
import uuid

import numpy as np

KEY, REF = "d", "ref"
COMMON = dict(num_clusters=4, seed=7, max_points_per_centroid=20)


def setup(n, num_shards):
    import fiftyone as fo

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import shards, storage

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    x = centers[rng.integers(0, 5, n)] + 0.6 * rng.normal(size=(n, 16))
    dataset = fo.Dataset(f"healing-{uuid.uuid4().hex[:8]}", persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(n)])
    storage.write_vectors(dataset, "emb", dataset.values("id"), x.astype(np.float32))
    dataset.add_sample_field("emb", fo.VectorField)
    fop.compute_prototype_scores(dataset, "emb", run_key=REF, **COMMON)
    queued = fop.compute_prototype_scores(dataset, "emb", run_key=KEY, num_shards=num_shards,
                                          delegate=True, **COMMON)
    return {"dataset": dataset.name, "plan_id": shards.plan_id(dataset, KEY),
            "operations": queued["queued_operations"]}


def scores_of(dataset, key):
    ids, d, c = dataset.values(["id", f"{key}_distance", f"{key}_cluster"])
    order = np.argsort(ids)
    return (np.array(ids)[order], np.array(d, dtype=float)[order],
            np.array(c, dtype=float)[order])


def check(name):
    import fiftyone as fo
    from fiftyone.operators.delegated import DelegatedOperationService

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import runs

    dataset = fo.load_dataset(name)
    ids, d, c = scores_of(dataset, KEY)
    rids, rd, rc = scores_of(dataset, REF)
    status = fop.shard_status(dataset, KEY)
    ops = DelegatedOperationService().list_operations(dataset_name=name)
    return {
        "run_status": runs.run_status(dataset, KEY),
        "num_zero_vectors": getattr(dataset.get_run_info(KEY).config, "num_zero_vectors",
                                    None),
        "status": {k: status[k] for k in ("counts", "complete", "samples_done", "total")},
        "shards": [{k: s[k] for k in ("index", "state", "attempts", "errors")}
                   for s in status["shards"]],
        "same_ids": list(ids) == list(rids),
        "scored": int(np.isfinite(d).sum()),
        "same_clusters": bool(np.array_equal(c, rc)),
        "max_distance_difference": float(np.nanmax(np.abs(d - rd))),
        "same_centroids": bool(np.array_equal(fop.load_centroids(dataset, KEY),
                                              fop.load_centroids(dataset, REF))),
        "operations": [{"id": str(op.id), "state": op.run_state, "label": op.label}
                       for op in ops],
    }


def main():
    command = sys.argv[1]
    if command == "setup":
        out = setup(int(sys.argv[2]), int(sys.argv[3]))
    else:
        out = check(sys.argv[2])
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
