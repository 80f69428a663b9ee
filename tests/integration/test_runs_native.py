"""This package's runs are FiftyOne runs of their own classes (real FiftyOne, real mongod):
FiftyOne's own list/load-view/rename/delete work on them, runs recorded by an older
version still work, and they load in a process where this package is not importable."""

import json
import os
import subprocess
import sys
import threading

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


def test_fiftyones_rename_of_a_selection_moves_its_tags_and_a_new_one_takes_the_old_name(
        vectors, tmp_path):
    view = _score_and_select(vectors)
    kept = set(vectors.match_tags("half:kept").values("id"))
    vectors.rename_run("half_selection", "other")
    config = vectors.get_run_info("other").config
    assert config.name == "other" and config.tags[0] == "other:kept"
    assert set(vectors.match_tags("other:kept").values("id")) == kept
    assert not any(t.startswith("half:") for t in vectors.count_sample_tags())
    assert "other-kept" in vectors.list_saved_views()
    assert "half-kept" not in vectors.list_saved_views()
    assert fop.run_status(vectors, "other") == "complete"
    # a new selection under the old name is fresh, and owns only its own tags
    fop.select_samples(view, "p", keep=0.2, strategy="easy", name="half")
    new_kept = set(vectors.match_tags("half:kept").values("id"))
    assert len(new_kept) == 10 and fop.run_status(vectors, "half_selection") == "complete"
    assert set(vectors.match_tags("other:kept").values("id")) == kept
    # the renamed selection stays complete and exportable by its new name
    media = tmp_path / "media"
    media.mkdir()
    paths = [str(media / f"{i}.png") for i in range(N)]
    for path in paths:
        open(path, "wb").close()
    vectors.set_values("filepath", paths)
    report = fop.export_kept_samples(vectors.match_tags("other:kept"), str(tmp_path / "out"),
                                     dataset_type="media", export_media=False,
                                     selection="other")
    assert report["num_samples"] == len(kept)
    manifest = json.load(open(report["manifest"]))
    assert manifest["selection_run"] == "other"
    # FiftyOne's delete of the renamed one leaves the new one's tags untouched
    vectors.delete_run("other")
    assert set(vectors.match_tags("half:kept").values("id")) == new_kept
    assert not any(t.startswith("other:") for t in vectors.count_sample_tags())
    assert fop.run_status(vectors, "half_selection") == "complete"


def test_rename_then_a_new_run_under_the_old_key_is_a_fresh_run(vectors):
    fop.compute_prototype_scores(vectors, "emb", run_key="p", num_clusters=4)
    q_values = vectors.values(["p_distance", "p_cluster"])
    fop.rename_run(vectors, "p", "q")
    assert vectors.values(["q_distance", "q_cluster"]) == q_values
    # no "left by a killed run" misdirection: the old key is simply free
    fop.compute_prototype_scores(vectors, "emb", run_key="p", num_clusters=2)
    assert fop.run_status(vectors, "p") == fop.run_status(vectors, "q") == "complete"
    assert vectors.values(["q_distance", "q_cluster"]) == q_values  # q untouched
    assert fop.get_run_info(vectors, "q").config.num_clusters == [4]
    assert set(vectors.values("p_cluster")) == {0, 1}
    assert sorted(fop.delete_run(vectors, "q")) == ["q_cluster", "q_distance"]
    assert vectors.count("p_distance") == N and set(vectors.values("p_cluster")) == {0, 1}
    with pytest.raises(fop.ParameterError, match="already used") as error:
        fop.rename_run(vectors, "p", "p")
    assert error.value.param == "new_run_key"


def test_fiftyones_delete_and_rename_are_refused_while_another_writer_holds_the_run(vectors):
    """FiftyOne logs an Exception from a run's cleanup and deletes the record anyway; our
    run class refuses with a BaseException, so the record and its fields both stay."""
    from fiftyone_prune.sdk import leases

    _score_and_select(vectors)
    values = vectors.values("p_distance")
    taken, release = threading.Event(), threading.Event()

    def other_writer():  # another holder of the lease (its own token), as a process is
        with leases.hold(vectors, "p"):
            taken.set()
            release.wait(300)

    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        assert taken.wait(300)
        with pytest.raises(run_configs.RunChangeRefused, match="Cannot delete run 'p': .*"
                           "being written by .*pid"):
            vectors.delete_run("p")
        with pytest.raises(run_configs.RunChangeRefused, match="Cannot rename run 'p'"):
            vectors.rename_run("p", "q")
        with pytest.raises(leases.RunLockedError, match="being written by"):
            fop.delete_run(vectors, "p")
    finally:
        release.set()
        thread.join()
    vectors.reload()
    assert "p" in vectors.list_runs() and "q" not in vectors.list_runs()
    assert vectors.values("p_distance") == values
    assert fop.run_status(vectors, "p") == "complete"
    assert fop.run_status(vectors, "half_selection") == "complete"
    vectors.delete_run("p")  # free again: deletes record and fields together
    assert vectors.get_field("p_distance") is None and "p" not in vectors.list_runs()


def _scored_copy(name, num_clusters, seed, filepaths):
    rng = np.random.default_rng(seed)
    dataset = fo.Dataset(unique_name(name))
    dataset.add_samples([fo.Sample(filepath=f, emb=rng.normal(size=DIM).astype(np.float32))
                         for f in filepaths])
    fop.compute_prototype_scores(dataset, "emb", run_key="p", num_clusters=num_clusters)
    return dataset


@pytest.mark.parametrize("overlap", [False, True])
def test_merged_scores_of_another_run_are_reported_and_refused(overlap):
    """``a.merge_samples(b)`` where both have a run "p" (different k): "p" would read
    complete with some of b's values; the run's recorded check refuses it."""
    paths_a = [f"/nonexistent/a{i}.png" for i in range(40)]
    paths_b = paths_a[:20] if overlap else [f"/nonexistent/b{i}.png" for i in range(20)]
    a = _scored_copy("merge-a", 4, 1, paths_a)
    b = _scored_copy("merge-b", 2, 2, paths_b)
    try:
        assert fop.run_status(a, "p") == "complete"
        a.merge_samples(b)
        assert fop.get_run_info(a, "p").config.num_clusters == [4]
        status = fop.run_status(a, "p")
        assert status.startswith("mismatched: its fields hold values it did not write")
        assert "overwrite=True" in status
        with pytest.raises(fop.ParameterError, match="did not write.*overwrite=True") as error:
            fop.select_samples(a, "p", keep=0.5, strategy="hard")
        assert error.value.param == "run_key"
        fop.compute_prototype_scores(a, "emb", run_key="p", num_clusters=4, overwrite=True)
        assert fop.run_status(a, "p") == "complete"
        # deleting samples afterwards leaves the others' values valid: still complete
        a.delete_samples(a.limit(5))
        assert fop.run_status(a, "p") == "complete"
    finally:
        fo.delete_dataset(a.name)
        fo.delete_dataset(b.name)


def test_a_clone_keeps_its_runs_consistent(vectors):
    view = _score_and_select(vectors)
    clone = vectors.clone()
    try:
        for key in ("p", "half_selection"):
            assert fop.run_status(clone, key) == "complete"
        assert clone.values("p_distance") == vectors.values("p_distance")
        assert clone.count_sample_tags() == vectors.count_sample_tags()
        # each dataset's runs are its own: a new selection and a delete on the clone
        fop.select_samples(clone, "p", keep=0.2, strategy="easy", name="half",
                           overwrite=True)
        clone.delete_run("p")
        assert clone.get_field("p_distance") is None
        assert fop.run_status(vectors, "p") == fop.run_status(vectors, "half_selection") \
            == "complete"
        assert vectors.count_sample_tags()["half:kept"] == 25 == len(view.match_tags("half:kept"))
    finally:
        fo.delete_dataset(clone.name)
