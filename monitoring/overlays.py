"""What the charts draw over the metric series: deploy/rollback markers and, while a traffic
split is live, one latency and error-rate line per revision (canary against stable).

Both are read with one query each, whatever the number of revisions or minutes."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.db import connection

from core.lazy_imports import lazy_module
from deployments.models import Deployment, Revision

from .models import LATENCY_COLUMNS, MinuteRollup
from .stats import percentile, rounded

np = lazy_module("numpy")  # imported when first used, like monitoring.services

MAX_MARKERS = 50
MAX_SPLIT_REVISIONS = 3


def _kind(reason: str) -> str:
    if reason.startswith("rollback"):
        return "rollback"
    if reason.startswith("promote"):
        return "promote"
    return "deploy"


def revision_markers(*, deployment: Deployment, start: datetime, end: datetime
                     ) -> list[dict[str, Any]]:
    """Each revision made in [start, end): when, which, and why (a rollback is marked as one)."""
    rows = (Revision.objects.filter(deployment=deployment, created_at__gte=start,
                                    created_at__lt=end)
            .order_by("created_at").values_list("number", "created_at", "reason",
                                                 "model_version__version")[:MAX_MARKERS])
    return [{"revision": number, "at": at.isoformat(), "kind": _kind(reason or ""),
             "label": f"r{number} (v{version})" + (f" · {reason}" if reason else "")}
            for number, at, reason, version in rows]


def split_revisions(deployment: Deployment) -> list[dict[str, Any]]:
    """The revisions traffic is split between now (a canary or blue/green in progress), each
    with its share; empty when one revision takes all the traffic."""
    split = [t for t in (deployment.traffic or []) if isinstance(t, dict)
             and isinstance(t.get("revision"), int)]
    if len(split) < 2:
        return []
    return [{"revision": t["revision"], "percent": t.get("percent")}
            for t in split[:MAX_SPLIT_REVISIONS]]


def _sums(deployment_id: int, revisions: list[int], start: datetime, end: datetime, step: int
          ) -> list[tuple[int, int, float, float, list[float]]]:
    """(revision, step index, requests, errors, latency buckets) per revision and step: summed
    by PostgreSQL (GROUP BY, like ``services.metrics_series``), else per minute row."""
    if connection.vendor == "postgresql":
        columns = ", ".join(f"sum({c})" for c in LATENCY_COLUMNS)
        with connection.cursor() as cursor:
            # Only constant table/column names are formatted in; every value is a parameter.
            cursor.execute(
                f"SELECT revision, floor((extract(epoch FROM minute) - %s) / %s)::int, "  # noqa: S608 - constant names
                f"sum(count), sum(errors), {columns} FROM {MinuteRollup._meta.db_table} "
                "WHERE deployment_id = %s AND revision = ANY(%s) AND minute >= %s "
                "AND minute < %s GROUP BY 1, 2",
                [start.timestamp(), step, deployment_id, revisions, start, end])
            return [(r, i, c, e, list(lat)) for r, i, c, e, *lat in cursor.fetchall()]
    rows = MinuteRollup.objects.filter(deployment_id=deployment_id, revision__in=revisions,
                                       minute__gte=start, minute__lt=end)
    start_ts = start.timestamp()
    return [(r, int((minute.timestamp() - start_ts) // step), c, e, lat)
            for r, minute, c, e, *lat in rows.values_list("revision", "minute", "count",
                                                          "errors", *LATENCY_COLUMNS)]


def split_series(*, deployment: Deployment, start: datetime, end: datetime, step: int
                 ) -> list[dict[str, Any]]:
    """Per revision of a live split: its p95 latency and error rate per step (null where it
    had no requests), for overlaying canary and stable on one chart. One query over the minute
    rollups of those revisions, summed per step by the database (not a full metric series
    each: no predictions, no gateway)."""
    split = split_revisions(deployment)
    if not split:
        return []
    numbers = [entry["revision"] for entry in split]
    n = max(1, math.ceil((end - start).total_seconds() / step))
    count = {r: np.zeros(n) for r in numbers}
    errors = {r: np.zeros(n) for r in numbers}
    buckets = {r: np.zeros((n, len(LATENCY_COLUMNS))) for r in numbers}
    for revision, i, c, e, lat in _sums(deployment.pk, numbers, start, end, step):
        if 0 <= i < n:
            count[revision][i] += c
            errors[revision][i] += e
            buckets[revision][i] += lat
    return [{**entry,
             "latency_p95": [rounded(percentile(b, 0.95))
                             for b in buckets[entry["revision"]].tolist()],
             "error_rate": [rounded(100.0 * e / c) if c else None
                            for e, c in zip(errors[entry["revision"]].tolist(),
                                            count[entry["revision"]].tolist(), strict=True)]}
            for entry in split]
