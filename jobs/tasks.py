"""Celery tasks of jobs: tick one job, tick every unfinished job (beat). The host workers'
tasks (several plain Docker hosts) are in ``host_tasks``, imported here to register them."""

from __future__ import annotations

from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from . import (
    host_tasks,  # noqa: F401 - registers the host workers' chunk tasks
    passes,
)
from .models import FINISHED, BatchJob
from .runner.reconciler import SWEEP_AFTER_END, tick


@shared_task(name="jobs.tasks.reconcile", ignore_result=True)
def reconcile(job_id: int) -> str:
    outcome = tick(job_id)
    if outcome == "running":
        passes.follow_up(job_id)
    return outcome


@shared_task(name="jobs.tasks.reconcile_all", ignore_result=True)
def reconcile_all() -> int:
    """Beat: one tick for every queued or running job (a crashed worker's job resumes), and
    for jobs that ended in the last minutes (whatever of them is left is removed)."""
    recent = timezone.now() - SWEEP_AFTER_END
    ids = list(BatchJob.objects.filter(~Q(status__in=FINISHED) | Q(finished_at__gte=recent))
               .values_list("pk", flat=True))
    for pk in ids:
        reconcile.delay(pk)
    return len(ids)
