"""Celery tasks of deployments: reconcile one, reconcile all (beat), remove a deleted one's
containers."""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="deployments.tasks.reconcile", ignore_result=True)
def reconcile(deployment_id: int) -> str:
    from .reconcile import reconcile_deployment

    return reconcile_deployment(deployment_id)


@shared_task(name="deployments.tasks.reconcile_all", ignore_result=True)
def reconcile_all() -> int:
    """Beat: re-run reconcile for every deployment (heals killed containers, crashed workers)."""
    from .models import Deployment

    ids = list(Deployment.objects.values_list("pk", flat=True))
    for pk in ids:
        reconcile.delay(pk)
    for name in orphans():
        remove_containers.delay(name)
    return len(ids)


def orphans() -> list[str]:
    """Deployments that were deleted here but still have containers (the removal after the
    delete was interrupted). Only names this installation's audit log shows as deleted: other
    Modelport installations sharing the Docker host are never touched."""
    from teams.models import AuditEvent
    from workers.runtimes import get_runtime

    from .models import Deployment

    try:
        found = {s.deployment for s in get_runtime().list_replicas() if s.deployment}
    except Exception:
        log.warning("orphan sweep skipped: the runtime does not answer", exc_info=True)
        return []
    gone = found - set(Deployment.objects.filter(name__in=found).values_list("name", flat=True))
    if not gone:
        return []
    deleted = AuditEvent.objects.filter(action="deployment.deleted", object_type="deployment",
                                        object_repr__in=gone)
    return sorted(set(deleted.values_list("object_repr", flat=True)))


@shared_task(name="deployments.tasks.remove_containers", ignore_result=True,
             autoretry_for=(Exception,), retry_backoff=5, max_retries=5)
def remove_containers(name: str) -> int:
    from .reconcile import remove_deployment_containers

    return remove_deployment_containers(name)
