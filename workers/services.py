"""Worker bookkeeping: heartbeats written by the Celery worker, read by the portal and /readyz."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.utils import timezone

from .models import WorkerHeartbeat


def record_heartbeat(*, hostname: str, sent_at: datetime | None) -> WorkerHeartbeat:
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"last_seen": timezone.now(), "beat_sent_at": sent_at,
                  "version": settings.MODELPORT_VERSION},
    )
    return heartbeat


def live_workers() -> list[WorkerHeartbeat]:
    return [hb for hb in WorkerHeartbeat.objects.all()[:50] if hb.is_alive]
