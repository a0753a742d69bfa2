"""Runner ticks, enqueued by name (``core.queue.task``) so that nothing below the tasks module
imports it: after a verb commits, and when a job finishes (the team's queued jobs may start)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.queue import task

from .models import BatchJob

RECONCILE = "jobs.tasks.reconcile"


def enqueue(job_id: int) -> None:
    task(RECONCILE).delay(job_id)


def tick_on_commit(job_id: int) -> None:
    transaction.on_commit(lambda: enqueue(job_id))


def follow_up(job_id: int) -> bool:
    """Bring the running job's next tick in ``MODELPORT_JOB_FOLLOW_SECONDS`` rather than at
    beat's next one (a finished chunk is then noticed within a second, not three). One chain per
    job: the conditional update claims the next slot, so beat's own ticks start no second one.
    Not under eager tasks (tests drive ticks themselves)."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return False
    now = timezone.now()
    delay = float(getattr(settings, "MODELPORT_JOB_FOLLOW_SECONDS", 1.0))
    claimed = BatchJob.objects.filter(pk=job_id).filter(
        Q(next_tick_at__isnull=True) | Q(next_tick_at__lte=now)).update(
        next_tick_at=now + timedelta(seconds=delay))
    if claimed:
        task(RECONCILE).apply_async((job_id,), countdown=delay)
    return bool(claimed)
