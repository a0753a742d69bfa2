"""Ingest on SQLite (``make run``): the rows ingest binds itself (``ingest._prepared`` and
``_write``: one ``executemany`` of tuples) are the rows ``bulk_create`` stored before.

The suite runs on PostgreSQL (``DATABASE_URL``), where ingest takes the COPY path instead. So
these tests open a second database, a SQLite file under ``tmp_path`` registered as its own
connection alias, and point the service module's ``connection`` (ingest writes through
``django.db.connection``) at it. Only the ``PredictionRecord`` table is made there: it has no
foreign-key constraint, and the functions under test touch no other table. The same tests pass
when the whole suite runs on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from deployments.models import Deployment
from monitoring import ingest
from monitoring.models import PredictionRecord

from .conftest import batch, minutes_ago, record

ALIAS = "ingest_sqlite"
JSON_COLUMNS = {"inputs", "outputs"}


@pytest.fixture
def sqlite_db(tmp_path, monkeypatch, django_db_blocker) -> Iterator[object]:
    configured = connections.configure_settings({
        DEFAULT_DB_ALIAS: {"ENGINE": "django.db.backends.dummy"},
        ALIAS: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "ingest.db")}})
    monkeypatch.setitem(connections.settings, ALIAS, configured[ALIAS])
    with django_db_blocker.unblock():
        db = connections[ALIAS]
        with db.schema_editor() as editor:
            editor.create_model(PredictionRecord)
        monkeypatch.setattr(ingest, "connection", db)
        try:
            yield db
        finally:
            db.close()
            del connections[ALIAS]


def awkward_records() -> list[dict]:
    """Every column type with the values whose conversion could differ: the model server's
    timestamps and others (offsets, naive, Z, microseconds), NULL and JSON null, non-ASCII and
    NUL text, int latency, …"""
    when = minutes_ago(2)
    text = 'tab\t, newline\n, back\\slash, "quotes", ünïcödé ✓ 🙂, NUL \u0000, \\u0000'
    records = [record(i, when + timedelta(seconds=i)) for i in range(8)]
    records[0]["timestamp"] = (when + timedelta(microseconds=123456)).astimezone(
        UTC).replace(tzinfo=None).isoformat()  # naive: UTC
    records[1]["timestamp"] = when.astimezone(
        datetime.fromisoformat("2000-01-01T00:00:00+05:30").tzinfo).isoformat()
    records[2]["timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    records[3]["timestamp"] = (when - timedelta(hours=7)).isoformat(timespec="microseconds")
    # The model server's own format (sliced, not adapted): whole seconds, then milliseconds.
    assert records[4]["timestamp"].endswith(".000+00:00")
    records[6]["timestamp"] = (when + timedelta(milliseconds=250)).isoformat(
        timespec="milliseconds")
    records[0]["inputs"] = {"columns": ["a", "b"], "data": [[1e-7, 1e16], [-0.0, 2**63 - 1],
                                                             [True, None]], "note": text}
    records[1]["inputs"] = text
    records[1]["outputs"] = None
    del records[2]["outputs"]
    del records[2]["inputs"]
    records[3]["inputs"], records[3]["outputs"] = {}, []
    records[4]["inputs"], records[4]["outputs"] = 3.25, {"predictions": [[0.1, 0.9]]}
    records[5].update(latency_ms=7, status=503, error=text, endpoint="e" * 60,
                      request_id="ид-\u0000-" + "x" * 20)
    records[6].update(error=None, endpoint="")
    records[7]["inputs"] = [[[]]] * 3
    return records


def validated(records: list[dict], rate: float = 1.0) -> list[tuple]:
    rejections = ingest.Rejections()
    rows, _ = ingest._validated_rows(batch(records), Deployment(pk=41), rate,
                                     datetime.now(UTC), rejections)
    assert rejections.count == 0
    return rows


def stored_raw(db) -> list[tuple]:
    """Every column as SQLite holds it: storage class and SQL literal (JSON decoded)."""
    columns = ", ".join(f'typeof("{c}"), ' + (f'"{c}"' if c in JSON_COLUMNS else f'quote("{c}")')
                        for c in ingest.COLUMNS)
    with db.cursor() as cursor:
        cursor.execute(f'SELECT {columns} FROM "{PredictionRecord._meta.db_table}" ORDER BY id')
        raw = cursor.fetchall()
    return [tuple(json.loads(v) if ingest.COLUMNS[i // 2] in JSON_COLUMNS and i % 2
                  and v is not None else v for i, v in enumerate(row)) for row in raw]


def stored_orm() -> list[dict]:
    return list(PredictionRecord.objects.using(ALIAS).order_by("id").values(*ingest.COLUMNS))


def write_as_before(rows: list[tuple]) -> None:
    """The SQLite path this replaced: a model instance per row and bulk_create."""
    with transaction.atomic(using=ALIAS):
        PredictionRecord.objects.using(ALIAS).bulk_create(
            [PredictionRecord(**dict(zip(ingest.COLUMNS, r[:len(ingest.COLUMNS)],
                                         strict=True))) for r in rows], batch_size=500)


def write_now(rows: list[tuple]) -> ingest.Rejections:
    rejections = ingest.Rejections()
    items = ingest._prepared(rows, rejections)
    with transaction.atomic(using=ALIAS):
        ingest._write([item for _, item in items])
    return rejections


def test_rows_bound_by_ingest_are_the_rows_bulk_create_stored(sqlite_db):
    rows = validated(awkward_records())
    write_as_before(rows)
    before_raw, before_orm = stored_raw(sqlite_db), stored_orm()
    PredictionRecord.objects.using(ALIAS).all().delete()
    assert write_now(rows).count == 0
    assert stored_raw(sqlite_db) == before_raw
    assert stored_orm() == before_orm
    assert len(before_orm) == len(rows) == 8


def test_values_read_back_are_the_ones_sent(sqlite_db):
    records = awkward_records()
    rows = validated(records)
    write_now(rows)
    stored = stored_orm()
    for sent, row, got in zip(records, rows, stored, strict=True):
        assert got["timestamp"] == row[4] and got["timestamp"].utcoffset() == timedelta(0)
        assert got["received_at"] == row[12] and got["received_at"].tzinfo is not None
        assert got["inputs"] == sent.get("inputs") and got["outputs"] == sent.get("outputs")
        assert got["request_id"] == sent["request_id"]
        assert got["error"] == (sent["error"] or "")
        assert got["latency_ms"] == sent["latency_ms"] and type(got["latency_ms"]) is float
        assert (got["deployment_id"], got["revision"], got["replica"]) == (
            41, 1, "churn-prod-r1-0")
    assert stored[0]["timestamp"].microsecond == 123456
    assert stored[1]["outputs"] is None and stored[2]["inputs"] is None  # SQL NULL, not 'null'
    with sqlite_db.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{PredictionRecord._meta.db_table}" '
                       "WHERE inputs IS NULL OR outputs IS NULL")
        assert cursor.fetchone() == (2,)
    assert stored[5]["endpoint"] == "e" * 40


def test_a_payload_too_deep_to_store_costs_only_its_own_record(sqlite_db):
    records = awkward_records()
    records[3]["inputs"] = "DEEP"
    body = orjson.dumps(batch(records)).replace(b'"inputs":"DEEP"',
                                                b'"inputs":' + b"[" * 300 + b"]" * 300, 1)
    rejections = ingest.Rejections()
    rows, _ = ingest._validated_rows(orjson.loads(body), Deployment(pk=41), 1.0,
                                     datetime.now(UTC), rejections)
    rejections = write_now(rows)
    assert (rejections.count, dict(rejections.by_reason)) == (1, {"too_deep": 1})
    assert rejections.shown[0]["index"] == 3
    assert [r["request_id"] for r in stored_orm()] == [
        r["request_id"] for i, r in enumerate(records) if i != 3]
