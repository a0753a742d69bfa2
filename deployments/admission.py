"""The one place deployments talk to quota admission (``quotas.services``) and to the GPU
inventory (``compute.inventory``)."""

from __future__ import annotations

import contextlib
from decimal import Decimal

from django.db import transaction

from compute import inventory, targets
from core.errors import NotFound
from quotas import services as quotas
from quotas.models import Reservation
from teams.models import Team

from .models import Deployment


def admit_spec(*, team: Team, owner: str, replicas: int, cpu: Decimal, memory_mb: int,
               gpus: int, actor=None) -> None:
    """Reserve ``replicas`` x resources (and one deployment) for ``owner``, or raise
    ``Conflict(code="quota_exceeded")`` with the numbers. Idempotent: sets the totals."""
    total_cpu, total_memory_mb, total_gpus = Decimal(cpu) * replicas, memory_mb * replicas, \
        gpus * replicas
    check_target(owner=owner, cpu=total_cpu, memory_mb=total_memory_mb, gpus=total_gpus)
    if Reservation.objects.filter(owner=owner).exists():
        quotas.resize(owner=owner, actor=actor, cpu=total_cpu, memory_mb=total_memory_mb,
                      gpus=total_gpus, deployments=1)
    else:
        quotas.admit(team=team, owner=owner, actor=actor, cpu=total_cpu,
                     memory_mb=total_memory_mb, gpus=total_gpus, deployments=1)


def shrink_spec(*, owner: str, replicas: int, cpu: Decimal, memory_mb: int, gpus: int,
                actor=None) -> None:
    """Set ``owner``'s reservation to fewer replicas: only gives back, so neither the quota nor
    the target's capacity is checked (both may be below use after an operator lowered them)."""
    quotas.resize(owner=owner, actor=actor, cpu=Decimal(cpu) * replicas,
                  memory_mb=memory_mb * replicas, gpus=gpus * replicas, deployments=1)


def check_target(*, owner: str, cpu: Decimal, memory_mb: int, gpus: int) -> None:
    """The deployment's execution target must hold it, when the target has registered
    capacity: ``Conflict(code="target_capacity_exceeded")`` otherwise."""
    d = Deployment.objects.filter(name=owner.removeprefix("deployment:")).first()
    target = targets.deployment_target(d) if d is not None else targets.default_target()
    if target is not None:
        targets.check_target_capacity(target=target, owner=owner, cpu=cpu,
                                      memory_mb=memory_mb, gpus=gpus)


def release_spec(*, owner: str, actor=None) -> None:
    """Give back everything ``owner`` holds: its replicas' GPU devices, then its reservation,
    in one transaction."""
    with transaction.atomic():
        inventory.release_gpus(owner=owner)
        quotas.release(owner=owner, actor=actor)


def mark_running(*, owner: str, running: bool) -> None:
    with contextlib.suppress(NotFound):
        quotas.mark_running(owner=owner, running=running)


def gpu_devices(*, team: Team, owner: str, count: int) -> list[str]:
    """Specific GPU devices for one replica (idempotent per owner), as Docker device ids."""
    inventory.allocate_gpus(team=team, count=count, owner=owner)
    return inventory.device_ids(owner)


def release_gpus(*, owner: str) -> None:
    inventory.release_gpus(owner=owner)
