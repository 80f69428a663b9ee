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
import logging
import os
import shutil
import socket
import tempfile
import time

import fiftyone as fo
from fiftyone import ViewField as F

from fiftyone_prune.core.params import ParameterError
from fiftyone_prune.sdk import run_configs, runs, validation
from fiftyone_prune.sdk.advice import worth_of_selection
from fiftyone_prune.sdk.selection import selection_names

logger = logging.getLogger(__name__)

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
                 "CSVDataset": fo.Classification,
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


def newest_selection(samples) -> str | None:
    """The name of the selection registered last on the dataset of ``samples`` (the
    App's export form offers it first; the CLI exports it by default), or None."""
    dataset = samples._dataset

    def registered(key):
        stamp = dataset.get_run_info(key).timestamp
        return stamp.timestamp() if stamp is not None else 0.0

    keys = runs.list_runs(samples, "selection")
    if not keys:
        return None
    return runs.get_run_info(samples, max(keys, key=registered)).config.name


def _find_selection(view):
    """The selection run whose kept tag every sample of ``view`` carries, if any."""
    for key in runs.list_runs(view, "selection"):
        cfg = runs.get_run_info(view, key).config
        kept_tag = selection_names(cfg.name)["kept_tag"]
        labels = run_configs.selection_labels(cfg)
        if labels is not None:  # an object-level selection: its view of kept objects
            kept = run_configs.kept_view(view._dataset, cfg.name, labels)
            if (len(view) == len(kept) and view.count(f"{labels[0]}.id")
                    == view.count_label_tags().get(kept_tag, 0) == kept.count(f"{labels[0]}.id")):
                return key, cfg
            continue
        if (len(view.match_tags(kept_tag)) == len(view)
                and len(view._dataset.match_tags(kept_tag)) == len(view)):
            return key, cfg
    return None, None


# --- the target folder -------------------------------------------------------------

def _dataset_media_folders(dataset) -> set[str]:
    """The folders holding ``dataset``'s media, as stored (one ``distinct`` aggregation
    of the filepaths' folders per group slice, computed by MongoDB)."""
    if dataset.media_type == "group":
        collections = [dataset.select_group_slices(s) for s in dataset.group_slices]
    else:
        collections = [dataset]
    folders = set()
    for collection in collections:
        folders.update(f for f in collection.distinct(F("filepath").rsplit("/", 1)[0]) if f)
    return folders


def media_folders(samples=None) -> dict[str, str]:
    """Every folder that holds a media file of any dataset in the database, as a real
    path, with the name of a dataset whose media it holds (``samples``' own datasets
    first, so that a clash with them is named as theirs).

    Every dataset, not just the one exported: a dataset made from an earlier export (or
    from the folders an export would replace) must keep its images too.
    """
    names = []
    for collection in (getattr(samples, "_root_dataset", None),
                       getattr(samples, "_dataset", None)):
        if collection is not None and collection.name not in names:
            names.append(collection.name)
    names += [n for n in fo.list_datasets() if n not in names]
    folders: dict[str, str] = {}
    for name in names:
        try:
            dataset = fo.load_dataset(name)
            stored = _dataset_media_folders(dataset)
        except Exception as e:  # deleted meanwhile, or not loadable by this FiftyOne
            logger.warning("The media folders of dataset %r could not be read (%s); an "
                           "export does not know them", name, e)
            continue
        for folder in stored:
            folders.setdefault(os.path.realpath(folder), name)
    return folders


def _media_overlap(target: str, folders) -> str | None:
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

    The target (resolved by :func:`resolve_export_dir`) may not contain, equal or sit
    inside a folder holding media of any dataset in the database.

    Args:
        samples: the view to export (its datasets are named first in a clash), or None
            (for front ends that check the folder before the dataset exists)
        export_dir: the folder to export to
        overwrite (False): whether a previous fiftyone-prune export there may be replaced

    Returns:
        ``export_dir`` as an absolute path

    Raises:
        ParameterError: (``param="export_dir"``) naming the problem and the fix
    """
    target = resolve_export_dir(export_dir)
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
    folders = media_folders(samples)
    clash = _media_overlap(target, folders)
    if clash is not None:
        relation = ("is" if clash == target else
                    "contains" if clash.startswith(target.rstrip(os.sep) + os.sep)
                    else "is inside")
        shown = target if target == os.path.abspath(os.path.expanduser(export_dir)) \
            else f"{export_dir} (= {target})"
        raise ParameterError(
            f"export_dir {shown!r} {relation} the media folder {clash!r} of dataset "
            f"{folders[clash]!r}: an export there could overwrite or delete that "
            f"dataset's images. Choose a folder outside every dataset's media folders",
            "export_dir")
    _check_replaceable(target, overwrite)
    return target


def resolve_export_dir(export_dir) -> str:
    """The folder an export to ``export_dir`` writes to, as the operating system resolves
    it: absolute, every symlink followed, and a ``..`` taken after the symlink before it
    (``link/../x`` is beside the folder ``link`` points to, not beside ``link``).

    Raises:
        ParameterError: (``param="export_dir"``) when it is not a path
    """
    if not isinstance(export_dir, (str, os.PathLike)) or not str(export_dir).strip():
        raise ParameterError(
            f"export_dir must be the path of the folder to export to (a new or empty "
            f"folder outside every dataset's media folders, e.g. '/data/kept'), got "
            f"{export_dir!r}", "export_dir")
    return os.path.realpath(os.path.join(os.getcwd(), os.path.expanduser(str(export_dir))))


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
    counts, versions, the entries the export wrote) and ``fiftyone_prune_manifest.csv``
    (one row per sample: ``export_path``, the path of its media file inside the export
    as FiftyOne wrote it, renamed collisions included, or empty when the format copies
    none; ``id``; the source ``filepath``; a column per label field and per score and
    cluster field) in ``export_dir``; importers of every supported format ignore them. The export is written into a
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
    validation.check_not_empty(view, "view")
    cls = resolve_dataset_type(dataset_type)
    if export_media == "move":
        raise ParameterError("export_media='move' would take the images away from the "
                             "dataset (its filepaths would point nowhere); use True (copy) "
                             "or 'symlink'", "export_media")
    if export_media not in (True, False, "symlink", "manifest"):
        raise ParameterError(f"export_media={export_media!r} is not one of True (copy the "
                             f"images), False (labels only), 'symlink' or 'manifest'",
                             "export_media")
    if label_field is not None and view.get_field(label_field) is None:
        labels = sorted(view.get_field_schema(embedded_doc_type=fo.Label))
        raise ParameterError(f"Label field {label_field!r} does not exist in the view; "
                             f"label fields here: {labels or 'none'} (omit label_field "
                             f"for a format without labels)", "label_field")
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
        sel_key = runs.selection_key(view, selection)  # also a selection renamed by FiftyOne
        if sel_key not in runs.list_runs(view, "selection"):
            names = [getattr(runs.get_run_info(view, k).config, "name", k)
                     for k in runs.list_runs(view, "selection")]
            raise ParameterError(
                f"No selection named {selection!r} on dataset {view._dataset.name!r} "
                f"(selections: {names or 'none'}); make it with fop.select_samples(..., "
                f"name={selection!r}), or omit selection to export the newest",
                "selection")
        sel_cfg = runs.get_run_info(view, sel_key).config
    else:
        sel_key, sel_cfg = _find_selection(view)
    if sel_key is not None:  # complete, tags as recorded, and (unless allowed) not stale
        runs.check_selection_usable(view, sel_key, allow_stale)
    scoring = None
    if sel_cfg is not None and sel_cfg.run_key in runs.list_runs(view, "prototypes"):
        scoring = runs.run_params(view, sel_cfg.run_key)
        validation.check_run_fields(view, sel_cfg.run_key, runs.owned_fields(view, sel_cfg.run_key))
    # first, so that a previous export a kill left aside is back before the checks
    _clean_leftovers(resolve_export_dir(export_dir))
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
        export_root = os.path.join(staging, "export")
        exported = _export(view, cls, export_root, label_field, export_media, progress)
        _write_manifest(view, export_root, exported, cls, label_field, sel_key, sel_cfg,
                        scoring)
        _swap_in(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created_parents(os.path.dirname(target), created)
        raise
    return {"export_dir": target, "num_samples": len(view), "dataset_type": cls.__name__,
            "manifest": os.path.join(target, MANIFEST_JSON),
            "manifest_csv": os.path.join(target, MANIFEST_CSV)}


def _export(view, cls, export_root, label_field, export_media, progress) -> list[str]:
    """FiftyOne's export of ``view`` into ``export_root``; returns, per sample in the
    view's order, where its media file went inside the export ("" where the format
    copies none).

    FiftyOne renames colliding file names (``x.png``, ``x-2.png``...) as it goes, so
    the paths are taken from FiftyOne's own exporter as it writes: every built-in
    exporter hands each sample's media to its media exporter (``_media_exporter``),
    whose ``export`` returns the path it wrote. A format without one gets "".
    """
    import fiftyone.utils.data as foud

    kwargs = dict(export_dir=export_root)
    if cls.__name__ not in ("FiftyOneDataset", "MediaDirectory"):
        kwargs["export_media"] = export_media
    if cls.__name__ == "CSVDataset":  # by default FiftyOne writes the filepath alone
        kwargs["fields"] = {"filepath": "filepath", f"{label_field}.label": "label"}
    exporter, _ = foud.build_dataset_exporter(cls, **kwargs)
    written = []  # (the media given, the path written), in the order FiftyOne wrote them
    setup = exporter.setup

    def setup_and_record():
        setup()
        media_exporter = getattr(exporter, "_media_exporter", None)
        if media_exporter is None:
            return
        export = media_exporter.export

        def export_and_record(media_or_path, outpath=None):
            out = export(media_or_path, outpath=outpath)
            written.append((media_or_path, out[0]))
            return out

        media_exporter.export = export_and_record

    exporter.setup = setup_and_record
    view.export(dataset_exporter=exporter, label_field=label_field, progress=progress)
    return _paths_per_sample(view, written, export_root)


def _paths_per_sample(view, written, export_root) -> list[str]:
    """Each sample's exported path, relative to ``export_root``. FiftyOne exports the
    samples in the view's order, one media file each; that is checked against the
    recorded source paths, and where it does not hold (a format that writes each file
    once) every sample gets the first file written from its own source path."""
    filepaths = view.values("filepath")

    def inside(path):
        if not isinstance(path, str):
            return ""
        rel = os.path.relpath(path, export_root)
        return "" if rel.startswith(os.pardir) else rel.replace(os.sep, "/")

    if [source for source, _ in written] == filepaths:
        return [inside(out) for _, out in written]
    first = {}
    for source, out in written:
        first.setdefault(source, out)
    return [inside(first.get(p)) for p in filepaths]


def _remove_created_parents(folder, first_existing):
    """Removes the (empty) parent folders this export created, up to the first one that
    existed before."""
    while folder != first_existing and folder.startswith(first_existing):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


#: the label types whose labels are a list: the name of that list
_LABEL_LISTS = {fo.Classifications: "classifications", fo.Detections: "detections",
                fo.Polylines: "polylines", fo.Keypoints: "keypoints",
                fo.TemporalDetections: "detections"}


def _label_columns(view) -> dict[str, list]:
    """Every label field of ``view`` as a manifest column: the class label of a
    single label (Classification, Detection, ...), a JSON list of the class labels of a
    list of labels (Detections, Classifications, ...), the value of a Regression. Label
    types without a class label (Segmentation, Heatmap, GeoLocation) have no column."""
    columns = {}
    for name, field in view.get_field_schema(embedded_doc_type=fo.Label).items():
        doc = field.document_type
        if doc in _LABEL_LISTS:
            values = view.values(f"{name}.{_LABEL_LISTS[doc]}.label")
            columns[name] = [json.dumps(v) if v is not None else "" for v in values]
        elif doc is fo.Regression:
            columns[name] = view.values(f"{name}.value")
        elif hasattr(doc, "label"):
            columns[name] = view.values(f"{name}.label")
    return columns


def _score_columns(view) -> dict[str, list]:
    """The distance and cluster fields of every prototype-score run of the view; an
    object-level run's as a JSON list per sample, in the order of the label column of
    its objects."""
    columns = {}
    for key in runs.list_runs(view, "prototypes"):
        cfg = runs.get_run_info(view, key).config
        for field in (cfg.distance_field, cfg.cluster_field):
            if field and view.has_field(field) and field not in columns:
                values = view.values(field)
                if getattr(cfg, "in_lists", None):
                    values = [json.dumps(v) if v is not None else "" for v in values]
                columns[field] = values
    return columns


def _versions() -> dict:
    """What produced the export: the run record's versions, and torch/torchvision,
    which made the embeddings the scores come from."""
    from importlib import metadata

    versions = dict(runs.versions())
    for package in ("torch", "torchvision"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


#: why a manifest records no worth for an export that is not a selection
NO_SELECTION_WORTH = "the export is a view of your own, not a selection: it has no worth"
#: why a manifest records no worth for a selection no evaluation measured
NO_EVALUATION_WORTH = (
    "no evaluation with the scaling view measured this selection (same scoring run, "
    "strategy, balance, dedup and kept fraction): run evaluate_pruning(..., scaling=True) "
    "on its scoring run with this fraction, or 'fiftyone-prune evaluate', then export again")


def _manifest_worth(dataset, sel_key) -> dict:
    """What the exported selection is worth in random samples, as its stored evaluation
    measured it (:func:`fiftyone_prune.sdk.advice.worth_of_selection`; nothing is
    computed), or ``ratio`` None with the reason there is no number: a consumer of the
    export reads the evidence for (or against) the selection next to the files."""
    if sel_key is None:
        return dict(ratio=None, reason=NO_SELECTION_WORTH)
    worth = worth_of_selection(dataset, sel_key)
    if worth is None:
        return dict(ratio=None, reason=NO_EVALUATION_WORTH)
    return worth


def _write_manifest(view, folder, exported, cls, label_field, sel_key, sel_cfg, scoring):
    """``fiftyone_prune_manifest.csv``: one row per exported sample, its file's path in
    the export as FiftyOne wrote it (``export_path``), sample id, source filepath, every
    label field and every score and cluster; then the JSON manifest."""
    ids, filepaths = view.values(["id", "filepath"])
    columns = {"id": ids, "export_path": exported, "filepath": filepaths}
    for name, values in list(_label_columns(view).items()) + list(_score_columns(view).items()):
        columns.setdefault(name, values)
    csv_path = os.path.join(folder, MANIFEST_CSV)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*[["" if v is None else v for v in values]
                               for values in columns.values()]))
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
        "worth": _manifest_worth(view._dataset, sel_key),
        "samples_csv": MANIFEST_CSV,
        "versions": _versions(),
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
