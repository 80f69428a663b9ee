"""Faults beyond the obvious ones: real processes killed with SIGKILL, leftovers of other
exports, corrupt cached weights. Real mongod, real files, real torch."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.core import models
from fiftyone_prune.sdk import export
from fiftyone_prune.sdk.leases import RunLockedError
from tests.conftest import REPO_ROOT, labelled_dataset, unique_name
from tests.integration.test_export_safety import wait_for_midway

EMBED_CHILD = textwrap.dedent("""
    import sys, time
    import fiftyone as fo
    import fiftyone_prune as fop
    from fiftyone_prune.core.models import efficientnet_lite0
    def stall(pb):
        if pb.iteration >= 12:  # three chunks of 4 handed to the writer
            time.sleep(0.5)     # let the writer thread finish them
            print("MIDWAY", flush=True)
            time.sleep(120)
    fop.compute_embeddings(fo.load_dataset(sys.argv[1]), model=efficientnet_lite0(32),
                           embeddings_field="emb", batch_size=4, chunk_size=4,
                           num_workers=0, progress=stall)
""")


@pytest.mark.slow  # over 20 s on 2 cores (--durations in CI)
def test_embeddings_killed_midway_keep_finished_chunks_and_resume(digits_images,
                                                                   efficientnet_small):
    dataset = labelled_dataset(unique_name("kill"), digits_images[:24], persistent=True)
    try:
        # a short lease: the killed writer's key is free again soon after the kill
        child = subprocess.Popen([sys.executable, "-c", EMBED_CHILD, dataset.name],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, PYTHONPATH=REPO_ROOT,
                                          FIFTYONE_PRUNE_LEASE_SECONDS="2"))
        wait_for_midway(child)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        dataset.reload()  # the child declared the field
        done = dataset.count("emb")
        assert 12 <= done < 24  # whole chunks, nothing half-written
        assert all(v.shape == (1280,) for v in dataset.exists("emb").values("emb"))
        # as a user would: the killed writer's lease blocks the field until it expires
        deadline = time.monotonic() + 120
        while True:
            try:
                result = fop.compute_embeddings(dataset, model=efficientnet_small,
                                                embeddings_field="emb", num_workers=0)
                break
            except RunLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert result.num_skipped_existing == done and dataset.count("emb") == 24
        # killed or not, every vector is the model's vector for its image
        transform = efficientnet_small.transform()
        with torch.inference_mode():
            expected = efficientnet_small.module(torch.stack(
                [transform(Image.open(p)) for p in dataset.values("filepath")])).numpy()
        np.testing.assert_allclose(np.stack(dataset.values("emb")), expected,
                                   rtol=1e-4, atol=1e-4)
    finally:
        fo.delete_dataset(dataset.name)


def test_leftover_of_a_live_export_is_left_alone_and_a_dead_one_removed(digits_dataset,
                                                                         tmp_path):
    view = digits_dataset.limit(3)
    target = tmp_path / "kept"
    live = tmp_path / f".kept{export._STAGING_TAG}live"
    dead = tmp_path / f".kept{export._STAGING_TAG}dead"
    for folder, pid in ((live, os.getpid()), (dead, 2 ** 22 + 12345)):
        (folder / "export").mkdir(parents=True)
        (folder / export.STAGING_OWNER).write_text(
            '{"host": "%s", "pid": %d}' % (os.uname().nodename, pid))
    fop.export_kept_samples(view, str(target), dataset_type="media")
    assert live.exists() and not dead.exists()
    assert len([f for f in os.listdir(target) if f.endswith(".png")]) == 3


def test_swapped_out_previous_export_is_put_back_if_the_swap_was_killed(digits_dataset,
                                                                        tmp_path):
    """The fallback swap (no renameat2) moves the old export into the temporary folder
    before renaming the new one in; a kill between the two leaves no target."""
    view = digits_dataset.limit(3)
    target = tmp_path / "kept"
    fop.export_kept_samples(view, str(target), dataset_type="media")
    staging = tmp_path / f".kept{export._STAGING_TAG}killed"
    staging.mkdir()
    (staging / export.STAGING_OWNER).write_text(
        '{"host": "%s", "pid": %d}' % (os.uname().nodename, 2 ** 22 + 12345))
    os.rename(target, staging / "previous")  # the state right after the first rename
    with pytest.raises(ValueError, match="not empty"):  # the old export is back in place
        fop.export_kept_samples(view, str(target), dataset_type="media")
    assert (target / export.MANIFEST_JSON).exists() and not staging.exists()


def test_corrupt_cached_checkpoint_is_one_clear_line(tmp_path, monkeypatch):
    """A download cut short leaves a truncated file in the torch.hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = models.swav_cache_path()
    os.makedirs(os.path.dirname(cache))
    with open(cache, "wb") as f:
        f.write(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ValueError, match="can't be read as a PyTorch checkpoint") as err:
        models.swav_resnet50()
    assert cache in str(err.value) and "\n" not in str(err.value)


def test_a_target_filled_while_exporting_is_not_replaced(digits_dataset, tmp_path):
    view = digits_dataset.limit(4)
    target = tmp_path / "kept"

    def someone_writes_there(pb):
        if not target.exists():
            target.mkdir()
            (target / "theirs.txt").write_text("written meanwhile")

    with pytest.raises(ValueError, match="not empty"):
        fop.export_kept_samples(view, str(target), dataset_type="media",
                                progress=someone_writes_there)
    assert os.listdir(target) == ["theirs.txt"]
    assert not [n for n in os.listdir(tmp_path) if export._STAGING_TAG in n]


def test_files_added_inside_a_previous_export_and_symlinked_targets(digits_dataset, tmp_path):
    view = digits_dataset.limit(4)
    real = tmp_path / "real"
    fop.export_kept_samples(view, str(real), dataset_type="image_classification_tree",
                            label_field="ground_truth")
    label_dir = next(p for p in real.iterdir() if p.is_dir())
    (label_dir / "extra.png").write_bytes(b"the user's")
    with pytest.raises(ValueError, match="1 more files than the previous export wrote"):
        fop.export_kept_samples(view, str(real), dataset_type="media", overwrite=True)
    assert (label_dir / "extra.png").read_bytes() == b"the user's"
    os.remove(label_dir / "extra.png")
    link = tmp_path / "link"
    os.symlink(real, link)
    report = fop.export_kept_samples(view.limit(2), str(link), dataset_type="media",
                                     overwrite=True)
    assert report["export_dir"] == str(real) and os.path.islink(link)
    assert len([f for f in os.listdir(link) if f.endswith(".png")]) == 2
