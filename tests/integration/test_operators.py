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
    assert summary["num_kept"] == 30 and summary["strategy"] == "easy"
    assert digits_dataset.count_sample_tags()["proto:kept"] == 30
    summary = op(digits_dataset, run_key="proto", keep=12, strategy="hard")
    assert summary["num_kept"] == 12
    assert "proto-kept" in digits_dataset.list_saved_views()


def test_select_form_previews_and_refuses_bad_keep(digits_dataset):
    _scored(digits_dataset)
    from fiftyone_prune.plugin.operators import SelectSamples, _selection_kwargs
    from fiftyone_prune.sdk.selection import plan_selection

    ctx = foo.ExecutionContext(request_params={
        "dataset_name": digits_dataset.name,
        "params": {"run_key": "proto", "keep": 0.5, "strategy": "auto", "balance": "cluster"}})
    form = SelectSamples().resolve_input(ctx)
    preview = form.type.properties["preview"]
    text = str(preview.to_json())
    plan = plan_selection(digits_dataset, **_selection_kwargs(ctx.params))
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
