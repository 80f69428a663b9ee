"""Export the kept subset in any format FiftyOne writes, with a manifest."""

from __future__ import annotations

import csv
import json
import os

import fiftyone as fo

from fiftyone_prune.sdk import runs, validation
from fiftyone_prune.sdk.selection import selection_names

MANIFEST_JSON = "fiftyone_prune_manifest.json"
MANIFEST_CSV = "fiftyone_prune_manifest.csv"

#: short names for the common formats; any ``fiftyone.types`` class name also works
DATASET_TYPES = {
    "fiftyone": "FiftyOneDataset",
    "image_classification_tree": "ImageClassificationDirectoryTree",
    "image_classification_csv": "CSVDataset",
    "coco": "COCODetectionDataset",
    "yolo": "YOLOv5Dataset",
    "voc": "VOCDetectionDataset",
    "media": "MediaDirectory",
}
_NEEDS_LABELS = {"ImageClassificationDirectoryTree": fo.Classification,
                 "COCODetectionDataset": None, "YOLOv5Dataset": None,
                 "VOCDetectionDataset": None}


def resolve_dataset_type(dataset_type):
    import fiftyone.types as fot

    if dataset_type is None:
        return fot.FiftyOneDataset
    if isinstance(dataset_type, type) and issubclass(dataset_type, fot.Dataset):
        return dataset_type
    if isinstance(dataset_type, str):
        name = DATASET_TYPES.get(dataset_type, dataset_type)
        cls = getattr(fot, name, None)
        if isinstance(cls, type) and issubclass(cls, fot.Dataset):
            return cls
    raise ValueError(
        f"Unknown dataset_type {dataset_type!r}; use one of {sorted(DATASET_TYPES)} or a "
        f"fiftyone.types class name (e.g. 'ImageClassificationDirectoryTree')"
    )


def _find_selection(view):
    """The selection run whose kept tag every sample of ``view`` carries, if any."""
    for key in runs.list_runs(view, "selection"):
        cfg = runs.get_run_info(view, key).config
        kept_tag = selection_names(cfg.name)["kept_tag"]
        if (len(view.match_tags(kept_tag)) == len(view)
                and len(view._dataset.match_tags(kept_tag)) == len(view)):
            return key, cfg
    return None, None


def export_kept_samples(view, export_dir: str, dataset_type=None, label_field=None,
                        overwrite: bool = False, selection: str | None = None,
                        export_media=True, progress=None) -> dict:
    """Exports ``view`` (typically what :func:`select_samples` returned) to
    ``export_dir`` and writes a manifest beside the data.

    Args:
        view: the samples to export
        export_dir: the output directory; a non-empty one is refused unless
            ``overwrite=True`` (which deletes it first, as FiftyOne's export does)
        dataset_type: ``"fiftyone"`` (default: lossless, keeps every field and score),
            ``"image_classification_tree"``, ``"image_classification_csv"``, ``"coco"``,
            ``"yolo"``, ``"voc"``, ``"media"`` (images only), or any
            ``fiftyone.types`` class / class name
        label_field: the label field to export (required by label formats)
        selection: the selection name whose parameters go in the manifest (default:
            the selection run whose kept tag all samples of the view carry)
        export_media: passed to FiftyOne (True copies the images)
        progress: FiftyOne's ``progress`` argument of the export (True/False, or a
            callback from ``fo.report_progress``)

    Returns:
        a dict with the export directory, count and manifest paths

    The manifest is ``fiftyone_prune_manifest.json`` (selection and scoring parameters,
    counts) and ``fiftyone_prune_manifest.csv`` (one row per sample: id, filepath,
    every prototype distance, label) in ``export_dir``; importers of every supported
    format ignore them.
    """
    validation.check_collection(view, "view")
    validation.check_not_empty(view)
    cls = resolve_dataset_type(dataset_type)
    if not isinstance(export_dir, str) or not export_dir:
        raise ValueError("export_dir must be a directory path")
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.isfile(export_dir):
        raise ValueError(f"export_dir {export_dir!r} is a file; choose a directory")
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise ValueError(
            f"Export directory {export_dir!r} is not empty; choose an empty or new "
            f"directory, or pass overwrite=True to replace its contents"
        )
    if label_field is not None and view.get_field(label_field) is None:
        raise ValueError(f"Label field {label_field!r} does not exist in the view")
    needs = _NEEDS_LABELS.get(cls.__name__, False)
    if needs is not False and label_field is None:
        raise ValueError(f"dataset_type {cls.__name__} needs label_field=")
    if needs is fo.Classification:
        f = view.get_field(label_field)
        if not (isinstance(f, fo.EmbeddedDocumentField) and f.document_type is fo.Classification):
            raise ValueError(f"{cls.__name__} needs a Classification label field; "
                             f"{label_field!r} is not one")
    sel_key, sel_cfg = (None, None)
    if selection is not None:
        sel_key = selection_names(selection)["run_key"]
        sel_cfg = runs.get_run_info(view, sel_key).config
    else:
        sel_key, sel_cfg = _find_selection(view)

    kwargs = dict(export_dir=export_dir, dataset_type=cls, overwrite=overwrite,
                  progress=progress)
    if label_field is not None:
        kwargs["label_field"] = label_field
    if cls.__name__ != "FiftyOneDataset" and not issubclass(cls, fo.types.MediaDirectory):
        kwargs["export_media"] = export_media
    view.export(**kwargs)

    distance_fields = [f for f in view.get_field_schema()
                       if f.endswith("_distance") and isinstance(view.get_field(f), fo.FloatField)]
    columns = ["id", "filepath"] + distance_fields
    label_path = None
    if label_field is not None and isinstance(view.get_field(label_field), fo.EmbeddedDocumentField) \
            and view.get_field(label_field).document_type is fo.Classification:
        label_path = f"{label_field}.label"
    values = view.values(columns + ([label_path] if label_path else []))
    csv_path = os.path.join(export_dir, MANIFEST_CSV)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + (["label"] if label_path else []))
        writer.writerows(zip(*values))
    scoring = None
    if sel_cfg is not None and sel_cfg.run_key in runs.list_runs(view, "prototypes"):
        scoring = runs.run_params(view, sel_cfg.run_key)
    manifest = {
        "dataset": view._dataset.name,
        "num_samples": len(view),
        "dataset_type": cls.__name__,
        "label_field": label_field,
        "selection_run": sel_key,
        "selection": sel_cfg.serialize() if sel_cfg is not None else None,
        "scoring": scoring,
        "samples_csv": MANIFEST_CSV,
        "versions": runs.versions(),
    }
    json_path = os.path.join(export_dir, MANIFEST_JSON)
    with open(json_path, "w") as f:
        json.dump(manifest, f, indent=2, default=str)
    return {"export_dir": export_dir, "num_samples": len(view), "dataset_type": cls.__name__,
            "manifest": json_path, "manifest_csv": csv_path}
