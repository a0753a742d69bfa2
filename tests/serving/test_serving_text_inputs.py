"""Strings for a model whose signature is one unnamed string column (as
``mlflow.sentence_transformers`` logs it): MLflow takes such a column by position, so every
shape a client sends it in reaches the model as one column of strings — a plain list, a
one-column ``dataframe_split`` or records, an Open Inference Protocol v2 BYTES input in JSON or
in tritonclient's binary form — and a number is named as the wrong type. No model needed."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from serving import protocol, v2
from serving.errors import InputError
from serving.schema import Signature, validate

TEXT = Signature.from_mlmodel({"signature": {"inputs": '[{"type": "string", "required": true}]'}})
TEXTS = ["hello world", "Déjà vu ☕", ""]


def strings(batch) -> list[str]:
    return batch.as_matrix()[:, 0].tolist()


def mlflow_batch(doc: dict):
    table, _, _ = protocol.parse_mlflow_json(orjson.dumps(doc))
    return validate(table, TEXT)


def v2_batch(body: bytes, header: int | None = None):
    return validate(v2.parse(body, header, TEXT.name_set).table, TEXT)


def test_the_unnamed_string_column_takes_every_request_shape():
    assert not TEXT.named and TEXT.names == ["0"]
    assert strings(mlflow_batch({"inputs": TEXTS})) == TEXTS
    assert strings(mlflow_batch({"instances": TEXTS})) == TEXTS
    assert strings(mlflow_batch({"dataframe_split": {"columns": ["text"],
                                                     "data": [[t] for t in TEXTS]}})) == TEXTS
    assert strings(mlflow_batch({"dataframe_records": [{"sentence": t} for t in TEXTS]})) == TEXTS
    assert strings(mlflow_batch({"inputs": {"text": TEXTS}})) == TEXTS
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]}
    assert strings(v2_batch(orjson.dumps(doc))) == TEXTS
    doc["inputs"][0].update(shape=[3, 1], data=[[t] for t in TEXTS])
    assert strings(v2_batch(orjson.dumps(doc))) == TEXTS


def test_binary_bytes_from_tritonclient():
    blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in TEXTS)
    header = orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                                       "parameters": {"binary_data_size": len(blob)}}]})
    assert strings(v2_batch(header + blob, len(header))) == TEXTS


@pytest.mark.parametrize("doc", [
    {"inputs": [1, 2]},
    {"dataframe_split": {"columns": ["text"], "data": [[1.5]]}},
    {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
])
def test_a_number_is_named_as_the_wrong_type(doc):
    with pytest.raises(InputError, match="string"):
        if "inputs" in doc and isinstance(doc["inputs"][0], dict):
            v2_batch(orjson.dumps(doc))
        else:
            mlflow_batch(doc)


def test_named_string_columns_keep_their_names():
    named = Signature.from_specs([{"name": "review", "type": "string"}])
    assert named.named
    with pytest.raises(InputError, match="missing required column 'review'"):
        mlflow_batch_named = protocol.parse_mlflow_json(orjson.dumps(
            {"dataframe_split": {"columns": ["text"], "data": [["x"]]}}))[0]
        validate(mlflow_batch_named, named)
    assert np.asarray(validate(protocol.parse_mlflow_json(orjson.dumps(
        {"dataframe_records": [{"review": "ok"}]}))[0], named).columns["review"]).tolist() == ["ok"]


MLMODEL = {"flavors": {"python_function": {"loader_module": "mlflow.sentence_transformers",
                                           "data": "model.sentence_transformer"},
                       "sentence_transformers": {"sentence_transformers_version": "6.3.0"}}}


def test_load_failures_of_a_sentence_transformers_model_in_plain_words():
    """The reasons the version's status shows (the flavor module is looked up from MLmodel;
    torch is not imported for this)."""
    from serving import flavors

    assert flavors.flavor_of(MLMODEL) == "sentence_transformers"
    missing = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert "'torch', which is not in its requirements.txt" in flavors.explain(missing, MLMODEL)
    offline = OSError("We couldn't connect to 'https://huggingface.co' to load the files, and "
                      "couldn't find them in the cached files. You are in offline mode.")
    assert "replicas have no network" in flavors.explain(offline, MLMODEL)
    assert "pin sentence-transformers==6.3.0" in flavors.explain(
        AttributeError("'Pooling' object has no attribute 'x'"), MLMODEL)
    assert flavors.explain(ValueError("something else"), MLMODEL) is None
