"""What monitoring knows about autoscaling: the replicas' CPU load the scaler asks for
(``cpu_load``, registered with ``deployments.autoscale.register_cpu_load`` in
``MonitoringConfig.ready``: deployments never imports monitoring), and replicas over time for
the monitoring pages (``scale_series``, from the scaler's ``ScaleSample`` rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Avg

from deployments.models import Deployment, Replica, ScaleSample

from .models import ReplicaStat


def cpu_load(*, deployment: Deployment, since: datetime) -> float | None:
    """The deployment's CPU load since ``since``: each replica's mean ``cpu_percent`` summed
    (100 = one core busy), None without samples. Only replicas that still exist count: a
    replica removed during the window would otherwise add load no replica carries any more."""
    current = Replica.objects.filter(deployment=deployment).values("runtime_id")
    means = (ReplicaStat.objects.filter(deployment=deployment, at__gt=since,
                                        runtime_id__in=current)
             .values("runtime_id").annotate(mean=Avg("cpu_percent"))
             .values_list("mean", flat=True))
    found = [m for m in means if m is not None]
    return float(sum(found)) if found else None


def scale_series(*, deployments: Sequence[Deployment], start: datetime, end: datetime,
                 step: int) -> dict[str, Any] | None:
    """Replicas wanted (``desired``) and ready per step, summed over ``deployments`` and
    aligned with ``metrics_series``' timestamps: each step shows the most in force at any
    moment of it (the count before the step carries in; a burst shorter than a step still
    shows). None when none of them autoscales nor has samples (nothing to draw); steps before
    the first sample are null."""
    ids = [d.pk for d in deployments]
    n = max(1, math.ceil((end - start).total_seconds() / step))
    autoscaled = any(d.autoscaling for d in deployments)
    desired: list[int | None] = [None] * n
    ready: list[int | None] = [None] * n
    found = False
    for pk in ids:
        rows = list(ScaleSample.objects.filter(deployment_id=pk, at__gte=start, at__lt=end)
                    .order_by("at").values_list("at", "desired", "ready"))
        before = (ScaleSample.objects.filter(deployment_id=pk, at__lt=start).order_by("-at")
                  .values_list("desired", "ready").first())
        if not rows and before is None:
            continue
        found = True
        own_desired, own_ready = _steps(rows, before, start, step, n)
        desired = _add(desired, own_desired)
        ready = _add(ready, own_ready)
    if not found and not autoscaled:
        return None
    return {"desired": desired, "ready": ready, "sampled": found}


def _steps(rows: list[tuple[datetime, int, int]], before: tuple[int, int] | None,
           start: datetime, step: int, n: int) -> tuple[list[int | None], list[int | None]]:
    desired: list[int | None] = [None] * n
    ready: list[int | None] = [None] * n
    now_desired, now_ready = before if before is not None else (None, None)
    start_ts = start.timestamp()
    i_row = 0
    for i in range(n):
        high_desired, high_ready = now_desired, now_ready
        end_ts = start_ts + step * (i + 1)
        while i_row < len(rows) and rows[i_row][0].timestamp() < end_ts:
            _, now_desired, now_ready = rows[i_row]
            high_desired = max(high_desired or 0, now_desired)
            high_ready = max(high_ready or 0, now_ready)
            i_row += 1
        desired[i], ready[i] = high_desired, high_ready
    return desired, ready


def _add(total: list[int | None], part: list[int | None]) -> list[int | None]:
    return [a if b is None else b if a is None else a + b for a, b in zip(total, part,
                                                                          strict=True)]
