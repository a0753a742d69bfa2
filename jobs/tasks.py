"""Celery tasks of jobs: tick one job, tick every unfinished job (beat)."""

from __future__ import annotations

from celery import shared_task

from .models import FINISHED, BatchJob
from .runner.reconciler import tick


@shared_task(name="jobs.tasks.reconcile", ignore_result=True)
def reconcile(job_id: int) -> str:
    return tick(job_id)


@shared_task(name="jobs.tasks.reconcile_all", ignore_result=True)
def reconcile_all() -> int:
    """Beat: one tick for every queued or running job (a crashed worker's job resumes)."""
    ids = list(BatchJob.objects.exclude(status__in=FINISHED).values_list("pk", flat=True))
    for pk in ids:
        reconcile.delay(pk)
    return len(ids)
