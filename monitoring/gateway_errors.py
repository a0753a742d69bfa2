"""Failures the gateway answers itself, in monitoring: 502 (replicas did not answer), 503 (no
ready replica, or the control plane not answering), 504 (a replica timed out), 500 (a gateway
bug).

No replica sees these requests, so no prediction log holds them: a deployment with nothing ready
took 369 requests and its charts said "3 in range". The gateway counts them per deployment and
revision with the rest of its traffic (``gateway.routes.count``/``refused`` → a
``TrafficSample`` a second per process); ``rollup`` folds those samples into the same minute
rollups the charts, the metrics API and alert rules read, and ``series`` reads them back.

The codes and the Prometheus counter are defined here, below the gateway: the gateway (a layer
above) counts into them, and monitoring reads and serves them without importing the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone
from prometheus_client import Counter

from deployments.models import TrafficSample

from .models import MinuteRollup, RollupCursor

# The gateway's own failures, answered instead of a replica's: 500 (a bug in the gateway),
# 502 (replicas did not answer), 503 (no ready replica), 504 (a replica timed out).
GATEWAY_CODES = (500, 502, 503, 504)
# Per process; /metrics adds the processes up where prometheus-client's multiprocess mode is
# on. Registered in monitoring's registry (``monitoring.prom``), which serves /metrics.
GATEWAY_ERRORS = Counter(
    "modelport_gateway_errors", "Requests the gateway answered with its own failure instead of "
    "a replica's answer: 502 replicas unreachable, 503 no ready replica (or the control plane "
    "not answering), 504 timed out, 500 a gateway bug", ["deployment", "code"], registry=None)
# Replica addresses a gateway process stopped picking after a connect failure
# (gateway/ejection.py), by the failure's kind: timeout, unreachable, refused.
GATEWAY_EJECTIONS = Counter(
    "modelport_gateway_ejections", "Replica addresses ejected from picking after a connect "
    "failure (for MODELPORT_GATEWAY_EJECT_S)", ["reason"], registry=None)
# Consumer keys (gateway/consumers.py), by deployment and key ("team/name"): requests admitted
# (added by the batch at each once-a-second flush) and requests refused 429 by the key's limit.
CONSUMER_REQUESTS = Counter(
    "modelport_gateway_consumer_requests", "Requests a consumer key made that the gateway "
    "admitted", ["deployment", "key"], registry=None)
RATE_LIMITED = Counter(
    "modelport_gateway_rate_limited", "Requests refused 429 because the consumer key was over "
    "its rate limit", ["deployment", "key"], registry=None)

COLUMNS = tuple(f"gateway_{code}" for code in GATEWAY_CODES)
SAMPLE_FIELDS = ("id", "deployment_id", "revision", "at", "gateway_requests", *COLUMNS)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


@transaction.atomic
def rollup(*, now: datetime | None = None, limit: int = 20000) -> int:
    """Fold the next gateway traffic samples into the minute rollups; the number folded.

    A cursor row (``gateway``) holds the last sample id folded in. Samples written in the last
    ``MODELPORT_MONITORING_ROLLUP_DELAY_S`` seconds, and every sample after the first such one,
    wait for the next pass, so a gateway's INSERT still in flight (a lower id) is not skipped.
    The prediction-log rollup's cursor row is locked too: both add into the same rows."""
    now = now or timezone.now()
    for name in ("rollup", "gateway"):
        RollupCursor.objects.get_or_create(name=name)
    locked = {c.name: c for c in RollupCursor.objects.select_for_update()
              .filter(name__in=["rollup", "gateway"]).order_by("name")}
    cursor = locked["gateway"]
    horizon = now - timedelta(seconds=settings.MODELPORT_MONITORING_ROLLUP_DELAY_S)
    samples = []
    for row in (TrafficSample.objects.filter(id__gt=cursor.last_id).order_by("id")
                .values_list(*SAMPLE_FIELDS)[:limit]):
        if row[3] > horizon:
            break
        samples.append(row)
    if not samples:
        return 0
    minutes: dict[tuple[int, int, datetime], list[int]] = {}
    for _id, deployment_id, revision, at, answered, *codes in samples:
        if not answered and not any(codes):
            continue
        key = (deployment_id, revision, at.replace(second=0, microsecond=0))
        sums = minutes.setdefault(key, [0] * (1 + len(COLUMNS)))
        for i, value in enumerate((answered, *codes)):
            sums[i] += value
    _store(minutes)
    cursor.last_id = samples[-1][0]
    cursor.last_timestamp = samples[-1][3]
    cursor.save(update_fields=["last_id", "last_timestamp", "updated_at"])
    return len(samples)


def _store(minutes: dict[tuple[int, int, datetime], list[int]]) -> None:
    if not minutes:
        return
    fields = ("gateway_requests", *COLUMNS)
    stamps = {key[2] for key in minutes}
    existing = {(r.deployment_id, r.revision, r.minute): r for r in MinuteRollup.objects.filter(
        deployment_id__in={key[0] for key in minutes}, minute__gte=min(stamps),
        minute__lte=max(stamps))}
    create, update = [], []
    for key, sums in minutes.items():
        row = existing.get(key)
        if row is None:
            create.append(MinuteRollup(deployment_id=key[0], revision=key[1], minute=key[2],
                                       **dict(zip(fields, sums, strict=True))))
            continue
        for field, value in zip(fields, sums, strict=True):
            setattr(row, field, getattr(row, field) + value)
        update.append(row)
    MinuteRollup.objects.bulk_create(create, batch_size=1000)
    MinuteRollup.objects.bulk_update(update, list(fields), batch_size=500)


def prune(*, before: datetime) -> int:
    """Traffic samples older than ``before`` (their counts live on in the rollups)."""
    return TrafficSample.objects.filter(at__lt=before).delete()[0]


# --- Reading --------------------------------------------------------------------------------
def _step_sums(deployment_ids: list[int], start: datetime, end: datetime, step: int,
               revision: int | None, n: int) -> np.ndarray:
    """Per step: [gateway requests, one column per code] summed over the minute rollups."""
    sums = np.zeros((n, 1 + len(COLUMNS)))
    if connection.vendor == "postgresql":
        table = MinuteRollup._meta.db_table
        where = ("deployment_id = ANY(%s) AND minute >= %s AND minute < %s "
                 "AND gateway_requests > 0")
        params: list[Any] = [list(deployment_ids), start, end]
        if revision is not None:
            where += " AND revision = %s"
            params.append(revision)
        columns = ", ".join(f"sum({c})" for c in ("gateway_requests", *COLUMNS))
        with connection.cursor() as cursor:  # constant table/column names only
            cursor.execute(f"SELECT floor((extract(epoch FROM minute) - %s) / %s)::int, "  # noqa: S608
                           f"{columns} FROM {table} WHERE {where} GROUP BY 1",
                           [start.timestamp(), step, *params])
            for i, *values in cursor.fetchall():
                if 0 <= i < n:
                    sums[i] = values
        return sums
    rows = MinuteRollup.objects.filter(deployment_id__in=deployment_ids, minute__gte=start,
                                       minute__lt=end, gateway_requests__gt=0)
    if revision is not None:
        rows = rows.filter(revision=revision)
    start_ts = start.timestamp()
    for minute, *values in rows.values_list("minute", "gateway_requests", *COLUMNS):
        i = int((minute.timestamp() - start_ts) // step)
        if 0 <= i < n:
            sums[i] += values
    return sums


def series(*, deployment_ids: list[int], start: datetime, end: datetime, step: int,
           revision: int | None = None) -> dict[str, Any]:
    """The gateway's answers per step: ``gateway_requests``, ``gateway_errors`` by code,
    ``gateway_error_rate`` (% of its answers that were its own failures), and ``totals``
    (the same, prefixed, for ``metrics_series``'s totals)."""
    n = max(1, math.ceil((end - start).total_seconds() / step))
    sums = _step_sums(deployment_ids, start, end, step, revision, n)
    answered = sums[:, 0]
    failed = sums[:, 1:].sum(axis=1)
    total, total_failed = float(answered.sum()), float(failed.sum())
    return {
        "gateway_requests": [_round(v) for v in answered.tolist()],
        "gateway_errors": {str(code): [_round(v) for v in sums[:, i + 1].tolist()]
                           for i, code in enumerate(GATEWAY_CODES)},
        "gateway_error_rate": [_round(100.0 * f / a) if a else None
                               for f, a in zip(failed.tolist(), answered.tolist(), strict=True)],
        "totals": {
            "gateway_requests": _round(total), "gateway_errors": _round(total_failed),
            "gateway_error_rate": _round(100.0 * total_failed / total) if total else None,
            "gateway_errors_by_code": {str(code): _round(float(sums[:, i + 1].sum()))
                                       for i, code in enumerate(GATEWAY_CODES)}},
    }


def totals_by_deployment(*, deployment_ids: list[int], start: datetime, end: datetime
                         ) -> dict[int, dict[str, Any]]:
    """Gateway answers and failures per deployment over ``[start, end)``: one grouped query."""
    result: dict[int, dict[str, Any]] = {
        pk: {"gateway_requests": 0, "gateway_errors": 0, "gateway_error_rate": None}
        for pk in deployment_ids}
    rows = (MinuteRollup.objects.filter(deployment_id__in=deployment_ids, minute__gte=start,
                                        minute__lt=end, gateway_requests__gt=0)
            .order_by().values("deployment_id")
            .annotate(n=Sum("gateway_requests"), **{c: Sum(c) for c in COLUMNS}))
    # The error columns' names are not literals: a row is a plain mapping here.
    for row in cast(Iterable[Mapping[str, Any]], rows):
        answered = int(row["n"] or 0)
        failed = sum(int(row[c] or 0) for c in COLUMNS)
        result[row["deployment_id"]].update({
            "gateway_requests": answered, "gateway_errors": failed,
            "gateway_error_rate": _round(100.0 * failed / answered) if answered else None})
    return result
