"""Checks shared by every SDK entry point and front end: each raises a ``ValueError``
that names the problem and the fix, before any work starts."""

from __future__ import annotations

import re

import fiftyone as fo
import fiftyone.core.collections as foc

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_collection(samples, what: str = "samples", images: bool = False) -> None:
    if not isinstance(samples, foc.SampleCollection):
        raise TypeError(
            f"{what} must be a FiftyOne dataset or view, got {type(samples).__name__}"
        )
    if images and samples.media_type not in ("image", None):
        raise ValueError(
            f"Only image datasets are supported; this collection's media type is "
            f"{samples.media_type!r}"
        )


def check_not_empty(samples) -> None:
    if len(samples) == 0:
        raise ValueError(
            "The view is empty: select at least one sample (or pass the whole dataset)"
        )


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


def check_new_field(samples, name: str, field_type, what: str) -> None:
    """``name`` is a valid field name, and either absent or already of ``field_type``."""
    problem = field_name_problem(name)
    if problem:
        raise ValueError(f"Invalid {what}: {problem}")
    existing = samples.get_field(name)
    if existing is not None and not isinstance(existing, field_type):
        raise ValueError(
            f"Field {name!r} already exists as a {type(existing).__name__}, not a "
            f"{field_type.__name__}; choose another {what} (nothing is overwritten)"
        )


def check_run_key(key) -> None:
    if not isinstance(key, str) or not _NAME_RE.match(key):
        raise ValueError(
            f"Invalid run key {key!r}: a run key must be a valid Python identifier "
            f"(letters, digits, underscores, starting with a letter), e.g. 'prototypes'"
        )


def vector_fields(samples) -> list[str]:
    """Top-level fields that can hold embeddings (VectorField / ArrayField)."""
    schema = samples.get_field_schema()
    return sorted(
        name for name, f in schema.items() if isinstance(f, (fo.VectorField, fo.ArrayField))
    )


def classification_fields(samples) -> list[str]:
    schema = samples.get_field_schema(embedded_doc_type=fo.Classification)
    return sorted(schema)


def check_run_fields(samples, run_key: str, fields) -> None:
    """Every field that run ``run_key`` wrote still exists (one deleted by hand would
    make a reader see no scores, or a manifest describe values that are gone)."""
    schema = samples._dataset.get_field_schema()
    gone = [f for f in fields if f not in schema]
    if gone:
        raise ValueError(
            f"Run {run_key!r} wrote field(s) {gone} that no longer exist on dataset "
            f"{samples._dataset.name!r} (deleted by hand?); rescore with "
            f"compute_prototype_scores(..., run_key={run_key!r}, overwrite=True), or "
            f"remove the run with fop.delete_run(dataset, {run_key!r})"
        )
