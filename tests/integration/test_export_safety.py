"""Export never loses data: fault injection with real files, a real mongod and real
processes (SIGKILL mid-export, a write limit standing in for a full disk)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk import export
from tests.conftest import REPO_ROOT, unique_name


def snapshot(folder):
    """Every file under ``folder`` with its bytes: equal snapshots = nothing changed."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture()
def own_media(tmp_path, digits_images):
    """A dataset whose 30 images live in ``tmp_path/media/<label>/``, scored and with a
    selection ``proto`` keeping 12: the export tests can point at and around them."""
    media = tmp_path / "media"
    items = []
    for path, label in digits_images[:30]:
        os.makedirs(media / label, exist_ok=True)
        dst = media / label / os.path.basename(path)
        shutil.copy(path, dst)
        items.append(fo.Sample(filepath=str(dst), ground_truth=fo.Classification(label=label)))
    dataset = fo.Dataset(unique_name("export"))
    dataset.add_samples(items)
    rng = np.random.default_rng(0)
    dataset.set_values("emb", list(rng.normal(size=(30, 8)).astype(np.float32)))
    fop.compute_prototype_scores(dataset, "emb", run_key="proto", num_clusters=3)
    kept = fop.select_samples(dataset, "proto", keep=12, strategy="hard")
    yield dataset, kept, media
    if fo.dataset_exists(dataset.name):
        fo.delete_dataset(dataset.name)


def test_targets_around_the_media_folders_are_refused_and_nothing_is_deleted(own_media, tmp_path):
    dataset, kept, media = own_media
    before = snapshot(tmp_path)
    label = os.path.basename(os.path.dirname(dataset.first().filepath))
    link = tmp_path / "alias"
    os.symlink(media / label, link)
    for target, relation in ((media, "contains"), (media / label, "is the media"),
                             (media / label / "kept", "is inside"), (tmp_path, "contains"),
                             (link, "is the media")):
        with pytest.raises(ValueError, match=f"{relation}.*could overwrite or delete"):
            fop.export_kept_samples(kept, str(target), overwrite=True)
    os.remove(link)
    assert snapshot(tmp_path) == before
    assert all(os.path.isfile(p) for p in dataset.values("filepath"))


def test_overwrite_replaces_only_a_previous_export_of_ours(own_media, tmp_path):
    _, kept, _ = own_media
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not empty"):
        fop.export_kept_samples(kept, str(user))
    with pytest.raises(ValueError, match="no fiftyone_prune_manifest.json.*Nothing was deleted"):
        fop.export_kept_samples(kept, str(user), overwrite=True)
    (user / export.MANIFEST_JSON).write_text('{"samples_csv": "x"}')  # not our manifest
    with pytest.raises(ValueError, match="Nothing was deleted"):
        fop.export_kept_samples(kept, str(user), overwrite=True)
    assert (user / "thesis.tex").read_text() == "years of work"

    ours = tmp_path / "ours"
    fop.export_kept_samples(kept, str(ours), dataset_type="media")
    report = fop.export_kept_samples(kept.limit(5), str(ours), dataset_type="media",
                                     overwrite=True)
    assert report["num_samples"] == 5
    assert len([f for f in os.listdir(ours) if f.endswith(".png")]) == 5
    # a file the user added to our export is not ours to delete
    (ours / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"did not write \(e.g. \['notes.txt'\]\)"):
        fop.export_kept_samples(kept, str(ours), dataset_type="media", overwrite=True)
    assert (ours / "notes.txt").read_text() == "mine"
    assert not [n for n in os.listdir(tmp_path) if "fiftyone-prune-tmp" in n]


def test_missing_media_are_reported_before_anything_is_written(own_media, tmp_path):
    dataset, kept, _ = own_media
    gone = kept.values("filepath")[:2]
    for p in gone:
        os.remove(p)
    out = tmp_path / "out" / "kept"
    with pytest.raises(ValueError, match="2 of the 12 media files to export do not exist") as err:
        fop.export_kept_samples(kept, str(out))
    assert gone[0] in str(err.value)
    assert not (tmp_path / "out").exists()
    # a format that does not copy media does not need them
    fop.export_kept_samples(kept, str(out), dataset_type="image_classification_csv",
                            label_field="ground_truth", export_media=False)
    assert (out / export.MANIFEST_JSON).exists()


def test_formats_that_do_not_fit_and_unwritable_targets_are_one_line_errors(own_media, tmp_path):
    _, kept, _ = own_media
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (dict(dataset_type="VideoDirectory"), tmp_path / "v", "video format.*holds images"),
        (dict(dataset_type="FiftyOneVideoLabelsDataset"), tmp_path / "v", "video format"),
        (dict(dataset_type="GeoJSONDataset"), tmp_path / "g", "needs a GeoLocation field"),
        (dict(export_media="move"), tmp_path / "m", "take the images away"),
        ({}, a_file / "sub", "which is a file, not a folder"),
        ({}, a_file, "is a file; choose a directory"),
    ]
    if not os.access("/sys", os.W_OK) or os.geteuid() == 0:  # /sys is read-only in practice
        cases.append(({}, "/sys/fiftyone_prune_export", "can't be written"))
    for kwargs, target, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            fop.export_kept_samples(kept, str(target), **kwargs)
        assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "media"]


def test_a_deleted_score_field_is_named_with_the_fix(own_media, tmp_path):
    dataset, kept, _ = own_media
    dataset.delete_sample_field("proto_distance")
    with pytest.raises(ValueError, match=r"\['proto_distance'\] that no longer exist.*"
                                         r"overwrite=True"):
        fop.export_kept_samples(kept, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


CHILD = textwrap.dedent("""
    import os, signal, sys, time, resource
    import fiftyone as fo
    import fiftyone_prune as fop
    mode, name, target = sys.argv[1:4]
    view = fo.load_dataset(name).load_saved_view("proto-kept")
    def midway(pb):
        if mode == "kill" and pb.iteration >= 6:
            print("MIDWAY", flush=True)
            time.sleep(120)
    if mode == "full":  # every file this process writes is capped: a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    fop.export_kept_samples(view, target, dataset_type="media", overwrite=True,
                            progress=midway)
""")


def run_child(mode, name, target):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, name, str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_midway(child):
    """Reads the child's stdout until it reports the chosen point (or dies)."""
    for line in child.stdout:
        if line.strip() == "MIDWAY":
            return
    child.wait()
    raise AssertionError(f"child exited {child.returncode} first: {child.stderr.read()}")


def leftovers(parent):
    return sorted(n for n in os.listdir(parent) if "fiftyone-prune-tmp" in n)


def test_export_killed_midway_leaves_the_previous_export_and_is_cleaned(own_media, tmp_path):
    dataset, kept, _ = own_media
    dataset.persistent = True  # visible to the child process
    out = tmp_path / "kept"
    fop.export_kept_samples(kept.limit(4), str(out), dataset_type="media")
    previous = snapshot(out)
    child = run_child("kill", dataset.name, out)
    wait_for_midway(child)
    staged = leftovers(tmp_path)
    assert len(staged) == 1 and len(os.listdir(tmp_path / staged[0] / "export")) >= 6
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert snapshot(out) == previous  # the target is the old export, whole
    # the rerun completes the work and removes the dead process's folder
    report = fop.export_kept_samples(kept, str(out), dataset_type="media", overwrite=True)
    assert report["num_samples"] == 12 and leftovers(tmp_path) == []
    manifest = json.loads((out / export.MANIFEST_JSON).read_text())
    assert manifest["num_samples"] == 12
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == 12


def test_export_failing_midway_on_a_full_disk_keeps_the_target(own_media, tmp_path):
    dataset, kept, _ = own_media
    dataset.persistent = True
    big = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    from PIL import Image

    last = sorted(kept.values("filepath"))[-1]
    Image.fromarray(big).save(last)  # one image too big for the cap: the copy fails
    assert os.path.getsize(last) > 4096
    out = tmp_path / "kept"
    fop.export_kept_samples(kept.limit(3), str(out), dataset_type="media")
    previous = snapshot(out)
    child = run_child("full", dataset.name, out)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode != 0 and "File too large" in stderr
    assert snapshot(out) == previous and leftovers(tmp_path) == []


def test_a_folder_holding_another_datasets_media_is_refused(own_media, tmp_path):
    """A dataset made from an earlier export keeps its images: re-exporting over that
    folder with overwrite=True is refused by that dataset's name, as is a folder holding
    any other dataset's media."""
    dataset, kept, _ = own_media
    out = tmp_path / "kept"
    fop.export_kept_samples(kept, str(out), dataset_type="image_classification_tree",
                            label_field="ground_truth")
    downstream = fo.Dataset.from_dir(str(out), fo.types.ImageClassificationDirectoryTree,
                                     name=unique_name("downstream"))
    try:
        before = snapshot(out)
        with pytest.raises(ValueError, match=f"of dataset '{downstream.name}'") as err:
            fop.export_kept_samples(kept.limit(5), str(out), overwrite=True,
                                    dataset_type="image_classification_tree",
                                    label_field="ground_truth")
        assert err.value.param == "export_dir"
        assert snapshot(out) == before
        assert all(os.path.isfile(p) for p in downstream.values("filepath"))
        # the other direction: a new folder inside another dataset's media folder
        inside = os.path.dirname(downstream.first().filepath)
        with pytest.raises(ValueError, match="is inside the media folder"):
            fop.export_kept_samples(kept, os.path.join(inside, "more"))
    finally:
        fo.delete_dataset(downstream.name)


def test_a_path_through_a_symlink_and_dotdot_is_resolved_as_the_system_does(own_media,
                                                                            tmp_path):
    """``link/../x`` is beside the folder ``link`` points to (as mkdir and open resolve
    it), not beside ``link``: into the media tree that way is refused, and an allowed
    one is written where the system puts it."""
    dataset, kept, media = own_media
    labels = sorted(os.listdir(media))
    assert len(labels) >= 2
    aside = tmp_path / "aside"
    aside.mkdir()
    link = aside / "link"
    os.symlink(media / labels[0], link)
    before = snapshot(media)
    for target in (f"{link}/../{labels[1]}", f"{link}/new", f"{link}/.."):
        with pytest.raises(ValueError, match="media folder") as err:
            fop.export_kept_samples(kept, target, overwrite=True, dataset_type="media")
        assert err.value.param == "export_dir"
    assert snapshot(media) == before
    assert not (aside / labels[1]).exists()
    # outside the media tree: a new folder beside media/ itself, reached via the link
    report = fop.export_kept_samples(kept, f"{link}/../../elsewhere", dataset_type="media")
    assert report["export_dir"] == str(tmp_path / "elsewhere")
    assert len([f for f in os.listdir(tmp_path / "elsewhere") if f.endswith(".png")]) == 12
