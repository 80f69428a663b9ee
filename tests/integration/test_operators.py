"""Operators called through FiftyOne's real operator machinery (plugin registered via
FIFTYONE_PLUGINS_DIR, real datasets)."""

import pytest

import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionError

URI = "@fiftyone-prune/prune/"


def test_compute_embeddings_operator_from_python(digits_dataset):
    op = foo.get_operator(URI + "compute_embeddings")
    result = op(digits_dataset.limit(5), model="efficientnet_lite0", embeddings_field="emb",
                batch_size=5)
    assert result["num_embedded"] == 5
    assert digits_dataset.count("emb") == 5


def test_compute_embeddings_form_refuses_a_field_of_another_type(digits_dataset):
    with pytest.raises(ExecutionError, match="already exists as a EmbeddedDocumentField"):
        foo.execute_operator(
            URI + "compute_embeddings", {"view": digits_dataset.view()},
            params={"model": "efficientnet_lite0", "embeddings_field": "ground_truth"},
        )
    assert "emb" not in digits_dataset.get_field_schema()
    with pytest.raises(Exception, match="not a valid field name"):
        foo.get_operator(URI + "compute_embeddings")(digits_dataset, model="efficientnet_lite0",
                                                      embeddings_field="1bad")


def _with_random_embeddings(dataset, dim=8):
    import numpy as np

    rng = np.random.default_rng(0)
    dataset.set_values("emb", list(rng.normal(size=(len(dataset), dim)).astype(np.float32)))


def test_compute_prototype_scores_operator_from_python(digits_dataset):
    _with_random_embeddings(digits_dataset)
    op = foo.get_operator(URI + "compute_prototype_scores")
    result = op(digits_dataset, embeddings_field="emb", run_key="ops", num_clusters="4, 6")
    assert result["num_clusters"] == [4, 6] and result["num_scored"] == len(digits_dataset)
    assert digits_dataset.count("ops_distance") == len(digits_dataset)
    result = op(digits_dataset, embeddings_field="emb", run_key="opsup", method="supervised",
                label_field="ground_truth")
    assert set(digits_dataset.distinct("opsup_cluster")) == set(
        digits_dataset.distinct("ground_truth.label"))


@pytest.mark.parametrize("params, message", [
    ({"embeddings_field": "emb", "run_key": "1x"}, "Invalid run key"),
    ({"embeddings_field": "emb", "run_key": "p", "num_clusters": "ten"}, "comma-separated integers"),
    ({"embeddings_field": "emb", "run_key": "p", "num_clusters": "100000"}, "exceeds the number"),
    ({"embeddings_field": "emb", "run_key": "p", "method": "supervised"}, "label_field"),
])
def test_compute_prototype_scores_form_explains_bad_input(digits_dataset, params, message):
    _with_random_embeddings(digits_dataset)
    with pytest.raises(ExecutionError, match=message):
        foo.execute_operator(URI + "compute_prototype_scores",
                             {"view": digits_dataset.view()}, params=params)
    assert "prototypes_distance" not in digits_dataset.get_field_schema()


def test_scores_form_says_what_to_run_first_without_embeddings(digits_dataset):
    with pytest.raises(ExecutionError, match="compute embeddings"):
        foo.execute_operator(URI + "compute_prototype_scores",
                             {"view": digits_dataset.view()}, params={})


def _scored(dataset):
    _with_random_embeddings(dataset)
    foo.get_operator(URI + "compute_prototype_scores")(dataset, embeddings_field="emb",
                                                       run_key="proto", num_clusters=4)


def test_select_operator_applies_a_selection(digits_dataset):
    _scored(digits_dataset)
    op = foo.get_operator(URI + "select_samples")
    summary = op(digits_dataset, run_key="proto", keep=0.25, strategy="auto", balance=None)
    assert summary["num_kept"] == 30 and summary["strategy"] == "random"
    assert digits_dataset.count_sample_tags()["proto:kept"] == 30
    # the same name again is refused before anything changes, unless replacing
    with pytest.raises(ExecutionError, match="tick 'Replace an existing run'"):
        op(digits_dataset, run_key="proto", keep=12, strategy="hard")
    assert digits_dataset.count_sample_tags()["proto:kept"] == 30
    summary = op(digits_dataset, run_key="proto", keep=12, strategy="hard", overwrite=True)
    assert summary["num_kept"] == 12
    assert digits_dataset.count_sample_tags()["proto:kept"] == 12
    assert "proto-kept" in digits_dataset.list_saved_views()


def test_select_form_previews_and_refuses_bad_keep(digits_dataset):
    _scored(digits_dataset)
    from fiftyone_prune.plugin.operators import SelectSamples, selection_request
    from fiftyone_prune.sdk.selection import plan_selection

    ctx = foo.ExecutionContext(request_params={
        "dataset_name": digits_dataset.name,
        "params": {"run_key": "proto", "keep": 0.5, "strategy": "auto", "balance": "cluster"}})
    form = SelectSamples().resolve_input(ctx)
    preview = form.type.properties["preview"]
    text = str(preview.to_json())
    run_key, spec, name = selection_request(ctx.params)
    plan = plan_selection(digits_dataset, run_key, spec=spec, name=name)
    assert "Keeps 60" in text and f"`{plan.strategy}`" in text
    for group, counts in plan.groups.items():
        assert f"| {group} | {counts['kept']} | {counts['total']} |" in text
    with pytest.raises(ExecutionError, match=r"outside \(0, 1\]"):
        foo.execute_operator(URI + "select_samples", {"view": digits_dataset.view()},
                             params={"run_key": "proto", "keep": 1.5})
    assert "proto:kept" not in digits_dataset.count_sample_tags()


def test_export_operator_writes_the_kept_view(digits_dataset, tmp_path):
    _scored(digits_dataset)
    kept = foo.get_operator(URI + "select_samples")
    kept(digits_dataset, run_key="proto", keep=10, strategy="hard")
    view = digits_dataset.load_saved_view("proto-kept")
    export = foo.get_operator(URI + "export_kept_samples")
    out = tmp_path / "out"
    report = export(view, str(out), dataset_type="image_classification_tree",
                    label_field="ground_truth")
    assert report["num_samples"] == 10
    assert len([f for f in out.rglob("*.png")]) == 10
    with pytest.raises(ExecutionError, match="not empty"):
        export(view, str(out), dataset_type="media")


# ------------------------------------------------------------- progress while it runs

def _run_as_the_app(view, operator, params):
    """An immediate run the way the App's form makes it: the request the App POSTs to
    /operators/execute/generator, streamed by the server's own code into the JSON lines
    the browser reads."""
    import asyncio
    import json

    from fiftyone.operators.executor import execute_or_delegate_operator
    from fiftyone.operators.server import create_response_generator

    request = {"dataset_name": view._root_dataset.name, "view": view._serialize(),
               "operator_uri": URI + operator, "params": params}
    result = asyncio.run(execute_or_delegate_operator(URI + operator, request))
    assert result.error is None, result.error
    assert result.is_generator
    return [json.loads(line) for line in create_response_generator(result.result)]


def _triggered(messages):
    """(operator, params) of each App action in the stream, in order."""
    return [(m["body"]["operator_uri"], m["body"]["params"]) for m in messages
            if m.get("cls") == "InvocationRequest"]


def _progress(messages):
    return [p for name, p in _triggered(messages) if name == "set_progress"]


def _shown(messages):
    """What the last show_output puts in the App's dialog: (title, values)."""
    name, params = _triggered(messages)[-1]
    assert name == "show_output"
    output = params["outputs"]["type"]["properties"]["output"]
    return output["view"]["label"], params["results"]["output"]


def test_immediate_embeddings_stream_progress_then_reload_and_output(digits_dataset,
                                                                     monkeypatch):
    from fiftyone_prune.plugin import common

    # every batch reports (not every 0.25 s): the count below holds on any hardware
    monkeypatch.setattr(common, "APP_PROGRESS_DT", 0)
    view = digits_dataset.limit(40)
    messages = _run_as_the_app(view, "compute_embeddings", {
        "model": "efficientnet_lite0", "embeddings_field": "emb", "batch_size": 8})
    n = len(view)
    progress = _progress(messages)
    assert progress[0] == {"label": "Embedding: loading efficientnet_lite0"}
    bars = progress[1:]
    # 5 batches; a backlog is sent as its newest update only
    assert len(bars) >= 2, progress
    fractions = [p["progress"] for p in bars]
    assert fractions == sorted(set(fractions)) and fractions[-1] == 1.0, fractions
    for p in bars:
        assert p["label"] == f"Embedding {round(p['progress'] * n)}/{n} images", p
    assert [name for name, _ in _triggered(messages)][len(progress):] == [
        "reload_dataset", "show_output"]
    title, values = _shown(messages)
    assert title == "Embeddings computed" and values["num_embedded"] == n
    assert digits_dataset.count("emb") == n


def test_immediate_scores_and_selection_stream_stages(digits_dataset):
    _with_random_embeddings(digits_dataset)
    messages = _run_as_the_app(digits_dataset.view(), "compute_prototype_scores", {
        "embeddings_field": "emb", "run_key": "proto", "num_clusters": "4"})
    labels = [p["label"] for p in _progress(messages)]
    n = len(digits_dataset)
    # 120 samples score in milliseconds: the stage may be folded into the last update
    # (a backlog is sent as its newest), and the writes report once, when complete
    assert labels[-1] == f"Scoring: writing {n}/{n} scores"
    assert set(labels[:-1]) <= {"Scoring: reading embeddings, k-means"}, labels
    title, values = _shown(messages)
    assert title == "Prototype scores computed" and values["num_scored"] == n

    messages = _run_as_the_app(digits_dataset.view(), "select_samples", {
        "run_key": "proto", "keep": 30, "strategy": "hard", "balance": "none",
        "balance_ratio": 0.5})
    labels = [p["label"] for p in _progress(messages)]
    tagging = f"Selecting: tagging 30 kept and {n - 30} pruned samples"
    # the first stage may be folded into the second, as above
    assert labels in (["Selecting: reading scores", tagging], [tagging]), labels
    names = [name for name, _ in _triggered(messages)]
    assert names[-4:] == ["reload_dataset", "set_view", "notify", "show_output"]
    # the App switches to the kept samples and names their saved view
    assert "proto:kept" in str(_triggered(messages)[-3][1]["view"])
    assert "'proto-kept'" in str(_triggered(messages)[-2][1])
    title, values = _shown(messages)
    assert title == "Selection applied" and values["num_kept"] == 30
    assert digits_dataset.count_sample_tags()["proto:kept"] == 30


def test_immediate_evaluation_and_export_stream_progress(digits_dataset, tmp_path):
    _scored(digits_dataset)
    messages = _run_as_the_app(digits_dataset.view(), "evaluate_pruning", {
        "run_key": "proto", "label_field": "ground_truth", "fractions": "0.5",
        "strategies": ["random", "hard"], "seeds": 1, "probe": "linear"})
    progress = _progress(messages)
    assert progress[-1]["label"].startswith("Evaluating: training probe ")
    assert progress[-1]["progress"] == 1.0
    for p in progress[:-1]:
        assert p["label"] == "Evaluating: reading embeddings and scores" or \
            p["label"].startswith("Evaluating: training probe "), progress
    title, values = _shown(messages)
    assert title == "Pruning evaluated" and values["eval_key"] == "proto_evaluation"
    # the verdicts are drawn from the results, as resolve_output reads them
    shown = str(messages[-1]["body"]["params"]["outputs"])
    assert values["verdicts"] and all(v in shown for v in values["verdicts"].split("\n\n"))

    foo.get_operator(URI + "select_samples")(digits_dataset, run_key="proto", keep=10,
                                             strategy="hard")
    kept = digits_dataset.load_saved_view("proto-kept")
    out = tmp_path / "out"
    messages = _run_as_the_app(kept, "export_kept_samples", {
        "export_dir": {"absolute_path": str(out)}, "dataset_type": "image_classification_tree",
        "label_field": "ground_truth"})
    progress = _progress(messages)
    assert progress[0]["label"] == "Exporting 10 samples (image_classification_tree)"
    assert progress[-1] == {"label": "Exporting 10/10 samples (image_classification_tree)",
                            "progress": 1.0}, progress
    title, values = _shown(messages)
    assert title == "Export complete" and values["num_samples"] == 10
    assert len(list(out.rglob("*.png"))) == 10


def test_an_error_in_the_worker_thread_is_the_runs_error(digits_dataset, caplog):
    _with_random_embeddings(digits_dataset)
    # a class with one sample passes the form's checks and fails inside the SDK
    sample = digits_dataset.first()
    sample.ground_truth.label = "lonely"
    sample.save()
    messages = _run_as_the_app(digits_dataset.view(), "compute_prototype_scores", {
        "embeddings_field": "emb", "run_key": "sup", "method": "supervised",
        "label_field": "ground_truth"})
    assert _progress(messages)[0]["label"] == "Scoring: reading embeddings, class prototypes"
    # the progress dialog says what failed ...
    title, _ = _shown(messages[:-1])
    assert title == "Prune: compute prototype scores failed"
    # ... and the last line is the run's error, which the App reports as a failure
    error = messages[-1]
    assert "single sample" in error["error_message"] and "lonely" in error["error_message"]
    # one line the user reads (an SDK check's message), not a traceback; the log has that
    assert error["error"] == error["error_message"] and "\n" not in error["error"]
    assert "Traceback" not in error["error"]
    assert "Traceback" in caplog.text and "ValueError" in caplog.text
    assert "sup_distance" not in digits_dataset.get_field_schema()
    # the same error from Python
    with pytest.raises(ExecutionError, match="single sample"):
        foo.get_operator(URI + "compute_prototype_scores")(
            digits_dataset, embeddings_field="emb", run_key="sup", method="supervised",
            label_field="ground_truth")


def test_an_unexpected_error_is_one_line_with_its_type():
    from fiftyone_prune.plugin.common import ErrorMessage

    try:
        {}["missing"]
    except KeyError as e:
        message = ErrorMessage(e).to_json()
    assert message["error"] == "KeyError: 'missing'" == message["error_message"]


def test_delegated_run_stores_its_result_and_progress(digits_dataset):
    from fiftyone.operators.delegated import DelegatedOperationService

    _with_random_embeddings(digits_dataset)
    queued = foo.get_operator(URI + "compute_prototype_scores")(
        digits_dataset, embeddings_field="emb", run_key="later", num_clusters=3,
        delegate=True)
    service = DelegatedOperationService()
    try:
        doc = service.get(queued["id"])
        assert "later_distance" not in digits_dataset.get_field_schema()
        service.execute_operation(doc)
        doc = service.get(queued["id"])
        assert doc.run_state == "completed", doc.result and doc.result.error
        # what the Runs page shows: the results dict, and the last progress
        assert doc.result.result["num_scored"] == len(digits_dataset)
        assert doc.result.result["distance_field"] == "later_distance"
        n = len(digits_dataset)
        assert doc.status.label == f"Scoring: writing {n}/{n} scores"
        assert doc.status.progress == 1.0
        digits_dataset.reload()
        assert digits_dataset.count("later_distance") == n
    finally:
        service.delete_operation(queued["id"])


# ------------------------------------------------------------- run management

def _run_op(dataset, name, params, view=None):
    result = foo.execute_operator(URI + name, {"view": view or dataset.view()},
                                  params=params)
    result.raise_exceptions()
    return result


def _requests(result):
    return [(r["operator_uri"], r["params"]) for r in result.executor.to_json()["requests"]]


def test_run_management_lists_loads_renames_and_deletes(digits_dataset):
    from fiftyone_prune.sdk import runs

    _scored(digits_dataset)
    foo.get_operator(URI + "select_samples")(digits_dataset, run_key="proto", keep=0.5,
                                             balance=None, name="half")
    # info: parameters, status and what it created
    info = _run_op(digits_dataset, "get_pruning_run_info",
                   {"run_key": "half_selection"}).result
    assert info["status"] == "complete" and info["kind"] == "selection"
    assert set(info["tags"]) >= {"half:kept", "half:pruned"}
    assert info["saved_views"] == ["half-kept"] and info["params"]["run_key"] == "proto"
    assert _run_op(digits_dataset, "get_pruning_run_info",
                   {"run_key": "proto"}).result["dependents"] == ["half_selection"]
    # load: the selection's saved view of kept samples, or its pruned samples
    loaded = _requests(_run_op(digits_dataset, "load_pruning_run_view",
                               {"run_key": "half_selection", "part": "kept"}))
    assert loaded == [("set_view", {"name": "half-kept"})]
    (_, params), = _requests(_run_op(digits_dataset, "load_pruning_run_view",
                                     {"run_key": "half_selection", "part": "pruned"}))
    assert "half:pruned" in str(params["view"])
    # rename: the selection follows its scoring run and stays usable
    _run_op(digits_dataset, "rename_pruning_run", {"run_key": "proto", "new_run_key": "p2"})
    assert "p2" in runs.list_runs(digits_dataset, "prototypes")
    digits_dataset.reload()
    assert digits_dataset.has_field("p2_distance") and not digits_dataset.has_field(
        "proto_distance")
    assert "proto" not in digits_dataset.list_runs()
    assert runs.run_status(digits_dataset, "half_selection") == "complete"
    # a selection: its tags and saved view take the new name
    _run_op(digits_dataset, "rename_pruning_run",
            {"run_key": "half_selection", "new_run_key": "other_selection"})
    digits_dataset.reload()
    assert {t for t in digits_dataset.distinct("tags")} == {"other:kept", "other:pruned"}
    assert digits_dataset.list_saved_views() == ["other-kept"]
    _run_op(digits_dataset, "rename_pruning_run",
            {"run_key": "other_selection", "new_run_key": "half_selection"})
    with pytest.raises(ExecutionError, match="already used"):
        _run_op(digits_dataset, "rename_pruning_run",
                {"run_key": "p2", "new_run_key": "half_selection"})
    # delete needs the tick; then the run goes with its tags and saved view
    with pytest.raises(ExecutionError, match="Tick to confirm"):
        _run_op(digits_dataset, "delete_pruning_run", {"run_key": "half_selection"})
    assert digits_dataset.has_saved_view("half-kept")
    _run_op(digits_dataset, "delete_pruning_run",
            {"run_key": "half_selection", "confirm": True})
    assert "half_selection" not in digits_dataset.list_runs()
    assert not digits_dataset.has_saved_view("half-kept")
    assert not {t for t in digits_dataset.distinct("tags") if t.startswith("half:")}
    result = _run_op(digits_dataset, "delete_pruning_run", {"run_key": "p2", "confirm": True})
    # the rename took its fields along: p2_distance is what it owned
    assert "p2_distance" in result.result["deleted_fields"]
    assert not {"p2_distance", "proto_distance"} & set(digits_dataset.get_field_schema())
    assert len(digits_dataset) > 0  # samples are never deleted


def test_long_forms_say_to_schedule_large_views(digits_dataset):
    """FiftyOne 1.22 cannot stop an immediate run: the form says to schedule instead."""
    from fiftyone.operators.executor import ExecutionContext

    def hint(name, view):
        ctx = ExecutionContext(request_params={
            "dataset_name": digits_dataset.name, "view": view._serialize(), "params": {}})
        form = foo.get_operator(URI + name).resolve_input(ctx).to_json()
        prop = form["type"]["properties"].get("schedule_hint")
        return prop and prop["view"]["label"]

    _scored(digits_dataset)
    assert "choose 'Schedule'" in hint("evaluate_pruning", digits_dataset.view())
    assert hint("compute_embeddings", digits_dataset.limit(5)) is None


# ------------------------------------------------------------- one input marked per error

def _form(dataset, name, params, view=None):
    """The form the App shows for ``params``: {input: error message} of the invalid
    inputs, and the form-level notice (or None)."""
    ctx = foo.ExecutionContext(request_params={
        "dataset_name": dataset.name, "view": (view or dataset.view())._serialize(),
        "params": params})
    props = foo.get_operator(URI + name).resolve_input(ctx).type.properties
    invalid = {k: p.error_message for k, p in props.items()
               if getattr(p, "invalid", False) and k != "input_error"}
    notice = props.get("input_error")
    return invalid, notice and notice.error_message


@pytest.mark.parametrize("name, params, marked, words", [
    ("select_samples", {"run_key": "proto", "keep": "most"}, "keep", "integer count"),
    ("select_samples", {"run_key": "proto", "keep": 1.5}, "keep",
     "Keep 1.5 is outside (0, 1]"),
    ("select_samples", {"run_key": "proto", "seed": -1}, "seed",
     "Seed must be at least 0 (got -1)"),
    ("select_samples", {"run_key": "proto", "balance_ratio": 2.0}, "balance_ratio",
     "Balance ratio must be between 0 and 1 (got 2.0)"),
    ("select_samples", {"run_key": "proto", "name": "1bad"}, "name", "Invalid"),
    ("compute_prototype_scores", {"embeddings_field": "emb", "num_clusters": "ten"},
     "num_clusters", "comma-separated integers"),
    ("compute_prototype_scores", {"embeddings_field": "emb", "run_key": "proto"}, "run_key",
     "tick 'Replace an existing run'"),
    ("evaluate_pruning", {"run_key": "proto", "label_field": "ground_truth",
                          "fractions": "0.5,2"}, "fractions", "Kept fractions"),
    ("evaluate_pruning", {"run_key": "proto", "label_field": "ground_truth",
                          "seeds": 0}, "seeds",
     "Seeds per point must be a whole number, 1 or more (got 0)"),
    ("compute_embeddings", {"model": "efficientnet_lite0", "embeddings_field": "x",
                            "batch_size": 0}, "batch_size",
     "Batch size must be a whole number, 1 or more (got 0)"),
    ("compute_embeddings", {"model": "efficientnet_lite0", "embeddings_field": "x",
                            "num_shards": 0}, "num_shards",
     "Split into M tasks must be a whole number, 1 or more (got 0)"),
])
def test_a_bad_input_marks_exactly_that_input(digits_dataset, name, params, marked, words):
    """A ParameterError from the SDK's checks (or the shared parsers) is shown under the
    input it names, in the App's words, and under no other; Execute stays disabled."""
    _scored(digits_dataset)
    invalid, notice = _form(digits_dataset, name, params)
    assert list(invalid) == [marked] and notice is None, (invalid, notice)
    assert words in invalid[marked]
    assert "overwrite=True" not in invalid[marked]  # Python's words stay in Python
    assert f"{marked}=" not in invalid[marked]  # the input by its label, not the argument
    good = {k: v for k, v in params.items() if k != marked}
    if marked == "run_key":
        good["run_key"] = "fresh"
    assert _form(digits_dataset, name, good) == ({}, None)


# ------------------------------------------------------------- #14: split into M tasks

def _shard_ops(dataset, key=None):
    """The queued run_shard operations of ``dataset`` (of run ``key``), by shard index."""
    from fiftyone.operators.delegated import DelegatedOperationService

    from fiftyone_prune.sdk.shards import SHARD_OPERATOR

    docs = DelegatedOperationService().list_operations(operator=SHARD_OPERATOR,
                                                       dataset_name=dataset.name)
    return {d.context.request_params["params"]["shard"]: d for d in docs
            if key is None or d.context.request_params["params"]["key"] == key}


def _execute_all(docs):
    from fiftyone.operators.delegated import DelegatedOperationService

    service = DelegatedOperationService()
    for doc in docs:
        service.execute_operation(doc)
        assert service.get(doc.id).run_state == "completed", service.get(doc.id).result


def test_scores_split_into_tasks_queue_run_shard_operations(digits_dataset):
    """Split into M tasks: the operator trains k-means and queues M delegated run_shard
    operations (nothing scored yet); run by a worker, they give the single-process
    scores."""
    import numpy as np

    from fiftyone_prune.sdk import runs

    _with_random_embeddings(digits_dataset)
    op = foo.get_operator(URI + "compute_prototype_scores")
    op(digits_dataset, embeddings_field="emb", run_key="whole", num_clusters=4)
    invalid, _ = _form(digits_dataset, "compute_prototype_scores",
                       {"embeddings_field": "emb", "run_key": "split", "num_shards": 3})
    assert not invalid
    result = op(digits_dataset, embeddings_field="emb", run_key="split", num_clusters=4,
                num_shards=3)
    assert result["num_queued"] == 3 and "fiftyone delegated launch" in result["message"]
    queued = _shard_ops(digits_dataset, "split")
    assert sorted(queued) == [0, 1, 2]
    assert sorted(result["queued_operations"]) == sorted(str(d.id) for d in queued.values())
    assert all(d.run_state == "queued" for d in queued.values())
    assert digits_dataset.count("split_distance") == 0
    assert runs.run_status(digits_dataset, "split") != "complete"
    _execute_all(queued.values())
    digits_dataset.reload()
    assert runs.run_status(digits_dataset, "split") == "complete"
    np.testing.assert_allclose(digits_dataset.values("split_distance"),
                               digits_dataset.values("whole_distance"), rtol=1e-5)
    assert digits_dataset.values("split_cluster") == digits_dataset.values("whole_cluster")


def test_a_scheduled_embedding_split_into_tasks_queues_them_when_it_runs(digits_dataset):
    """Scheduled from the App with M tasks: the scheduled operation, once a worker runs
    it, queues the M shard operations and says so in its stored result."""
    from fiftyone.operators.delegated import DelegatedOperationService

    view = digits_dataset.limit(6)
    scheduled = foo.get_operator(URI + "compute_embeddings")(
        view, model="efficientnet_lite0", embeddings_field="emb", num_shards=2,
        delegate=True)
    assert _shard_ops(digits_dataset) == {}  # nothing queued until it runs
    service = DelegatedOperationService()
    service.execute_operation(service.get(scheduled["id"]))
    doc = service.get(scheduled["id"])
    assert doc.run_state == "completed", doc.result
    assert doc.result.result["num_queued"] == 2
    queued = _shard_ops(digits_dataset, "emb")
    assert sorted(queued) == [0, 1]
    assert sorted(doc.result.result["queued_operations"]) == sorted(
        str(d.id) for d in queued.values())
    assert digits_dataset.count("emb") == 0


def test_embeddings_form_precision_input(digits_dataset):
    """fp16 needs CUDA: without a GPU the form marks exactly the precision input; bf16
    and fp32 open clean; a zoo model gets no precision input (it keeps its own)."""
    import torch

    base = {"model": "efficientnet_lite0", "embeddings_field": "emb_precision"}
    if not torch.cuda.is_available():
        invalid, notice = _form(digits_dataset, "compute_embeddings",
                                dict(base, precision="fp16"))
        assert list(invalid) == ["precision"] and notice is None, (invalid, notice)
        assert "fp16" in invalid["precision"]
    assert _form(digits_dataset, "compute_embeddings", dict(base, precision="bf16")) == (
        {}, None)
    ctx = foo.ExecutionContext(request_params={
        "dataset_name": digits_dataset.name, "view": digits_dataset.view()._serialize(),
        "params": {"model": "zoo"}})
    props = foo.get_operator(URI + "compute_embeddings").resolve_input(ctx).type.properties
    assert "precision" not in props and "precision" in foo.get_operator(
        URI + "compute_embeddings").resolve_input(foo.ExecutionContext(request_params={
            "dataset_name": digits_dataset.name, "view": digits_dataset.view()._serialize(),
            "params": base})).type.properties


@pytest.mark.parametrize("name, title", [
    ("compute_embeddings", "Embeddings computed"),
    ("compute_prototype_scores", "Prototype scores computed"),
    ("select_samples", "Selection applied"),
    ("export_kept_samples", "Export complete"),
    ("evaluate_pruning", "Pruning evaluated"),
    ("delete_pruning_run", "Run deleted"),
])
def test_a_failed_run_has_no_success_output(digits_dataset, name, title):
    """After a run the App asks the server for the output's form with the run's result
    (None when it failed) and shows it whenever the run failed: a failed run must get
    none, or a second dialog titled as a success follows the failure."""
    import asyncio

    from fiftyone.operators.executor import resolve_type
    from fiftyone.operators.registry import OperatorRegistry

    def outputs(results):
        return asyncio.run(resolve_type(OperatorRegistry(), URI + name, {
            "dataset_name": digits_dataset.name, "params": {}, "target": "outputs",
            "results": results}))

    assert outputs(None) is None
    assert outputs({}) is None
    shown = outputs({"num_embedded": 3, "run_key": "r", "eval_key": "e"})
    assert shown.view.label == title


def test_embeddings_form_offers_patches_and_embeds_objects(digits_dataset):
    """Object-level embeddings from the form, as FiftyOne's brain operators offer them:
    a "Patches field" input where the dataset has Detections, each crop's vector on its
    label; without such a field, no such input."""
    import fiftyone as fo

    def form_inputs(dataset):
        return foo.get_operator(URI + "compute_embeddings").resolve_input(
            foo.ExecutionContext(request_params={
                "dataset_name": dataset.name, "view": dataset.view()._serialize(),
                "params": {"model": "efficientnet_lite0"}})).type.properties

    assert "patches_field" not in form_inputs(digits_dataset)
    view = digits_dataset.limit(3)
    for sample in view:
        sample["boxes"] = fo.Detections(detections=[
            fo.Detection(label="a", bounding_box=[0.0, 0.0, 0.5, 0.5]),
            fo.Detection(label="b", bounding_box=[0.5, 0.5, 0.5, 0.5])])
        sample.save()
    props = form_inputs(digits_dataset)
    assert props["patches_field"].type.values == ["__images__", "boxes"]
    assert props["patches_field"].default == "__images__"
    result = foo.get_operator(URI + "compute_embeddings")(
        view, model="efficientnet_lite0", embeddings_field="obj_emb", batch_size=6,
        patches_field="boxes")
    assert result["num_embedded"] == 6
    vectors = view.values("boxes.detections.obj_emb", unwind=True)
    assert len(vectors) == 6 and all(v is not None and len(v) > 0 for v in vectors)
    assert not digits_dataset.has_field("obj_emb")  # on the labels, not the samples


def test_zoo_models_warn_about_their_download_as_swav_does(digits_dataset):
    """A zoo model not on this machine is downloaded on Execute, which fails offline:
    the form says so before, as it does for SwAV's checkpoint."""
    import fiftyone.zoo.models as fozm

    def warnings(params):
        props = foo.get_operator(URI + "compute_embeddings").resolve_input(
            foo.ExecutionContext(request_params={
                "dataset_name": digits_dataset.name,
                "view": digits_dataset.view()._serialize(),
                "params": dict(params, model="zoo")})).type.properties
        return props.get("zoo_download") and props["zoo_download"].view.label

    assert "Zoo models not on this machine" in warnings({})
    name = "clip-vit-base32-torch"
    shown = warnings({"zoo_model": name})
    if fozm.is_zoo_model_downloaded(name):
        assert shown is None
    else:
        assert shown.startswith(f"{name!r} is not on this machine: Execute downloads it")
        assert "EfficientNet-Lite0" in shown


def test_a_zoo_model_download_offline_is_one_clear_line(digits_dataset):
    """Offline, a zoo model that is not on this machine fails with a message that says
    so and what to do, not the library's raw ConnectionError (run where the machine
    has no network; elsewhere the model would be downloaded)."""
    import socket

    import fiftyone.zoo.models as fozm

    name = "resnet18-imagenet-torch"
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
        pytest.skip("this machine has a network: the model would be downloaded")
    except OSError:
        pass
    if fozm.is_zoo_model_downloaded(name):
        pytest.skip(f"{name} is on this machine already")
    with pytest.raises(ExecutionError) as info:
        foo.get_operator(URI + "compute_embeddings")(
            digits_dataset.limit(2), model=name, embeddings_field="zoo_emb")
    message = str(info.value)
    assert f"Could not download model {name!r}: this machine seems to be offline" in message
    assert "EfficientNet-Lite0" in message
    assert not digits_dataset.has_field("zoo_emb")
