"""A real second process for the fault tests (``test_faults_runs.py``): it loads a
dataset from the test session's database (same ``FIFTYONE_DATABASE_NAME``, inherited),
then runs the SDK calls it is handed one after the other, so that the tests pay the
imports of a worker once and any test can use any idle worker, in any order.

    python -m tests.integration.runs_worker '<json>'

json: ``dataset`` and ``folder``. This process creates ``<folder>/ready-<pid>`` when set
up, then repeatedly: waits for its task ``<folder>/task-<pid>.json``
(``{"call", "kwargs", "batch", "signal"}``, call ``"score"`` or ``"select"``), waits
for ``<folder>/<signal>``, runs the call writing in batches of ``batch`` samples (so
that a run has many write steps at which the test can kill it; the batch sizes are the
test's constants, not hooks), and writes its outcome to ``<folder>/<signal>-<pid>.json``
(``{"error": null}`` or the error's text). Every file is written whole then renamed, so
a reader never sees half of one.
"""

import json
import os
import sys
import time


def write_whole(path, obj):
    with open(path + ".part", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".part", path)


def wait_for(path, deadline):
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(4)  # the test session ended without stopping this process
        time.sleep(0.002)


def main():
    args = json.loads(sys.argv[1])
    import fiftyone as fo

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import scores, storage

    dataset = fo.load_dataset(args["dataset"])
    calls = {"score": fop.compute_prototype_scores, "select": fop.select_samples}
    folder, pid = args["folder"], os.getpid()
    task_path = os.path.join(folder, f"task-{pid}.json")
    write_whole(os.path.join(folder, f"ready-{pid}"), {})
    while True:
        wait_for(task_path, time.time() + 900)
        with open(task_path) as f:
            task = json.load(f)
        os.remove(task_path)
        scores._WRITE_BATCH = task["batch"]
        scores._WRITE_THREADS = 1
        storage.UPDATE_CHUNK_SIZE = task["batch"]
        wait_for(os.path.join(folder, task["signal"]), time.time() + 900)
        error = None
        try:
            calls[task["call"]](dataset, **task["kwargs"])
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        write_whole(os.path.join(folder, f"{task['signal']}-{pid}.json"), {"error": error})


if __name__ == "__main__":
    main()
