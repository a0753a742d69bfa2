"""Prediction-log buffer and shipper, in-process with a fake transport; CPU-limit parsing."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from serving import config
from serving.shipping import PredictionLog, ShipError, Shipper


def record(i: int) -> tuple:
    return (f"r{i}", 1_700_000_000.0 + i, 1.25, 200, "invocations", [[i]], [i], None)


def test_full_buffer_drops_oldest_and_counts() -> None:
    buf = PredictionLog(maxlen=3)
    for i in range(5):
        buf.add(record(i))
    assert buf.dropped == 2
    assert [orjson.loads(r)["request_id"] for r in buf.take(10)] == ["r2", "r3", "r4"]


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
