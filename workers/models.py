from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """Last time a Celery worker ran the beat-scheduled heartbeat: proves worker *and* beat run."""

    hostname = models.CharField(max_length=200, unique=True)
    last_seen = models.DateTimeField()
    beat_sent_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.hostname

    @property
    def is_alive(self) -> bool:
        stale = timedelta(seconds=settings.MODELPORT_HEARTBEAT_STALE_SECONDS)
        return timezone.now() - self.last_seen < stale
