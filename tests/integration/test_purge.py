"""``purge``: one call removes everything fiftyone-prune wrote on a dataset, including
what FiftyOne's own ``delete_run`` leaves when this package is not installed, and
nothing of the user's. Real processes for "without the package" and "while another
process writes"."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService

import fiftyone_prune as fop

#: FiftyOne's own delete_run of every run, in a Python that cannot import fiftyone_prune
#: (the plugin and the package uninstalled): FiftyOne falls back to its base run class
WITHOUT_THE_PACKAGE = textwrap.dedent('''
    import importlib.machinery, importlib.util, sys
    sys.meta_path[:] = [
        f for f in sys.meta_path
        if f is importlib.machinery.PathFinder
        or getattr(f, "find_spec", None) is None
        or f.find_spec("fiftyone_prune", None) is None
    ]
    assert importlib.util.find_spec("fiftyone_prune") is None
    import fiftyone as fo
    dataset = fo.load_dataset(sys.argv[1])
    for key in dataset.list_runs():
        dataset.delete_run(key)
    print("DELETED", sorted(dataset.list_runs()))
''')

HOLDER = textwrap.dedent('''
    import sys
    import fiftyone as fo
    from fiftyone_prune.sdk import leases
    dataset = fo.load_dataset(sys.argv[1])
    with leases.hold(dataset, sys.argv[2]):
        print("HELD", flush=True)
        sys.stdin.readline()
''')


@pytest.fixture()
def written(digits_dataset, efficientnet_small):
    """Everything the package writes: an embeddings field and run, a scoring run, a
    selection (tags, saved view); plus the user's own field, tag and saved view."""
    dataset = digits_dataset
    dataset.persistent = True  # seen by the child processes
    fop.compute_embeddings(dataset.limit(8), model="efficientnet_lite0",
                           embeddings_field="lite", image_size=32, num_workers=0)
    rng = np.random.default_rng(0)
    dataset.set_values("mine", list(rng.normal(size=(len(dataset), 8)).astype(np.float32)))
    dataset.take(5, seed=0).tag_samples("user:kept")
    dataset.save_view("user-view", dataset.match_tags("user:kept"))
    fop.compute_prototype_scores(dataset, "mine", run_key="proto", num_clusters=4)
    fop.select_samples(dataset, "proto", keep=30, name="thirty")
    return dataset


def _users(dataset):
    dataset.reload()
    return (dataset.has_field("mine"), dataset.count_sample_tags().get("user:kept"),
            dataset.has_saved_view("user-view"), len(dataset))


def test_purge_removes_what_fiftyones_own_delete_run_left_without_the_package(written):
    dataset = written
    users = _users(dataset)
    # -I: neither the working directory (this checkout) nor PYTHONPATH is on sys.path
    out = subprocess.run([sys.executable, "-I", "-c", WITHOUT_THE_PACKAGE, dataset.name],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert "DELETED []" in out.stdout, out.stderr[-3000:]
    dataset.reload()
    # FiftyOne's base class knew none of them: they are still there
    assert {"lite", "proto_distance", "proto_cluster"} <= set(dataset.get_field_schema())
    assert dataset.count_sample_tags()["thirty:kept"] == 30
    assert dataset.has_saved_view("thirty-kept")
    # and the staging tag a killed selection writer leaves (named after its lease)
    dataset.take(3, seed=1).tag_samples("other:kept:staging:0123abcd")

    planned = fop.purge(dataset, dry_run=True)
    assert planned["runs"] == [] and planned["saved_views"] == ["thirty-kept"]
    assert set(planned["fields"]) == {"lite", "proto_distance", "proto_cluster"}
    assert set(planned["tags"]) == {"thirty:kept", "thirty:pruned",
                                    "other:kept:staging:0123abcd"}
    dataset.reload()
    assert dataset.has_field("lite")  # a dry run removes nothing
    fop.purge(dataset)
    dataset.reload()
    assert not {"lite", "proto_distance", "proto_cluster"} & set(dataset.get_field_schema())
    assert set(dataset.count_sample_tags()) == {"user:kept"}
    assert dataset.list_saved_views() == ["user-view"]
    assert _users(dataset) == users


def test_purge_removes_runs_and_queued_operations(written):
    dataset = written
    users = _users(dataset)
    queued = foo.get_operator("@fiftyone-prune/prune/compute_prototype_scores")(
        dataset, "mine", run_key="later", num_clusters=3, delegate=True)
    report = fop.purge(dataset)
    assert set(report["runs"]) == {"lite", "proto", "thirty_selection"}
    assert report["operations"] == [str(queued["id"])]
    dataset.reload()
    assert dataset.list_runs() == []
    assert not {"lite", "proto_distance", "proto_cluster"} & set(dataset.get_field_schema())
    assert set(dataset.count_sample_tags()) == {"user:kept"}
    assert not DelegatedOperationService().list_operations(dataset_name=dataset.name)
    assert _users(dataset) == users
    assert fop.purge(dataset) == {"runs": [], "fields": [], "tags": [], "label_tags": [],
                                  "saved_views": [], "operations": [], "shard_records": []}


def test_purge_is_refused_while_another_process_writes_a_run(written):
    dataset = written
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, dataset.name, "proto"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert holder.stdout.readline().strip() == "HELD", holder.stderr.read()
        with pytest.raises(ValueError, match="Nothing was removed.*run 'proto'"):
            fop.purge(dataset)
        dataset.reload()
        assert "proto" in dataset.list_runs() and dataset.has_saved_view("thirty-kept")
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=60)
    fop.purge(dataset)  # once it ended
    dataset.reload()
    assert dataset.list_runs() == []
