"""Operators called through FiftyOne's real operator machinery (plugin registered via
FIFTYONE_PLUGINS_DIR, real datasets)."""

import pytest

import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionError

URI = "@fiftyone-prune/prune/"


def test_compute_embeddings_operator_from_python(digits_dataset):
    op = foo.get_operator(URI + "compute_embeddings")
    result = op(digits_dataset.limit(5), model="efficientnet_lite0", embeddings_field="emb",
                batch_size=5)
    assert result["num_embedded"] == 5
    assert digits_dataset.count("emb") == 5


def test_compute_embeddings_form_refuses_a_field_of_another_type(digits_dataset):
    with pytest.raises(ExecutionError, match="already exists as a EmbeddedDocumentField"):
        foo.execute_operator(
            URI + "compute_embeddings", {"view": digits_dataset.view()},
            params={"model": "efficientnet_lite0", "embeddings_field": "ground_truth"},
        )
    assert "emb" not in digits_dataset.get_field_schema()
    with pytest.raises(Exception, match="not a valid field name"):
        foo.get_operator(URI + "compute_embeddings")(digits_dataset, model="efficientnet_lite0",
                                                      embeddings_field="1bad")
