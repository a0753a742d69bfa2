"""Placement on several plain Docker hosts: which host of a multi-host docker target
(``"placement": "hosts"``) gets a replica.

A host's room is what the capacity registry says it has (``compute.Host``: CPU and memory from
its worker's ``docker info`` times the overcommit ratios, its GPU devices) minus what the
replicas placed on it reserve (``deployments.Replica.cpu/memory_mb`` and the GPUs allocated to
them). Only hosts that are active, alive and heard from within ``MODELPORT_HOST_LOST_SECONDS``
take replicas. Among the hosts with room, a replica goes where its revision (then its
deployment) has the fewest replicas — so replicas of one revision spread over hosts — then to
the host with the most free CPU, then memory; ties by name, so placement is deterministic.
Reads only: ``deployments.hosts_runtime.HostsRuntime`` places under a lock on the hosts' rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from .models import GpuAllocation, GpuDevice, Host


@dataclass(frozen=True)
class Room:
    """What one host can still take, and how much of the replica's revision it already runs."""

    host: Host
    cpu: Decimal
    memory_mb: int
    gpus: int
    replicas: int
    same_revision: int = 0
    same_deployment: int = 0

    def fits(self, *, cpu: Decimal, memory_mb: int, gpus: int) -> bool:
        return self.cpu >= cpu and self.memory_mb >= memory_mb and self.gpus >= gpus

    def describe(self) -> str:
        return (f"{self.host.name}: {_num(self.cpu)} CPU, {self.memory_mb} MB, {self.gpus} GPU "
                "free")


def _num(value: Decimal) -> str:
    return format(Decimal(value).normalize(), "f")


def fresh_cutoff() -> datetime:
    return timezone.now() - timedelta(seconds=settings.MODELPORT_HOST_LOST_SECONDS)


def docker_hosts(target: Any = None) -> QuerySet[Host]:
    """Hosts registered by a host worker (of one target, when given)."""
    hosts = Host.objects.exclude(queue="")
    return hosts.filter(target=target) if target is not None else hosts


def placeable_hosts(target: Any) -> QuerySet[Host]:
    """The target's hosts that take new replicas: active, alive, heard from recently."""
    return docker_hosts(target).filter(active=True, state=Host.State.ALIVE,
                                       last_heartbeat__gte=fresh_cutoff())


def rooms(hosts: Iterable[Host], *, deployment_id: int | None = None,
          revision: int | None = None) -> list[Room]:
    """Free capacity of each host (placed replicas, read through ``Host.replicas``, subtracted)."""
    hosts = list(hosts)
    ids = [h.pk for h in hosts]
    placed = {row["pk"]: row for row in Host.objects.filter(pk__in=ids).order_by()
              .values("pk").annotate(cpu=Sum("replicas__cpu"),
                                     memory_mb=Sum("replicas__memory_mb"),
                                     n=Count("replicas"),
                                     same_revision=Count("replicas", filter=Q(
                                         replicas__deployment_id=deployment_id,
                                         replicas__revision=revision)),
                                     same_deployment=Count("replicas", filter=Q(
                                         replicas__deployment_id=deployment_id)))}
    busy = GpuAllocation.objects.filter(device=OuterRef("pk"), released_at__isnull=True)
    free_gpus = dict(GpuDevice.objects.filter(host__in=ids, active=True).filter(~Exists(busy))
                     .values("host").annotate(n=Count("pk")).values_list("host", "n"))
    out = []
    for host in hosts:
        used: Mapping[str, Any] = placed.get(host.pk) or {}
        schedulable_cpu = (host.cpu * host.cpu_overcommit).quantize(Decimal("0.001"))
        schedulable_mem = int(host.memory_mb * host.memory_overcommit)
        out.append(Room(
            host=host, cpu=schedulable_cpu - Decimal(used.get("cpu") or 0),
            memory_mb=schedulable_mem - int(used.get("memory_mb") or 0),
            gpus=free_gpus.get(host.pk, 0), replicas=int(used.get("n") or 0),
            same_revision=int(used.get("same_revision") or 0),
            same_deployment=int(used.get("same_deployment") or 0)))
    return out


def choose(candidates: Iterable[Room], *, cpu: Decimal, memory_mb: int,
           gpus: int) -> Room | None:
    """The host for one replica, or None when no host has room."""
    fitting = [r for r in candidates if r.fits(cpu=cpu, memory_mb=memory_mb, gpus=gpus)]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (r.same_revision, r.same_deployment, -r.cpu,
                                       -r.memory_mb, r.host.name))


def shortfall(target: Any, candidates: list[Room], *, cpu: Decimal, memory_mb: int,
              gpus: int) -> str:
    """Why a replica cannot be placed, with every host's numbers."""
    need = f"{_num(cpu)} CPU, {memory_mb} MB" + (f", {gpus} GPU" if gpus else "")
    names = {r.host.pk for r in candidates}
    others = [h for h in docker_hosts(target) if h.pk not in names]
    parts = [r.describe() for r in candidates]
    parts += [f"{h.name}: {_unavailable(h)}" for h in others]
    where = "; ".join(parts) if parts else (
        "no host worker has registered for it yet (start one with MODELPORT_HOST_NAME set)")
    return f"No host of target '{target.name}' has room for a replica needing {need} ({where})."


def _unavailable(host: Host) -> str:
    if host.state == Host.State.LOST:
        return "lost"
    if not host.active:
        return "inactive (drained)"
    return "no recent heartbeat"


def host_summaries(hosts: Iterable[Host] | None = None) -> list[dict[str, Any]]:
    """Docker hosts for the capacity page and the API: state, last heartbeat, placed replicas,
    free capacity."""
    hosts = list(docker_hosts().select_related("target") if hosts is None else hosts)
    hosts = [h for h in hosts if h.queue]
    cutoff = fresh_cutoff()
    out = []
    for room in rooms(hosts):
        host = room.host
        alive = (host.state == Host.State.ALIVE and host.last_heartbeat is not None
                 and host.last_heartbeat >= cutoff)
        out.append({"name": host.name, "queue": host.queue, "address": host.address,
                    "target": host.target.name if host.target is not None else "",
                    "state": host.state if host.state == Host.State.LOST
                    else ("alive" if alive else "silent"),
                    "active": host.active, "last_heartbeat": host.last_heartbeat,
                    "lost_at": host.lost_at, "docker_version": host.docker_version,
                    "replicas": room.replicas,
                    "free": {"cpu": room.cpu, "memory_mb": room.memory_mb, "gpus": room.gpus}})
    return out
