"""The worker heartbeat task. Host workers' tasks (several plain Docker hosts) are the
reconciler's side: ``deployments/host_tasks.py`` (their names stay ``workers.tasks.*``)."""

from __future__ import annotations

import socket

from celery import shared_task
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import services


@shared_task(name="workers.tasks.heartbeat", ignore_result=True, expires=60,
             autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def heartbeat(sent_at: str | None = None) -> None:
    """Scheduled by beat; records that a worker is consuming and beat is scheduling."""
    hostname = heartbeat.request.hostname or socket.gethostname()
    sent = parse_datetime(sent_at) if sent_at else timezone.now()
    services.record_heartbeat(hostname=hostname, sent_at=sent)
