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
    for name, target_id in orphans():
        remove_containers.delay(name, target_id)
    return len(ids)


def orphans() -> list[tuple[str, int | None]]:
    """(name, execution target id) of deployments that were deleted here but still have
    containers on a target (the removal after the delete was interrupted). Only names this
    installation's audit log shows as deleted: other Modelport installations sharing a Docker
    host are never touched. Every enabled target is swept; one that does not answer is
    skipped."""
    from teams.models import AuditEvent
    from workers.models import ExecutionTarget
    from workers.runtimes import runtime_for_target

    from .models import Deployment

    targets: list[ExecutionTarget | None] = list(ExecutionTarget.objects.enabled())
    if not targets:
        targets = [None]  # no targets registered: the settings' runtime
    found: set[tuple[str, int | None]] = set()
    for target in targets:
        try:
            replicas = runtime_for_target(target).list_replicas()
        except Exception:
            log.warning("orphan sweep skipped %s: the runtime does not answer",
                        target or "the runtime", exc_info=True)
            continue
        found |= {(s.deployment, target.pk if target else None) for s in replicas
                  if s.deployment}
    names = {name for name, _ in found}
    gone = names - set(Deployment.objects.filter(name__in=names).values_list("name", flat=True))
    if not gone:
        return []
    deleted = set(AuditEvent.objects.filter(action="deployment.deleted",
                                            object_type="deployment", object_repr__in=gone)
                  .values_list("object_repr", flat=True))
    return sorted((name, target_id) for name, target_id in found if name in deleted)


@shared_task(name="deployments.tasks.remove_containers", ignore_result=True,
             autoretry_for=(Exception,), retry_backoff=5, max_retries=5)
def remove_containers(name: str, target_id: int | None = None) -> int:
    from .reconcile import remove_deployment_containers

    return remove_deployment_containers(name, target_id=target_id)
