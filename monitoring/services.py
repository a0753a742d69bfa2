"""Business operations of monitoring: ingest, rollups, drift, ground truth, alert rules.

Replicas ship prediction logs with a deployment-scoped ingest token (``issue_ingest_token``);
``ingest_predictions`` checks a batch record by record, drops (and counts) the records it cannot
take, and writes the others in one transaction (PostgreSQL ``COPY``; on SQLite one
``executemany`` of a parameterised INSERT). The ``rollup`` beat task folds new raw records into
per-minute ``MinuteRollup`` rows and per-hour ``FeatureSketch`` rows; everything people read
(charts, the metrics and drift APIs, alert evaluation) comes from those.
"""

from __future__ import annotations

import bisect
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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, connection, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from config.errors import Conflict, DomainError, InvalidInput, NotFound
from core.lazy_imports import lazy_module
from deployments.models import Deployment, Replica, Revision
from registry.models import RegisteredModel
from teams import audit
from teams.access import require_team_role
from teams.roles import Role

from . import extract, gateway_errors, prom, stats, webhooks
from .models import (
    LATENCY_COLUMNS,
    Alert,
    AlertRule,
    AlertState,
    Comparison,
    DeploymentMonitoring,
    FeatureSketch,
    Feedback,
    IngestToken,
    MinuteRollup,
    ModelMonitoring,
    PredictionRecord,
    ReplicaStat,
    RollupCursor,
    TaskType,
)

# Imported when first used: every Django process loads this module (issue 26, memory).
np = lazy_module("numpy")

log = logging.getLogger(__name__)

INGEST_SCHEME = "mpi"
MAX_REQUEST_ID = 100
MAX_FEEDBACK_ITEMS = 10000


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
    digest is stored. Called by the reconciler when it starts replicas; older tokens stay valid
    until ``revoke_ingest_tokens``."""
    prefix = secrets.token_hex(6)
    token = f"{INGEST_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = IngestToken.objects.create(deployment=deployment, prefix=prefix, digest=_digest(token))
    audit.record(actor=None, action="ingest_token.issued", obj=row, team=deployment.team,
                 object_repr=str(row), after={"deployment": deployment.name, "prefix": prefix})
    return token


def ingest_environment(*, deployment: Deployment) -> dict[str, str]:
    """The environment a replica of ``deployment`` needs to ship its prediction log: a fresh
    token (``issue_ingest_token``) and the ingest URL under ``MODELPORT_BASE_URL``."""
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
    """Revoke every ingest token of ``deployment`` (but ``keep``, when given)."""
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
    if dropped:
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


# --- Rollups ---------------------------------------------------------------------------------
def _reference_of(deployment_id: int, revision: int) -> dict[str, Any]:
    rev = (Revision.objects.filter(deployment_id=deployment_id, number=revision)
           .select_related("model_version").first())
    if rev is None:
        rev = (Revision.objects.filter(deployment_id=deployment_id)
               .select_related("model_version").order_by("-number").first())
    if rev is not None:
        return rev.model_version.reference_stats or {}
    dep = Deployment.objects.select_related("version").filter(pk=deployment_id).first()
    if dep is not None and dep.version is not None:
        return dep.version.reference_stats or {}
    return {}


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


class _Sketch:
    def __init__(self, reference: dict[str, Any]) -> None:
        self.reference = reference.get("features") or {}
        self.columns = list(self.reference)
        self.rows = 0
        self.counts: dict[str, Any] = {}
        self.samples: dict[str, list] = defaultdict(list)
        # (name, numeric?, inner bin edges, counts, sample) per feature, for the hot loop.
        self._plan = []
        for name, ref in self.reference.items():
            if ref.get("kind") == "numeric":
                edges = ref.get("bin_edges") or []
                counts = self.counts[name] = [0.0] * max(1, len(edges) - 1)
                self._plan.append((name, True, edges[1:-1], counts, self.samples[name]))
            else:
                self._plan.append((name, False, None, self.counts.setdefault(name, {}), None))

    def add(self, row: dict[str, Any], weight: float) -> None:
        self.rows += 1
        for name, numeric, inner, counts, sample in self._plan:
            value = row.get(name)
            if value is None:
                continue
            if numeric:
                kind = type(value)
                if kind is not float and kind is not int:
                    if kind is bool:
                        continue
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        continue
                if value != value or value in (math.inf, -math.inf):
                    continue
                counts[bisect.bisect_right(inner, value)] += weight
                sample.append(value)
            else:
                key = value if type(value) is str else str(value)
                if key not in counts and len(counts) >= 2 * stats.MAX_DRIFT_SAMPLE:
                    key = stats.OTHER
                counts[key] = counts.get(key, 0.0) + weight


def _merge_features(old: dict[str, Any], sketch: _Sketch, rng: np.random.Generator
                    ) -> dict[str, Any]:
    merged = dict(old)
    for name, counts in sketch.counts.items():
        prev = merged.get(name) or {}
        if isinstance(counts, list):
            before = prev.get("counts") or [0.0] * len(counts)
            if len(before) != len(counts):
                before = [0.0] * len(counts)
            new_sample = sketch.samples.get(name, [])
            if len(new_sample) > stats.SAMPLE_PER_SKETCH:
                idx = rng.choice(len(new_sample), stats.SAMPLE_PER_SKETCH, replace=False)
                new_sample = [new_sample[i] for i in sorted(idx)]
            seen_before = float(prev.get("seen", 0))
            seen_new = float(len(sketch.samples.get(name, [])))
            merged[name] = {
                "counts": [a + b for a, b in zip(before, counts, strict=True)],
                "seen": seen_before + seen_new,
                "sample": stats.merge_sample(prev.get("sample") or [], seen_before,
                                             new_sample, seen_new, rng),
            }
        else:
            before = dict(prev.get("counts") or {})
            for key, n in counts.items():
                before[key] = before.get(key, 0.0) + n
            merged[name] = {"counts": before}
    return merged


def _merge_predictions(old: dict[str, Any], new: dict[str, Any], rng: np.random.Generator
                       ) -> dict[str, Any]:
    out = {"classes": dict(old.get("classes") or {}), "n": old.get("n", 0) + new.get("n", 0),
           "sum": old.get("sum", 0.0) + new.get("sum", 0.0)}
    for key, n in (new.get("classes") or {}).items():
        out["classes"][key] = out["classes"].get(key, 0.0) + n
    values = (old.get("values") or []) + (new.get("values") or [])
    if len(values) > 50:
        values = [values[i] for i in sorted(rng.choice(len(values), 50, replace=False))]
    out["values"] = values
    if not out["classes"]:
        del out["classes"]
    return out


def rollup(*, limit: int = 50000, now: datetime | None = None) -> int:
    """Fold the next raw records into the rollups (see ``_rollup``), with the cyclic garbage
    collector paused as in ``ingest_predictions``."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _rollup(limit=limit, now=now)
    finally:
        if collecting:
            gc.enable()


@transaction.atomic
def _rollup(*, limit: int, now: datetime | None) -> int:
    """Fold the next raw records (up to ``limit``) into the minute rollups and hour sketches.

    Incremental: a cursor row holds the last record id folded in. Records received in the last
    ``MODELPORT_MONITORING_ROLLUP_DELAY_S`` seconds wait for the next pass, so an ingest
    transaction still in flight (whose ids may be lower) is not skipped.
    """
    now = now or timezone.now()
    cursor, _ = RollupCursor.objects.get_or_create(name="rollup")
    cursor = RollupCursor.objects.select_for_update().get(pk=cursor.pk)
    horizon = now - timedelta(seconds=settings.MODELPORT_MONITORING_ROLLUP_DELAY_S)
    records = _raw_records(cursor.last_id, horizon, limit)
    if not records:
        return 0
    # Raw records have no foreign key (``PredictionRecord``): a deleted deployment's stay
    # until pruned. Rolling them up would reference a deployment that no longer exists, the
    # commit would fail, and the cursor would never pass them: no rollups for anyone.
    live = set(Deployment.objects.filter(pk__in={r[1] for r in records})
               .values_list("pk", flat=True))
    rng = np.random.default_rng(cursor.last_id)
    references: dict[tuple[int, int], dict[str, Any]] = {}
    minutes: dict[tuple[int, int, int], dict[str, Any]] = {}
    sketches: dict[tuple[int, int, int], _Sketch] = {}
    for _id, dep, rev, epoch, latency, status, inputs, outputs, weight in records:
        if dep not in live:
            continue
        key = (dep, rev, int(epoch // 60) * 60)
        agg = minutes.get(key)
        if agg is None:
            agg = minutes[key] = {"count": 0.0, "errors": 0.0, "latency_sum": 0.0,
                                  "buckets": stats.empty_buckets(),
                                  "predictions": {"classes": {}, "n": 0, "sum": 0.0,
                                                  "values": []}}
        agg["count"] += weight
        if status >= 400:
            agg["errors"] += weight
        agg["latency_sum"] += latency * weight
        agg["buckets"][stats.latency_bucket(latency)] += weight
        preds = agg["predictions"]
        for p in extract.predictions_of(outputs):
            if extract.is_class_label(p):
                label = str(int(p)) if isinstance(p, float) else str(p)
                preds["classes"][label] = preds["classes"].get(label, 0.0) + weight
            elif isinstance(p, (int, float)) and math.isfinite(p):
                preds["n"] += weight
                preds["sum"] += p * weight
                if len(preds["values"]) < 200:
                    preds["values"].append(p)
        if (dep, rev) not in references:
            references[(dep, rev)] = _reference_of(dep, rev)
        reference = references[(dep, rev)]
        if reference.get("features") and inputs is not None:
            hour = int(epoch // 3600) * 3600
            sketch = sketches.get((dep, rev, hour))
            if sketch is None:
                sketch = sketches[(dep, rev, hour)] = _Sketch(reference)
            for row in extract.rows_of(inputs, sketch.columns):
                sketch.add(row, weight)
    _store_minutes(minutes, rng)
    _store_sketches(sketches, rng)
    cursor.last_id = records[-1][0]
    cursor.last_timestamp = datetime.fromtimestamp(max(r[3] for r in records), UTC)
    cursor.save(update_fields=["last_id", "last_timestamp", "updated_at"])
    prom.ROLLED_UP.inc(len(records))
    return len(records)


def _raw_records(after_id: int, horizon: datetime, limit: int) -> list[tuple]:
    """(id, deployment, revision, epoch seconds, latency, status, inputs, outputs, weight) of
    the next records; on PostgreSQL the JSON comes as text, parsed with orjson."""
    if connection.vendor == "postgresql":
        table = PredictionRecord._meta.db_table
        with connection.cursor() as cursor:
            columns = ("id, deployment_id, revision, extract(epoch FROM timestamp)::float8, "
                       "latency_ms, status, inputs::text, outputs::text, weight")
            where = "id > %s AND received_at <= %s ORDER BY id LIMIT %s"
            sql = f"SELECT {columns} FROM {table} WHERE {where}"  # noqa: S608 - constants
            cursor.execute(sql, [after_id, horizon, limit])
            loads = orjson.loads
            return [(i, d, r, e, lat, st, loads(inp) if inp else None,
                     loads(out) if out else None, w)
                    for i, d, r, e, lat, st, inp, out, w in cursor.fetchall()]
    return [(i, d, r, ts.timestamp(), lat, st, inp, out, w) for i, d, r, ts, lat, st, inp, out, w
            in PredictionRecord.objects.filter(id__gt=after_id, received_at__lte=horizon)
            .order_by("id").values_list("id", "deployment_id", "revision", "timestamp",
                                        "latency_ms", "status", "inputs", "outputs",
                                        "weight")[:limit]]


def _store_minutes(minutes: dict, rng: np.random.Generator) -> None:
    if not minutes:  # every record of the pass belonged to a deleted deployment
        return
    minutes = {(d, r, datetime.fromtimestamp(m, UTC)): agg for (d, r, m), agg in minutes.items()}
    deps = {k[0] for k in minutes}
    stamps = {k[2] for k in minutes}
    existing = {(r.deployment_id, r.revision, r.minute): r for r in MinuteRollup.objects.filter(
        deployment_id__in=deps, minute__gte=min(stamps), minute__lte=max(stamps))}
    create, update = [], []
    for key, agg in minutes.items():
        preds = agg["predictions"]
        if len(preds["values"]) > 50:
            preds["values"] = [preds["values"][i] for i in
                               sorted(rng.choice(len(preds["values"]), 50, replace=False))]
        if not preds["classes"]:
            del preds["classes"]
        row = existing.get(key)
        if row is None:
            create.append(MinuteRollup(
                deployment_id=key[0], revision=key[1], minute=key[2], count=agg["count"],
                errors=agg["errors"], latency_sum=agg["latency_sum"],
                latency_buckets=agg["buckets"], predictions=preds))
            continue
        row.count += agg["count"]
        row.errors += agg["errors"]
        row.latency_sum += agg["latency_sum"]
        old = row.latency_buckets or stats.empty_buckets()
        row.latency_buckets = [a + b for a, b in zip(old, agg["buckets"], strict=False)]
        row.predictions = _merge_predictions(row.predictions or {}, preds, rng)
        update.append(row)
    MinuteRollup.objects.bulk_create(create, batch_size=1000)
    MinuteRollup.objects.bulk_update(update, ["count", "errors", "latency_sum",
                                              *LATENCY_COLUMNS, "predictions"], batch_size=500)


def _store_sketches(sketches: dict, rng: np.random.Generator) -> None:
    if not sketches:
        return
    sketches = {(d, r, datetime.fromtimestamp(h, UTC)): sk for (d, r, h), sk in sketches.items()}
    create, update = [], []
    for (dep, rev, hour), sketch in sketches.items():
        row = FeatureSketch.objects.filter(deployment_id=dep, revision=rev, hour=hour).first()
        if row is None:
            create.append(FeatureSketch(deployment_id=dep, revision=rev, hour=hour,
                                        rows=sketch.rows,
                                        features=_merge_features({}, sketch, rng)))
        else:
            row.rows += sketch.rows
            row.features = _merge_features(row.features or {}, sketch, rng)
            update.append(row)
    FeatureSketch.objects.bulk_create(create)
    FeatureSketch.objects.bulk_update(update, ["rows", "features"])


def prune(*, now: datetime | None = None, chunk: int = 20000) -> dict[str, int]:
    """Delete raw records past their retention (and rollups past theirs), in chunks."""
    now = now or timezone.now()
    raw_cutoff = now - timedelta(days=settings.MODELPORT_MONITORING_RAW_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(PredictionRecord.objects.filter(timestamp__lt=raw_cutoff)
                   .values_list("id", flat=True)[:chunk])
        if not ids:
            break
        deleted += PredictionRecord.objects.filter(id__in=ids).delete()[0]
    traffic_samples = gateway_errors.prune(before=raw_cutoff)
    rollup_cutoff = now - timedelta(days=settings.MODELPORT_MONITORING_ROLLUP_RETENTION_DAYS)
    minutes = MinuteRollup.objects.filter(minute__lt=rollup_cutoff).delete()[0]
    sketches = FeatureSketch.objects.filter(hour__lt=rollup_cutoff).delete()[0]
    replica_stats = ReplicaStat.objects.filter(at__lt=raw_cutoff).delete()[0]
    return {"records": deleted, "rollups": minutes, "sketches": sketches,
            "replica_stats": replica_stats, "traffic_samples": traffic_samples}


# --- Replica CPU and memory ------------------------------------------------------------------
ALIVE_REPLICA_STATUSES = ("ready", "running", "starting", "draining")
MIB = 1024.0 * 1024.0


def _sample(runtime: Any, replica: Replica) -> tuple[Replica, dict[str, float] | None]:
    try:
        return replica, runtime.stats(replica.runtime_id)
    except Exception as exc:  # noqa: BLE001 - a replica that vanished meanwhile is skipped
        log.info("no stats for replica %s: %s", replica.runtime_id, exc)
        return replica, None


def collect_replica_stats(*, runtime: Any = None, now: datetime | None = None) -> int:
    """Sample CPU and memory of every live replica (the reconciler's ``Replica`` rows) from
    the runtime, in parallel — Docker's one-off stats call waits about a second per container
    — and store one ``ReplicaStat`` row each. Returns the number stored."""
    replicas = list(Replica.objects.filter(status__in=ALIVE_REPLICA_STATUSES)
                    .select_related("deployment"))
    if not replicas:
        return 0
    runtimes: dict[int | None, Any] = {}
    if runtime is None:  # each replica through its deployment's execution target's runtime
        from deployments.runtime_health import deployment_runtime

        for replica in replicas:
            key = replica.deployment.target_id
            if key not in runtimes:
                try:
                    runtimes[key] = deployment_runtime(replica.deployment)
                except Exception:  # a target that cannot be reached is skipped
                    log.info("no runtime for target %s", key, exc_info=True)
                    runtimes[key] = None
        replicas = [r for r in replicas if runtimes[r.deployment.target_id] is not None]
    with ThreadPoolExecutor(max_workers=max(1, min(
            settings.MODELPORT_MONITORING_REPLICA_STATS_THREADS, len(replicas)))) as pool:
        samples = list(pool.map(
            lambda r: _sample(runtime or runtimes[r.deployment.target_id], r), replicas))
    now = now or timezone.now()
    rows = []
    for replica, sample in samples:
        if not sample or not sample.get("memory_bytes"):
            continue  # gone, or stopped between the reconciler's look and ours
        limit = float(sample.get("memory_limit_bytes") or 0.0) / MIB
        configured = float(replica.deployment.memory_mb or 0)
        if not limit or (configured and limit > 4 * configured):
            # No cgroup limit reported (local processes), or the host's RAM (no limit set).
            limit = configured or None
        rows.append(ReplicaStat(
            deployment_id=replica.deployment_id, runtime_id=replica.runtime_id,
            revision=replica.revision, index=replica.index, at=now,
            cpu_percent=round(float(sample.get("cpu_percent") or 0.0), 3),
            memory_mb=round(float(sample.get("memory_bytes") or 0.0) / MIB, 3),
            memory_limit_mb=limit))
    # Sampling takes a second or more (Docker's stats call): a deployment deleted meanwhile
    # would fail the whole insert on its foreign key, every other replica's sample with it.
    live = set(Deployment.objects.filter(pk__in={r.deployment_id for r in rows})
               .values_list("pk", flat=True))
    rows = [r for r in rows if r.deployment_id in live]
    ReplicaStat.objects.bulk_create(rows)
    return len(rows)


def replica_series(*, deployment: Deployment, start: datetime, end: datetime, step: int,
                   revision: int | None = None) -> dict[str, Any]:
    """Per replica and step: mean CPU % and peak memory (MB), aligned with ``metrics_series``'
    timestamps. ``replicas`` lists each replica seen in the range (newest revision first)."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    rows = ReplicaStat.objects.filter(deployment=deployment, at__gte=start, at__lt=end)
    if revision is not None:
        rows = rows.filter(revision=revision)
    cpu_sum: dict[str, list[float]] = {}
    cpu_n: dict[str, list[int]] = {}
    memory: dict[str, list[float | None]] = {}
    info: dict[str, dict[str, Any]] = {}
    if connection.vendor == "postgresql":
        # The database groups by step: a month at 15 s is ~170,000 rows per replica.
        table = ReplicaStat._meta.db_table
        where = "deployment_id = %s AND at >= %s AND at < %s"
        params: list[Any] = [deployment.pk, start, end]
        if revision is not None:
            where += " AND revision = %s"
            params.append(revision)
        sql = (f"SELECT runtime_id, revision, index, "  # noqa: S608 - constant names
               f"floor((extract(epoch FROM at) - %s) / %s)::int, sum(cpu_percent), count(*), "
               f"max(memory_mb), max(memory_limit_mb), max(at) FROM {table} WHERE {where} "
               f"GROUP BY 1, 2, 3, 4")
        with connection.cursor() as cursor:
            cursor.execute(sql, [start.timestamp(), step, *params])
            grouped = cursor.fetchall()
    else:
        buckets: dict[tuple, list] = {}
        start_ts = start.timestamp()
        for rid, rev, idx, at, cpu, mem, lim in rows.values_list(
                "runtime_id", "revision", "index", "at", "cpu_percent", "memory_mb",
                "memory_limit_mb"):
            key = (rid, rev, idx, int((at.timestamp() - start_ts) // step))
            b = buckets.setdefault(key, [0.0, 0, 0.0, None, at])
            b[0] += cpu
            b[1] += 1
            b[2] = max(b[2], mem)
            b[3] = lim if b[3] is None or (lim is not None and lim > b[3]) else b[3]
            b[4] = max(b[4], at)
        grouped = [(*k, *v) for k, v in buckets.items()]
    for rid, rev, idx, i, cpu, count, mem, limit, last in grouped:
        if not 0 <= i < n:
            continue
        if rid not in info:
            info[rid] = {"replica": rid, "revision": rev, "index": idx, "memory_limit_mb": None,
                         "last_seen": last}
            cpu_sum[rid], cpu_n[rid] = [0.0] * n, [0] * n
            memory[rid] = [None] * n
        cpu_sum[rid][i] += cpu
        cpu_n[rid][i] += count
        memory[rid][i] = mem if memory[rid][i] is None else max(memory[rid][i], mem)
        if limit is not None:
            info[rid]["memory_limit_mb"] = _round(limit)
        info[rid]["last_seen"] = max(info[rid]["last_seen"], last)
    order = sorted(info, key=lambda rid: (-info[rid]["revision"], info[rid]["index"], rid))
    return {
        "replicas": [{**info[rid], "last_seen": info[rid]["last_seen"].isoformat()}
                     for rid in order],
        "replica_cpu": {rid: [_round(s / c, 2) if c else None
                              for s, c in zip(cpu_sum[rid], cpu_n[rid], strict=True)]
                        for rid in order},
        "replica_memory": {rid: [_round(m, 1) for m in memory[rid]] for rid in order},
    }


# --- Reading: metrics series -----------------------------------------------------------------
NICE_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_POINTS = 2000


def time_range(start: datetime | None, end: datetime | None, step: int | None = None,
               *, default_hours: int = 24) -> tuple[datetime, datetime, int]:
    end = end or timezone.now()
    start = start or end - timedelta(hours=default_hours)
    if start >= end:
        raise InvalidInput("start must be before end.", field="start")
    if end - start > timedelta(days=400):
        raise InvalidInput("The range may span at most 400 days.", field="start")
    span = (end - start).total_seconds()
    if step is None:
        step = next((s for s in NICE_STEPS if span / s <= 240), NICE_STEPS[-1])
    if step < 60 or step % 60:
        raise InvalidInput("step must be a whole number of minutes, in seconds (60, 300, …).",
                           field="step")
    if span / step > MAX_POINTS:
        raise InvalidInput(f"start/end/step give more than {MAX_POINTS} points; use a larger "
                           "step.", field="step")
    start = _minute(start)
    return start, end, step


class _StepSums:
    """Per-step sums of the minute rollups in a range."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = np.zeros(n)
        self.errors = np.zeros(n)
        self.latency_sum = np.zeros(n)
        self.buckets = np.zeros((n, len(LATENCY_COLUMNS)))
        self.classes: dict[str, np.ndarray] = {}
        self.pred_n = np.zeros(n)
        self.pred_sum = np.zeros(n)
        self.values: list[float] = []

    def add_class(self, i: int, label: str, value: float) -> None:
        series = self.classes.get(label)
        if series is None:
            series = self.classes[label] = np.zeros(self.n)
        series[i] += value


def _step_sums(deployment_ids: list[int], start: datetime, end: datetime, step: int,
               revision: int | None, n: int) -> _StepSums:
    """Sum the minute rollups per step. On PostgreSQL the database does it (GROUP BY over the
    bucket columns, ``jsonb_each_text`` for the classes); elsewhere Python does."""
    sums = _StepSums(n)
    table = MinuteRollup._meta.db_table
    if connection.vendor == "postgresql":
        where = "deployment_id = ANY(%s) AND minute >= %s AND minute < %s"
        params: list[Any] = [list(deployment_ids), start, end]
        if revision is not None:
            where += " AND revision = %s"
            params.append(revision)
        index = "floor((extract(epoch FROM minute) - %s) / %s)::int"
        head = [start.timestamp(), step]
        # Only constant table/column names are formatted in; every value is a parameter.
        columns = ", ".join(f"sum({c})" for c in LATENCY_COLUMNS)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {index}, sum(count), sum(errors), sum(latency_sum), "  # noqa: S608 - constant names
                           f"{columns} FROM {table} WHERE {where} GROUP BY 1", head + params)
            for i, c, e, ls, *buckets in cursor.fetchall():
                if 0 <= i < n:
                    sums.count[i], sums.errors[i], sums.latency_sum[i] = c, e, ls
                    sums.buckets[i] = buckets
            # Predictions: summed here rather than with jsonb_each_text, which costs ~3x more.
            cursor.execute(f"SELECT {index}, predictions::text FROM {table} "  # noqa: S608
                           f"WHERE {where}", head + params)
            loads = orjson.loads
            for i, text in cursor.fetchall():
                if not 0 <= i < n or text == "{}":
                    continue
                preds = loads(text)
                for label, value in (preds.get("classes") or {}).items():
                    sums.add_class(i, label, value)
                if preds.get("n"):
                    sums.pred_n[i] += preds["n"]
                    sums.pred_sum[i] += preds["sum"]
                    if len(sums.values) < 20000:
                        sums.values.extend(preds.get("values") or [])
        return sums
    rows = MinuteRollup.objects.filter(deployment_id__in=deployment_ids, minute__gte=start,
                                       minute__lt=end)
    if revision is not None:
        rows = rows.filter(revision=revision)
    start_ts = start.timestamp()
    for minute, c, e, ls, preds, *buckets in rows.values_list(
            "minute", "count", "errors", "latency_sum", "predictions", *LATENCY_COLUMNS):
        i = int((minute.timestamp() - start_ts) // step)
        if not 0 <= i < n:
            continue
        sums.count[i] += c
        sums.errors[i] += e
        sums.latency_sum[i] += ls
        sums.buckets[i] += buckets
        for label, value in (preds.get("classes") or {}).items():
            sums.add_class(i, label, value)
        if preds.get("n"):
            sums.pred_n[i] += preds["n"]
            sums.pred_sum[i] += preds["sum"]
            if len(sums.values) < 20000:
                sums.values.extend(preds.get("values") or [])
    return sums


def metrics_series(*, deployments: list[Deployment], start: datetime, end: datetime, step: int,
                   revision: int | None = None) -> dict[str, Any]:
    """Time series from the minute rollups: traffic, errors, latency percentiles, predictions."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    sums = _step_sums([d.pk for d in deployments], start, end, step, revision, n)
    count, errors, lat_sum, buckets = sums.count, sums.errors, sums.latency_sum, sums.buckets
    classes, pred_n, pred_sum, values = sums.classes, sums.pred_n, sums.pred_sum, sums.values
    minutes_per_step = step / 60

    def pct(q: float) -> list[float | None]:
        return [_round(stats.percentile(b, q)) for b in buckets.tolist()]

    total_buckets = buckets.sum(axis=0).tolist()
    total = float(count.sum())
    total_errors = float(errors.sum())
    predictions: dict[str, Any]
    if classes:
        predictions = {"kind": "classes",
                       "classes": {k: [_round(v) for v in classes[k].tolist()]
                                   for k in sorted(classes)[:30]}}
    elif values:
        hist, edges = np.histogram(values, bins=20)
        predictions = {"kind": "numeric",
                       "mean": [_round(s / c) if c else None
                                for s, c in zip(pred_sum.tolist(), pred_n.tolist(),
                                                strict=True)],
                       "histogram": {"edges": [float(x) for x in edges],
                                     "counts": [int(x) for x in hist]}}
    else:
        predictions = {"kind": "none"}
    count_l, errors_l, lat_l = count.tolist(), errors.tolist(), lat_sum.tolist()
    gateway = gateway_errors.series(deployment_ids=[d.pk for d in deployments], start=start,
                                    end=end, step=step, revision=revision)
    return {
        "start": start.isoformat(), "end": end.isoformat(), "step": step,
        "timestamps": [(start + timedelta(seconds=step * i)).isoformat() for i in range(n)],
        "requests": [_round(c) for c in count_l],
        "requests_per_min": [_round(c / minutes_per_step) for c in count_l],
        "errors": [_round(e) for e in errors_l],
        "error_rate": [_round(100.0 * e / c) if c else None
                       for e, c in zip(errors_l, count_l, strict=True)],
        "latency_mean": [_round(s / c) if c else None
                         for s, c in zip(lat_l, count_l, strict=True)],
        "latency_p50": pct(0.5), "latency_p95": pct(0.95), "latency_p99": pct(0.99),
        "predictions": predictions,
        "totals": {"requests": _round(total), "errors": _round(total_errors),
                   "error_rate": _round(100.0 * total_errors / total) if total else None,
                   "latency_p50": _round(stats.percentile(total_buckets, 0.5)),
                   "latency_p95": _round(stats.percentile(total_buckets, 0.95)),
                   "latency_p99": _round(stats.percentile(total_buckets, 0.99)),
                   **gateway.pop("totals")},
        **gateway,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# --- Reading: drift --------------------------------------------------------------------------
def thresholds_of(model: RegisteredModel) -> dict[str, float]:
    row = ModelMonitoring.objects.filter(model=model).first()
    return {"psi": row.psi_threshold if row else 0.2,
            "p_value": row.p_value_threshold if row else 0.01}


def _revision_row(deployment: Deployment, number: int) -> Revision | None:
    return (Revision.objects.filter(deployment=deployment, number=number)
            .select_related("model_version").first())


def drift_report(*, deployment: Deployment, start: datetime, end: datetime,
                 revision: int | None = None) -> dict[str, Any]:
    """Per feature: PSI and a test statistic/p-value of the inputs in [start, end) against the
    reference of the revision's model version."""
    sketches = FeatureSketch.objects.filter(deployment=deployment,
                                            hour__gte=start.replace(minute=0, second=0,
                                                                    microsecond=0),
                                            hour__lt=end)
    if revision is None:
        revision = (sketches.order_by("-revision").values_list("revision", flat=True).first()
                    or deployment.revision)
    sketches = sketches.filter(revision=revision)
    rev = _revision_row(deployment, revision)
    version = rev.model_version if rev else deployment.version
    reference = (version.reference_stats if version else None) or _reference_of(deployment.pk,
                                                                               revision)
    thresholds = thresholds_of(deployment.model)
    merged: dict[str, dict[str, Any]] = {}
    rows = 0
    # JSON as text, parsed with orjson: a week of sketches holds ~10^5 sampled values.
    texts = sketches.annotate(text=Cast("features", TextField())).values_list("rows", "text")
    for sketch_rows, text in texts:
        rows += sketch_rows
        features = orjson.loads(text) if text else {}
        for name, f in features.items():
            into = merged.setdefault(name, {})
            counts = f.get("counts")
            if isinstance(counts, list):
                prev = into.get("counts") or [0.0] * len(counts)
                if len(prev) == len(counts):
                    into["counts"] = [a + b for a, b in zip(prev, counts, strict=True)]
                into.setdefault("sample", []).extend(f.get("sample") or [])
            elif isinstance(counts, dict):
                prev = into.setdefault("counts", {})
                for key, n in counts.items():
                    prev[key] = prev.get(key, 0.0) + n
    features = []
    for name, ref in (reference.get("features") or {}).items():
        seen = merged.get(name)
        if ref.get("kind") == "numeric":
            counts = (seen or {}).get("counts") or [0.0] * max(1, len(ref.get("bin_edges", []))
                                                              - 1)
            result = stats.numeric_drift(ref, counts, (seen or {}).get("sample") or [],
                                         thresholds)
        else:
            result = stats.categorical_drift(ref, (seen or {}).get("counts") or {}, thresholds)
        features.append({"feature": name, **result})
    return {
        "deployment": deployment.name, "revision": revision,
        "model_version": version.version if version else None,
        "start": start.isoformat(), "end": end.isoformat(), "rows": rows,
        "reference": {"source": reference.get("source"), "rows": reference.get("rows")},
        "thresholds": thresholds, "features": features,
        "drifted": [f["feature"] for f in features if f["drifted"]],
    }


# --- Ground truth ----------------------------------------------------------------------------
def _pair_value(outputs: Any, label: Any) -> Any:
    predictions = extract.predictions_of(outputs)
    if isinstance(label, list) and len(label) == len(predictions):
        return predictions
    return predictions[0] if predictions else None


@transaction.atomic
def submit_feedback(*, actor, deployment: Deployment, items: Any) -> dict[str, Any]:
    """Ground-truth labels joined with the logged predictions by request id."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "sending ground truth")
    if not isinstance(items, list):
        raise InvalidInput('The body must be a list of {"request_id", "label"} objects.')
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise BatchTooLarge(f"{len(items)} labels in one request; the limit is "
                            f"{MAX_FEEDBACK_ITEMS}.")
    labels: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str) \
                or "label" not in item:
            raise InvalidInput(f'Item {i} must be an object with "request_id" (string) and '
                               '"label".')
        labels[item["request_id"][:MAX_REQUEST_ID]] = item["label"]
    found = {}
    ids = list(labels)
    for start in range(0, len(ids), 1000):
        for rid, rev, ts, outputs in (PredictionRecord.objects
                                      .filter(deployment=deployment,
                                              request_id__in=ids[start:start + 1000])
                                      .values_list("request_id", "revision", "timestamp",
                                                   "outputs")):
            found[rid] = (rev, ts, outputs)
    existing = {f.request_id: f for f in Feedback.objects.filter(
        deployment=deployment, request_id__in=list(found))}
    create, update = [], []
    for rid, (rev, ts, outputs) in found.items():
        label = labels[rid]
        prediction = _pair_value(outputs, label)
        row = existing.get(rid)
        if row is None:
            create.append(Feedback(deployment=deployment, revision=rev, request_id=rid,
                                   timestamp=ts, prediction=prediction, label=label))
        else:
            row.label, row.prediction = label, prediction
            update.append(row)
    Feedback.objects.bulk_create(create, batch_size=1000)
    Feedback.objects.bulk_update(update, ["label", "prediction"], batch_size=1000)
    unmatched = [rid for rid in labels if rid not in found]
    audit.record(actor=actor, action="feedback.submitted", obj=deployment,
                 team=deployment.team,
                 after={"matched": len(found), "unmatched": len(unmatched)})
    return {"matched": len(found), "updated": len(update), "unmatched": unmatched}


def _pairs(rows) -> list[tuple[Any, Any]]:
    pairs = []
    for prediction, label in rows:
        if isinstance(label, list) and isinstance(prediction, list):
            pairs.extend(zip(prediction, label, strict=False))
        elif prediction is not None and label is not None:
            pairs.append((prediction, label))
    return pairs


def task_of(deployment: Deployment) -> str:
    row = ModelMonitoring.objects.filter(model_id=deployment.model_id).first()
    return row.task if row else TaskType.AUTO


def quality_series(*, deployment: Deployment, start: datetime, end: datetime, step: int,
                   revision: int | None = None) -> dict[str, Any]:
    """Accuracy/F1 or MAE/RMSE per step, over the labelled predictions made in each step."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    rows = Feedback.objects.filter(deployment=deployment, timestamp__gte=start, timestamp__lt=end)
    if revision is not None:
        rows = rows.filter(revision=revision)
    per_step: list[list] = [[] for _ in range(n)]
    everything = []
    start_ts = start.timestamp()
    for ts, prediction, label in rows.values_list("timestamp", "prediction", "label"):
        i = int((ts.timestamp() - start_ts) // step)
        if 0 <= i < n:
            per_step[i].append((prediction, label))
            everything.append((prediction, label))
    task = task_of(deployment)
    all_pairs = _pairs(everything)
    if task == TaskType.AUTO and all_pairs:
        task = "classification" if stats.is_classification(all_pairs) else "regression"
    names = ("accuracy", "f1") if task == "classification" else ("mae", "rmse")
    series: dict[str, list] = {name: [] for name in names}
    labelled = []
    for chunk in per_step:
        pairs = _pairs(chunk)
        labelled.append(len(pairs))
        values = stats.quality(pairs, task) if pairs else {}
        for name in names:
            series[name].append(_round(values.get(name)))
    overall = stats.quality(all_pairs, task) if all_pairs else {}
    return {"task": task if all_pairs else task_of(deployment), "labelled": labelled,
            **series, "totals": {k: _round(v) for k, v in overall.items()} |
            {"labelled": len(all_pairs)}}


# --- Alert rules -----------------------------------------------------------------------------
METRICS = {
    "latency_p50": "p50 latency (ms)",
    "latency_p95": "p95 latency (ms)",
    "latency_p99": "p99 latency (ms)",
    "error_rate": "error rate (%)",
    "gateway_error_rate": "gateway error rate (%): 502/503/504 answered by the gateway",
    "gateway_errors": "gateway errors: 502/503/504 answered by the gateway",
    "requests_per_min": "requests per minute",
    "psi_max": "largest PSI of any feature",
    "drifted_features": "number of drifted features",
    "accuracy": "accuracy (0-1)",
    "f1": "macro F1 (0-1)",
    "mae": "mean absolute error",
    "rmse": "root mean squared error",
}
RULE_FIELDS = ["name", "metric", "window_minutes", "comparison", "threshold", "enabled",
               "webhook_url", "emails", "retrain_webhook_url"]


def _check_rule(data: dict[str, Any], stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a rule's fields. ``stored``: the rule's current values — a webhook URL left as
    it was is not checked again here (it is at each delivery), so a rule whose destination has
    since become internal can still be disabled or edited."""
    if data.get("metric") not in METRICS:
        raise InvalidInput(f"Unknown metric '{data.get('metric')}'; use one of "
                           f"{', '.join(sorted(METRICS))}.", field="metric")
    if data.get("comparison", ">") not in Comparison.values:
        raise InvalidInput("comparison must be one of >, >=, <, <=.", field="comparison")
    window = data.get("window_minutes", 5)
    if not isinstance(window, int) or not 1 <= window <= 7 * 24 * 60:
        raise InvalidInput("window_minutes must be 1-10080.", field="window_minutes")
    threshold = data.get("threshold")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise InvalidInput("threshold must be a number.", field="threshold")
    emails = data.get("emails") or []
    if not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e
                                               for e in emails):
        raise InvalidInput("emails must be a list of addresses.", field="emails")
    data["emails"] = emails
    for field in ("webhook_url", "retrain_webhook_url"):
        value = data.get(field, "")
        if stored is None or value != stored.get(field):
            data[field] = webhooks.check_rule_url(value, field)
    return data


def _check_rule_name(deployment: Deployment, name: Any, exclude: int | None = None) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not 0 < len(name) <= 100:
        raise InvalidInput("name must be 1-100 characters.", field="name")
    taken = AlertRule.objects.filter(deployment=deployment, name=name)
    if exclude is not None:
        taken = taken.exclude(pk=exclude)
    if taken.exists():
        raise Conflict(f"Deployment '{deployment.name}' already has a rule named '{name}'.",
                       code="name_taken", field="name")
    return name


@transaction.atomic
def create_alert_rule(*, actor, deployment: Deployment, name: str, metric: str,
                      threshold: float, comparison: str = ">", window_minutes: int = 5,
                      webhook_url: str = "", emails: list[str] | None = None,
                      retrain_webhook_url: str = "", enabled: bool = True) -> AlertRule:
    require_team_role(actor, deployment.team, Role.ENGINEER, "creating alert rules")
    name = _check_rule_name(deployment, name)
    data = _check_rule({"metric": metric, "threshold": threshold, "comparison": comparison,
                        "window_minutes": window_minutes, "webhook_url": webhook_url,
                        "emails": emails, "retrain_webhook_url": retrain_webhook_url})
    rule = AlertRule.objects.create(deployment=deployment, name=name, enabled=enabled,
                                    created_by=actor, **data)
    audit.record(actor=actor, action="alert_rule.created", obj=rule, team=deployment.team,
                 after=audit.snapshot(rule, RULE_FIELDS))
    return rule


@transaction.atomic
def update_alert_rule(*, actor, rule: AlertRule, **changes: Any) -> AlertRule:
    require_team_role(actor, rule.deployment.team, Role.ENGINEER, "editing alert rules")
    rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
    before = audit.snapshot(rule, RULE_FIELDS)
    stored = {f: getattr(rule, f) for f in RULE_FIELDS}
    data = stored | {k: v for k, v in changes.items() if k in RULE_FIELDS and v is not None}
    data["name"] = _check_rule_name(rule.deployment, data.get("name"), exclude=rule.pk)
    data = _check_rule(data, stored=stored)
    for field, value in data.items():
        setattr(rule, field, value)
    rule.save()
    after = audit.snapshot(rule, RULE_FIELDS)
    if after != before:
        audit.record(actor=actor, action="alert_rule.updated", obj=rule,
                     team=rule.deployment.team, before=before, after=after)
    return rule


@transaction.atomic
def delete_alert_rule(*, actor, rule: AlertRule) -> None:
    require_team_role(actor, rule.deployment.team, Role.ENGINEER, "deleting alert rules")
    audit.record(actor=actor, action="alert_rule.deleted", obj=rule, team=rule.deployment.team,
                 before=audit.snapshot(rule, RULE_FIELDS))
    rule.delete()


def metric_value(rule: AlertRule, now: datetime) -> float | None:
    """The rule's metric over its window ending ``now``; None when there is no data."""
    end = _minute(now)
    start = end - timedelta(minutes=rule.window_minutes)
    deployment = rule.deployment
    metric = rule.metric
    if metric in ("psi_max", "drifted_features"):
        report = drift_report(deployment=deployment, start=start, end=now)
        measured = [f for f in report["features"] if f["n"] > 0]
        if not measured:
            return None
        if metric == "psi_max":
            return max(f["psi"] for f in measured)
        return float(sum(f["drifted"] for f in measured))
    if metric in ("accuracy", "f1", "mae", "rmse"):
        quality = quality_series(deployment=deployment, start=start, end=end,
                                 step=rule.window_minutes * 60)
        return quality["totals"].get(metric)
    series = metrics_series(deployments=[deployment], start=start, end=end,
                            step=rule.window_minutes * 60)
    totals = series["totals"]
    if metric == "requests_per_min":
        return (totals["requests"] or 0.0) / rule.window_minutes
    return totals.get(metric)


def _breaches(value: float, comparison: str, threshold: float) -> bool:
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold,
            "<=": value <= threshold}[comparison]


def describe(rule: AlertRule, value: float | None) -> str:
    shown = "no data" if value is None else f"{value:.4g}"
    return (f"{rule.deployment.name}: {rule.name} — {METRICS.get(rule.metric, rule.metric)} "
            f"over {rule.window_minutes} min is {shown} (rule: {rule.comparison} "
            f"{rule.threshold:g})")


def evaluate_alerts(*, now: datetime | None = None) -> list[tuple[int, str]]:
    """Evaluate every enabled rule; open or resolve alerts. Returns (alert id, event) pairs
    for the notifications to send (the task enqueues them after commit)."""
    now = now or timezone.now()
    events = []
    for rule in AlertRule.objects.filter(enabled=True).select_related("deployment",
                                                                       "deployment__model"):
        try:
            value = metric_value(rule, now)
        except Exception:  # one broken rule must not stop the others
            log.exception("evaluating alert rule %s failed", rule.pk)
            continue
        with transaction.atomic():
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=value)
            open_alert = (Alert.objects.select_for_update()
                          .filter(rule=rule, state=AlertState.FIRING).first())
            breach = value is not None and _breaches(value, rule.comparison, rule.threshold)
            if breach and open_alert is None:
                alert = Alert.objects.create(rule=rule, value=value, started_at=now,
                                             message=describe(rule, value))
                events.append((alert.pk, "firing"))
            elif open_alert is not None and value is not None and not breach:
                open_alert.state = AlertState.RESOLVED
                open_alert.resolved_at = now
                open_alert.value = value
                open_alert.save(update_fields=["state", "resolved_at", "value"])
                events.append((open_alert.pk, "resolved"))
            elif open_alert is not None and value is not None:
                Alert.objects.filter(pk=open_alert.pk).update(value=value)
    return events


def notification_text(alert: Alert, event: str) -> str:
    mark = "🔴 FIRING" if event == "firing" else "✅ RESOLVED"
    link = f"{settings.MODELPORT_BASE_URL.rstrip('/')}/monitoring/deployments/" \
           f"{alert.rule.deployment.name}/"
    return f"{mark} {describe(alert.rule, alert.value)} — {link}"


def retrain_payload(alert: Alert) -> dict[str, Any]:
    rule = alert.rule
    deployment = rule.deployment
    rev = _revision_row(deployment, deployment.revision)
    return {"event": "alert.firing", "alert_id": alert.pk, "rule": rule.name,
            "metric": rule.metric, "value": alert.value, "threshold": rule.threshold,
            "comparison": rule.comparison, "deployment": deployment.name,
            "model": deployment.model.name,
            "version": rev.model_version.version if rev else None,
            "started_at": alert.started_at.isoformat()}


# --- Settings --------------------------------------------------------------------------------
@transaction.atomic
def set_model_monitoring(*, actor, model: RegisteredModel, psi_threshold: float | None = None,
                         p_value_threshold: float | None = None,
                         task: str | None = None) -> ModelMonitoring:
    require_team_role(actor, model.team, Role.MAINTAINER, "changing drift thresholds")
    row, _ = ModelMonitoring.objects.select_for_update().get_or_create(model=model)
    before = audit.snapshot(row, ["psi_threshold", "p_value_threshold", "task"])
    if psi_threshold is not None:
        if not 0 < psi_threshold < 10:
            raise InvalidInput("psi_threshold must be between 0 and 10.", field="psi_threshold")
        row.psi_threshold = psi_threshold
    if p_value_threshold is not None:
        if not 0 < p_value_threshold < 1:
            raise InvalidInput("p_value_threshold must be between 0 and 1.",
                               field="p_value_threshold")
        row.p_value_threshold = p_value_threshold
    if task is not None:
        if task not in TaskType.values:
            raise InvalidInput(f"task must be one of {', '.join(TaskType.values)}.", field="task")
        row.task = task
    row.save()
    audit.record(actor=actor, action="model_monitoring.updated", obj=model, team=model.team,
                 before=before,
                 after=audit.snapshot(row, ["psi_threshold", "p_value_threshold", "task"]))
    return row


@transaction.atomic
def set_sampling_rate(*, actor, deployment: Deployment, sampling_rate: float
                      ) -> DeploymentMonitoring:
    require_team_role(actor, deployment.team, Role.ENGINEER, "changing the sampling rate")
    if not isinstance(sampling_rate, (int, float)) or not 0 <= sampling_rate <= 1:
        raise InvalidInput("sampling_rate must be between 0 and 1.", field="sampling_rate")
    row, _ = DeploymentMonitoring.objects.select_for_update().get_or_create(deployment=deployment)
    before = audit.snapshot(row, ["sampling_rate"])
    row.sampling_rate = float(sampling_rate)
    row.save()
    _RATE_CACHE.pop((deployment.pk, deployment.created_at), None)
    audit.record(actor=actor, action="deployment_monitoring.updated", obj=deployment,
                 team=deployment.team, before=before, after=audit.snapshot(row,
                                                                            ["sampling_rate"]))
    return row


# --- Reading: many deployments at a glance (portal lists) -----------------------------------
def totals_by_deployment(*, deployment_ids: list[int], start: datetime, end: datetime
                         ) -> dict[int, dict[str, Any]]:
    """Requests, errors, error rate, latency p50/p95/p99 and firing alerts per deployment over
    ``[start, end)``: two grouped queries for any number of deployments (the ``totals`` of
    ``metrics_series``, without its per-step series)."""
    from django.db.models import Count, Sum

    empty = {"requests": 0.0, "errors": 0.0, "error_rate": None, "latency_p50": None,
             "latency_p95": None, "latency_p99": None, "firing": 0}
    result: dict[int, dict[str, Any]] = {pk: dict(empty) for pk in deployment_ids}
    rows = (MinuteRollup.objects.filter(deployment_id__in=deployment_ids, minute__gte=start,
                                        minute__lt=end)
            .order_by().values("deployment_id")
            .annotate(n=Sum("count"), e=Sum("errors"), **{c: Sum(c) for c in LATENCY_COLUMNS}))
    for row in rows:
        total, errors = float(row["n"] or 0), float(row["e"] or 0)
        buckets = [float(row[c] or 0) for c in LATENCY_COLUMNS]
        result[row["deployment_id"]].update({
            "requests": _round(total), "errors": _round(errors),
            "error_rate": _round(100.0 * errors / total) if total else None,
            "latency_p50": _round(stats.percentile(buckets, 0.5)),
            "latency_p95": _round(stats.percentile(buckets, 0.95)),
            "latency_p99": _round(stats.percentile(buckets, 0.99))})
    for pk, gateway in gateway_errors.totals_by_deployment(
            deployment_ids=deployment_ids, start=start, end=end).items():
        result[pk].update(gateway)
    for row in (Alert.objects.filter(state=AlertState.FIRING,
                                     rule__deployment_id__in=deployment_ids)
                .order_by().values("rule__deployment_id").annotate(n=Count("id"))):
        result[row["rule__deployment_id"]]["firing"] = row["n"]
    return result
