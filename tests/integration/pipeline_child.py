"""One pipeline call in a process of its own: the other writer of the exclusive-writer
tests (``test_exclusive_writers.py``, ``test_shards.py``). It inherits the test session's
database name.

    python -m tests.integration.pipeline_child embed DATASET FIELD IMAGE_SIZE [--hold]
    python -m tests.integration.pipeline_child score DATASET RUN_KEY K [--hold]
        [--overwrite] [--batch N]

``embed`` runs ``compute_embeddings`` (EfficientNet-Lite0 at ``IMAGE_SIZE`` px, batches
and chunks of 2, no loader processes); ``score`` runs ``compute_prototype_scores`` on the
vector field ``emb`` with k = ``K`` (``--batch N``: vectors read, assigned and written
``N`` at a time, ``storage.READ_BATCH_SIZE``). With ``--hold`` the call's first progress
report prints ``HOLDING`` and waits for a line on stdin: the call then holds its run's
lease in the middle of its writes until the test lets it go (the SIGSTOP tests freeze it
there). The outcome is one JSON line on stdout: ``{"ok": true, ...}``, or ``{"ok": false,
"error": <exception type>, "message": ...}`` with exit code 3.
"""

import json
import sys


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["embed", "score"])
    ap.add_argument("dataset")
    ap.add_argument("key")
    ap.add_argument("size", type=int)
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()

    import fiftyone as fo

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import storage

    if args.batch is not None:
        storage.READ_BATCH_SIZE = args.batch
    held = []

    def hold(_progress_bar):
        if args.hold and not held:
            held.append(True)
            print("HOLDING", flush=True)
            sys.stdin.readline()

    dataset = fo.load_dataset(args.dataset)
    try:
        if args.what == "embed":
            result = fop.compute_embeddings(dataset, model="efficientnet_lite0",
                                            embeddings_field=args.key, image_size=args.size,
                                            batch_size=2, chunk_size=2, num_workers=0,
                                            progress=hold)
        else:
            result = fop.compute_prototype_scores(dataset, "emb", run_key=args.key,
                                                  num_clusters=args.size,
                                                  max_points_per_centroid=10, seed=3,
                                                  overwrite=args.overwrite, progress=hold)
    except Exception as e:
        print(json.dumps({"ok": False, "error": type(e).__name__, "message": str(e)}),
              flush=True)
        sys.exit(3)
    print(json.dumps({"ok": True, **result.to_dict()}), flush=True)


if __name__ == "__main__":
    main()
