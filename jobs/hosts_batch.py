"""Batch chunks on several plain Docker hosts (a docker target with ``"placement": "hosts"``),
the platform's side: chunks are placed like replicas and started by each host's own worker.

The platform has no access to a remote engine, so a ``HostChunk`` row per chunk is this
runtime's state (as ``Replica`` rows are for the hosts runtime of deployments):

- ``start_chunk`` places the chunk (``jobs.placement.place_chunk``: recorded on
  ``JobChunk.host``, under a lock on the target's host rows), writes the row (host, attempt,
  the ``BatchSpec``) and, once the tick commits, sends ``workers.tasks.start_host_chunk(<row
  id>)`` to that host's queue. It never waits: the tick stays short. ``NoHostForChunk`` goes up
  to the reconciler, which leaves the chunk pending with the reason and tries next tick.
- ``chunk_states`` reads the rows, which the host workers keep up to date (the start task,
  then every heartbeat: ``report_host_chunks``). A chunk on a host whose heartbeat is silent
  (lost, or older than MODELPORT_HOST_LOST_SECONDS, as deployments judge it) reads ``failed``:
  the reconciler counts the attempt and starts it again elsewhere; the host, when it returns,
  removes the container no row is left for.
- ``remove_chunk`` / ``remove_job`` delete the rows and send the removal to each live host
  holding one (a lost host removes its leftovers itself when it returns).
- ``chunk_logs``: the last lines the host reported.

The job's work dir (input, chunk outputs) and the model dir are on storage every host mounts
at the same path (on this one machine today).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compute import inventory
from compute import placement as host_placement
from compute.models import GpuAllocation, Host
from core.errors import Conflict
from workers import factory
from workers.installation import installation_id
from workers.runtimes.base import LogFn
from workers.runtimes.batch import BatchRuntime, BatchSpec, ChunkPhase, ChunkState
from workers.runtimes.images import ImageBuilder, normalize_requirements

from .models import BatchJob, HostChunk, JobChunk
from .placement import NoHostForChunk, place_chunk

Dispatch = Callable[[str, list[Any], str], None]
START, REMOVE = "workers.tasks.start_host_chunk", "workers.tasks.remove_host_chunks"
_PHASE = {HostChunk.State.PLACING: ChunkPhase.PENDING, HostChunk.State.RUNNING:
          ChunkPhase.RUNNING, HostChunk.State.SUCCEEDED: ChunkPhase.SUCCEEDED,
          HostChunk.State.FAILED: ChunkPhase.FAILED, HostChunk.State.MISSING: ChunkPhase.MISSING}


def send_to_host(task: str, args: list[Any], queue: str) -> None:
    """Send a task by name to one host worker's queue (tasks take ids)."""
    # Celery takes any sequence of arguments; its stubs say tuple.
    current_app.tasks[task].apply_async(args=args, queue=queue)  # type: ignore[arg-type]


def silent(host: Host) -> bool:
    """The host is lost, or its worker has not been heard from recently."""
    return host.state == Host.State.LOST or host.last_heartbeat is None \
        or host.last_heartbeat < host_placement.fresh_cutoff()


class HostsBatchRuntime(BatchRuntime):
    """Chunks of jobs on one multi-host docker target."""

    mode = "per_chunk"
    places_gpus = True  # per chunk, on its host: the runner allocates none for the job

    def __init__(self, target: Any, *, dispatch: Dispatch | None = None) -> None:
        self.target = target
        self.dispatch = dispatch or send_to_host
        # Names its containers as the host workers' runtimes (same database, same id) do.
        self.installation = installation_id()
        self.registry = factory.image_registry(getattr(target, "settings", None))

    def ensure_batch_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """With a registry (as for the target's replicas): built on this worker's engine,
        pushed, the reference the hosts pull. Without: the image's tag as every host's builder
        names it; each host builds it on its own engine when it is missing (the start task)."""
        if self.registry:
            return factory.push_serving_image(self.registry, requirements, on_log)
        builder = ImageBuilder(None, settings.MODELPORT_SERVING_BASE_IMAGE, ca_bundle=None,
                               offline=True)
        return builder.tag_for(normalize_requirements(requirements))

    # --- lifecycle --------------------------------------------------------------------------
    def start_chunk(self, spec: BatchSpec, index: int, attempt: int) -> ChunkState:
        job = BatchJob.objects.select_related("target", "version", "team") \
            .get(pk=_job_id(spec.job))
        host = place_chunk(job, index)  # NoHostForChunk: the reconciler keeps it pending
        row = HostChunk.objects.filter(job=job, index=index).select_related("host").first()
        if row is not None and row.attempt == attempt and row.host_id == host.pk \
                and row.state != HostChunk.State.FAILED:
            return self._state(row)  # a retried tick: sent already
        if row is not None and row.host_id != host.pk and not silent(row.host):
            self._send_removal(row.host, spec.job, index)  # an earlier attempt's leftovers
        spec = dataclasses.replace(spec, gpu_device_ids=self._gpus(job, index, host))
        fields = {"attempt": attempt, "host": host, "state": HostChunk.State.PLACING,
                  "runtime_id": "", "exit_code": None, "message": f"placed on {host.name}",
                  "logs": "", "spec": _spec_json(spec), "placed_at": timezone.now(),
                  "requirements": list(job.version.requirements or []), "reported_at": None}
        row, _ = HostChunk.objects.update_or_create(job=job, index=index, defaults=fields)
        # After the tick commits: the host worker reads the row.
        transaction.on_commit(partial(self.dispatch, START, [row.pk], host.queue))
        return self._state(row)

    @staticmethod
    def _gpus(job: BatchJob, index: int, host: Host) -> list[str]:
        """The chunk's own devices on its host (as a replica's: ``allocate_gpus(host=...)``);
        a chunk moving to another host gives back the old host's. Released with the job's
        reservation (``admission.release``: everything under ``job:<id>/``)."""
        if not job.gpus:
            return []
        owner = chunk_gpu_owner(job, index)
        current = GpuAllocation.objects.active().filter(owner=owner) \
            .values_list("device__host_id", flat=True).first()
        if current is not None and current != host.pk:
            inventory.release_gpus(owner=owner)
        try:
            inventory.allocate_gpus(team=job.team, count=job.gpus, owner=owner, host=host)
        except Conflict as exc:  # placed there for nothing: the next tick chooses afresh
            JobChunk.objects.filter(job=job, index=index).update(host="")
            raise NoHostForChunk(f"host {host.name}: {exc}") from exc
        return inventory.device_ids(owner)

    def chunk_states(self, job: str) -> dict[int, ChunkState]:
        rows = HostChunk.objects.select_related("host").filter(job_id=_job_id(job))
        return {row.index: self._state(row) for row in rows}

    def remove_chunk(self, job: str, index: int) -> None:
        for row in HostChunk.objects.select_related("host", "job").filter(job_id=_job_id(job),
                                                                           index=index):
            row.delete()
            inventory.release_gpus(owner=chunk_gpu_owner(row.job, index))
            self._send_removal(row.host, job, index)

    def remove_job(self, job: str) -> None:
        rows = list(HostChunk.objects.select_related("host").filter(job_id=_job_id(job)))
        HostChunk.objects.filter(pk__in=[r.pk for r in rows]).delete()
        # Only hosts that still hold a row: whatever else of the job is on a host (a lost
        # removal, a finished job's later sweeps) has no row, so that host's own report
        # removes it; the sweeps send nothing.
        hosts = {r.host_id: r.host for r in rows}
        for host in hosts.values():
            self._send_removal(host, job, None)

    def chunk_logs(self, job: str, index: int, tail: int = 200) -> str:
        row = HostChunk.objects.filter(job_id=_job_id(job), index=index).first()
        return "" if row is None else "\n".join(row.logs.splitlines()[-tail:])

    # --- helpers ----------------------------------------------------------------------------
    def _send_removal(self, host: Host, job: str, index: int | None) -> None:
        if silent(host) or not host.queue:
            return  # its worker removes what no row is left for when the host is back
        transaction.on_commit(partial(self.dispatch, REMOVE, [host.pk, job, index],
                                      host.queue))

    @staticmethod
    def _state(row: HostChunk) -> ChunkState:
        host = row.host
        phase, message = _PHASE[HostChunk.State(row.state)], row.message
        if phase in (ChunkPhase.PENDING, ChunkPhase.RUNNING) and silent(host):
            phase = ChunkPhase.FAILED
            message = f"host {host.name} stopped answering (no heartbeat since " \
                      f"{host.last_heartbeat:%H:%M:%S})" if host.last_heartbeat else \
                      f"host {host.name} stopped answering"
        return ChunkState(index=row.index, phase=phase, runtime_id=row.runtime_id,
                          exit_code=row.exit_code, message=message, host=host.name,
                          attempt=row.attempt)


def chunk_gpu_owner(job: BatchJob, index: int) -> str:
    return f"{job.owner}/chunk-{index}"


def _job_id(job: str) -> int:
    """``job-<id>`` → id."""
    return int(job.rsplit("-", 1)[-1])


def _spec_json(spec: BatchSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)
