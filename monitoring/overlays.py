"""What the charts draw over the metric series: deploy/rollback markers and, while a traffic
split is live, one latency and error-rate line per revision (canary against stable).

Both are read with a bounded number of queries: one for the markers, and one metric series per
revision of the split (a split has two or three revisions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deployments.models import Deployment, Revision

from .services import metrics_series

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


def split_series(*, deployment: Deployment, start: datetime, end: datetime, step: int
                 ) -> list[dict[str, Any]]:
    """Per revision of a live split: its p95 latency and error rate per step (null where it
    had no requests), for overlaying canary and stable on one chart."""
    out = []
    for entry in split_revisions(deployment):
        series = metrics_series(deployments=[deployment], start=start, end=end, step=step,
                                revision=entry["revision"])
        out.append({**entry, "latency_p95": series["latency_p95"],
                    "error_rate": series["error_rate"]})
    return out
