"""The PostgreSQL paths: ingest by COPY (escaping, atomicity) and rollup sums in SQL."""

from __future__ import annotations

import orjson
import pytest
from rest_framework.test import APIClient

from monitoring import ingest
from monitoring.models import PredictionRecord
from tests.fixtures import bearer_client

from .conftest import batch, minutes_ago, record, roll

pytestmark = pytest.mark.postgres
URL = "/api/v1/ingest/predictions/"


def post(body: dict, token: str):
    return APIClient().generic("POST", URL, orjson.dumps(body), content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {token}")


def test_copy_round_trips_awkward_values(deployment, ingest_token):
    awkward = 'tab\there, newline\nthere, back\\slash, "quotes", ünïcödé ✓, \\N'
    records = [record(0, minutes_ago(1), request_id="id\\with\ttab")]
    records[0]["inputs"] = {"columns": ["x1", "x2", "color"], "data": [[1.5, 2.0, awkward]]}
    records[0]["outputs"] = [awkward]
    records[0]["error"] = awkward
    records.append({**record(1, minutes_ago(1)), "timestamp": "2026-11-24T01:00:00"})
    assert post(batch(records), ingest_token).status_code == 202
    stored = PredictionRecord.objects.get(request_id="id\\with\ttab")
    assert stored.inputs["data"][0][2] == awkward
    assert stored.outputs == [awkward] and stored.error == awkward
    naive = PredictionRecord.objects.exclude(pk=stored.pk).get()
    assert naive.timestamp.utcoffset().total_seconds() == 0 and naive.timestamp.hour == 1


def test_a_nul_character_is_stored_as_the_replacement_character_not_refused(deployment,
                                                                            ingest_token):
    """PostgreSQL text and jsonb cannot hold U+0000; one odd request must not cost the
    replica its whole batch (it used to: a 400 for all 1,000 records)."""
    records = [record(i, minutes_ago(1)) for i in range(5)]
    records[1]["inputs"] = {"columns": ["note"], "data": [["a \u0000 b"]]}
    records[2]["outputs"] = ["nul \u0000 char", "escaped \\u0000 stays text"]
    records[3]["error"] = "bad \u0000 byte"
    records[4]["request_id"] = "id-\u0000"
    response = post(batch(records), ingest_token)
    assert response.status_code == 202, response.content
    assert PredictionRecord.objects.count() == 5
    stored = {r.request_id: r for r in PredictionRecord.objects.all()}
    assert stored[records[1]["request_id"]].inputs["data"] == [["a \ufffd b"]]
    assert stored[records[2]["request_id"]].outputs == ["nul \ufffd char",
                                                        "escaped \\u0000 stays text"]
    assert stored[records[3]["request_id"]].error == "bad \ufffd byte"
    assert "id-\ufffd" in stored


def test_sql_step_sums_match(deployment, viewer):
    t0 = minutes_ago(20)
    from datetime import timedelta

    records = [record(i, t0 + timedelta(minutes=i % 10), latency=5 + i % 50,
                      status=500 if i % 20 == 0 else 200, prediction=i % 3) for i in range(400)]
    token = ingest.issue_ingest_token(deployment=deployment)
    assert post(batch(records), token).status_code == 202
    roll()
    body = bearer_client(viewer).get("/api/v1/deployments/churn-prod/metrics/",
                                     {"start": (t0 - timedelta(minutes=1)).isoformat(),
                                      "step": 120}).json()
    assert sum(body["requests"]) == 400
    assert sum(body["errors"]) == 20
    assert {k: sum(v) for k, v in body["predictions"]["classes"].items()} == \
        {"0": 127, "1": 127, "2": 126}
    drift = bearer_client(viewer).get("/api/v1/deployments/churn-prod/drift/").json()
    assert {f["feature"] for f in drift["features"]} == {"x1", "x2", "color"}
