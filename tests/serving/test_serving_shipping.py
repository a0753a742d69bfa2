"""Prediction-log buffer and shipper, in-process with a fake transport; CPU-limit parsing."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from serving import config
from serving.shipping import (
    MAX_ERROR_CHARS,
    MAX_LOG_DEPTH,
    PredictionLog,
    ShipError,
    Shipper,
    nested_deeper_than,
)


def record(i: int) -> tuple:
    return (f"r{i}", 1_700_000_000.0 + i, 1.25, 200, "invocations", [[i]], [i], None)


def test_full_buffer_drops_oldest_and_counts() -> None:
    buf = PredictionLog(maxlen=3)
    for i in range(5):
        buf.add(record(i))
    assert buf.dropped == 2
    assert [r[0] for r in buf.take(10)] == ["r2", "r3", "r4"]


def test_records_are_encoded_when_logged_with_the_same_timestamps_as_datetime() -> None:
    from datetime import UTC, datetime

    from serving.shipping import encode_record, iso_timestamp

    for ts in (1_700_000_000.0, 1_700_000_000.9995, 1_700_000_059.123456, 1_799_999_999.001):
        expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
        assert iso_timestamp(ts)[:19] == expected[:19]
        assert abs(int(iso_timestamp(ts)[20:23]) - int(expected[20:23])) <= 1
    assert iso_timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250+00:00"
    # Values JSON cannot hold are logged as text instead of poisoning the batch.
    odd = orjson.loads(encode_record(("r", 1_700_000_000.0, 1.0, 200, "invocations",
                                      {(1, 2): object()}, [1], None)))
    assert odd["request_id"] == "r" and isinstance(odd["inputs"], str)


def test_shipper_sends_batches_with_envelope_and_retries_after_failure() -> None:
    sent: list[dict] = []
    fail = {"left": 1}

    def poster(body: bytes) -> None:
        if fail["left"]:
            fail["left"] -= 1
            raise ShipError("connection refused")
        sent.append(orjson.loads(body))

    async def scenario() -> Shipper:
        buf = PredictionLog(maxlen=100)
        shipper = Shipper(buf, "http://127.0.0.1:9/ingest", envelope={"deployment": "d"},
                          batch_size=2, interval=0.01, poster=poster)
        for i in range(5):
            buf.add(record(i))
        assert await shipper.ship_batch() is False  # first attempt fails, batch kept
        assert len(shipper.pending) == 2
        await shipper.flush()
        return shipper

    shipper = asyncio.run(scenario())
    assert [len(b["records"]) for b in sent] == [2, 2, 1]
    assert sent[0]["deployment"] == "d"
    assert [r["request_id"] for b in sent for r in b["records"]] == [f"r{i}" for i in range(5)]
    assert sent[0]["records"][0]["timestamp"] == "2023-11-14T22:13:20.000+00:00"
    assert shipper.shipped == 5 and shipper.failures == 0
    assert shipper.backoff() <= 0.01


def test_json_bodies_and_predictions_go_into_the_batch_verbatim_without_reencoding() -> None:
    body = b'{"dataframe_split": {"columns": ["a", "b"],\n "data": [[1.5, 2], [3, 4]]}}'
    response = b'{"predictions":[0,2]}'
    records = [
        (b"hdr-1", 1_700_000_000.25, 0.91234, 200, "invocations", body, response, None),
        # CSV input (the parsed table) and v2 predictions (an object) are encoded here.
        ("csv-1", 1_700_000_000.5, 1.0, 200, "invocations",
         {"columns": ["a"], "data": [["1"]]}, None, None),
        ("v2-1", 1_700_000_001.0, 2.0, 200, "v2_infer", body, np.array([[0.25, 0.75]]), None),
        ("bad-1", 1_700_000_001.0, 3.0, 400, "invocations", None, None, "no such column"),
    ]
    shipper = Shipper(PredictionLog(10), "http://unused", envelope={"deployment": "d"})
    doc = orjson.loads(shipper.encode(records))
    first, csv, v2, bad = doc["records"]
    assert first == {"request_id": "hdr-1", "timestamp": "2023-11-14T22:13:20.250+00:00",
                     "latency_ms": 0.912, "status": 200, "endpoint": "invocations",
                     "inputs": orjson.loads(body), "outputs": [0, 2], "error": None}
    assert csv["inputs"] == {"columns": ["a"], "data": [["1"]]} and csv["outputs"] is None
    assert v2["outputs"] == [[0.25, 0.75]] and v2["timestamp"].startswith("2023-11-14T22:13:21")
    assert bad["error"] == "no such column" and bad["inputs"] is None
    assert body in shipper.encode(records)  # spliced in as sent, whitespace and all


def test_one_record_json_cannot_hold_does_not_cost_the_rest_of_the_batch() -> None:
    shipper = Shipper(PredictionLog(10), "http://unused")
    records = [record(1), ("odd", 1_700_000_000.0, 1.0, 200, "invocations",
                           {(1, 2): object()}, [1], None), record(2)]
    doc = orjson.loads(shipper.encode(records))
    assert [r["request_id"] for r in doc["records"]] == ["r1", "odd", "r2"]
    assert doc["records"][0]["inputs"] == [[1]] and isinstance(doc["records"][1]["inputs"], str)


def test_batches_are_encoded_in_chunks_that_yield_to_the_event_loop() -> None:
    records = [record(i) for i in range(1000)]
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def scenario() -> bytes:
        shipper = Shipper(PredictionLog(10), "http://unused", batch_size=1000)
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0)
        body = await shipper.encode_in_chunks(records)
        stop.set()
        await task
        assert body == shipper.encode(records)
        return body

    body = asyncio.run(scenario())
    assert len(orjson.loads(body)["records"]) == 1000
    assert ticks > 2  # the loop ran other tasks between chunks


def test_request_path_keeps_references_and_encodes_nothing() -> None:
    body = b'{"instances": [[1.0]]}'
    buf = PredictionLog(10)
    rec = (b"id", 1_700_000_000.0, 1.0, 200, "invocations", body, b'{"predictions":[1]}', None)
    buf.add(rec)
    (kept,) = buf.take(1)
    assert kept is rec and kept[5] is body


def test_sampling_rate_from_the_ingest_answer_leaves_records_out_before_any_work() -> None:
    import zlib

    answers = [b'{"accepted":1,"sampled_out":0,"sampling_rate":0.25}', b"12"]
    buf = PredictionLog(maxlen=5000)
    shipper = Shipper(buf, "http://unused", poster=lambda body: answers.pop(0))
    buf.add(record(0))
    assert asyncio.run(shipper.ship_batch()) is True
    assert buf.sampling_rate == 0.25
    ids = [f"req-{i}".encode() for i in range(2000)]
    for request_id in ids:
        buf.add((request_id, 1_700_000_000.0, 1.0, 200, "invocations", None, None, None))
    kept = [r[0] for r in buf.take(5000)]
    # The ingest endpoint's rule (monitoring.ingest._keep): crc32 of the request id.
    assert kept == [i for i in ids if zlib.crc32(i) / 2**32 < 0.25]
    assert 400 < len(kept) < 600 and buf.sampled_out == 2000 - len(kept)
    buf.add((kept[0], 1_700_000_000.0, 1.0, 200, "invocations", None, None, None))
    assert asyncio.run(shipper.ship_batch()) is True and answers == []
    assert buf.sampling_rate == 0.25  # an answer without a rate (an older platform) keeps it


def test_an_idle_replica_at_sampling_rate_zero_asks_for_the_rate_with_an_empty_batch(
        monkeypatch) -> None:
    from serving import shipping

    monkeypatch.setattr(shipping, "RATE_REFRESH_S", 0.0)
    sent: list[dict] = []

    def poster(body: bytes) -> bytes:
        sent.append(orjson.loads(body))
        return b'{"accepted":0,"sampled_out":0,"sampling_rate":1.0}'

    async def scenario() -> PredictionLog:
        buf = PredictionLog(maxlen=10)
        buf.sampling_rate = 0.0
        buf.add(record(1))  # left out: nothing to ship
        shipper = Shipper(buf, "http://unused", envelope={"deployment": "d"}, interval=0.01,
                          poster=poster)
        shipper.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if buf.sampling_rate == 1.0:
                break
        await shipper.stop()
        return buf

    buf = asyncio.run(scenario())
    assert buf.sampling_rate == 1.0 and buf.sampled_out == 1
    assert sent[0] == {"deployment": "d", "records": []}


def test_permanent_rejection_drops_the_batch_instead_of_retrying_forever() -> None:
    def poster(body: bytes) -> None:
        raise ShipError("HTTP 400", permanent=True)

    async def scenario() -> Shipper:
        buf = PredictionLog(maxlen=10)
        buf.add(record(1))
        shipper = Shipper(buf, "http://127.0.0.1:9/x", poster=poster)
        assert await shipper.ship_batch() is True
        return shipper

    assert asyncio.run(scenario()).pending == []


def test_backoff_grows_and_is_capped() -> None:
    shipper = Shipper(PredictionLog(1), "http://127.0.0.1:9/x", interval=1.0)
    shipper.failures = 3
    assert 4.0 <= shipper.backoff() <= 8.0
    shipper.failures = 50
    assert shipper.backoff() <= 30.0


@pytest.mark.parametrize(
    ("cpu_max", "expected"), [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", 8)]
)
def test_cpu_limit_reads_cgroup_v2_cpu_max(tmp_path, monkeypatch, cpu_max, expected) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    monkeypatch.setattr(config, "CGROUP_V2_CPU_MAX", path)
    monkeypatch.setattr(config.os, "cpu_count", lambda: 8)
    assert config.cpu_limit() == expected


def test_cpu_limit_falls_back_to_cpu_count(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(config, "CGROUP_V2_CPU_MAX", tmp_path / "missing")
    monkeypatch.setattr(config, "CGROUP_V1_QUOTA", tmp_path / "missing-too")
    monkeypatch.setattr(config.os, "cpu_count", lambda: 3)
    assert config.cpu_limit() == 3


def test_settings_come_from_environment() -> None:
    s = config.Settings.from_env(
        {"MODELPORT_MODEL_DIR": "/models/churn", "MODELPORT_PORT": "9000",
         "MODELPORT_WORKERS": "3", "MODELPORT_MAX_BODY_BYTES": "1024"}
    )
    assert (s.port, s.workers, s.max_body_bytes, s.model_name) == (9000, 3, 1024, "churn")


# --- Nothing a client sends can make the ingest endpoint refuse a batch ---------------------
def deep(levels: int) -> bytes:
    return b'{"instances": ' + b"[" * (levels - 1) + b"1" + b"]" * (levels - 1) + b"}"


def omitted(reason: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("modelport_prediction_log_payloads_omitted_total",
                                     {"reason": reason}) or 0.0


@pytest.mark.parametrize(("levels", "kept"), [(3, True), (MAX_LOG_DEPTH, True),
                                              (MAX_LOG_DEPTH + 1, False), (1000, False)])
def test_a_request_nested_too_deep_is_shipped_without_its_body(levels, kept) -> None:
    """A viewer's request nested 1,000 deep parsed on the replica (orjson allows 1,024) and was
    logged verbatim; the batch it travelled in then failed at the ingest endpoint. Now the record
    ships with its inputs logged as null, counted."""
    before = omitted("too_deep")
    shipper = Shipper(PredictionLog(10), "http://unused", envelope={"deployment": "d"})
    records = [record(1), ("deep", 1_700_000_000.0, 1.0, 400, "invocations", deep(levels),
                           None, "bad input"), record(2)]
    doc = orjson.loads(shipper.encode(records))
    assert [r["request_id"] for r in doc["records"]] == ["r1", "deep", "r2"]
    assert (doc["records"][1]["inputs"] is not None) is kept
    assert doc["records"][1]["status"] == 400 and doc["records"][1]["error"] == "bad input"
    assert omitted("too_deep") == before + (0 if kept else 1)


@pytest.mark.parametrize("text", [
    b'{"a": "' + b"]" * 500 + b'", "b": ' + b"[" * 100 + b"]" * 100 + b"}",  # brackets in strings
    b'{"a": "\\"[[[[", "b": [' + b'"[", ' * 400 + b"1]}",  # escaped quotes, open brackets
    b"[" + b'{"k": {"k": [[{"k": "v"}]]}}, ' * 100 + b"1]",  # many shallow objects
    b"[" + b", ".join([b'{"x": [1, 2, "]]]"]}'] * 300) + b"]",
])
def test_the_depth_check_agrees_with_a_parser(text) -> None:
    def depth(value) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0

    real = depth(orjson.loads(text))
    for limit in (1, 2, real - 1, real, real + 1, 128):
        if limit >= 1:
            assert nested_deeper_than(text, limit) is (real > limit), (limit, real)


def test_a_body_over_the_payload_limit_is_shipped_as_null_and_counted() -> None:
    before = omitted("too_large")
    shipper = Shipper(PredictionLog(10), "http://unused", max_payload=1000)
    big = orjson.dumps({"instances": [[0.5] * 10] * 50})
    assert len(big) > 1000
    records = [("big", 1_700_000_000.0, 1.0, 200, "invocations", big,
                b'{"predictions":' + orjson.dumps([0] * 600) + b"}", None), record(1)]
    doc = orjson.loads(shipper.encode(records))
    assert doc["records"][0]["inputs"] is None and doc["records"][0]["outputs"] is None
    assert doc["records"][1]["inputs"] == [[1]]
    assert omitted("too_large") == before + 2


def test_batches_are_cut_to_the_byte_limit_and_the_rest_follows() -> None:
    sent: list[bytes] = []

    async def scenario() -> Shipper:
        buf = PredictionLog(maxlen=100)
        shipper = Shipper(buf, "http://unused", batch_size=50, max_bytes=8192,
                          poster=lambda body: sent.append(body))
        body = orjson.dumps({"instances": [[0.25] * 8] * 10})  # ~500 bytes each
        for i in range(40):
            buf.add((f"r{i}", 1_700_000_000.0 + i, 1.0, 200, "invocations", body, None, None))
        await shipper.flush()
        return shipper

    shipper = asyncio.run(scenario())
    assert len(sent) > 1 and all(len(body) <= 8192 for body in sent)
    ids = [r["request_id"] for body in sent for r in orjson.loads(body)["records"]]
    assert ids == [f"r{i}" for i in range(40)]  # none lost, none repeated, in order
    assert shipper.shipped == 40


def test_a_record_too_large_alone_ships_without_its_bodies() -> None:
    """A parsed CSV table (not a verbatim body) larger than a whole batch may hold."""
    sent: list[dict] = []

    async def scenario() -> None:
        buf = PredictionLog(maxlen=10)
        shipper = Shipper(buf, "http://unused", max_bytes=4096,
                          poster=lambda body: sent.append(orjson.loads(body)))
        table = {"columns": ["a"], "data": [["x" * 100]] * 100}
        buf.add(("csv", 1_700_000_000.0, 1.0, 200, "invocations", table, [0] * 100, None))
        buf.add(record(1))
        await shipper.flush()

    asyncio.run(scenario())
    records = [r for batch in sent for r in batch["records"]]
    assert [r["request_id"] for r in records] == ["csv", "r1"]
    assert records[0]["inputs"] is None and records[0]["status"] == 200


def test_a_413_halves_the_batch_until_the_ingest_endpoint_takes_it() -> None:
    """An ingest endpoint configured for fewer records per batch than the replicas send
    (MODELPORT_INGEST_MAX_RECORDS) once made every batch a permanent loss."""
    sent: list[dict] = []

    def poster(body: bytes) -> bytes:
        doc = orjson.loads(body)
        if len(doc["records"]) > 3:
            raise ShipError("HTTP 413 from ingest", permanent=True, status=413)
        sent.append(doc)
        return b'{"accepted": 1}'

    async def scenario() -> Shipper:
        buf = PredictionLog(maxlen=100)
        shipper = Shipper(buf, "http://unused", batch_size=16, poster=poster)
        for i in range(20):
            buf.add(record(i))
        await shipper.flush()
        return shipper

    shipper = asyncio.run(scenario())
    assert [r["request_id"] for b in sent for r in b["records"]] == [f"r{i}" for i in range(20)]
    assert shipper.batch_size <= 3 and shipper.shipped == 20


def test_records_the_ingest_endpoint_dropped_are_counted_on_the_replica() -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("modelport_prediction_logs_rejected_total") or 0.0
    shipper = Shipper(PredictionLog(1), "http://unused")
    shipper.learn(b'{"accepted": 8, "rejected": 2, "rejections": [], "sampling_rate": 1.0}')
    assert REGISTRY.get_sample_value("modelport_prediction_logs_rejected_total") == before + 2


def test_long_request_ids_and_errors_stay_within_what_ingest_stores() -> None:
    shipper = Shipper(PredictionLog(1), "http://unused")
    doc = orjson.loads(shipper.encode([("r", 1_700_000_000.0, 1.0, 400, "invocations", None,
                                        None, "x" * 50_000)]))
    assert len(doc["records"][0]["error"]) == MAX_ERROR_CHARS
