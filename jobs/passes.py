"""Runner ticks, enqueued by name (``core.queue.task``) so that nothing below the tasks module
imports it: after a verb commits, and when a job finishes (the team's queued jobs may start)."""

from __future__ import annotations

from django.db import transaction

from core.queue import task

RECONCILE = "jobs.tasks.reconcile"


def enqueue(job_id: int) -> None:
    task(RECONCILE).delay(job_id)


def tick_on_commit(job_id: int) -> None:
    transaction.on_commit(lambda: enqueue(job_id))
