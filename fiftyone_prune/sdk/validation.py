"""Checks shared by every SDK entry point and front end: each raises a ``ValueError``
that names the problem and the fix, before any work starts. Checks about one argument
raise :class:`~fiftyone_prune.core.params.ParameterError` naming it (``.param``), so the
App marks exactly that input invalid."""

from __future__ import annotations

import re

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_prune.core.params import ParameterError

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_collection(samples, what: str = "samples", images: bool = False) -> None:
    if not isinstance(samples, foc.SampleCollection):
        hint = (f" (for the dataset named {samples!r}, pass fo.load_dataset({samples!r}))"
                if isinstance(samples, str) else "")
        raise TypeError(
            f"{what} must be a FiftyOne dataset or view, got {type(samples).__name__}{hint}"
        )
    if images and samples.media_type not in ("image", None):
        raise ValueError(
            f"Only image datasets are supported; this collection's media type is "
            f"{samples.media_type!r}"
        )


def check_not_empty(samples, param: str = "samples") -> None:
    """``samples`` holds at least one sample.

    Raises:
        ParameterError: (``.param=param``, a ``ValueError``) naming the fix
    """
    if len(samples) == 0:
        if isinstance(samples, fo.Dataset):
            raise ParameterError(f"The dataset {samples.name!r} is empty (0 samples): add "
                                 f"samples first (e.g. dataset.add_images_dir(...))", param)
        raise ParameterError(
            f"The view is empty (0 samples): pass a view that selects at least one sample "
            f"(e.g. the whole dataset)", param)


def field_name_problem(name) -> str | None:
    """Why ``name`` can't be a new top-level field, or None."""
    if not isinstance(name, str) or not name:
        return "a field name must be a non-empty string"
    if not _NAME_RE.match(name):
        return (
            f"{name!r} is not a valid field name: use letters, digits and underscores, "
            f"starting with a letter"
        )
    return None


def check_new_field(samples, name: str, field_type, what: str, param: str | None = None
                    ) -> None:
    """``name`` is a valid field name, and either absent or already of ``field_type``.

    Args:
        samples: the dataset or view the field would be added to
        name: the new field's name
        field_type: the FiftyOne field class an existing field must already be
        what: how the message calls the field (``"embeddings field"``)
        param (None): the SDK argument the name came from (default: ``what`` with
            underscores, e.g. ``"embeddings_field"``)

    Raises:
        ParameterError: (``.param``) when the name is invalid or taken by another type
    """
    param = param or what.replace(" ", "_")
    problem = field_name_problem(name)
    if problem:
        raise ParameterError(f"Invalid {what}: {problem}", param)
    existing = samples.get_field(name)
    if existing is not None and not isinstance(existing, field_type):
        raise ParameterError(
            f"Field {name!r} already exists as a {type(existing).__name__}, not a "
            f"{field_type.__name__}; choose another {what} (nothing is overwritten)", param)


def check_run_key(key, param: str = "run_key") -> None:
    """``key`` can name a run (a Python identifier, as FiftyOne's run keys must be).

    Raises:
        ParameterError: (``.param=param``) naming the key and an example
    """
    if not isinstance(key, str) or not _NAME_RE.match(key):
        raise ParameterError(
            f"Invalid run key {key!r}: a run key must be a valid Python identifier "
            f"(letters, digits, underscores, starting with a letter), e.g. 'prototypes'",
            param)


def check_classification_field(samples, label_field, param: str = "label_field",
                               required_by: str | None = None) -> str:
    """``label_field`` is a ``fo.Classification`` field of ``samples``: the one check
    behind every label argument (scoring, class balance, evaluation, export, the App).

    Args:
        samples: the dataset or view
        label_field: the field name, or None
        param ("label_field"): the SDK argument it came from, carried by the error
        required_by (None): what needs the field (``"balance='class'"``), for the
            message when ``label_field`` is None; None means a missing field is an
            error without that explanation

    Returns:
        ``label_field``

    Raises:
        ParameterError: (``.param=param``) when it is None, absent, or another type;
            the message lists the Classification fields that exist
    """
    here = f"Classification fields here: {classification_fields(samples) or 'none'}"
    if label_field is None:
        need = f"{required_by} needs" if required_by else "Pass"
        raise ParameterError(f"{need} {param}= (a Classification field); {here}", param)
    field = samples.get_field(label_field) if isinstance(label_field, str) else None
    if field is None:
        raise ParameterError(f"Label field {label_field!r} does not exist; {here}", param)
    if not (isinstance(field, fo.EmbeddedDocumentField)
            and field.document_type is fo.Classification):
        raise ParameterError(
            f"Label field {label_field!r} is a {_describe(field)}, not a Classification "
            f"field; {here}", param)
    return label_field


def _describe(field) -> str:
    if isinstance(field, fo.EmbeddedDocumentField):
        return f"{field.document_type.__name__} field"
    return type(field).__name__


def vector_fields(samples) -> list[str]:
    """Top-level fields that can hold embeddings (VectorField / ArrayField)."""
    schema = samples.get_field_schema()
    return sorted(
        name for name, f in schema.items() if isinstance(f, (fo.VectorField, fo.ArrayField))
    )


def object_vector_fields(samples) -> list[str]:
    """Vector fields inside labels (``"gt.detections.emb"``): the object-level vectors
    that ``compute_embeddings(patches_field=...)`` writes, one per label."""
    schema = samples.get_field_schema(flat=True)
    return sorted(p for p, f in schema.items()
                  if "." in p and isinstance(f, (fo.VectorField, fo.ArrayField)))


def check_embeddings_field(samples, embeddings_field, param: str = "embeddings_field",
                           reader: str = "scoring") -> str:
    """``embeddings_field`` is a top-level vector field of ``samples``: one vector per
    sample, what scoring and the linear probe read.

    Object-level vectors (``compute_embeddings(patches_field=...)`` stores one per label,
    e.g. ``"gt.detections.emb"``) exist but are not per-sample: they are named as such,
    with the fix (embed the images into a field of their own), instead of "compute
    embeddings first".

    Args:
        samples: the dataset or view
        embeddings_field: the field name
        param ("embeddings_field"): the SDK argument it came from
        reader ("scoring"): what reads the field, for the message

    Returns:
        ``embeddings_field``

    Raises:
        ParameterError: (``.param=param``) naming the problem, the vector fields that
            exist and the fix
    """
    here = f"vector fields here: {vector_fields(samples) or 'none'}"
    if not isinstance(embeddings_field, str) or not embeddings_field:
        raise ParameterError(f"{param} must be the name of a vector field, got "
                             f"{embeddings_field!r}; {here}", param)
    objects = object_vector_fields(samples)
    matches = [p for p in objects
               if p == embeddings_field or p.rsplit(".", 1)[-1] == embeddings_field]
    if matches:
        parent = matches[0].rsplit(".", 1)[0].split(".")[0]
        name = matches[0].rsplit(".", 1)[-1]
        raise ParameterError(
            f"{embeddings_field!r} holds object-level vectors ({matches[0]!r}: one per "
            f"label of {parent!r}, from compute_embeddings(patches_field={parent!r})), "
            f"not one per sample: {reader} reads one vector per sample, not object "
            f"vectors. Embed the images into a field of their own, e.g. "
            f"fop.compute_embeddings(dataset, embeddings_field='{name}_image'), and pass "
            f"that field ({here})"
            + (f"; or score each object: patches_field={parent!r}, embeddings_field="
               f"{name!r}" if reader == "scoring" else ""), param)
    field = samples.get_field(embeddings_field)
    if field is None:
        raise ParameterError(
            f"Embeddings field {embeddings_field!r} does not exist; compute it with "
            f"fop.compute_embeddings(dataset, embeddings_field={embeddings_field!r}) or "
            f"pass one of the {here}", param)
    if not isinstance(field, (fo.VectorField, fo.ArrayField)):
        raise ParameterError(
            f"Field {embeddings_field!r} is a {_describe(field)}, not a vector field; "
            f"pass one of the {here}", param)
    return embeddings_field


def patches_list_path(samples, patches_field, param: str = "patches_field"
                      ) -> tuple[str, bool]:
    """The labels' path of the Detection or Detections field ``patches_field`` and
    whether it holds one label per sample: ``("gt.detections", False)``,
    ``("box", True)``.

    Raises:
        ParameterError: (``.param=param``) naming the field's type and the label fields
            that would do
    """
    field = samples.get_field(patches_field) if isinstance(patches_field, str) else None
    doc = getattr(field, "document_type", None)
    if doc is fo.Detections:
        return f"{patches_field}.detections", False
    if doc is fo.Detection:
        return patches_field, True
    choices = sorted(samples.get_field_schema(embedded_doc_type=fo.Detections)) + sorted(
        samples.get_field_schema(embedded_doc_type=fo.Detection))
    raise ParameterError(
        f"{param}={patches_field!r} must be a Detection or Detections field; it is "
        f"{_describe(field) if field is not None else 'missing'} (Detection(s) fields "
        f"here: {choices or 'none'})", param)


def object_vector_attributes(samples, patches_field) -> list[str]:
    """The vector attributes of the labels of ``patches_field`` (``"emb"`` for
    ``"gt.detections.emb"``): what object-level scoring can read."""
    list_path, _ = patches_list_path(samples, patches_field)
    builtin = set(fo.Detection._fields)  # e.g. "mask", an array but not a vector
    return sorted(name for p in object_vector_fields(samples)
                  if p.startswith(list_path + ".")
                  and "." not in (name := p[len(list_path) + 1:]) and name not in builtin)


def check_object_embeddings(samples, patches_field, embeddings_field,
                            param: str = "embeddings_field") -> tuple[str, bool]:
    """``embeddings_field`` is a vector attribute of the labels of ``patches_field``
    (what ``compute_embeddings(patches_field=...)`` writes). Returns the labels' path
    and whether it holds one label per sample (:func:`patches_list_path`).

    Raises:
        ParameterError: naming the wrong argument and the label vectors that exist
    """
    list_path, single = patches_list_path(samples, patches_field)
    found = object_vector_attributes(samples, patches_field)
    if embeddings_field not in found:
        raise ParameterError(
            f"The labels of {patches_field!r} have no vector attribute {embeddings_field!r} "
            f"(vector attributes there: {found or 'none'}); embed each object with "
            f"fop.compute_embeddings(dataset, embeddings_field={embeddings_field!r}, "
            f"patches_field={patches_field!r})", param)
    return list_path, single


def classification_fields(samples) -> list[str]:
    schema = samples.get_field_schema(embedded_doc_type=fo.Classification)
    return sorted(schema)


def check_run_fields(samples, run_key: str, fields) -> None:
    """Every field that run ``run_key`` wrote still exists (one deleted by hand would
    make a reader see no scores, or a manifest describe values that are gone)."""
    schema = samples._dataset.get_field_schema(flat=True)  # and object-level fields
    gone = [f for f in fields if f not in schema]
    if gone:
        raise ValueError(
            f"Run {run_key!r} wrote field(s) {gone} that no longer exist on dataset "
            f"{samples._dataset.name!r} (deleted by hand?); rescore with "
            f"compute_prototype_scores(..., run_key={run_key!r}, overwrite=True), or "
            f"remove the run with fop.delete_run(dataset, {run_key!r})"
        )
