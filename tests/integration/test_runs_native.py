"""This package's runs are FiftyOne runs of their own classes (real FiftyOne, real mongod):
FiftyOne's own list/load-view/rename/delete work on them, runs recorded by an older
version still work, and they load in a process where this package is not importable."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk import run_configs, runs
from tests.conftest import unique_name

N, DIM = 60, 8


@pytest.fixture()
def vectors():
    """Clustered vectors with class labels; persistent so another process can load it."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, DIM))
    which = rng.integers(0, 3, size=N)
    x = (centers[which] + 0.3 * rng.normal(size=(N, DIM))).astype(np.float32)
    dataset = fo.Dataset(unique_name("native"), persistent=True)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.png", emb=x[i],
                                   ground_truth=fo.Classification(label=f"c{which[i]}"))
                         for i in range(N)])
    yield dataset
    fo.delete_dataset(dataset.name)


def _score_and_select(dataset):
    view = dataset.skip(10)
    fop.compute_prototype_scores(view, "emb", run_key="p", num_clusters=3)
    fop.select_samples(view, "p", keep=0.5, strategy="hard", name="half")
    return view


def test_each_kind_is_its_own_run_class_registered_on_the_view(vectors):
    view = _score_and_select(vectors)
    scoring = vectors.get_run_info("p").config
    selection = vectors.get_run_info("half_selection").config
    assert type(scoring) is run_configs.PrototypeScoresConfig
    assert type(selection) is run_configs.SelectionConfig
    assert (scoring.distance_field, scoring.cluster_field) == ("p_distance", "p_cluster")
    assert selection.tags == ["half:kept", "half:pruned", "half:unscored"]
    assert selection.saved_views == ["half-kept"]
    # FiftyOne's own listing, by method or by any config attribute
    assert vectors.list_runs(method="fiftyone_prune.prototypes") == ["p"]
    assert vectors.list_runs(kind="selection") == ["half_selection"]
    assert vectors.list_runs(method="fiftyone_prune.evaluation") == []
    # FiftyOne recorded the view itself
    assert vectors.load_run_view("p").values("id") == view.values("id")
    assert vectors.load_run_view("half_selection").values("id") == view.values("id")
    assert runs.owned_fields(vectors, "p") == ["p_distance", "p_cluster"]


def test_fiftyones_own_delete_and_rename_act_on_what_the_run_created(vectors):
    _score_and_select(vectors)
    assert vectors.count_sample_tags()["half:kept"] == 25
    before = vectors.values("p_distance")
    # rename: the fields follow the key, the selection follows its scoring run and stays
    # current
    vectors.rename_run("p", "q")
    assert vectors.get_run_info("half_selection").config.run_key == "q"
    assert fop.run_status(vectors, "half_selection") == "complete"
    config = vectors.get_run_info("q").config
    assert (config.distance_field, config.cluster_field) == ("q_distance", "q_cluster")
    assert vectors.get_field("p_distance") is None and vectors.values("q_distance") == before
    assert fop.plan_selection(vectors, "q", keep=0.5, strategy="hard").kept_ids
    # FiftyOne's delete_run removes exactly what each run created
    vectors.delete_run("half_selection")
    assert not any(t.startswith("half:") for t in vectors.count_sample_tags())
    assert "half-kept" not in vectors.list_saved_views()
    assert vectors.get_field("q_distance") is not None
    vectors.delete_run("q")
    assert vectors.get_field("q_distance") is None and vectors.get_field("q_cluster") is None
    assert vectors.get_field("emb") is not None and vectors.list_runs() == []


def test_a_key_of_another_kind_is_refused_naming_the_argument(vectors):
    _score_and_select(vectors)
    with pytest.raises(fop.ParameterError, match="belongs to a fiftyone_prune.selection run"
                       ) as error:
        fop.compute_prototype_scores(vectors, "emb", run_key="half_selection", overwrite=True)
    assert error.value.param == "run_key"
    assert vectors.get_field("half_selection_distance") is None  # refused before any write
    with pytest.raises(fop.ParameterError, match="already used") as error:
        fop.compute_prototype_scores(vectors, "emb", run_key="p")
    assert error.value.param == "run_key"
    assert type(vectors.get_run_info("half_selection").config) is run_configs.SelectionConfig


def _legacy_runs(dataset):
    """Runs as the previous version recorded them: generic FiftyOne runs with
    ``method="fiftyone_prune.<kind>"`` and the created names stored by hand."""
    dataset.add_sample_field("old_distance", fo.FloatField)
    dataset.add_sample_field("old_cluster", fo.IntField)
    dataset.set_values("old_distance", [0.1 * (i % 7) for i in range(N)])
    dataset.set_values("old_cluster", [i % 3 for i in range(N)])
    config = dataset.init_run(method="fiftyone_prune.prototypes", kind="prototypes",
                              fields=["old_distance", "old_cluster"], state="complete",
                              version="v1", distance_field="old_distance",
                              cluster_field="old_cluster", method_name="kmeans",
                              label_field=None, embeddings_field="emb")
    dataset.register_run("old", config)
    ids = dataset.values("id")
    dataset.select(ids[:40]).tag_samples("oldsel:kept")
    dataset.select(ids[40:]).tag_samples("oldsel:pruned")
    dataset.save_view("oldsel-kept", dataset.match_tags("oldsel:kept"))
    config = dataset.init_run(method="fiftyone_prune.selection", kind="selection", fields=[],
                              name="oldsel", tags=["oldsel:kept", "oldsel:pruned",
                                                   "oldsel:unscored"],
                              staging_tags=[], saved_views=["oldsel-kept"], run_key="old",
                              scoring_version="v1", state="complete", num_kept=40,
                              num_pruned=20, num_unscored=0)
    dataset.register_run("oldsel_selection", config)


def test_runs_recorded_by_the_previous_version_are_listed_read_and_deleted(vectors):
    _legacy_runs(vectors)
    assert runs.list_runs(vectors, "prototypes") == ["old"]
    assert vectors.list_runs(method="fiftyone_prune.selection") == ["oldsel_selection"]
    assert fop.run_status(vectors, "oldsel_selection") == "complete"
    summary = runs.run_summary(vectors, "oldsel_selection")
    assert summary["saved_views"] == ["oldsel-kept"] and summary["tags"][0] == "oldsel:kept"
    assert runs.run_summary(vectors, "old")["fields"] == ["old_distance", "old_cluster"]
    assert runs.dependent_runs(vectors, "old") == ["oldsel_selection"]
    # tag counts are checked against the recorded numbers
    vectors.select(vectors.values("id")[:1]).untag_samples("oldsel:kept")
    assert fop.run_status(vectors, "oldsel_selection").startswith("tag counts do not match")
    assert fop.delete_run(vectors, "oldsel_selection") == []
    assert not any(t.startswith("oldsel:") for t in vectors.count_sample_tags())
    assert "oldsel-kept" not in vectors.list_saved_views()
    assert fop.delete_run(vectors, "old") == ["old_distance", "old_cluster"]
    assert vectors.get_field("old_distance") is None and vectors.list_runs() == []


def test_a_previous_versions_run_is_overwritten_by_one_of_its_class(vectors):
    _legacy_runs(vectors)
    with pytest.raises(fop.ParameterError, match="already used"):
        fop.compute_prototype_scores(vectors, "emb", run_key="old", num_clusters=3)
    fop.compute_prototype_scores(vectors, "emb", run_key="old", num_clusters=3,
                                 overwrite=True)
    assert type(vectors.get_run_info("old").config) is run_configs.PrototypeScoresConfig
    assert vectors.count("old_distance") == N


def test_runs_load_where_this_package_is_not_importable(vectors):
    _score_and_select(vectors)
    script = f"""
import json, os, sys
# neither the editable install's finder nor a folder holding the package
sys.meta_path[:] = [f for f in sys.meta_path if "fiftyone_prune" not in repr(f)]
sys.path[:] = [p for p in sys.path
               if p and not os.path.isdir(os.path.join(p, "fiftyone_prune"))]
try:
    import fiftyone_prune
    sys.exit("fiftyone_prune is importable")
except ImportError:
    pass
import fiftyone as fo
dataset = fo.load_dataset({vectors.name!r})
info = dataset.get_run_info("p")
print(json.dumps(dict(
    config_class=type(info.config).__name__, method=info.config.method,
    distance_field=info.config.distance_field,
    tags=dataset.get_run_info("half_selection").config.tags,
    by_method=dataset.list_runs(method="fiftyone_prune.prototypes"),
    by_kind=dataset.list_runs(kind="selection"),
    view_size=len(dataset.load_run_view("p")))))
"""
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_PLUGINS_DIR"}
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True,
                          text=True, env=env, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == dict(config_class="RunConfig", method="fiftyone_prune.prototypes",
                       distance_field="p_distance",
                       tags=["half:kept", "half:pruned", "half:unscored"],
                       by_method=["p"], by_kind=["half_selection"], view_size=N - 10)


def test_compute_embeddings_registers_a_run_that_owns_the_field(digits_dataset,
                                                                efficientnet_small):
    first = digits_dataset.limit(6)
    fop.compute_embeddings(first, model=efficientnet_small, embeddings_field="emb",
                           num_workers=0)
    config = digits_dataset.get_run_info("emb").config
    assert type(config) is run_configs.EmbeddingsConfig and config.field == "emb"
    assert digits_dataset.list_runs(method="fiftyone_prune.embeddings") == ["emb"]
    # a resume registers the run again, on the view it ran on
    result = fop.compute_embeddings(digits_dataset.limit(8), model=efficientnet_small,
                                    embeddings_field="emb", num_workers=0)
    assert result.num_skipped_existing == 6 and result.num_embedded == 2
    assert len(digits_dataset.load_run_view("emb")) == 8
    assert fop.load_run_results(digits_dataset, "emb").num_embedded == 2
    # a key of another kind is refused before anything is embedded
    fop.compute_prototype_scores(digits_dataset.limit(8), "emb", run_key="taken",
                                 num_clusters=2)
    with pytest.raises(fop.ParameterError, match="belongs to a fiftyone_prune.prototypes"
                       ) as error:
        fop.compute_embeddings(digits_dataset, model=efficientnet_small,
                               embeddings_field="taken", num_workers=0)
    assert error.value.param == "embeddings_field"
    assert digits_dataset.get_field("taken") is None
    assert runs.dependent_runs(digits_dataset, "emb") == ["taken"]
    digits_dataset.delete_run("emb")  # FiftyOne's own delete removes the field
    assert digits_dataset.get_field("emb") is None


def test_a_taken_evaluation_key_names_eval_key(vectors):
    _score_and_select(vectors)
    with pytest.raises(fop.ParameterError, match="belongs to a fiftyone_prune.selection") as error:
        fop.evaluate_pruning(vectors, "ground_truth", run_key="p", eval_key="half_selection",
                             overwrite=True)
    assert error.value.param == "eval_key"
    assert vectors.list_runs(kind="evaluation") == []
