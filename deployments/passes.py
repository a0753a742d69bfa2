"""Reconcile passes, enqueued: after a verb commits, and at the time something falls due.

A reconcile pass does what is due now (start or judge a canary step, an automatic retry) and
returns; it never sleeps holding the deployment's lock. Beat re-runs every deployment every
``MODELPORT_RECONCILE_SECONDS``; when something falls due sooner than beat's next tick, a
countdown task brings that pass on time.

Tasks are looked up by name in the Celery app (``core.queue.task``) rather than imported, so
nothing below the tasks module imports it; eager mode in the test settings still runs them.
Callers use ``passes.enqueue_reconcile(...)`` through the module, so one patch catches all.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.queue import task

from .models import Deployment

RECONCILE = "deployments.tasks.reconcile"
REMOVE_CONTAINERS = "deployments.tasks.remove_containers"


def enqueue_reconcile(deployment_id: int) -> None:
    task(RECONCILE).delay(deployment_id)


def reconcile_on_commit(d: Deployment) -> None:
    """Bring a pass once the caller's transaction commits (a verb's change is then visible)."""
    pk = d.pk
    transaction.on_commit(lambda: enqueue_reconcile(pk))


def enqueue_remove(name: str, target_id: int | None = None, runtime: str = "") -> None:
    """Remove a deleted deployment's replicas on the target and runtime it ran on."""
    task(REMOVE_CONTAINERS).delay(name, target_id, runtime)


def schedule_pass(deployment_id: int, at: datetime) -> float | None:
    """Enqueue a reconcile of the deployment for ``at`` when that comes before beat's next
    tick; the countdown in seconds, or None when beat brings it (a tick before then schedules
    it closer)."""
    delay = max(0.0, (at - timezone.now()).total_seconds())
    if delay >= settings.MODELPORT_RECONCILE_SECONDS:
        return None
    if settings.CELERY_TASK_ALWAYS_EAGER:  # no broker to defer to: the caller drives passes
        return None
    reconcile = task(RECONCILE)
    transaction.on_commit(lambda: reconcile.apply_async((deployment_id,), countdown=delay))
    return delay
