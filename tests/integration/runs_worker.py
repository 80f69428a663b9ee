"""A real second process for the fault tests (``test_faults_runs.py``): it loads a
dataset from the test session's database (same ``FIFTYONE_DATABASE_NAME``, inherited),
then runs SDK calls one after the other, each when its start signal appears, so that the
tests start every worker once and pay the imports once.

    python -m tests.integration.runs_worker '<json>'

json: ``dataset``, ``folder`` and ``tasks``: a list of ``[call, kwargs, batch, signal]``
with call ``"score"`` or ``"select"``. This process creates ``<folder>/ready-<pid>``
when set up; for each task it waits for ``<folder>/<signal>``, runs the call writing in
batches of ``batch`` samples (so that a run has many write steps at which the test can
kill it; the batch sizes are module constants, not hooks), and writes its outcome to
``<folder>/<signal>-<pid>.json`` (``{"error": null}`` or the error's text).
"""

import json
import os
import sys
import time


def main():
    args = json.loads(sys.argv[1])
    import fiftyone as fo

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import scores, storage

    dataset = fo.load_dataset(args["dataset"])
    calls = {"score": fop.compute_prototype_scores, "select": fop.select_samples}
    folder, pid = args["folder"], os.getpid()
    open(os.path.join(folder, f"ready-{pid}"), "w").close()
    for call, kwargs, batch, signal in args["tasks"]:
        scores._WRITE_BATCH = batch
        scores._WRITE_THREADS = 1
        storage.UPDATE_CHUNK_SIZE = batch
        deadline = time.time() + 900
        while not os.path.exists(os.path.join(folder, signal)):
            if time.time() > deadline:
                sys.exit(4)
            time.sleep(0.002)
        error = None
        try:
            calls[call](dataset, **kwargs)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        with open(os.path.join(folder, f"{signal}-{pid}.json"), "w") as f:
            json.dump({"error": error}, f)


if __name__ == "__main__":
    main()
