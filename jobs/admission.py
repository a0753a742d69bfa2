"""The one place jobs talk to quota admission (``quotas.services``), the execution target's
capacity (``compute.targets``) and the GPU inventory, and where the team's job concurrency
limit is decided.

A job reserves ``parallelism`` x its per-container resources when it is created (so an
over-quota job is refused at once, with the numbers) and holds the reservation while queued
and running; it gives everything back when it finishes, fails or is cancelled.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import transaction

from compute import inventory, targets
from quotas import services as quotas

from .models import BatchJob, JobStatus


def admit(job: BatchJob, *, actor=None) -> None:
    """Reserve the job's resources, or ``Conflict`` (409 ``quota_exceeded`` /
    ``target_capacity_exceeded``) with the numbers."""
    cpu = Decimal(job.cpu) * job.parallelism
    memory_mb, gpus = job.memory_mb * job.parallelism, job.gpus * job.parallelism
    target = job.target or targets.default_target()
    if target is not None:
        targets.check_target_capacity(target=target, owner=job.owner, cpu=cpu,
                                      memory_mb=memory_mb, gpus=gpus)
    quotas.admit(team=job.team, owner=job.owner, actor=actor, cpu=cpu, memory_mb=memory_mb,
                 gpus=gpus, deployments=0)


def release(job: BatchJob, *, actor=None) -> None:
    """Give back the job's GPU devices and its reservation (idempotent)."""
    with transaction.atomic():
        inventory.release_gpus(owner=job.owner)
        quotas.release(owner=job.owner, actor=actor)


def gpu_devices(job: BatchJob) -> list[str]:
    """The job's GPU devices (all its containers', allocated once per job)."""
    if not job.gpus:
        return []
    inventory.allocate_gpus(team=job.team, count=job.gpus * job.parallelism, owner=job.owner)
    return inventory.device_ids(job.owner)


def max_running() -> int:
    return int(getattr(settings, "MODELPORT_TEAM_MAX_RUNNING_JOBS", 2))


def concurrency_block(job: BatchJob) -> str:
    """Why this queued job must wait for the team's running jobs ("" when it may start)."""
    limit = max_running()
    running = BatchJob.objects.filter(team_id=job.team_id, status=JobStatus.RUNNING) \
        .exclude(pk=job.pk).count()
    if running < limit:
        return ""
    return (f"Queued: team '{job.team.slug}' has {running} running job(s), its limit is "
            f"{limit} (MODELPORT_TEAM_MAX_RUNNING_JOBS); it starts when one finishes.")
