"""Celery tasks of deployments: reconcile one, reconcile all (beat), sweep orphans (beat),
remove a deleted one's containers. The host workers' tasks are in ``host_tasks`` (imported
here so that autodiscovery registers them)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from . import (
    autoscale,
    host_tasks,  # noqa: F401 - registers the host workers' tasks
)
from .models import Deployment
from .orphans import sweep
from .reconcile import reconcile_deployment, remove_deployment_containers

log = logging.getLogger(__name__)


@shared_task(name="deployments.tasks.reconcile", ignore_result=True)
def reconcile(deployment_id: int) -> str:
    return reconcile_deployment(deployment_id)


@shared_task(name="deployments.tasks.wake", bind=True, ignore_result=True, max_retries=600)
def wake(self, deployment_id: int) -> str:
    """The pass that starts a deployment woken from zero (``autoscale.wake``). A request waits
    on it, so when another pass holds the deployment's lock (a scale-down still draining) it
    comes back 50 ms later rather than at beat's next tick."""
    outcome = reconcile_deployment(deployment_id)
    if outcome == "busy":
        raise self.retry(countdown=0.05)
    return outcome


@shared_task(name="deployments.tasks.autoscale_all", ignore_result=True,
             expires=max(1, settings.MODELPORT_AUTOSCALE_SECONDS))
def autoscale_all() -> int:
    """Beat: the scaler's look at every autoscaled deployment (``deployments.autoscale``)."""
    return autoscale.autoscale_all()


@shared_task(name="deployments.tasks.reconcile_all", ignore_result=True)
def reconcile_all() -> int:
    """Beat: re-run reconcile for every deployment (heals killed containers, crashed workers)."""
    ids = list(Deployment.objects.values_list("pk", flat=True))
    for pk in ids:
        reconcile.delay(pk)
    return len(ids)


@shared_task(name="deployments.tasks.sweep_orphans", ignore_result=True,
             expires=max(5, settings.MODELPORT_ORPHAN_SWEEP_SECONDS))
def sweep_orphans() -> list[str]:
    """Beat: remove this installation's replicas its database no longer knows
    (``deployments.orphans``)."""
    return sweep()


@shared_task(name="deployments.tasks.remove_containers", ignore_result=True,
             autoretry_for=(Exception,), retry_backoff=5, max_retries=5)
def remove_containers(name: str, target_id: int | None = None, runtime: str = "") -> int:
    """A deleted deployment's replicas, on the target and runtime kind it ran on."""
    return remove_deployment_containers(name, target_id=target_id, kind=runtime)
