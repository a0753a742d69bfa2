"""Celery tasks of the inventory: the nightly usage-drift check, which asks every execution
target's runtime what runs. Its name stays ``quotas.tasks.check_usage_drift`` (beat schedules
it by name, from before the inventory had its own app)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db.models import Q

from quotas import services as quotas
from workers import factory

from .inventory import stale_gpu_owners
from .models import ExecutionTarget

log = logging.getLogger(__name__)

OWNER_PREFIX = "deployment:"


def _running_from_runtime() -> tuple[set[str], set[str]] | None:
    """Owners and replica ids of the containers that run, found by their labels on every
    execution target that is enabled or still has deployments (None if one does not answer:
    a partial view would report running deployments as missing)."""
    try:
        targets: list[ExecutionTarget | None] = list(ExecutionTarget.objects.filter(
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
    return quotas.check_usage_drift(running_owners=owners,
                                    stale_gpus=stale_gpu_owners(replicas)).as_dict()
