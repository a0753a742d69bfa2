"""The ingest endpoint: authentication per deployment, record-by-record validation, sampling."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from rest_framework.test import APIClient

from monitoring import ingest, services
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
    token = ingest.issue_ingest_token(deployment=deployment)
    row = IngestToken.objects.get(deployment=deployment)
    assert token.startswith("mpi_")
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {row.digest, row.prefix}
    assert ingest.authenticate_ingest(f"Bearer {token}") == row


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
    assert response.json() == {"accepted": 2, "sampled_out": 0, "rejected": 0, "rejections": [],
                               "sampling_rate": 1.0}
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
    ingest.revoke_ingest_tokens(deployment=deployment)
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


@pytest.mark.parametrize(("bad", "reason"), [
    ({"request_id": 5}, "request_id"),
    ({"request_id": ""}, "request_id"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": "0001-01-01T00:00:00-05:00"}, "timestamp"),  # the rollup's minutes overflow
    ({"timestamp": "2999-01-01T00:00:00+00:00"}, "timestamp"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"latency_ms": "fast"}, "latency_ms"),
    ({"status": 42}, "status"),
    ({"endpoint": [[["invocations"]]]}, "endpoint"),
    ({"error": {"message": "boom"}}, "error"),
])
def test_a_bad_record_is_dropped_and_counted_and_the_rest_of_the_batch_stored(
        deployment, ingest_token, bad, reason):
    from monitoring import prom

    def rejected() -> float:
        return prom.REGISTRY.get_sample_value("modelport_ingest_rejected_records_total", {
            "deployment": "churn-prod", "reason": reason}) or 0.0

    before = rejected()
    records = [record(i, minutes_ago(1)) for i in range(10)]
    records[7] = {**records[7], **bad}
    response = post(batch(records), ingest_token)
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (9, 1)
    assert body["rejections"][0]["index"] == 7 and body["rejections"][0]["reason"] == reason
    assert body["rejections"][0]["detail"].startswith("records[7]")
    assert PredictionRecord.objects.count() == 9
    assert records[7]["request_id"] not in set(
        PredictionRecord.objects.values_list("request_id", flat=True))
    assert rejected() == before + 1


def test_a_record_that_is_not_an_object_is_dropped_alone(deployment, ingest_token):
    records = [record(0, minutes_ago(1)), "just text", None, record(3, minutes_ago(1))]
    body = post(batch(records), ingest_token).json()
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejections"]] == [
        (1, "not_an_object"), (2, "not_an_object")]


def test_a_viewers_thousand_deep_request_costs_only_its_own_record(deployment, ingest_token):
    """The finding: one request nested 1,000 deep, logged verbatim by the replica, failed the
    whole batch with a 500 (orjson refuses to encode past 254 levels) and the replica re-sent it
    forever. Now it is dropped alone and the good records around it are stored and rolled up."""
    deep = b"[" * 1000 + b"]" * 1000
    records = [record(i, minutes_ago(1)) for i in range(5)]
    marker = b'"inputs":"DEEP"'
    records[2]["inputs"] = "DEEP"
    body = orjson.dumps(batch(records)).replace(marker, b'"inputs":' + deep, 1)
    response = post(body, ingest_token)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (4, 1)
    assert answer["rejections"][0]["reason"] == "too_deep"
    assert PredictionRecord.objects.count() == 4
    assert roll() == 4


def test_a_value_the_database_refuses_costs_only_its_own_record(deployment, ingest_token):
    """An ISO week date parses in Python but PostgreSQL's timestamp input refuses it: the
    write is retried in halves (savepoints) until that one record is isolated."""
    records = [record(i, minutes_ago(1)) for i in range(9)]
    when = minutes_ago(1)
    year, week, day = when.isocalendar()
    records[5]["timestamp"] = f"{year}-W{week:02d}-{day}T{when:%H:%M:%S}+00:00"
    response = post(batch(records), ingest_token)
    assert response.status_code == 202, response.content
    answer = response.json()
    from django.db import connection

    if connection.vendor == "postgresql":
        assert (answer["accepted"], answer["rejected"]) == (8, 1)
        assert answer["rejections"] == [{"index": 5, "reason": "unstorable",
                                         "detail": answer["rejections"][0]["detail"]}]
        assert "cannot store" in answer["rejections"][0]["detail"]
        assert PredictionRecord.objects.count() == 8
    else:  # SQLite stores the parsed datetime
        assert answer["accepted"] == 9


def test_the_whole_batch_shape_is_still_a_400(deployment, ingest_token):
    for body in (batch([record(1, minutes_ago(1))]) | {"deployment": ["churn-prod"]},
                 {"deployment": "churn-prod", "records": {"0": record(1, minutes_ago(1))}},
                 b"[" * 2000 + b"]" * 2000):
        assert post(body, ingest_token).status_code == 400
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

    monkeypatch.setattr(ingest, "_write", explode)
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
    assert [keeps(i, 0.25) for i in ids] == [ingest._keep(i, 0.25) for i in ids]
    pre_sampled = [record(i, minutes_ago(1), request_id=r) for i, r in enumerate(ids)
                   if keeps(r.encode(), 0.25)]
    body = post(batch(pre_sampled), ingest_token).json()
    assert body["accepted"] == len(pre_sampled) and body["sampled_out"] == 0
    assert 400 < len(pre_sampled) < 600


def test_ingest_environment_for_replicas(deployment, settings):
    settings.MODELPORT_BASE_URL = "http://127.0.0.1:8000/"
    env = ingest.ingest_environment(deployment=deployment)
    assert env["MODELPORT_INGEST_URL"] == "http://127.0.0.1:8000/api/v1/ingest/predictions/"
    assert env["MODELPORT_SHIP_BATCH_SIZE"] == "1000"
    assert ingest.authenticate_ingest(f"Bearer {env['MODELPORT_INGEST_TOKEN']}"
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
    env = ingest.ingest_environment(deployment=deployment)
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


@pytest.mark.django_db(transaction=True)
def test_a_viewers_deep_request_through_a_model_server_never_blocks_its_log(
        live_server, team, iris_dir):
    """End to end, as the finding was seen: a model server (serving.app, in process, with its
    real shipper) answers a request nested 1,000 deep among good ones and ships its log to a
    running Modelport. Every record arrives; the deep one without its body."""
    import asyncio

    import httpx

    from registry.models import RegisteredModel
    from serving.app import ModelServer
    from serving.config import Settings
    from tests.deployments.conftest import COLUMNS

    from .conftest import make_deployment, make_version

    model = RegisteredModel.objects.create(name="churn", team=team)
    deployment = make_deployment(team, model, make_version(model, 1))
    env = ingest.ingest_environment(deployment=deployment)
    app = ModelServer(Settings(
        model_dir=str(iris_dir), model_name="iris", ingest_url=live_server.url + URL,
        ingest_token=env["MODELPORT_INGEST_TOKEN"], deployment="churn-prod", revision="1",
        replica="churn-prod-r1-0", ship_interval_s=3600,
        ship_max_bytes=int(env["MODELPORT_SHIP_MAX_BYTES"])), load_in_background=False)
    good = orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}})
    deep = b'{"dataframe_split": ' + b"[" * 1000 + b"]" * 1000 + b"}"

    async def traffic() -> list[int]:
        await app.startup()
        statuses = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            for request_id, body in (("good-1", good), ("deep-1", deep), ("good-2", good)):
                answer = await client.post("/invocations", content=body, headers={
                    "content-type": "application/json", "x-request-id": request_id})
                statuses.append(answer.status_code)
        await app.shutdown()  # flushes the log to the ingest endpoint
        return statuses

    assert asyncio.run(traffic()) == [200, 400, 200]
    stored = {r.request_id: r for r in PredictionRecord.objects.all()}
    assert set(stored) == {"good-1", "deep-1", "good-2"}
    assert stored["deep-1"].inputs is None and stored["deep-1"].status == 400
    assert stored["good-1"].inputs == orjson.loads(good)


@pytest.mark.django_db(transaction=True)
def test_a_shipper_sending_more_records_than_ingest_takes_delivers_them_all(
        live_server, team, settings):
    import asyncio

    from registry.models import RegisteredModel
    from serving.shipping import PredictionLog

    from .conftest import make_deployment, make_version

    settings.MODELPORT_INGEST_MAX_RECORDS = 3
    model = RegisteredModel.objects.create(name="churn", team=team)
    deployment = make_deployment(team, model, make_version(model, 1))
    env = ingest.ingest_environment(deployment=deployment)
    buffer = PredictionLog(100)
    shipper = Shipper(buffer, live_server.url + URL, env["MODELPORT_INGEST_TOKEN"],
                      envelope={"deployment": "churn-prod"}, batch_size=10)
    now = minutes_ago(1).timestamp()
    for i in range(10):
        buffer.add((f"r{i}", now, 1.0, 200, "invocations", b'{"instances": [[1, 2]]}', None,
                    None))
    asyncio.run(shipper.flush())
    assert sorted(PredictionRecord.objects.values_list("request_id", flat=True)) == [
        f"r{i}" for i in range(10)]
    assert shipper.batch_size <= 3


@pytest.mark.parametrize(("change", "needle"), [
    ({"error": {}}, "error must be a string or null"),
    ({"endpoint": 5}, "endpoint must be a string"),
])
def test_a_record_with_a_field_of_the_wrong_type_is_dropped_not_read_as_empty(
        deployment, ingest_token, change, needle):
    response = post(batch([{**record(1, minutes_ago(1)), **change}, record(2, minutes_ago(1))]),
                    ingest_token)
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1 and response.json()["rejected"] == 1
    assert needle in str(response.json()["rejections"])
    assert PredictionRecord.objects.count() == 1


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
