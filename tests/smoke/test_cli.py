"""The command line, run as a user would: a real subprocess on real images."""

import json
import os
import shutil
import subprocess
import sys

import fiftyone as fo
import pytest

from tests.conftest import unique_name

CLI = [sys.executable, "-m", "fiftyone_prune.cli"]


def run_cli(*args, check=True, cwd=None):
    out = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=600,
                         env=dict(os.environ), cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def image_folder(tmp_path, images):
    """A folder of copies of ``(filepath, label)`` images, as a user would point at."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path, _ in images:
        shutil.copy(path, folder / os.path.basename(path))
    return folder


def last_json(stdout):
    start = stdout.index("{")
    return json.loads(stdout[start: stdout.rindex("}") + 1])


@pytest.mark.slow
def test_embed_creates_a_dataset_from_a_folder_and_resumes(digits_images, tmp_path):
    folder = image_folder(tmp_path, digits_images[:6])
    name = unique_name("cli")
    out = run_cli("embed", name, "--images-dir", str(folder), "--model", "efficientnet_lite0",
                  "--image-size", "32", "--num-workers", "0")
    assert last_json(out.stdout)["num_embedded"] == 6
    dataset = fo.load_dataset(name)
    assert dataset.count("efficientnet_lite0_embedding") == 6
    # a second run adds only the new images and embeds only them
    shutil.copy(digits_images[6][0], folder / "new.png")
    out = run_cli("embed", name, "--images-dir", str(folder), "--model", "efficientnet_lite0",
                  "--image-size", "32", "--num-workers", "0")
    report = last_json(out.stdout)
    assert report["num_embedded"] == 1 and report["num_skipped_existing"] == 6
    fo.delete_dataset(name)


def test_cli_errors_are_clear_and_nonzero():
    out = run_cli("embed", unique_name("missing"), check=False)
    assert out.returncode != 0 and "no FiftyOne dataset named" in out.stderr
    assert "--images-dir" in out.stderr


def main_in_process(capsys, *args):
    """``fiftyone-prune ARGS`` in this process (the subprocess tests above and the slow
    ones cover the real command; these check what each command does, quickly)."""
    from fiftyone_prune import cli

    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_score_and_runs_commands(digits_dataset, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8)).astype(np.float32)))
    name = digits_dataset.name
    code, out, _ = main_in_process(capsys, "score", name, "--embeddings-field", "emb",
                                   "--num-clusters", "5", "--run-key", "cli_run")
    assert code == 0 and last_json(out)["num_scored"] == len(digits_dataset)
    digits_dataset.reload()
    assert digits_dataset.count("cli_run_distance") == len(digits_dataset)
    code, listed, _ = main_in_process(capsys, "runs", name)
    assert "cli_run\tprototypes" in listed
    code, _, err = main_in_process(capsys, "score", name, "--embeddings-field", "emb",
                                   "--run-key", "cli_run")
    assert code == 2 and err.startswith("error: --run-key: ") and "--overwrite" in err
    assert "overwrite=True" not in err  # the CLI's words, not Python's
    code, one, _ = main_in_process(capsys, "select", name, "--run-key", "cli_run", "--keep",
                                   "1", "--name", "one", "--strategy", "hard")
    assert "kept 1, pruned 119" in one  # "1" is a count, as keep=1 in Python
    main_in_process(capsys, "runs", name, "--delete", "one_selection")
    main_in_process(capsys, "runs", name, "--delete", "cli_run")
    digits_dataset.reload()
    assert "cli_run_distance" not in digits_dataset.get_field_schema()
    assert "one-kept" not in digits_dataset.list_saved_views()


@pytest.mark.slow
def test_run_command_prunes_a_folder_and_exports(digits_images, tmp_path):
    folder = image_folder(tmp_path, digits_images[:30])
    name = unique_name("run")
    out = tmp_path / "kept"
    res = run_cli("run", str(folder), "--dataset", name, "--model", "efficientnet_lite0",
                  "--image-size", "32", "--num-workers", "0", "--num-clusters", "3",
                  "--keep", "0.8", "--strategy", "hard", "--export", str(out),
                  "--format", "media")
    assert "kept 24, pruned 6" in res.stdout
    assert len(list(out.glob("*.png"))) == 24
    dataset = fo.load_dataset(name)
    assert dataset.count_sample_tags() == {"prototypes:kept": 24, "prototypes:pruned": 6}
    # select + export as separate commands, on the same dataset
    run_cli("select", name, "--keep", "10", "--strategy", "ccs", "--name", "small")
    out2 = tmp_path / "small"
    rep = last_json(run_cli("export", name, str(out2), "--selection", "small").stdout)
    assert rep["num_samples"] == 10
    bad = run_cli("select", name, "--keep", "1.5", check=False)
    assert bad.returncode == 2 and "outside (0, 1]" in bad.stderr
    fo.delete_dataset(name)


def test_keep_means_the_same_as_in_python():
    from fiftyone_prune import cli

    def keep(text):
        args = cli.build_parser().parse_args(["select", "any", "--keep", text])
        return cli.selection_spec(args).keep

    assert [(keep(t), type(keep(t))) for t in ("1", "10", "1.0", "0.8", "1e-1")] \
        == [(1, int), (10, int), (1.0, float), (0.8, float), (0.1, float)]


@pytest.mark.parametrize("argv, option, message", [
    (["select", "DS", "--keep", "most"], "--keep", "integer count such as 5000"),
    (["select", "DS", "--keep", "1.5"], "--keep", "outside (0, 1]"),
    (["select", "DS", "--balance-ratio", "2"], "--balance-ratio", "outside [0, 1]"),
    (["select", "DS", "--dedup-eps", "1"], "--dedup-eps", "outside (0, 1)"),
    (["score", "DS", "--embeddings-field", "e", "--num-clusters", "0"], "--num-clusters",
     "got 0"),
    (["evaluate", "DS", "--label-field", "g", "--fractions", "0.5,2"], "--fractions",
     "outside (0, 1]"),
    (["embed", "DS", "--delegate"], "--shards", "give their number with --shards M"),
    (["run", "/no/such/folder", "--keep", "x"], "--keep", "integer count"),
])
def test_a_bad_option_is_named_and_refused_before_any_dataset_is_touched(argv, option,
                                                                          message, capsys):
    """A ParameterError names the CLI option of the SDK argument it is about; it is raised
    before the dataset is loaded (``DS`` does not exist, and that is not what is said)."""
    from fiftyone_prune import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}: ") and message in err, err


def test_folder_without_images_is_refused_and_creates_no_dataset(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an image")
    name = unique_name("noimg")
    for args in (("embed", name, "--images-dir", str(empty)),
                 ("run", str(empty), "--dataset", name)):
        code, _, err = main_in_process(capsys, *args)
        assert code == 2 and "no images found" in err, err
    assert not fo.dataset_exists(name)


def test_demo_refuses_a_non_empty_export_folder(tmp_path, capsys):
    target = tmp_path / "kept"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    name = unique_name("demo")
    code, out, err = main_in_process(capsys, "demo", "--dataset", name, "--max-samples", "20",
                                     "--export", str(target))
    assert code == 2 and "not empty" in err and "--overwrite-export" not in out
    code, _, err = main_in_process(capsys, "demo", "--dataset", name, "--max-samples", "20",
                                   "--export", str(target), "--overwrite-export")
    assert code == 2 and "Nothing was deleted" in err
    assert (target / "mine.txt").read_text() == "keep me" and os.listdir(target) == ["mine.txt"]
    assert not fo.dataset_exists(name)  # refused before any work


@pytest.mark.slow  # three demo runs, each a process that embeds
def test_demo_reruns_into_its_own_folder_and_refuses_what_is_not_its_export(tmp_path):
    """The README's demo command must work twice in a row; its default folder is replaced
    only when it holds the previous demo export."""
    name = unique_name("demo")
    try:
        for _ in range(2):
            out = run_cli("demo", "--dataset", name, "--max-samples", "20", "--image-size", "32",
                          cwd=tmp_path)
            assert "exported" in out.stdout.lower(), out.stdout
        kept = tmp_path / "demo_output" / "kept"
        assert (kept / "fiftyone_prune_manifest.json").is_file()
        assert sorted(p.name for p in (tmp_path / "demo_output").iterdir()) == ["kept"]
        (kept / "notes.txt").write_text("mine")
        out = run_cli("demo", "--dataset", name, "--max-samples", "20", "--image-size", "32",
                      cwd=tmp_path, check=False)
        assert out.returncode == 2 and "Nothing was deleted" in out.stderr, out.stderr
        assert (kept / "notes.txt").read_text() == "mine"
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def _scored_cli_dataset(dataset, run_key="prototypes"):
    import numpy as np

    import fiftyone_prune as fop

    rng = np.random.default_rng(0)
    dataset.set_values("emb", list(rng.normal(size=(len(dataset), 8)).astype(np.float32)))
    fop.compute_prototype_scores(dataset, "emb", run_key=run_key, num_clusters=4)


def class_folders(tmp_path, images):
    """``folder/<label>/<image>``: a classification tree, as users keep labelled images."""
    folder = tmp_path / "classes"
    for path, label in images:
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / label / os.path.basename(path))
    return folder


def test_demo_without_the_demo_extra_is_one_line(monkeypatch, tmp_path, capsys):
    """mlxtend made unimportable (None in sys.modules: Python's own "not installed")."""
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    name = unique_name("demo")
    code, _, err = main_in_process(capsys, "demo", "--dataset", name, "--max-samples", "20",
                                   "--export", str(tmp_path / "kept"))
    assert code == 2 and err.count("\n") == 1, err
    assert "'mlxtend'" in err and "pip install 'fiftyone-prune[demo]'" in err
    assert not fo.dataset_exists(name) and not (tmp_path / "kept").exists()


def test_run_that_fails_before_its_first_result_leaves_no_dataset(digits_images, tmp_path,
                                                                   capsys):
    folder = image_folder(tmp_path, digits_images[:4])
    name = unique_name("failed")
    code, _, err = main_in_process(capsys, "run", str(folder), "--dataset", name,
                                   "--checkpoint", str(tmp_path / "no_such.pth.tar"))
    assert code == 2 and "no_such.pth.tar" in err, err
    assert not fo.dataset_exists(name)


@pytest.mark.parametrize("extra", [
    ["--checkpoint", "no_such.pth.tar"],  # refused before the dataset is made
    ["--model", "efficientnet_lite0", "--num-workers", "-1"],  # refused by the SDK's check
])
def test_embed_that_is_refused_leaves_no_dataset(digits_images, tmp_path, capsys, extra):
    folder = image_folder(tmp_path, digits_images[:4])
    name = unique_name("refused")
    code, _, err = main_in_process(capsys, "embed", name, "--images-dir", str(folder), *extra)
    assert code == 2 and err.startswith("error: --"), err
    assert "checkpoint_path" not in err  # the CLI's own words
    assert not fo.dataset_exists(name)


def test_run_refuses_an_export_inside_its_input_folder_before_any_work(digits_images,
                                                                       tmp_path, capsys):
    """The export's copies would be read back as new samples by the next run."""
    folder = class_folders(tmp_path, digits_images[:6])
    name = unique_name("inside")
    code, _, err = main_in_process(capsys, "run", str(folder), "--dataset", name,
                                   "--model", "efficientnet_lite0",
                                   "--export", str(folder / "kept"))
    assert code == 2 and err.startswith("error: --export: ") and "inside the input" in err
    assert not fo.dataset_exists(name) and not (folder / "kept").exists()


def test_run_replaces_a_run_only_with_overwrite(digits_dataset, capsys):
    _scored_cli_dataset(digits_dataset)
    code, _, err = main_in_process(capsys, "run", digits_dataset.name, "--model",
                                   "efficientnet_lite0", "--num-clusters", "3")
    assert code == 2 and err.startswith("error: --run-key: ") and "--overwrite" in err, err
    assert "overwrite=True" not in err
    digits_dataset.reload()
    assert not digits_dataset.has_field("efficientnet_lite0_embedding")  # before any work


def test_run_labels_images_from_their_class_folders(digits_images, tmp_path, capsys):
    images = digits_images[:12]
    folder = class_folders(tmp_path, images)
    name = unique_name("classes")
    try:
        code, out, err = main_in_process(
            capsys, "run", str(folder), "--dataset", name, "--model", "efficientnet_lite0",
            "--image-size", "32", "--num-workers", "0", "--keep", "0.5",
            "--strategy", "random")
        assert code == 0, err
        dataset = fo.load_dataset(name)
        labels = dict(zip(dataset.values("filepath"), dataset.values("ground_truth.label")))
        assert {os.path.basename(p): l for p, l in labels.items()} == {
            os.path.basename(p): l for p, l in images}
        assert "labels from class folders" in out
        # the labels are used: k is the number of classes
        assert f"k={len({l for _, l in images})} " in out
        assert dataset.persistent  # made persistent by its first result
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_export_defaults_to_the_newest_selection(digits_dataset, tmp_path, capsys):
    import fiftyone_prune as fop

    _scored_cli_dataset(digits_dataset, "proto")
    fop.select_samples(digits_dataset, "proto", keep=30, name="older", balance=None)
    fop.select_samples(digits_dataset, "proto", keep=12, name="newer", balance=None)
    code, out, err = main_in_process(capsys, "export", digits_dataset.name,
                                     str(tmp_path / "out"))
    assert code == 0, err
    assert last_json(out)["num_samples"] == 12


def test_a_selection_that_keeps_fewer_than_asked_warns(digits_dataset, capsys):
    _scored_cli_dataset(digits_dataset, "proto")
    code, out, err = main_in_process(capsys, "select", digits_dataset.name, "--run-key",
                                     "proto", "--keep", "60", "--dedup-eps", "0.9",
                                     "--name", "dd")
    assert code == 0, err
    kept = digits_dataset.count_sample_tags()["dd:kept"]
    assert kept < 60, "the fixture must make SemDeDup leave fewer than asked"
    assert f"warning: kept {kept} of the 60 asked" in err and "--dedup-eps" in err


def test_purge_lists_then_removes_what_the_package_wrote(digits_dataset, capsys):
    import fiftyone_prune as fop

    _scored_cli_dataset(digits_dataset, "proto")
    fop.select_samples(digits_dataset, "proto", keep=10, name="ten")
    code, out, _ = main_in_process(capsys, "purge", digits_dataset.name, "--dry-run")
    assert code == 0 and "would remove runs: proto, ten_selection" in out, out
    digits_dataset.reload()
    assert digits_dataset.has_saved_view("ten-kept")
    code, out, _ = main_in_process(capsys, "purge", digits_dataset.name)
    assert code == 0 and "removed saved views: ten-kept" in out, out
    digits_dataset.reload()
    assert digits_dataset.list_runs() == [] and digits_dataset.list_saved_views() == []
    assert not digits_dataset.has_field("proto_distance")
    assert digits_dataset.count_sample_tags() == {}
    assert digits_dataset.has_field("emb")  # not written by the package: the user's


def test_runs_shows_a_sharded_run_in_progress_and_a_stopped_shard_with_its_error(
        digits_dataset, capsys):
    """``runs`` on a sharded scoring run: queued and partly done it is "in progress" with
    its counts and the time left (never "interrupted ... rerun it"); a shard out of
    tries shows its index, tries and error, and the run says what to do; a plain
    ``requeue`` reruns failed shards."""
    import numpy as np

    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    import fiftyone_prune as fop
    from fiftyone_prune.sdk import shards, storage

    rng = np.random.default_rng(0)
    digits_dataset.set_values("emb", list(rng.normal(size=(len(digits_dataset), 8)).astype(
        np.float32)))
    name = digits_dataset.name
    queued = fop.compute_prototype_scores(digits_dataset, "emb", run_key="sh", num_clusters=3,
                                          num_shards=3, delegate=True)
    try:
        code, listed, _ = main_in_process(capsys, "runs", name)
        assert code == 0 and "in progress" in listed and "interrupted" not in listed
        assert "  shards: 0/120 samples; 3 queued (of 3)" in listed
        shards.run_shard(digits_dataset, "sh", 0)
        code, listed, _ = main_in_process(capsys, "runs", name)
        assert "  shards: 40/120 samples; 1 done, 2 queued (of 3); about " in listed
        # shard 1 failed on its last automatic try
        storage.update_shard(shards.plan_id(digits_dataset, "sh"), 1, {
            "state": "failed", "attempts": 3, "error": "ValueError: a NaN in sample x"})
        code, listed, _ = main_in_process(capsys, "runs", name)
        assert "shard 1 failed, try 3 of 3: ValueError: a NaN in sample x" in listed
        assert "sharded, stopped" in listed and f"fiftyone-prune requeue {name} sh" in listed
        code, out, _ = main_in_process(capsys, "requeue", name, "sh", "--here")
        assert code == 0 and "ran shard(s) [1]" in out
    finally:
        for op_id in queued["queued_operations"]:
            DelegatedOperationService().delete_operation(ObjectId(op_id))
        fop.delete_run(digits_dataset, "sh")


def test_embed_and_score_objects_with_patches_field(digits_dataset, capsys):
    """Object-level pruning from the command line: each box embedded onto its label,
    then each object scored (label attributes) and selected (label tags)."""
    view = digits_dataset.limit(4)
    for sample in view:
        sample["boxes"] = fo.Detections(detections=[
            fo.Detection(label="a", bounding_box=[0.0, 0.0, 0.6, 0.6]),
            fo.Detection(label="b", bounding_box=[0.4, 0.4, 0.6, 0.6])])
        sample.save()
    name = digits_dataset.name
    code, out, _ = main_in_process(capsys, "embed", name, "--model", "efficientnet_lite0",
                                   "--embeddings-field", "box_emb", "--patches-field", "boxes",
                                   "--image-size", "32")
    assert code == 0 and last_json(out)["num_embedded"] == 8
    code, out, _ = main_in_process(capsys, "score", name, "--embeddings-field", "box_emb",
                                   "--patches-field", "boxes", "--num-clusters", "2",
                                   "--run-key", "objs")
    assert code == 0 and last_json(out)["distance_field"] == "boxes.detections.objs_distance"
    digits_dataset.reload()
    assert digits_dataset.count("boxes.detections.objs_distance") == 8
    code, out, _ = main_in_process(capsys, "select", name, "--run-key", "objs", "--keep", "6",
                                   "--strategy", "hard")
    assert code == 0 and "kept 6, pruned 2" in out
    assert digits_dataset.count_label_tags() == {"objs:kept": 6, "objs:pruned": 2}
    code, _, err = main_in_process(capsys, "score", name, "--embeddings-field", "box_emb",
                                   "--patches-field", "boxes", "--shards", "2",
                                   "--run-key", "other")
    assert code == 2 and err.startswith("error: --shards: ") and "objects" in err
