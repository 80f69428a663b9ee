"""The export manifest describes the export as written: every row maps a file inside the
export (FiftyOne's path, renamed collisions included) to its sample id, labels, scores
and clusters. Read with the ``csv`` module, checked against the files on disk byte by
byte, for a directory tree, a COCO and a FiftyOne-format export."""

import csv
import json
import os

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_prune as fop
from fiftyone_prune.sdk import export
from tests.conftest import unique_name


@pytest.fixture()
def colliding(tmp_path, digits_images):
    """24 real images in two folders under the same 12 file names (the copies in ``b``
    are flipped, so same name, other bytes), with a Classification and a Detections
    label each, scored, and a selection keeping 16."""
    from PIL import Image

    samples = []
    for i, (path, label) in enumerate(digits_images[:12]):
        for folder in ("a", "b"):
            os.makedirs(tmp_path / "media" / folder, exist_ok=True)
            dst = tmp_path / "media" / folder / f"digit{i:02d}.png"
            image = Image.open(path)
            (image if folder == "a" else image.transpose(Image.FLIP_LEFT_RIGHT)).save(dst)
            samples.append(fo.Sample(
                filepath=str(dst), ground_truth=fo.Classification(label=label),
                boxes=fo.Detections(detections=[
                    fo.Detection(label=f"{folder}{label}", bounding_box=[0.1, 0.1, 0.5, 0.5]),
                    fo.Detection(label="frame", bounding_box=[0.0, 0.0, 1.0, 1.0])])))
    dataset = fo.Dataset(unique_name("manifest"))
    dataset.add_samples(samples)
    rng = np.random.default_rng(0)
    dataset.set_values("emb", list(rng.normal(size=(len(dataset), 8)).astype(np.float32)))
    fop.compute_prototype_scores(dataset, "emb", run_key="proto", num_clusters=3)
    kept = fop.select_samples(dataset, "proto", keep=16, strategy="random", balance=None)
    yield dataset, kept
    fo.delete_dataset(dataset.name)


def read_rows(folder):
    with open(folder / export.MANIFEST_CSV, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("dataset_type, label_field", [
    ("image_classification_tree", "ground_truth"), ("coco", "boxes"), ("fiftyone", None)])
def test_every_exported_file_maps_to_its_sample(colliding, tmp_path, dataset_type,
                                                label_field):
    dataset, kept = colliding
    out = tmp_path / dataset_type
    fop.export_kept_samples(kept, str(out), dataset_type=dataset_type,
                            label_field=label_field)
    rows = read_rows(out)
    assert len(rows) == len(kept) == 16
    by_id = {s.id: s for s in kept}
    assert {r["id"] for r in rows} == set(by_id)
    # the exported files are exactly the rows' files: none missing, none unaccounted
    media = {os.path.relpath(os.path.join(root, n), out).replace(os.sep, "/")
             for root, _, names in os.walk(out) for n in names if n.endswith(".png")}
    assert {r["export_path"] for r in rows} == media
    renamed = [r for r in rows if "-2.png" in r["export_path"]]
    assert renamed, "the fixture must make FiftyOne rename colliding file names"
    for row in rows:
        sample = by_id[row["id"]]
        with open(out / row["export_path"], "rb") as a, open(sample.filepath, "rb") as b:
            assert a.read() == b.read(), row  # this row's file is this sample's image
        assert row["filepath"] == sample.filepath
        assert row["ground_truth"] == sample.ground_truth.label
        assert json.loads(row["boxes"]) == [d.label for d in sample.boxes.detections]
        assert float(row["proto_distance"]) == pytest.approx(sample.proto_distance)
        assert int(row["proto_cluster"]) == sample.proto_cluster
    if dataset_type == "image_classification_tree":  # the class folder is the label
        assert all(r["export_path"].split("/")[0] == r["ground_truth"] for r in rows)
    manifest = json.loads((out / export.MANIFEST_JSON).read_text())
    assert {"torch", "torchvision", "fiftyone", "fiftyone_prune"} <= set(manifest["versions"])
    # a random selection is the yardstick of worth itself, and the manifest says so
    assert manifest["worth"]["status"] == "reference" and manifest["worth"]["ratio"] is None


def test_a_media_free_export_has_no_export_path(colliding, tmp_path):
    _, kept = colliding
    out = tmp_path / "labels_only"
    fop.export_kept_samples(kept, str(out), dataset_type="image_classification_csv",
                            label_field="ground_truth", export_media=False)
    rows = read_rows(out)
    assert len(rows) == 16 and all(r["export_path"] == "" for r in rows)


def test_the_csv_format_writes_the_labels_and_needs_a_label_field(colliding, tmp_path):
    _, kept = colliding
    with pytest.raises(ValueError, match="needs label_field") as err:
        fop.export_kept_samples(kept, str(tmp_path / "nolabels"),
                                dataset_type="image_classification_csv")
    assert err.value.param == "label_field"
    assert not (tmp_path / "nolabels").exists()
    out = tmp_path / "csv"
    fop.export_kept_samples(kept, str(out), dataset_type="image_classification_csv",
                            label_field="ground_truth")
    with open(out / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    rows = {r["export_path"]: r for r in read_rows(out)}
    assert len(labels) == 16
    for row in labels:  # FiftyOne writes the file name inside data/
        assert row["label"] == rows[f"data/{row['filepath']}"]["ground_truth"]
