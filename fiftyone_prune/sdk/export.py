"""Export the kept subset in any format FiftyOne writes, with a manifest.

What an export guarantees (see ``docs/design.md``):

* **Nothing of the user's is deleted.** The target may not contain, equal or sit inside
  a folder that holds media of the dataset, and ``overwrite=True`` replaces only a
  previous export of ours (recognised by its manifest, which lists what it wrote).
* **Checks first.** Media files exist, the folder can be written, the format fits the
  media; every failure is one ``ValueError`` before anything is written.
* **All or nothing.** FiftyOne writes into a temporary folder beside the target, the
  manifest goes in last, and the folder is renamed into place (an atomic exchange with a
  previous export). A failure or a kill leaves the target as it was; the leftover
  temporary folder is removed by the next export to that target.
"""

from __future__ import annotations

import csv
import ctypes
import json
import os
import shutil
import socket
import tempfile
import time

import fiftyone as fo
from fiftyone import ViewField as F

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import runs, validation
from fiftyone_prune.sdk.selection import selection_names

MANIFEST_JSON = "fiftyone_prune_manifest.json"
MANIFEST_CSV = "fiftyone_prune_manifest.csv"
#: written into a temporary export folder: which process owns it
STAGING_OWNER = "fiftyone_prune_staging.json"
#: temporary folders are ``.<target name>.fiftyone-prune-tmp-<random>`` beside the target
_STAGING_TAG = ".fiftyone-prune-tmp-"
#: an owner-less temporary folder younger than this may be one being created right now
_ORPHAN_GRACE_S = 60.0

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
    raise ParameterError(
        f"Unknown dataset_type {dataset_type!r}; use one of {sorted(DATASET_TYPES)} or a "
        f"fiftyone.types class name (e.g. 'ImageClassificationDirectoryTree')", "dataset_type")


def _find_selection(view):
    """The selection run whose kept tag every sample of ``view`` carries, if any."""
    for key in runs.list_runs(view, "selection"):
        cfg = runs.get_run_info(view, key).config
        kept_tag = selection_names(cfg.name)["kept_tag"]
        if (len(view.match_tags(kept_tag)) == len(view)
                and len(view._dataset.match_tags(kept_tag)) == len(view)):
            return key, cfg
    return None, None


# --- the target folder -------------------------------------------------------------

def _media_folders(view) -> set[str]:
    """Every folder holding a media file of the dataset(s) behind ``view`` (the whole
    dataset, not just the view: its other samples' files must not be touched either),
    as real paths. One ``distinct`` aggregation per dataset, computed by MongoDB."""
    datasets = {view._dataset.name: view._dataset}
    root = getattr(view, "_root_dataset", None)
    if root is not None:
        datasets[root.name] = root
    folders = set()
    for dataset in datasets.values():
        for folder in dataset.distinct(F("filepath").rsplit("/", 1)[0]):
            if folder:
                folders.add(os.path.realpath(folder))
    return folders


def _media_overlap(target: str, folders: set[str]) -> str | None:
    """The first media folder that ``target`` (a real path) contains, equals or sits in."""
    probe = target
    while True:  # the target or one of its parents holds media
        if probe in folders:
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    inside = target.rstrip(os.sep) + os.sep
    return next((f for f in sorted(folders) if f.startswith(inside)), None)


def _read_manifest(folder):
    try:
        with open(os.path.join(folder, MANIFEST_JSON)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("samples_csv") == MANIFEST_CSV and "versions" in data:
        return data
    return None


def _count_files(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def previous_export_problem(folder: str) -> str | None:
    """Why the non-empty ``folder`` is not a previous export of ours (None if it is):
    it has our manifest, and holds nothing but what that export wrote (no entry the
    manifest does not list, no more files than it wrote)."""
    manifest = _read_manifest(folder)
    if manifest is None:
        return f"it holds no {MANIFEST_JSON} written by fiftyone-prune"
    written = manifest.get("entries")
    if written is not None:
        extra = sorted(set(os.listdir(folder)) - set(written))
        if extra:
            return (f"it holds {len(extra)} entries that the previous export did not write "
                    f"(e.g. {extra[:3]})")
    num_files = manifest.get("num_files")
    if num_files is not None:
        now = _count_files(folder)
        if now > num_files:
            return (f"it holds {now - num_files} more files than the previous export "
                    f"wrote (added since?)")
    return None


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_export_dir(samples, export_dir, overwrite: bool = False) -> str:
    """Checks that ``export_dir`` can receive an export of ``samples`` without losing
    anything; writes nothing.

    Args:
        samples: the view to export, or None to skip the media-folder check (for front
            ends that check the folder before the dataset exists)
        export_dir: the folder to export to
        overwrite (False): whether a previous fiftyone-prune export there may be replaced

    Returns:
        ``export_dir`` as an absolute path

    Raises:
        ParameterError: (``param="export_dir"``) naming the problem and the fix
    """
    if not isinstance(export_dir, str) or not export_dir:
        raise ParameterError("export_dir must be a directory path", "export_dir")
    target = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.islink(target):  # the folder it points to is the export target
        target = os.path.realpath(target)
    existing = _nearest_existing(target)
    if existing == target and not os.path.isdir(target):
        raise ParameterError(f"export_dir {target!r} is a file; choose a directory",
                             "export_dir")
    if not os.path.isdir(existing):
        raise ParameterError(
            f"export_dir {target!r} is under {existing!r}, which is a file, not a folder; "
            f"choose a directory path", "export_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(f"export_dir {target!r} can't be written: {existing!r} is "
                             f"read-only for this user; choose a writable folder",
                             "export_dir")
    real = os.path.realpath(target)
    clash = None if samples is None else _media_overlap(real, _media_folders(samples))
    if clash is not None:
        relation = ("is" if clash == real else
                    "contains" if clash.startswith(real.rstrip(os.sep) + os.sep) else "is inside")
        raise ParameterError(
            f"export_dir {target!r} {relation} the media folder {clash!r} of dataset "
            f"{samples._dataset.name!r}: an export there could overwrite or delete the "
            f"dataset's own images. Choose a folder outside the dataset's media folders",
            "export_dir")
    _check_replaceable(target, overwrite)
    return target


def _check_replaceable(target, overwrite):
    if os.path.isdir(target) and os.listdir(target):
        if not overwrite:
            raise ParameterError(
                f"Export directory {target!r} is not empty; choose an empty or new "
                f"directory, or pass overwrite=True to replace a previous fiftyone-prune "
                f"export there", "export_dir")
        problem = previous_export_problem(target)
        if problem is not None:
            raise ParameterError(
                f"overwrite=True replaces only a previous fiftyone-prune export, and "
                f"{target!r} is not one: {problem}. Nothing was deleted; choose another "
                f"folder or empty this one yourself", "export_dir")


# --- what is exported ----------------------------------------------------------------

_VIDEO_TYPES = ("UnlabeledVideoDataset", "LabeledVideoDataset", "VideoDirectory")
_IMAGE_TYPES = ("UnlabeledImageDataset", "LabeledImageDataset")


def _is(cls, names):
    import fiftyone.types as fot

    return any(issubclass(cls, getattr(fot, n)) for n in names)


def _check_format(view, cls):
    media = view.media_type
    if media == "image" and _is(cls, _VIDEO_TYPES):
        raise ParameterError(
            f"dataset_type {cls.__name__} is a video format and this collection holds "
            f"images; choose an image format, e.g. 'media', 'fiftyone', "
            f"'image_classification_tree' or 'coco'", "dataset_type")
    if media == "video" and _is(cls, _IMAGE_TYPES) and not _is(cls, ("VideoDirectory",)):
        raise ParameterError(
            f"dataset_type {cls.__name__} is an image format and this collection holds "
            f"videos; choose a video format, e.g. 'fiftyone' or 'VideoDirectory'",
            "dataset_type")
    if _is(cls, ("GeoJSONDataset",)) and not view.get_field_schema(
            embedded_doc_type=fo.GeoLocation):
        raise ParameterError(
            "dataset_type GeoJSONDataset needs a GeoLocation field and this collection has "
            "none; add locations (fo.GeoLocation) or choose another format", "dataset_type")


def _copies_media(cls, export_media) -> bool:
    if cls.__name__ in ("FiftyOneDataset", "MediaDirectory"):
        return True
    return export_media not in (False, "manifest")


def _check_media_exist(view):
    paths = view.distinct("filepath")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(paths)} media files to export do not exist "
            f"(e.g. {missing[:3]}); restore them or export a view without them, e.g. "
            f"view.exists('filepath').select_by('filepath', existing_paths)"
        )


# --- temporary folders -----------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_prefix(target):
    return f".{os.path.basename(target)}{_STAGING_TAG}"


def _owner(folder):
    try:
        with open(os.path.join(folder, STAGING_OWNER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _clean_leftovers(target) -> list[str]:
    """Removes the temporary folders that earlier exports to ``target`` left behind
    (killed mid-export or mid-swap). A folder whose owner process is still running on
    this host is left alone, and so is one of another host. If the target is missing
    and a swapped-out previous export survived, it is put back first."""
    parent, prefix = os.path.dirname(target), _staging_prefix(target)
    removed = []
    try:
        names = sorted(n for n in os.listdir(parent) if n.startswith(prefix))
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(parent, name)
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        owner = _owner(folder)
        if owner is None:
            if time.time() - os.path.getmtime(folder) < _ORPHAN_GRACE_S:
                continue  # perhaps being created by another export right now
        elif owner.get("host") != socket.gethostname() or _pid_alive(int(owner.get("pid", 0))):
            continue
        previous = os.path.join(folder, "previous")
        if not os.path.lexists(target) and _read_manifest(previous) is not None:
            os.rename(previous, target)  # killed between the two renames of a swap
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _make_staging(target) -> str:
    """A temporary folder beside ``target`` holding the owner file; the export itself
    goes in its ``export`` subfolder, so that FiftyOne writes into a new folder."""
    parent = os.path.dirname(target)
    try:
        staging = tempfile.mkdtemp(prefix=_staging_prefix(target), dir=parent)
        with open(os.path.join(staging, STAGING_OWNER), "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "target": target,
                       "started": time.time()}, f)
    except OSError as e:
        raise ValueError(f"export_dir {target!r} can't be written ({e.strerror}: "
                         f"{e.filename}); choose a writable folder") from e
    return staging


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the platform or the file system can't."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _swap_in(staging: str, target: str, overwrite: bool):
    """Puts the complete export ``staging/export`` at ``target``. The target is new,
    empty, or a previous export of ours: checked before the export started, and again
    here (another process may have written there meanwhile)."""
    _check_replaceable(target, overwrite)
    new = os.path.join(staging, "export")
    if os.path.isdir(target) and not os.listdir(target):
        os.rmdir(target)
    if not os.path.lexists(target):
        os.rename(new, target)
    elif not _exchange(new, target):
        # no atomic exchange here: the previous export goes into the staging folder
        # first (the next export puts it back if a kill lands between the renames)
        os.rename(target, os.path.join(staging, "previous"))
        os.rename(new, target)
    shutil.rmtree(staging)  # the owner file, and the previous export if there was one


# --- the export ----------------------------------------------------------------------

def export_kept_samples(view, export_dir: str, dataset_type=None, label_field=None,
                        overwrite: bool = False, selection: str | None = None,
                        export_media=True, progress=None, allow_stale: bool = False) -> dict:
    """Exports ``view`` (typically what :func:`select_samples` returned) to
    ``export_dir`` and writes a manifest beside the data.

    Args:
        view: the samples to export
        export_dir: the output directory: new or empty, or with ``overwrite=True`` a
            previous export of ours (anything else is refused, never deleted). It may
            not contain, equal or sit inside a folder holding the dataset's media
        dataset_type (None): ``"fiftyone"`` (default: lossless, keeps every field and score),
            ``"image_classification_tree"``, ``"image_classification_csv"``, ``"coco"``,
            ``"yolo"``, ``"voc"``, ``"media"`` (images only), or any
            ``fiftyone.types`` class / class name
        label_field (None): the label field to export (required by label formats)
        overwrite (False): replace a previous fiftyone-prune export in ``export_dir``; the
            previous export stays whole until the new one is complete
        selection (None): the selection name whose parameters go in the manifest (default:
            the selection run whose kept tag all samples of the view carry)
        export_media (True): passed to FiftyOne (True copies the images; ``"symlink"``,
            ``"manifest"`` and False also work; ``"move"`` is refused: it would take
            the images away from the dataset)
        progress (None): FiftyOne's ``progress`` argument of the export (True/False, or a
            callback from ``fo.report_progress``)
        allow_stale (False): export a selection whose scoring run was recomputed since (refused
            by default; an incomplete selection is always refused)

    Returns:
        a dict with the export directory, count and manifest paths

    The manifest is ``fiftyone_prune_manifest.json`` (selection and scoring parameters,
    counts, the entries the export wrote) and ``fiftyone_prune_manifest.csv`` (one row
    per sample: id, filepath, every prototype distance, label) in ``export_dir``;
    importers of every supported format ignore them. The export is written into a
    temporary folder beside ``export_dir`` and renamed into place when complete.

    Example::

        import fiftyone_prune as fop

        kept = fop.select_samples(dataset, "prototypes", keep=0.5, strategy="hard")
        out = fop.export_kept_samples(kept, "/tmp/prune-demo-kept",
                                      dataset_type="image_classification_tree",
                                      label_field="ground_truth")
        print(out["num_samples"], out["manifest"])
    """
    validation.check_collection(view, "view")
    validation.check_not_empty(view)
    cls = resolve_dataset_type(dataset_type)
    if export_media == "move":
        raise ParameterError("export_media='move' would take the images away from the "
                             "dataset (its filepaths would point nowhere); use True (copy) "
                             "or 'symlink'", "export_media")
    if label_field is not None and view.get_field(label_field) is None:
        raise ParameterError(f"Label field {label_field!r} does not exist in the view",
                             "label_field")
    needs = _NEEDS_LABELS.get(cls.__name__, False)
    if needs is not False and label_field is None:
        raise ParameterError(f"dataset_type {cls.__name__} needs label_field=",
                             "label_field")
    if needs is fo.Classification:
        validation.check_classification_field(view, label_field,
                                              required_by=f"dataset_type {cls.__name__}")
    _check_format(view, cls)
    sel_key, sel_cfg = (None, None)
    if selection is not None:
        sel_key = selection_names(selection)["run_key"]
        sel_cfg = runs.get_run_info(view, sel_key).config
    else:
        sel_key, sel_cfg = _find_selection(view)
    if sel_key is not None:  # complete, tags as recorded, and (unless allowed) not stale
        runs.check_selection_usable(view, sel_key, allow_stale)
    scoring = None
    if sel_cfg is not None and sel_cfg.run_key in runs.list_runs(view, "prototypes"):
        scoring = runs.run_params(view, sel_cfg.run_key)
        validation.check_run_fields(view, sel_cfg.run_key, runs.owned_fields(view, sel_cfg.run_key))
    if isinstance(export_dir, str) and export_dir:
        # first, so that a previous export a kill left aside is back before the checks
        _clean_leftovers(os.path.abspath(os.path.expanduser(export_dir)))
    target = check_export_dir(view, export_dir, overwrite)
    if _copies_media(cls, export_media):
        _check_media_exist(view)

    created = _nearest_existing(target)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    except OSError as e:
        raise ValueError(f"export_dir {target!r} can't be created ({e.strerror}); choose a "
                         f"writable folder") from e
    staging = _make_staging(target)
    try:
        kwargs = dict(export_dir=os.path.join(staging, "export"), dataset_type=cls,
                      progress=progress)
        if label_field is not None:
            kwargs["label_field"] = label_field
        if cls.__name__ != "FiftyOneDataset" and not issubclass(cls, fo.types.MediaDirectory):
            kwargs["export_media"] = export_media
        view.export(**kwargs)
        _write_manifest(view, os.path.join(staging, "export"), cls, label_field, sel_key,
                        sel_cfg, scoring)
        _swap_in(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created_parents(os.path.dirname(target), created)
        raise
    return {"export_dir": target, "num_samples": len(view), "dataset_type": cls.__name__,
            "manifest": os.path.join(target, MANIFEST_JSON),
            "manifest_csv": os.path.join(target, MANIFEST_CSV)}


def _remove_created_parents(folder, first_existing):
    """Removes the (empty) parent folders this export created, up to the first one that
    existed before."""
    while folder != first_existing and folder.startswith(first_existing):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


def _write_manifest(view, folder, cls, label_field, sel_key, sel_cfg, scoring):
    distance_fields = [f for f in view.get_field_schema()
                       if f.endswith("_distance") and isinstance(view.get_field(f), fo.FloatField)]
    columns = ["id", "filepath"] + distance_fields
    label_path = None
    if label_field is not None and isinstance(view.get_field(label_field), fo.EmbeddedDocumentField) \
            and view.get_field(label_field).document_type is fo.Classification:
        label_path = f"{label_field}.label"
    values = view.values(columns + ([label_path] if label_path else []))
    csv_path = os.path.join(folder, MANIFEST_CSV)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + (["label"] if label_path else []))
        writer.writerows(zip(*values))
    entries = sorted(set(os.listdir(folder)) | {MANIFEST_JSON})
    num_files = _count_files(folder) + (0 if os.path.exists(
        os.path.join(folder, MANIFEST_JSON)) else 1)
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
        "written_by": "fiftyone-prune",
        "entries": entries,
        "num_files": num_files,
    }
    json_path = os.path.join(folder, MANIFEST_JSON)
    with open(json_path, "w") as f:
        json.dump(manifest, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    return csv_path, json_path
