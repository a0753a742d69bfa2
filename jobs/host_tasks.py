"""Host workers' tasks for batch chunks on several plain Docker hosts (``jobs.hosts_batch`` is
the platform's side): start a chunk placed on this host, remove a job's chunks, and report
what runs here onto the ``HostChunk`` rows. Each runs ``DockerBatchRuntime`` on the host's own
engine (``factory.host_worker_runtime``), its containers named and labelled with the host's
name (``modelport.host``) exactly as the host's replicas are. A task for another host is
ignored (as ``deployments.host_tasks`` does), so a misrouted task never touches a foreign
engine.

Their names are ``workers.tasks.*`` like the replicas' host tasks (not routed to the
controllers' queue as ``jobs.tasks.*`` are): the platform sends them by name to a host's queue,
and ``report_host_chunks`` is sent by name from each host worker's heartbeat step
(``workers/host_step.py``); ``jobs/tasks.py`` imports this module so every worker registers
them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from compute.models import Host
from workers import factory
from workers.runtimes.base import LABEL_HOST, LABEL_INSTALLATION, LABEL_MANAGED
from workers.runtimes.batch import LABEL_CHUNK, LABEL_JOB, BatchSpec, ChunkPhase
from workers.runtimes.docker_batch import LABEL_ATTEMPT, DockerBatchRuntime
from workers.runtimes.docker_spec import label_int

from .models import HostChunk

log = logging.getLogger(__name__)
LOG_LINES = 100
_STATE = {ChunkPhase.RUNNING: HostChunk.State.RUNNING, ChunkPhase.PENDING:
          HostChunk.State.RUNNING, ChunkPhase.SUCCEEDED: HostChunk.State.SUCCEEDED,
          ChunkPhase.FAILED: HostChunk.State.FAILED, ChunkPhase.MISSING:
          HostChunk.State.MISSING}


class HostBatchRuntime(DockerBatchRuntime):
    """``DockerBatchRuntime`` scoped to one host worker: its containers carry the host's name
    (in their name and ``modelport.host`` label) and it only ever sees its own, even when two
    simulated hosts share one engine."""

    def __init__(self, host_name: str) -> None:
        super().__init__(factory.host_worker_runtime(host_name))
        self.host_name = host_name

    def container_name(self, job: str, index: int, attempt: int) -> str:
        return f"{super().container_name(job, index, attempt)}.{self.host_name}"

    def _labels(self, spec: BatchSpec, index: int, attempt: int) -> dict[str, str]:
        return {**super()._labels(spec, index, attempt), LABEL_HOST: self.host_name}

    def _containers(self, job: str, index: int | None = None) -> list[Any]:
        return [c for c in super()._containers(job, index)
                if (c.labels or {}).get(LABEL_HOST) == self.host_name]

    def all_chunk_containers(self) -> list[Any]:
        """Every chunk container of this installation on this host, of any job."""
        filters = [f"{LABEL_MANAGED}=1", LABEL_JOB, f"{LABEL_HOST}={self.host_name}"]
        if self.installation:
            filters.append(f"{LABEL_INSTALLATION}={self.installation}")
        return [c for c in self.client.containers.list(all=True, filters={"label": filters})
                if (c.labels or {}).get(LABEL_INSTALLATION, "") == self.installation]


def _host_runtime(host_name: str) -> HostBatchRuntime | None:
    """None when this worker is another host's (a task routed to the wrong queue)."""
    own = settings.MODELPORT_HOST_NAME
    if own and own != host_name:
        log.error("job task for host %s reached host worker %s: ignored", host_name, own)
        return None
    return HostBatchRuntime(host_name)


@shared_task(name="workers.tasks.start_host_chunk", ignore_result=True, acks_late=True)
def start_host_chunk(row_id: int) -> str:
    """On a host worker: start the chunk placed on this host (a ``HostChunk`` row id); the
    image is pulled from the registry the platform pushed it to, else built on this engine when
    missing."""
    row = HostChunk.objects.select_related("host").filter(pk=row_id).first()
    if row is None or row.state != HostChunk.State.PLACING:
        return "gone"  # removed, or started already (a redelivered task)
    runtime = _host_runtime(row.host.name)
    if runtime is None:
        return "ignored"
    attempt = row.attempt
    try:
        image = runtime.docker.image_for(str((row.spec or {}).get("image") or ""),
                                         list(row.requirements or []))
        spec = BatchSpec(**{**row.spec, "image": image, "installation": runtime.installation})
        state = runtime.start_chunk(spec, row.index, attempt)
        # run() returns the container as created (before it started): read it again.
        state = runtime.chunk_states(spec.job).get(row.index, state)
    except Exception as exc:  # noqa: BLE001 - reported to the runner, which retries the chunk
        HostChunk.objects.filter(pk=row.pk, attempt=attempt,
                                 state=HostChunk.State.PLACING).update(
            state=HostChunk.State.FAILED, message=f"{exc.__class__.__name__}: {exc}"[:2000],
            reported_at=timezone.now())
        return "failed"
    updated = HostChunk.objects.filter(pk=row.pk, attempt=attempt, host=row.host,
                                       state=HostChunk.State.PLACING).update(
        state=_STATE[state.phase], runtime_id=state.runtime_id, exit_code=state.exit_code,
        message=state.message or f"running on {row.host.name}", reported_at=timezone.now())
    if not updated:  # removed or moved while it started: do not leave it behind
        runtime.remove_chunk(spec.job, row.index)
        return "removed"
    return "started"


@shared_task(name="workers.tasks.remove_host_chunks", ignore_result=True, acks_late=True)
def remove_host_chunks(host_id: int, job: str, index: int | None = None) -> int:
    """On a host worker: remove a job's chunk containers on this host (one chunk's, or all),
    except the attempt a row still places here (a chunk retried on the same host)."""
    host = Host.objects.filter(pk=host_id).first()
    runtime = None if host is None else _host_runtime(host.name)
    if host is None or runtime is None:
        return 0
    keep = _placed_here(host)
    removed = 0
    for container in runtime._containers(job, index):
        if _key(container) not in keep:
            runtime._remove(container)
            removed += 1
    return removed


@shared_task(name="workers.tasks.report_host_chunks", ignore_result=True,
             expires=max(5, settings.MODELPORT_HOST_HEARTBEAT_SECONDS))
def report_host_chunks(host_name: str) -> dict[str, Any] | None:
    """On a host worker (sent by its heartbeat step): what its chunk containers are doing →
    their ``HostChunk`` rows (state, exit code, last log lines). A container no row places
    here — its chunk moved on while the host was lost, or was removed, or its job ended — is
    removed."""
    runtime = _host_runtime(host_name)
    host = Host.objects.filter(name=host_name).first()
    if runtime is None or host is None:
        return None
    containers = runtime.all_chunk_containers()  # first: a row placed after never looks stale
    rows = {(r.job.name, r.index, r.attempt): r
            for r in HostChunk.objects.select_related("job").filter(host=host)}
    now = timezone.now()
    stale: list[str] = []
    for container in containers:
        row = rows.pop(_key(container), None)
        if row is None:
            runtime._remove(container)
            stale.append(container.name)
            continue
        if row.state == HostChunk.State.PLACING:
            continue  # the start task owns it right now
        state = runtime._state(container)
        try:
            logs = container.logs(tail=LOG_LINES, stdout=True, stderr=True).decode("utf-8",
                                                                                   "replace")
        except Exception:  # noqa: BLE001 - logs are best effort
            logs = row.logs
        HostChunk.objects.filter(pk=row.pk, attempt=row.attempt).update(
            state=_STATE[state.phase], runtime_id=state.runtime_id, exit_code=state.exit_code,
            message=state.message, logs=logs[-20000:], reported_at=now)
    timeout = timedelta(seconds=settings.MODELPORT_HOST_START_TIMEOUT_S)
    for row in rows.values():  # rows without a container here
        if row.state == HostChunk.State.PLACING and now - row.placed_at < timeout:
            continue
        if row.state != HostChunk.State.MISSING:
            HostChunk.objects.filter(pk=row.pk, attempt=row.attempt).update(
                state=HostChunk.State.MISSING, reported_at=now)
    return {"host": host_name, "containers": len(containers), "stale_removed": stale}


def _key(container: Any) -> tuple[str, int, int]:
    labels = container.labels or {}
    return (labels.get(LABEL_JOB, ""), label_int(labels.get(LABEL_CHUNK)),
            label_int(labels.get(LABEL_ATTEMPT)))


def _placed_here(host: Host) -> set[tuple[str, int, int]]:
    return {(r.job.name, r.index, r.attempt)
            for r in HostChunk.objects.select_related("job").filter(host=host)}
