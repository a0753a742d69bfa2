"""The ingest endpoint: authentication per deployment, whole-batch validation, sampling."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from rest_framework.test import APIClient

from monitoring import services
from monitoring.models import IngestToken, PredictionRecord
from serving.shipping import Shipper

from .conftest import batch, minutes_ago, record, roll

URL = "/api/v1/ingest/predictions/"


def post(body, token: str | None, **extra):
    client = APIClient()
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.generic("POST", URL, raw, content_type="application/json", **headers, **extra)


def test_token_is_stored_only_as_its_digest(deployment):
    token = services.issue_ingest_token(deployment=deployment)
    row = IngestToken.objects.get(deployment=deployment)
    assert token.startswith("mpi_")
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {row.digest, row.prefix}
    assert services.authenticate_ingest(f"Bearer {token}") == row


def test_a_batch_shaped_like_the_model_servers_is_stored(deployment, ingest_token):
    shipper = Shipper(buffer=None, url="http://unused", envelope={
        "deployment": "churn-prod", "revision": "1", "replica": "churn-prod-r1-0"})
    now = minutes_ago(1).timestamp()
    body = shipper.encode([
        ("req-a", now, 12.5, 200, "invocations",
         {"columns": ["x1", "x2", "color"], "data": [[0.1, 2.0, "red"]]}, [1], None),
        ("req-b", now, 3.0, 500, "invocations", {"instances": [[0.2, 1.0, "blue"]]}, None,
         "prediction failed: boom"),
    ])
    response = post(body, ingest_token)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 2, "sampled_out": 0, "sampling_rate": 1.0}
    stored = {r.request_id: r for r in PredictionRecord.objects.all()}
    assert stored["req-a"].latency_ms == 12.5 and stored["req-a"].outputs == [1]
    assert stored["req-b"].status == 500 and stored["req-b"].error.startswith("prediction")
    assert stored["req-a"].revision == 1 and stored["req-a"].replica == "churn-prod-r1-0"


def test_request_and_response_bodies_logged_verbatim_roll_up_like_parsed_ones(
        deployment, ingest_token):
    """The model server splices JSON request bodies (every MLflow format, params included) and
    its ``{"predictions": …}`` responses into the batch as sent; rollups read them alike."""
    from monitoring.models import FeatureSketch, MinuteRollup

    shipper = Shipper(buffer=None, url="http://unused", envelope={"deployment": "churn-prod"})
    now = minutes_ago(1).timestamp()
    bodies = [
        b'{"dataframe_split": {"columns": ["x1", "x2", "color"], "data": [[0.1, 2.0, "red"]]}}',
        b'{"dataframe_records": [{"x1": 0.2, "x2": 1.0, "color": "red"}], "params": {"k": 1}}',
        b'{\n  "instances": [[0.3, 1.5, "blue"]]\n}',
        b'{"inputs": {"x1": [0.4], "x2": [1.1], "color": ["green"]}}',
    ]
    records = [(f"v-{i}".encode(), now, 2.0, 200, "invocations", b, b'{"predictions":[1]}',
                None) for i, b in enumerate(bodies)]
    # CSV arrives as the parsed table (the replica cannot splice CSV text into JSON).
    records.append(("csv", now, 2.0, 200, "invocations",
                    {"columns": ["x1", "x2", "color"], "data": [["0.5", "1.0", "red"]]},
                    b'{"predictions":[0]}', None))
    response = post(shipper.encode(records), ingest_token)
    assert response.status_code == 202, response.content
    assert PredictionRecord.objects.get(request_id="v-0").inputs == orjson.loads(bodies[0])
    assert PredictionRecord.objects.get(request_id="v-0").outputs == [1]
    assert roll() == 5
    rollup = MinuteRollup.objects.get()
    assert rollup.predictions["classes"] == {"1": 4, "0": 1}
    colors = FeatureSketch.objects.get().features["color"]["counts"]
    assert colors == {"red": 3, "blue": 1, "green": 1}


@pytest.mark.parametrize("header", [None, "Bearer mpi_nope_nope", "Bearer mpt_user_token",
                                    "Basic abc"])
def test_missing_or_wrong_token_is_401(deployment, header):
    client = APIClient()
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.generic("POST", URL, orjson.dumps(batch([record(1, minutes_ago(1))])),
                              content_type="application/json", **kwargs)
    assert response.status_code == 401
    assert PredictionRecord.objects.count() == 0


def test_revoked_token_is_401(deployment, ingest_token):
    services.revoke_ingest_tokens(deployment=deployment)
    assert post(batch([record(1, minutes_ago(1))]), ingest_token).status_code == 401


def test_token_of_another_deployment_is_401_and_unknown_deployment_404(
        deployment, other_deployment, ingest_token):
    response = post(batch([record(1, minutes_ago(1))], deployment="other-dep"), ingest_token)
    assert response.status_code == 401
    response = post(batch([record(1, minutes_ago(1))], deployment="no-such"), ingest_token)
    assert response.status_code == 404
    assert PredictionRecord.objects.count() == 0


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[1, 2]",
    orjson.dumps({"deployment": "churn-prod", "records": "nope"}),
])
def test_malformed_batches_are_400(deployment, ingest_token, body):
    assert post(body, ingest_token).status_code == 400


@pytest.mark.parametrize("bad", [
    {"request_id": 5},
    {"timestamp": "yesterday"},
    {"latency_ms": -1},
    {"latency_ms": "fast"},
    {"status": 42},
])
def test_one_bad_record_rejects_the_whole_batch(deployment, ingest_token, bad):
    records = [record(i, minutes_ago(1)) for i in range(10)]
    records[7] = {**records[7], **bad}
    response = post(batch(records), ingest_token)
    assert response.status_code == 400
    assert "records[7]" in response.json()["detail"]
    assert PredictionRecord.objects.count() == 0


def test_oversized_batches_are_413(deployment, ingest_token, settings):
    settings.MODELPORT_INGEST_MAX_RECORDS = 5
    response = post(batch([record(i, minutes_ago(1)) for i in range(6)]), ingest_token)
    assert response.status_code == 413
    settings.MODELPORT_INGEST_MAX_RECORDS = 1000
    settings.MODELPORT_INGEST_MAX_BYTES = 2048
    response = post(batch([record(i, minutes_ago(1)) for i in range(50)]), ingest_token)
    assert response.status_code == 413
    assert PredictionRecord.objects.count() == 0


def test_a_failed_write_leaves_nothing(deployment, ingest_token, monkeypatch):
    def explode(rows):
        PredictionRecord.objects.bulk_create([PredictionRecord(
            deployment=deployment, request_id="half", timestamp=minutes_ago(1),
            received_at=minutes_ago(1))])
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "_write", explode)
    client = APIClient(raise_request_exception=False)
    response = client.generic("POST", URL, orjson.dumps(batch([record(1, minutes_ago(1))])),
                              content_type="application/json",
                              HTTP_AUTHORIZATION=f"Bearer {ingest_token}")
    assert response.status_code == 500
    assert PredictionRecord.objects.count() == 0


def test_sampling_rate_keeps_a_deterministic_share(deployment, ingest_token, engineer):
    services.set_sampling_rate(actor=engineer, deployment=deployment, sampling_rate=0.25)
    records = [record(i, minutes_ago(1), request_id=f"r-{i}") for i in range(2000)]
    body = post(batch(records), ingest_token).json()
    assert body["accepted"] + body["sampled_out"] == 2000
    assert 400 < body["accepted"] < 600
    kept = set(PredictionRecord.objects.values_list("request_id", flat=True))
    assert all(r.weight == 4.0 for r in PredictionRecord.objects.all()[:10])
    again = [record(i, minutes_ago(1), request_id=f"r-{i}") for i in range(2000)]
    post(batch(again), ingest_token)
    assert PredictionRecord.objects.filter(request_id__in=kept).count() == 2 * len(kept)


def test_replicas_sample_with_the_same_hash_so_their_records_are_all_kept(
        deployment, ingest_token, engineer):
    from serving.shipping import keeps

    services.set_sampling_rate(actor=engineer, deployment=deployment, sampling_rate=0.25)
    answer = post(batch([]), ingest_token)  # an empty batch is how an idle replica asks
    assert answer.status_code == 202 and answer.json()["sampling_rate"] == 0.25
    ids = [f"req-{i}" for i in range(2000)]
    assert [keeps(i, 0.25) for i in ids] == [services._keep(i, 0.25) for i in ids]
    pre_sampled = [record(i, minutes_ago(1), request_id=r) for i, r in enumerate(ids)
                   if keeps(r.encode(), 0.25)]
    body = post(batch(pre_sampled), ingest_token).json()
    assert body["accepted"] == len(pre_sampled) and body["sampled_out"] == 0
    assert 400 < len(pre_sampled) < 600


def test_ingest_environment_for_replicas(deployment, settings):
    settings.MODELPORT_BASE_URL = "http://127.0.0.1:8000/"
    env = services.ingest_environment(deployment=deployment)
    assert env["MODELPORT_INGEST_URL"] == "http://127.0.0.1:8000/api/v1/ingest/predictions/"
    assert env["MODELPORT_SHIP_BATCH_SIZE"] == "1000"
    assert services.authenticate_ingest(f"Bearer {env['MODELPORT_INGEST_TOKEN']}"
                                        ).deployment == deployment


@pytest.mark.django_db(transaction=True)
def test_the_model_servers_shipper_delivers_over_http(live_server, team, engineer):
    """serving.shipping.Shipper, unchanged, POSTs to a running Modelport and learns the
    deployment's sampling rate from the answer."""
    from registry.models import RegisteredModel
    from serving.shipping import PredictionLog, ShipError

    from .conftest import make_deployment, make_version

    model = RegisteredModel.objects.create(name="churn", team=team)
    deployment = make_deployment(team, model, make_version(model, 1))
    env = services.ingest_environment(deployment=deployment)
    url = live_server.url + URL
    shipper = Shipper(PredictionLog(100), url, env["MODELPORT_INGEST_TOKEN"], envelope={
        "deployment": "churn-prod", "revision": "1", "replica": "churn-prod-r1-0"})
    now = minutes_ago(1).timestamp()
    shipper.learn(shipper._post(shipper.encode([("live-1", now, 4.2, 200, "invocations",
                                                 {"instances": [[0.1, 1.0, "red"]]}, [0],
                                                 None)])))
    assert PredictionRecord.objects.get().request_id == "live-1"
    assert shipper.buffer.sampling_rate == 1.0
    services.set_sampling_rate(actor=engineer, deployment=deployment, sampling_rate=0.3)
    shipper.learn(shipper._post(shipper.encode([])))  # an empty batch: how replicas ask
    assert shipper.buffer.sampling_rate == 0.3
    bad = Shipper(PredictionLog(100), url, "mpi_wrong_token", envelope={"deployment": "x"})
    with pytest.raises(ShipError) as refused:
        bad._post(bad.encode([("live-2", now, 1.0, 200, "invocations", None, None, None)]))
    assert "401" in str(refused.value)


@pytest.mark.parametrize(("sent", "stored"), [("3", 3), ("r3", 3), (4, 4), (None, 0)])
def test_revision_is_read_leniently(deployment, ingest_token, sent, stored):
    body = batch([record(1, minutes_ago(1))])
    body["revision"] = sent
    assert post(body, ingest_token).status_code == 202
    assert PredictionRecord.objects.get().revision == stored


@pytest.mark.parametrize(("change", "needle"), [
    ({"error": {}}, "error must be a string or null"),
    ({"endpoint": 5}, "endpoint must be a string"),
])
def test_record_fields_of_the_wrong_type_are_400_not_read_as_empty(deployment, ingest_token,
                                                                   change, needle):
    response = post(batch([{**record(1, minutes_ago(1)), **change}]), ingest_token)
    assert response.status_code == 400 and needle in response.json()["detail"]
    assert not PredictionRecord.objects.exists()


@pytest.mark.parametrize(("key", "value"), [("revision", [1]), ("revision", True),
                                            ("replica", 7)])
def test_batch_fields_of_the_wrong_type_are_400(deployment, ingest_token, key, value):
    body = batch([record(1, minutes_ago(1))])
    body[key] = value
    response = post(body, ingest_token)
    assert response.status_code == 400 and key in response.json()


@pytest.mark.parametrize("name", [{}, 0, False])
def test_a_deployment_that_is_not_a_string_is_400_not_the_tokens(deployment, ingest_token,
                                                                 name):
    body = batch([record(1, minutes_ago(1))])
    body["deployment"] = name
    response = post(body, ingest_token)
    assert response.status_code == 400 and "deployment" in response.json()
