"""The next reconcile pass, brought at the time something falls due.

A reconcile pass does what is due now (start or judge a canary step, an automatic retry) and
returns; it never sleeps holding the deployment's lock. Beat re-runs every deployment every
``MODELPORT_RECONCILE_SECONDS``; when something falls due sooner than beat's next tick, a
countdown task brings that pass on time.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone


def schedule_pass(deployment_id: int, at: datetime) -> float | None:
    """Enqueue a reconcile of the deployment for ``at`` when that comes before beat's next
    tick; the countdown in seconds, or None when beat brings it (a tick before then schedules
    it closer)."""
    delay = max(0.0, (at - timezone.now()).total_seconds())
    if delay >= settings.MODELPORT_RECONCILE_SECONDS:
        return None
    if settings.CELERY_TASK_ALWAYS_EAGER:  # no broker to defer to: the caller drives passes
        return None
    from .tasks import reconcile

    transaction.on_commit(lambda: reconcile.apply_async((deployment_id,), countdown=delay))
    return delay
