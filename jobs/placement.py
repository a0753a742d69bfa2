"""Which Docker host runs a chunk, on a docker target with several plain Docker hosts
(``"placement": "hosts"``): chunks are placed like replicas (``compute.placement``).

``place_chunk(job, index)`` chooses, under a lock on the target's host rows (two runners never
overbook a host), a host that is active, alive and heard from recently with room for one chunk
container (the job's CPU, memory and GPUs): a host's room is what ``compute.placement.rooms``
leaves after the replicas placed there, minus the chunks of any job placed there and not
finished (a ``JobChunk`` with that ``host`` that is pending or running). Among the hosts with
room, the chunk goes where its job has the fewest chunks in flight (so a job's chunks spread
over hosts, as a revision's replicas do), then to the most free CPU, then memory; ties by name.
The choice is recorded on the chunk (``JobChunk.host``), which is what the next placement
counts; the runner clears it (or the chunk finishes) when the chunk leaves the host.

Starting the chunk on that host, and its GPU devices there, is ``jobs.hosts_batch``'s part.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, Sum

from compute import placement
from compute.models import GpuAllocation, Host
from core.errors import Conflict

from .models import BatchJob, ChunkStatus, JobChunk

IN_FLIGHT = (ChunkStatus.PENDING, ChunkStatus.RUNNING)


class NoHostForChunk(Conflict):
    """No host of the job's target has room for a chunk now (the message gives every host's
    numbers); the runner leaves the chunk pending and tries again on its next pass."""


def _need(job: BatchJob) -> tuple[Decimal, int, int]:
    cpu = Decimal(str(job.cpu or 0)).quantize(Decimal("0.01"))
    return cpu, int(job.memory_mb or 0), int(job.gpus or 0)


def chunk_rooms(hosts: list[Host], *, job_id: int) -> list[tuple[placement.Room, int]]:
    """Each host's room after replicas and unfinished chunks, and how many chunks of this job
    it has in flight."""
    rooms = placement.rooms(hosts)
    names = [h.name for h in hosts]
    flight = (JobChunk.objects.filter(host__in=names, status__in=IN_FLIGHT)
              .values("host")
              .annotate(cpu=Sum("job__cpu"), memory_mb=Sum("job__memory_mb"),
                        gpus=Sum("job__gpus"), n=Count("pk"),
                        mine=Count("pk", filter=Q(job_id=job_id))))
    used: dict[str, dict[str, Any]] = {str(row["host"]): dict(row) for row in flight}
    # Chunks' devices already allocated on a host are not free in ``rooms`` already.
    held = dict(GpuAllocation.objects.active()
                .filter(owner__startswith="job:", owner__contains="/chunk-",
                        device__host__in=hosts).order_by()
                .values("device__host").annotate(n=Count("pk"))
                .values_list("device__host", "n"))
    out = []
    for room in rooms:
        row = used.get(room.host.name) or {}
        gpus = max(0, int(row.get("gpus") or 0) - int(held.get(room.host.pk, 0)))
        out.append((replace(room, cpu=room.cpu - Decimal(row.get("cpu") or 0),
                            memory_mb=room.memory_mb - int(row.get("memory_mb") or 0),
                            gpus=room.gpus - gpus,
                            replicas=room.replicas + int(row.get("n") or 0)),
                    int(row.get("mine") or 0)))
    return out


def place_chunk(job: BatchJob, index: int) -> Host:
    """The host for chunk ``index`` of ``job`` (recorded on the chunk; an already placed,
    unfinished chunk keeps its host). ``NoHostForChunk`` (409) when none has room."""
    cpu, memory_mb, gpus = _need(job)
    with transaction.atomic():
        hosts = list(placement.placeable_hosts(job.target).select_for_update().order_by("pk"))
        chunk = JobChunk.objects.select_for_update().get(job=job, index=index)
        if chunk.host and chunk.status in IN_FLIGHT:
            current = next((h for h in hosts if h.name == chunk.host), None)
            if current is not None:
                return current
        candidates = [(room, mine) for room, mine in chunk_rooms(hosts, job_id=job.pk)
                      if room.fits(cpu=cpu, memory_mb=memory_mb, gpus=gpus)]
        if not candidates:
            raise NoHostForChunk(_shortfall(job, hosts, cpu=cpu, memory_mb=memory_mb,
                                            gpus=gpus))
        room, _ = min(candidates, key=lambda c: (c[1], -c[0].cpu, -c[0].memory_mb,
                                                 c[0].host.name))
        chunk.host = room.host.name
        chunk.save(update_fields=["host"])
        return room.host


def _shortfall(job: BatchJob, hosts: list[Host], *, cpu: Decimal, memory_mb: int,
               gpus: int) -> str:
    need = f"{format(cpu.normalize(), 'f')} CPU, {memory_mb} MB" + \
        (f", {gpus} GPU" if gpus else "")
    parts = [room.describe() for room, _ in chunk_rooms(hosts, job_id=job.pk)]
    target = job.target.name if job.target is not None else "(none)"
    where = "; ".join(parts) if parts else "no host is alive and active"
    return f"No host of target '{target}' has room for a chunk of job {job.pk} needing " \
           f"{need} ({where})."
