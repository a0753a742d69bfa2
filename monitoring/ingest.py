"""Prediction-log ingest: the replicas' ingest tokens and the hot path that stores batches.

Replicas ship prediction logs with a deployment-scoped ingest token (``issue_ingest_token``,
which the reconciler asks for through ``deployments.hooks``: ``MonitoringConfig.ready()``
registers ``ingest_environment`` and ``revoke_ingest_tokens`` there). ``ingest_predictions``
checks a batch record by record, drops (and counts) the records it cannot take, and writes the
others in one transaction (PostgreSQL ``COPY``; on SQLite one ``executemany`` of a
parameterised INSERT). The ``rollup`` beat task (``monitoring.rollups``) folds them into what
people read.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, connection, transaction
from django.utils import timezone

from core.errors import DomainError, InvalidInput, NotFound
from deployments.models import Deployment
from teams import audit

from . import prom
from .models import DeploymentMonitoring, IngestToken, PredictionRecord

log = logging.getLogger(__name__)

INGEST_SCHEME = "mpi"
MAX_REQUEST_ID = 100


class Unauthenticated(DomainError):
    status_code = 401
    code = "not_authenticated"


class BatchTooLarge(InvalidInput):
    status_code = 413
    code = "too_large"


# --- Ingest tokens ---------------------------------------------------------------------------
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def issue_ingest_token(*, deployment: Deployment) -> str:
    """A new secret for ``deployment``'s replicas (``MODELPORT_INGEST_TOKEN``); only its SHA-256
    digest is stored. Issued through ``ingest_environment`` each time the reconciler (or a host
    worker) starts replicas; older tokens stay valid until ``revoke_ingest_tokens``."""
    prefix = secrets.token_hex(6)
    token = f"{INGEST_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = IngestToken.objects.create(deployment=deployment, prefix=prefix, digest=_digest(token))
    audit.record(actor=None, action="ingest_token.issued", obj=row, team=deployment.team,
                 object_repr=str(row), after={"deployment": deployment.name, "prefix": prefix})
    return token


def ingest_environment(*, deployment: Deployment) -> dict[str, str]:
    """The environment a replica of ``deployment`` needs to ship its prediction log: a fresh
    token (``issue_ingest_token``) and the ingest URL under ``MODELPORT_BASE_URL``. Registered
    in ``deployments.hooks`` (``MonitoringConfig.ready()``)."""
    return {
        "MODELPORT_INGEST_URL": f"{settings.MODELPORT_BASE_URL.rstrip('/')}"
                                "/api/v1/ingest/predictions/",
        "MODELPORT_INGEST_TOKEN": issue_ingest_token(deployment=deployment),
        # Larger shipped batches keep ingest above 20,000 records/s (bench/monitoring.py).
        "MODELPORT_SHIP_BATCH_SIZE": str(settings.MODELPORT_MONITORING_SHIP_BATCH_SIZE),
        # Replicas cut their batches to what this endpoint accepts (and bodies to a quarter).
        "MODELPORT_SHIP_MAX_BYTES": str(settings.MODELPORT_INGEST_MAX_BYTES),
    }


@transaction.atomic
def revoke_ingest_tokens(*, deployment: Deployment, keep: str | None = None) -> int:
    """Revoke every ingest token of ``deployment`` (but ``keep``, when given). Registered in
    ``deployments.hooks``, run once the deployment's replicas are all stopped."""
    tokens = IngestToken.objects.filter(deployment=deployment, revoked=False)
    if keep:
        tokens = tokens.exclude(digest=_digest(keep))
    n = tokens.update(revoked=True)
    if n:
        audit.record(actor=None, action="ingest_token.revoked", object_type="ingesttoken",
                     object_id=deployment.name, object_repr=deployment.name,
                     team=deployment.team, after={"revoked": n})
    return n


def authenticate_ingest(header: str) -> IngestToken:
    """The token row for an ``Authorization: Bearer mpi_…`` header, else ``Unauthenticated``."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(f"{INGEST_SCHEME}_"):
        raise Unauthenticated("An ingest token is required (Authorization: Bearer mpi_…).")
    digest = _digest(token)
    row = (IngestToken.objects.select_related("deployment")
           .filter(digest=digest, revoked=False).first())
    if row is None or not hmac.compare_digest(row.digest, digest):
        raise Unauthenticated("Invalid or revoked ingest token.")
    return row


# --- Ingest ----------------------------------------------------------------------------------
def _parse_time(value: Any, where: str) -> tuple[datetime, str]:
    """The timestamp, and its ISO text with an explicit offset (naive means UTC)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{where}.timestamp must be an ISO 8601 string.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{where}.timestamp '{value[:40]}' is not ISO 8601.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
        return parsed, parsed.isoformat()
    return parsed, value


def _keep(request_id: str, rate: float) -> bool:
    if rate >= 1.0:
        return True
    return zlib.crc32(request_id.encode()) / 4294967296.0 < rate


_RATE_CACHE: dict[tuple, tuple[float, float]] = {}
RATE_CACHE_SECONDS = 5.0


def sampling_rate_of(deployment: Deployment, *, cached: bool = False) -> float:
    """The deployment's sampling rate; ``cached`` (ingest) may answer from a per-process copy
    up to ``RATE_CACHE_SECONDS`` old, saving a query per batch."""
    now = time.monotonic()
    key = (deployment.pk, deployment.created_at)
    if cached:
        hit = _RATE_CACHE.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
    row = DeploymentMonitoring.objects.filter(deployment=deployment).first()
    rate = row.sampling_rate if row else 1.0
    _RATE_CACHE[key] = (rate, now + RATE_CACHE_SECONDS)
    return rate


def forget_sampling_rate(deployment: Deployment) -> None:
    """Drop this process's cached copy (``sampling_rate_of``) once the rate has changed."""
    _RATE_CACHE.pop((deployment.pk, deployment.created_at), None)


class Rejections:
    """Records of one batch dropped one by one: counted per reason (Prometheus and the answer),
    the first few explained, so one bad record never costs the others."""

    SHOWN = 20

    def __init__(self) -> None:
        self.count = 0
        self.by_reason: dict[str, int] = defaultdict(int)
        self.shown: list[dict[str, Any]] = []

    def add(self, index: int, reason: str, detail: str) -> None:
        self.count += 1
        self.by_reason[reason] += 1
        if len(self.shown) < self.SHOWN:
            self.shown.append({"index": index, "reason": reason, "detail": detail})

    def publish(self, deployment: str) -> None:
        for reason, n in self.by_reason.items():
            prom.REJECTED.labels(deployment, reason).inc(n)


# Timestamps outside [now - rollup retention, now + this] are refused: a record from year 1
# would make the rollup's minute arithmetic fail, and one from the far future is a clock gone
# wrong whose minutes would never be pruned.
MAX_CLOCK_SKEW = timedelta(days=1)


def _validated_rows(doc: Any, deployment: Deployment, rate: float, now: datetime,
                    rejections: Rejections) -> tuple[list[tuple], int]:
    records = doc.get("records")
    if not isinstance(records, list):
        raise InvalidInput("'records' must be a list.", field="records")
    if len(records) > settings.MODELPORT_INGEST_MAX_RECORDS:
        raise BatchTooLarge(f"{len(records)} records in one batch; the limit is "
                            f"{settings.MODELPORT_INGEST_MAX_RECORDS}.")
    revision_sent, replica_sent = doc.get("revision"), doc.get("replica")
    if revision_sent is not None and (isinstance(revision_sent, bool)
                                      or not isinstance(revision_sent, str | int)):
        raise InvalidInput("'revision' must be a string, a number or null.", field="revision")
    if replica_sent is not None and not isinstance(replica_sent, str):
        raise InvalidInput("'replica' must be a string or null.", field="replica")
    # The model server sends the revision as a string ("3", or "r3"): its digits are the number.
    sent = doc.get("revision")
    digits = re.sub(r"\D", "", sent[:200] if type(sent) is str else
                    str(sent) if type(sent) is int else "")[:9]
    revision = int(digits) if digits else 0
    replica = doc.get("replica")
    replica = replica[:200] if type(replica) is str else ""
    weight = 1.0 / rate if rate > 0 else 0.0
    deployment_id = deployment.pk
    earliest = now - timedelta(days=settings.MODELPORT_MONITORING_ROLLUP_RETENTION_DAYS)
    latest = now + MAX_CLOCK_SKEW
    rows = []
    dropped = 0
    fromiso = datetime.fromisoformat
    inf = math.inf
    for i, r in enumerate(records):
        # Fast path: one combined check per record; _problem() names what is wrong when it fails.
        try:
            request_id = r["request_id"]
            timestamp_text = r["timestamp"]
            timestamp = fromiso(timestamp_text)
            latency = r.get("latency_ms", 0)
            status = r.get("status", 200)
            error = r.get("error")
            error = "" if error is None else error
            endpoint = r.get("endpoint", "")
        except (KeyError, TypeError, ValueError, AttributeError):
            rejections.add(i, *_problem(i, r, earliest, latest))
            continue
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
            timestamp_text = timestamp.isoformat()
        kind = type(latency)
        if type(request_id) is not str or not 0 < len(request_id) <= MAX_REQUEST_ID \
                or (kind is not float and kind is not int) or not 0 <= latency < inf \
                or type(status) is not int or not 100 <= status <= 599 \
                or type(error) is not str or type(endpoint) is not str \
                or not earliest <= timestamp <= latest:
            rejections.add(i, *_problem(i, r, earliest, latest))
            continue
        if rate < 1.0 and not _keep(request_id, rate):
            dropped += 1
            continue
        rows.append((deployment_id, revision, replica, request_id, timestamp, float(latency),
                     status, endpoint[:40], r.get("inputs"), r.get("outputs"), error[:2000],
                     weight, now, timestamp_text, i))
    return rows, dropped


def _problem(i: int, r: Any, earliest: datetime, latest: datetime) -> tuple[str, str]:
    """(reason, explanation) for record ``i``, which the fast path of ``_validated_rows``
    refused."""
    where = f"records[{i}]"
    if not isinstance(r, dict):
        return "not_an_object", f"{where} must be an object."
    request_id = r.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        return "request_id", (f"{where}.request_id must be a string of 1-{MAX_REQUEST_ID} "
                              "characters.")
    try:
        timestamp, _ = _parse_time(r.get("timestamp"), where)
    except InvalidInput as exc:
        return "timestamp", exc.message
    if not earliest <= timestamp <= latest:
        return "timestamp", (f"{where}.timestamp {timestamp.isoformat()} is outside "
                             f"{earliest:%Y-%m-%d} … {latest:%Y-%m-%d}: older than the rollup "
                             "retention or in the future.")
    latency = r.get("latency_ms", 0)
    if not isinstance(latency, (int, float)) or isinstance(latency, bool) \
            or not math.isfinite(latency) or latency < 0:
        return "latency_ms", f"{where}.latency_ms must be a non-negative number."
    status = r.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return "status", f"{where}.status must be an HTTP status code."
    if not isinstance(r.get("endpoint", ""), str):
        return "endpoint", f"{where}.endpoint must be a string."
    return "error", f"{where}.error must be a string or null."


COLUMNS = ("deployment_id", "revision", "replica", "request_id", "timestamp", "latency_ms",
           "status", "endpoint", "inputs", "outputs", "error", "weight", "received_at")


# PostgreSQL's text and jsonb cannot hold NUL (U+0000): one in a request would fail the whole
# batch, so it is stored as U+FFFD, the replacement character, like any undecodable byte.
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r\x00]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n",
                               "\r": "\\r", "\x00": "\ufffd"})
# In JSON text: a \u0000 escape that is not itself an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _copy_field(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _copy_json(value: Any) -> str:
    if value is None:
        return "\\N"
    # orjson escapes control characters inside strings, so only backslashes need doubling.
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1\\ufffd", text)
    return text.replace("\\", "\\\\")


def _payload_problem(i: int, exc: Exception) -> tuple[str, str]:
    """Why record ``i``'s inputs or outputs cannot be stored as JSON (orjson's refusal)."""
    message = str(exc)
    if "Recursion limit" in message:
        return "too_deep", (f"records[{i}]: inputs or outputs are nested deeper than the "
                            f"{MAX_STORED_DEPTH} levels that can be stored.")
    return "unstorable", f"records[{i}]: inputs or outputs cannot be stored: {message[:200]}"


# orjson (which encodes jsonb for COPY) refuses documents nested deeper than this.
MAX_STORED_DEPTH = 254

# A timestamp as the model server writes it (serving/shipping.py), already parsed by
# ``_validated_rows``; the hour is checked too, as newer Pythons read 24:00 as the next day.
_SHIPPED_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}"
                          r"\.[0-9]{3}\+00:00")


def _prepared(rows: list[tuple], rejections: Rejections) -> list[tuple[int, Any]]:
    """(record index, what ``_write`` stores) per row: a COPY text line on PostgreSQL, a tuple
    of INSERT parameters on SQLite. Rows whose payloads cannot be encoded are rejected here,
    alone."""
    prepared: list[tuple[int, Any]] = []
    if connection.vendor == "postgresql":
        field, as_json = _copy_field, _copy_json
        received = rows[0][12].isoformat() if rows else ""
        for r in rows:
            try:
                line = "\t".join((str(r[0]), str(r[1]), field(r[2]), field(r[3]), field(r[13]),
                                  repr(r[5]), str(r[6]), field(r[7]), as_json(r[8]),
                                  as_json(r[9]), field(r[10]), repr(r[11]), received))
            except (TypeError, ValueError) as exc:  # orjson: too deep, or not JSON at all
                rejections.add(r[14], *_payload_problem(r[14], exc))
                continue
            prepared.append((r[14], line))
        return prepared
    # SQLite: the parameters bulk_create would bind, built without a model instance per record
    # or Django's per-field calls (under `make run` those were most of ingest's CPU time).
    # Strings, ints and floats are bound as validated — what their fields' get_db_prep_save
    # returns for them; datetimes go through the backend's own adapter (naive UTC text); JSON
    # is orjson's text, the document JSONField's json.dumps writes less its spaces and \u
    # escapes, and None stays SQL NULL as JSONField stores it. orjson's refusal is also the
    # depth check (json.dumps would recurse until RecursionError). The model server's
    # timestamps (``_SHIPPED_UTC``) become that naive UTC text by slicing: the adapter
    # (astimezone, then str) cost twice the rest of the row's preparation.
    # tests/monitoring/test_ingest_sqlite.py compares the rows with bulk_create's.
    adapt_datetime = connection.ops.adapt_datetimefield_value
    received = adapt_datetime(rows[0][12]) if rows else None
    dumps = orjson.dumps
    shipped = _SHIPPED_UTC.fullmatch
    when: str | None
    for r in rows:
        text = r[13]
        if shipped(text):  # str() of the naive datetime: no fraction when it is zero
            when = (f"{text[:10]} {text[11:19]}" if text[20:23] == "000"
                    else f"{text[:10]} {text[11:23]}000")
        else:
            when = adapt_datetime(r[4])
        inputs, outputs = r[8], r[9]
        try:
            if inputs is not None:
                inputs = dumps(inputs).decode()
            if outputs is not None:
                outputs = dumps(outputs).decode()
        except (TypeError, ValueError) as exc:
            rejections.add(r[14], *_payload_problem(r[14], exc))
            continue
        prepared.append((r[14], (r[0], r[1], r[2], r[3], when, r[5], r[6], r[7],
                                 inputs, outputs, r[10], r[11], received)))
    return prepared


def _write(items: list[Any]) -> None:
    """Store prepared rows (``_prepared``) in the current transaction."""
    table = PredictionRecord._meta.db_table
    if connection.vendor == "postgresql":
        # COPY, with the text block built here: psycopg's per-row adaptation (write_row) costs
        # more than the server's work at these rates.
        data = ("\n".join(items) + "\n").encode()
        sql = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN"
        with connection.cursor() as cursor, connection.wrap_database_errors, \
                cursor.cursor.copy(sql) as copy:
            copy.write(data)
        return
    # One prepared INSERT run per row by sqlite3 (in C), not bulk_create's multi-row statements
    # of 76 rows each (SQLite's 999 parameters) with RETURNING of every id.
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(table)} ({', '.join(map(quote, COLUMNS))}) "  # noqa: S608
           f"VALUES ({', '.join(['%s'] * len(COLUMNS))})")
    with connection.cursor() as cursor:
        cursor.executemany(sql, items)


def _write_each(items: list[tuple[int, Any]], rejections: Rejections) -> int:
    """Store what the database takes, halving around what it refuses (each half in a
    savepoint): a value it cannot hold costs its own record, not the batch."""
    try:
        with transaction.atomic():
            _write([item for _, item in items])
        return len(items)
    except DataError as exc:
        if len(items) == 1:
            index = items[0][0]
            rejections.add(index, "unstorable", f"records[{index}] holds values the database "
                                                f"cannot store: {str(exc).splitlines()[0][:200]}")
            return 0
    half = len(items) // 2
    return _write_each(items[:half], rejections) + _write_each(items[half:], rejections)


def ingest_predictions(*, token: IngestToken, body: bytes) -> dict[str, Any]:
    """Store a batch from a replica in one transaction, less the records that cannot be
    stored: those are dropped one by one and counted, never failing the rest."""
    # A batch allocates ~10 objects per record and frees them all at the end: the cyclic
    # garbage collector would run several full passes over the whole process meanwhile (it was
    # most of the CPU time here). Reference counting frees everything anyway.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _ingest(token, body)
    finally:
        if collecting:
            gc.enable()


def _ingest(token: IngestToken, body: bytes) -> dict[str, Any]:
    started = timezone.now()
    if len(body) > settings.MODELPORT_INGEST_MAX_BYTES:
        prom.BATCHES.labels("too_large").inc()
        raise BatchTooLarge(f"The batch is {len(body)} bytes; the limit is "
                            f"{settings.MODELPORT_INGEST_MAX_BYTES}.")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        prom.BATCHES.labels("malformed").inc()
        raise InvalidInput(f"Malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        prom.BATCHES.labels("malformed").inc()
        raise InvalidInput("The body must be a JSON object with 'deployment' and 'records'.")
    name = doc.get("deployment")
    if name is None or name == "":  # the token names the deployment; {} or 0 are not names
        name = token.deployment.name
    if not isinstance(name, str):
        prom.BATCHES.labels("malformed").inc()
        raise InvalidInput("'deployment' must be a string.", field="deployment")
    if name != token.deployment.name:
        if not Deployment.objects.filter(name=name).exists():
            raise NotFound(f"No deployment '{name}'.")
        prom.BATCHES.labels("unauthorized").inc()
        raise Unauthenticated(f"This ingest token is not valid for deployment '{name}'.")
    deployment = token.deployment
    rate = sampling_rate_of(deployment, cached=True)
    rejections = Rejections()
    try:
        rows, dropped = _validated_rows(doc, deployment, rate, started, rejections)
    except DomainError as exc:
        prom.BATCHES.labels("too_large" if exc.status_code == 413 else "malformed").inc()
        raise
    items = _prepared(rows, rejections)
    stored = 0
    if items:
        try:
            with transaction.atomic():
                _write([item for _, item in items])
            stored = len(items)
        except DataError:  # e.g. a value PostgreSQL refuses: find it, keep the rest
            with transaction.atomic():
                stored = _write_each(items, rejections)
    with transaction.atomic():
        if token.last_used_at is None or started - token.last_used_at > timedelta(minutes=1):
            IngestToken.objects.filter(pk=token.pk).update(last_used_at=started)
    prom.BATCHES.labels("accepted").inc()
    prom.INGESTED.labels(deployment.name).inc(stored)
    # Even when 0: the series exists, so a rate reads 0 rather than "no data".
    prom.SAMPLED_OUT.labels(deployment.name).inc(dropped)
    if rejections.count:
        rejections.publish(deployment.name)
        log.info("ingest for %s: %d of %d records rejected (%s)", deployment.name,
                 rejections.count, len(doc["records"]), dict(rejections.by_reason))
    prom.INGEST_SECONDS.observe((timezone.now() - started).total_seconds())
    # The rate goes back to the replica, which then leaves the other records out before any
    # work (serving/shipping.py; the same hash of the request id as _keep).
    return {"accepted": stored, "sampled_out": dropped, "rejected": rejections.count,
            "rejections": rejections.shown, "sampling_rate": rate}
