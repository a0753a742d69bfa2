"""Celery tasks for quotas: grant expiry (every minute) and the nightly usage-drift check."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db.models import Q

from workers import factory
from workers.models import ExecutionTarget

from . import services

log = logging.getLogger(__name__)

OWNER_PREFIX = "deployment:"


@shared_task(name="quotas.tasks.expire_grants", ignore_result=True, expires=120)
def expire_grants() -> int:
    """Take back temporary grants whose time is up (and expire stale pending requests)."""
    return len(services.expire_grants())


def _running_from_runtime() -> tuple[set[str], set[str]] | None:
    """Owners and replica ids of the containers that run, found by their labels on every
    execution target that is enabled or still has deployments (None if one does not answer:
    a partial view would report running deployments as missing)."""
    try:
        targets = list(ExecutionTarget.objects.filter(
            Q(enabled=True) | Q(deployments__isnull=False)).distinct()) or [None]
        replicas = [r for target in targets
                    for r in factory.runtime_for_target(target).list_replicas()]
    except Exception:
        log.warning("usage drift check skipped: no container runtime answered", exc_info=True)
        return None
    owners = {f"{OWNER_PREFIX}{r.deployment}" for r in replicas if r.deployment and r.alive}
    replica_ids = {f"{OWNER_PREFIX}{r.deployment}/r{r.replica}" for r in replicas
                   if r.deployment and r.alive}
    return owners, replica_ids


@shared_task(name="quotas.tasks.check_usage_drift", ignore_result=True, expires=3600)
def check_usage_drift() -> dict | None:
    found = _running_from_runtime()
    if found is None:
        return None
    owners, replicas = found
    return services.check_usage_drift(running_owners=owners,
                                      running_replicas=replicas).as_dict()
