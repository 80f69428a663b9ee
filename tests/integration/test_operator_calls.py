"""Every operator called the documented programmatic way (FiftyOne's
``fiftyone.operators.execute_operator``), as a script, a pipeline or an orchestrator
calls it: a success returns the operator's results, a failure is a failure (the result's
``error`` set, ``raise_exceptions()`` raises, a delegated run ends FAILED with the
one-line error), and inputs with defaults may be left out. The App's own streamed run
is covered in ``test_operators.py``."""

import asyncio
import json
import os

import numpy as np
import pytest

import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionError, execute_or_delegate_operator
from fiftyone.operators.server import create_response_generator

URI = "@fiftyone-prune/prune/"


def _embedded(dataset, tmp_path=None):
    rng = np.random.default_rng(0)
    dataset.set_values("emb", list(rng.normal(size=(len(dataset), 8)).astype(np.float32)))


def _scored(dataset, tmp_path=None):
    import fiftyone_prune as fop

    _embedded(dataset)
    fop.compute_prototype_scores(dataset, "emb", run_key="proto", num_clusters=4)


def _selected(dataset, tmp_path=None):
    import fiftyone_prune as fop

    _scored(dataset)
    fop.select_samples(dataset, "proto", keep=0.5, strategy="hard", name="half")


def _lonely_class(dataset, tmp_path=None):
    """A class with one sample: passes the scoring form, fails in the SDK."""
    _embedded(dataset)
    sample = dataset.first()
    sample.ground_truth.label = "lonely"
    sample.save()


def _garbage_checkpoint(dataset, tmp_path):
    path = tmp_path / "swav.pth.tar"
    path.write_bytes(b"not a checkpoint")
    return str(path)


def _media_gone(dataset, tmp_path):
    """The selection's kept images deleted from disk (a copy of them, so that the session's
    images stay): the export form checks the folder, the export finds the files missing."""
    import shutil

    _selected(dataset)
    kept = dataset.match_tags("half:kept")
    moved = tmp_path / "media"
    moved.mkdir()
    paths = []
    for path in kept.values("filepath"):
        copy = moved / os.path.basename(path)
        shutil.copy(path, copy)
        paths.append(str(copy))
    kept.set_values("filepath", paths)
    os.remove(paths[0])
    return paths[0]


# operator: (setup(dataset, tmp_path) -> value, params (the value filled in), result check)
SUCCESS = {
    "compute_embeddings": (
        None, {"model": "efficientnet_lite0", "embeddings_field": "e"},
        lambda ds, r: r["num_embedded"] == len(ds) == ds.count("e")),
    "compute_prototype_scores": (
        _embedded, {"embeddings_field": "emb"},
        lambda ds, r: r["num_scored"] == len(ds) == ds.count("prototypes_distance")),
    "select_samples": (
        _scored, {"run_key": "proto", "keep": 30},
        lambda ds, r: r["num_kept"] == 30 == ds.count_sample_tags()["proto:kept"]),
    "export_kept_samples": (
        _selected, {"export_dir": "{tmp}/out"},
        # the newest selection, as the App's form offers first
        lambda ds, r: r["num_samples"] == len(ds.match_tags("half:kept")) == len(ds) // 2
        and os.path.isfile(r["manifest"])),
    "evaluate_pruning": (
        _scored, {"run_key": "proto", "label_field": "ground_truth", "fractions": "0.5",
                  "seeds": 1, "strategies": ["random"]},
        lambda ds, r: r["eval_key"] == "proto_evaluation" and r["verdicts"]),
    "get_pruning_run_info": (
        _selected, {"run_key": "half_selection"},
        lambda ds, r: r["kind"] == "selection" and r["status"] == "complete"),
    "load_pruning_run_view": (
        _selected, {"run_key": "half_selection"}, None),
    "rename_pruning_run": (
        _scored, {"run_key": "proto", "new_run_key": "renamed"},
        lambda ds, r: "renamed" in ds.list_runs() and "proto" not in ds.list_runs()),
    "delete_pruning_run": (
        _scored, {"run_key": "proto", "confirm": True},
        lambda ds, r: "proto" not in ds.list_runs() and not ds.has_field("proto_distance")),
}

# operator: (setup(dataset, tmp_path) -> value, params, what the error says)
FAILURE = {
    "compute_embeddings": (
        _garbage_checkpoint, {"model": "swav_resnet50", "checkpoint_path": "{value}",
                              "embeddings_field": "e"}, "swav.pth.tar"),
    "compute_prototype_scores": (
        _lonely_class, {"embeddings_field": "emb", "method": "supervised",
                        "label_field": "ground_truth"}, "lonely"),
    "select_samples": (
        _scored, {"run_key": "proto", "keep": 30, "dedup_eps": 0.1,
                  "_before_execute": "delete emb"}, "emb"),
    "export_kept_samples": (
        _media_gone, {"export_dir": "{tmp}/out", "selection": "half"}, "do not exist"),
    "evaluate_pruning": (
        _scored, {"run_key": "proto", "label_field": "ground_truth", "fractions": "0.5",
                  "seeds": 1, "strategies": ["random"], "_before_execute": "delete emb"},
        "emb"),
    "get_pruning_run_info": (_selected, {"run_key": "nothing"}, "run_key"),
    "load_pruning_run_view": (_selected, {"run_key": "nothing"}, "run_key"),
    "rename_pruning_run": (_selected, {"run_key": "proto", "new_run_key": "half_selection"},
                           "already used"),
    "delete_pruning_run": (_scored, {"run_key": "proto"}, "Tick to confirm"),
}


#: the failures above that pass the form and happen in ``execute``: the case the
#: App's streaming once hid from Python (the rest are refused by the form's checks)
FAILS_IN_EXECUTE = {"compute_embeddings", "compute_prototype_scores", "select_samples",
                    "export_kept_samples"}
# (evaluate_pruning's missing embeddings are refused by its checks, which FiftyOne runs
# again when the run starts: an immediate run never gets to execute)


def _fill(params, tmp_path, value=None):
    return {k: (v.format(tmp=tmp_path, value=value) if isinstance(v, str) else v)
            for k, v in params.items() if not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(SUCCESS))
def test_a_success_returns_the_operators_results(digits_dataset, tmp_path, name):
    """Only what has no default is passed: the form's defaults apply as in the App."""
    setup, params, check = SUCCESS[name]
    value = setup(digits_dataset, tmp_path) if setup else None
    params = _fill(params, tmp_path, value)
    view = digits_dataset.limit(6) if name == "compute_embeddings" else digits_dataset.view()
    result = foo.execute_operator(URI + name, {"view": view}, params=params)
    assert result.error is None, result.error
    digits_dataset.reload()
    if check is not None:
        assert check(view if name == "compute_embeddings" else digits_dataset,
                     result.result), result.result
    if name == "load_pruning_run_view":
        requests = result.executor.to_json()["requests"]
        assert [(r["operator_uri"], r["params"]) for r in requests] == [
            ("set_view", {"name": "half-kept"})]


def _break_before_execute(dataset, params):
    """What a failure inside ``execute`` needs: the form's checks passed (the App would
    have enabled Execute), then the data changed."""
    if params.get("_before_execute") == "delete emb":
        dataset.delete_sample_field("emb")


@pytest.mark.parametrize("name", sorted(FAILURE))
def test_a_failure_is_the_runs_error_and_raises(digits_dataset, tmp_path, name):
    setup, raw, words = FAILURE[name]
    value = setup(digits_dataset, tmp_path)
    params = _fill(raw, tmp_path, value)
    request = {"dataset_name": digits_dataset.name, "view": digits_dataset.view()._serialize(),
               "params": params}
    if "_before_execute" in raw:
        # the form resolves as in the App: valid; then the data changes under it
        ctx = foo.ExecutionContext(request_params=json.loads(json.dumps(request)))
        props = foo.get_operator(URI + name).resolve_input(ctx).type.properties
        assert not [k for k, p in props.items() if getattr(p, "invalid", False)]
        _break_before_execute(digits_dataset, raw)
    before = _state(digits_dataset)
    try:
        result = asyncio.run(execute_or_delegate_operator(URI + name, dict(request)))
    except ExecutionError as e:  # refused by the form's checks, before execute
        assert name not in FAILS_IN_EXECUTE, str(e)
        message = str(e)
    else:
        # failed in execute: the result says so (not a generator that swallowed it)
        assert not result.is_generator
        message = result.error
        with pytest.raises(ExecutionError, match=words):
            result.raise_exceptions()
    assert message and words in message, message
    # what scripts call: FiftyOne's execute_operator raises
    with pytest.raises(ExecutionError, match=words):
        foo.execute_operator(URI + name, {"view": digits_dataset.view()}, params=params)
    digits_dataset.reload()
    assert _state(digits_dataset) == before  # a failed run wrote nothing


def _state(dataset):
    return (sorted(dataset.get_field_schema()), dataset.count_sample_tags(),
            sorted(dataset.list_runs()), sorted(dataset.list_saved_views()))


DELEGABLE = ["compute_embeddings", "compute_prototype_scores", "select_samples",
             "export_kept_samples", "evaluate_pruning"]


@pytest.mark.parametrize("name", DELEGABLE)
def test_a_delegated_failure_ends_failed_with_its_one_line_error(digits_dataset, tmp_path,
                                                                 name):
    setup, raw, words = FAILURE[name]
    value = setup(digits_dataset, tmp_path)
    params = _fill(raw, tmp_path, value)
    queued = foo.execute_operator(URI + name, {"view": digits_dataset.view()},
                                  params=params, request_delegation=True)
    assert queued.delegated, queued.result
    _break_before_execute(digits_dataset, raw)
    service = DelegatedOperationService()
    op_id = queued.result["id"]
    try:
        service.execute_operation(service.get(op_id))
        doc = service.get(op_id)
        assert doc.run_state == "failed", doc.result and doc.result.result
        # FiftyOne stores the traceback; its last line is the run's one-line error
        last = doc.result.error.strip().splitlines()[-1]
        assert words in last, doc.result.error
    finally:
        service.delete_operation(op_id)


def test_a_failed_shard_run_is_the_runs_error(digits_dataset):
    """run_shard, the operator ``fiftyone delegated launch`` workers run: a shard of a
    run that has no plan is a failure, immediate and delegated."""
    params = {"dataset": digits_dataset.name, "key": "no_such_run", "shard": 0}
    with pytest.raises(ExecutionError, match="no_such_run"):
        foo.execute_operator(URI + "run_shard", {"dataset": digits_dataset}, params=params)
    queued = foo.execute_operator(URI + "run_shard", {"dataset": digits_dataset},
                                  params=params, request_delegation=True)
    service = DelegatedOperationService()
    try:
        service.execute_operation(service.get(queued.result["id"]))
        doc = service.get(queued.result["id"])
        assert doc.run_state == "failed"
        assert "no_such_run" in doc.result.error.strip().splitlines()[-1]
    finally:
        service.delete_operation(queued.result["id"])


def test_the_apps_run_still_streams_one_line(digits_dataset, tmp_path):
    """The same failure in the App: a stream whose last line is the one-line error
    (the form's dialog shows it), not an exception that would cut the stream."""
    path = _garbage_checkpoint(digits_dataset, tmp_path)
    request = {"dataset_name": digits_dataset.name, "operator_uri": URI + "compute_embeddings",
               "view": digits_dataset.limit(2)._serialize(),
               "params": {"model": "swav_resnet50", "checkpoint_path": path,
                          "embeddings_field": "e"}}
    result = asyncio.run(execute_or_delegate_operator(URI + "compute_embeddings", request))
    assert result.error is None and result.is_generator
    lines = [json.loads(line) for line in create_response_generator(result.result)]
    error = lines[-1]["error"]
    assert "swav.pth.tar" in error and "\n" not in error and "Traceback" not in error


@pytest.mark.parametrize("params", [{"export_dir": {}}, {"export_dir": None}, {},
                                    {"export_dir": {"absolute_path": ""}}])
def test_the_export_form_asks_for_a_folder_in_one_line(digits_dataset, params):
    """The App's file input sends an empty value until a folder is chosen, and no value
    at all once its path is emptied: the form says so under that input instead of
    failing in execute."""
    _selected(digits_dataset)
    ctx = foo.ExecutionContext(request_params={
        "dataset_name": digits_dataset.name, "view": digits_dataset.view()._serialize(),
        "params": params})
    props = foo.get_operator(URI + "export_kept_samples").resolve_input(ctx).type.properties
    invalid = {k: p.error_message for k, p in props.items() if getattr(p, "invalid", False)}
    assert invalid == {"export_dir": "Type or choose the folder to export to"}


def test_a_selection_that_keeps_fewer_than_asked_says_so(digits_dataset):
    _scored(digits_dataset)
    result = foo.execute_operator(URI + "select_samples", {"view": digits_dataset.view()},
                                  params={"run_key": "proto", "keep": 60, "dedup_eps": 0.9})
    kept = result.result["num_kept"]
    assert kept < 60, "the fixture must make SemDeDup leave fewer than asked"
    assert result.result["warning"].startswith(f"kept {kept} of the 60 asked")
    ctx = foo.ExecutionContext(request_params={"dataset_name": digits_dataset.name,
                                               "results": result.result})
    shown = foo.get_operator(URI + "select_samples").resolve_output(ctx).to_json()
    assert result.result["warning"] in str(shown)
