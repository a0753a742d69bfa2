"""Open Inference Protocol (v2) traffic becomes the right rows and features.

The requests are built by tritonclient itself (``generate_request_body``: JSON, and its default
binary tensor extension), read by the model server's own parser (``serving.v2.parse``), logged
as the replica logs them (``serving.shipping.encode_record``), stored through the ingest service
and rolled up — only the HTTP hop between replica and platform is left out (tested in
tests/serving/test_v2_tritonclient.py and tests/monitoring/test_ingest.py).
"""

from __future__ import annotations

import time

import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton

from registry import reference
from registry.models import RegisteredModel
from serving import shipping, v2
from tests.fixtures import bearer_client

from .conftest import ingest_direct, make_deployment, make_version, roll

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
pytestmark = pytest.mark.django_db


def logged(inputs: list, request_id: str) -> dict:
    """One request as the replica's prediction log record (serving/app.py's choice: the JSON
    body verbatim, or the decoded tensors of a binary request)."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs)
    request = v2.parse(body, json_size, set(COLUMNS))
    n = len(request.table.rows) if hasattr(request.table, "rows") \
        else len(next(iter(request.table.data.values())))
    record = (request_id, time.time(), 1.0, 200, "v2_infer",
              body if request.verbatim else request.logged, np.zeros(n, dtype=np.int64), None)
    return orjson.loads(shipping.encode_record(record))


def tensor(name: str, values: np.ndarray, binary: bool) -> triton.InferInput:
    t = triton.InferInput(name, list(values.shape), "FP32")
    t.set_data_from_numpy(values, binary_data=binary)
    return t


def test_n_by_4_tensors_are_n_rows_of_the_signature_columns(team, engineer, viewer):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(2000, 4)), columns=COLUMNS)
    model = RegisteredModel.objects.create(name="iris-v2", team=team, created_by=engineer)
    version = make_version(model, 1, stats=reference.compute(frame, source="reference_data"))
    deployment = make_deployment(team, model, version, name="iris-v2-prod")
    binary = rng.normal(size=(37, 4)).astype(np.float32)
    as_json = rng.normal(size=(25, 4)).astype(np.float32)
    by_column = rng.normal(size=(11, 4)).astype(np.float32)
    records = [
        logged([tensor("input-0", binary, binary=True)], "binary"),
        logged([tensor("input-0", as_json, binary=False)], "json"),
        logged([tensor(c, by_column[:, i], binary=True) for i, c in enumerate(COLUMNS)],
               "columns"),
    ]
    assert records[0]["inputs"][0]["shape"] == [37, 4]  # decoded, not bytes
    ingest_direct(deployment, records)
    roll()
    response = bearer_client(viewer).get("/api/v1/deployments/iris-v2-prod/drift/")
    assert response.status_code == 200, response.content
    body = response.json()
    total = 37 + 25 + 11
    assert body["rows"] == total
    features = {f["feature"]: f for f in body["features"]}
    assert set(features) == set(COLUMNS)
    assert {f["n"] for f in features.values()} == {total}
