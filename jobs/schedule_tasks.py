"""Beat's ``jobs-run-schedules`` task (each minute). Kept apart from ``jobs.tasks`` (the
execution tasks); Celery imports it through ``CELERY_IMPORTS``."""

from __future__ import annotations

from celery import shared_task

from . import schedules


@shared_task(name="jobs.schedule_tasks.run_schedules", ignore_result=True, expires=55)
def run_schedules() -> dict[int, str]:
    """Start the schedules that are due (``schedules.run_due_schedules``)."""
    return schedules.run_due_schedules()
