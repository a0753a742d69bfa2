"""One tick of a job: compare the chunks' rows with what the backend reports (containers found
by labels) and with the chunk files on disk, then take the next step — adopt, retry, start up
to ``parallelism``, fail, or assemble the output and finish. Idempotent and short (it never
waits for a container); beat ticks every unfinished job every few seconds.

A chunk is done when, and only when, its complete file exists (it is written under a temporary
name and renamed), so a worker killed at any point loses nothing: the next tick adopts the
running containers (their attempt is in a label), and an output is assembled by chunk index
from exactly one file per chunk — no row twice, none missing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from docker.errors import DockerException
from requests.exceptions import RequestException

from registry.model_dirs import model_dir_for
from teams import audit
from workers.runtimes.base import ReplicaRuntimeError
from workers.runtimes.batch import BatchRuntime, BatchSpec, ChunkPhase, ChunkState

from .. import admission, datasets
from ..events import Kind, event
from ..models import BatchJob, ChunkStatus, JobChunk, JobStatus
from ..placement import NoHostForChunk
from . import output, teardown
from .runtimes import batch_runtime

log = logging.getLogger(__name__)
LOG_LINES = 15  # of a failed chunk's output, kept in its event
# Ticks of a job that ended this recently remove whatever of it is still there.
SWEEP_AFTER_END = timedelta(minutes=5)


@dataclass
class Context:
    job: BatchJob
    runtime: BatchRuntime
    spec: BatchSpec


def tick(job_id: int) -> str:
    """Advance the job one step; what happened, in a word (for logs and tests)."""
    job = BatchJob.objects.select_related("team", "version", "target").filter(pk=job_id).first()
    if job is None:
        return "gone"
    if job.finished:  # recently ended: make sure nothing of it is left (an engine was down)
        if job.finished_at and timezone.now() - job.finished_at < SWEEP_AFTER_END:
            teardown.remove_containers(job)
        return "finished"
    try:
        runtime = batch_runtime(job)
        # Outside the row lock: the first build of an image takes minutes.
        image = runtime.ensure_batch_image(list(job.version.requirements or []))
        model_dir = str(model_dir_for(job.version))
    except ReplicaRuntimeError as exc:  # no sandboxed runtime, a refused requirement, a build
        return _fail_now(job_id, f"The job cannot run: {exc}")
    except (DockerException, RequestException, OSError) as exc:
        _note(job_id, f"Waiting for the runtime: {exc}")
        return "waiting"
    with transaction.atomic():
        job = BatchJob.objects.select_for_update(skip_locked=True, of=("self",)) \
            .select_related("team", "version").filter(pk=job_id).first()
        if job is None:
            return "busy"  # another worker's tick holds it
        if job.finished:
            return "finished"
        if job.status == JobStatus.QUEUED:
            why = admission.concurrency_block(job)
            if why:
                if job.status_message != why:
                    job.status_message = why
                    job.save(update_fields=["status_message", "updated_at"])
                return "queued"
            job.status, job.started_at = JobStatus.RUNNING, job.started_at or timezone.now()
            job.status_message = "Running."
            job.save()
            event(job, f"Started: image {image}, {job.chunks_total} chunk(s), parallelism "
                       f"{job.parallelism}.", kind=Kind.STEP)
        ctx = Context(job=job, runtime=runtime, spec=_spec(job, image, model_dir, runtime))
        try:
            return _step(ctx)
        except (DockerException, RequestException) as exc:
            job.status_message = f"The runtime did not answer; retrying: {exc}"[:500]
            job.save(update_fields=["status_message", "updated_at"])
            return "waiting"


def _spec(job: BatchJob, image: str, model_dir: str, runtime: BatchRuntime) -> BatchSpec:
    root = datasets.work_dir(job.pk)
    return BatchSpec(
        job=job.name, image=image, model_dir=model_dir, input_dir=str(root / "input"),
        output_dir=str(root / "output"), chunks=job.chunks_total, parallelism=job.parallelism,
        cpu=float(job.cpu), memory_mb=job.memory_mb, gpus=job.gpus,
        # Several Docker hosts allocate each chunk's devices on its host (``places_gpus``).
        gpu_device_ids=[] if getattr(runtime, "places_gpus", False)
        else admission.gpu_devices(job), max_retries=job.max_retries,
        env={"MODELPORT_OUTPUT_COLUMNS": json.dumps(job.output_columns or [])},
        installation=getattr(runtime, "installation", ""))


def _step(ctx: Context) -> str:
    if ctx.runtime.mode == "whole_job":
        return _step_whole(ctx)
    job, runtime = ctx.job, ctx.runtime
    states = runtime.chunk_states(job.name)
    chunks = list(job.chunks.all())
    running = 0
    for chunk in chunks:
        if chunk.status == ChunkStatus.SUCCEEDED:
            continue
        state = states.get(chunk.index)
        if output.chunk_rows(job, chunk.index) == chunk.rows:
            _succeeded(ctx, chunk, state)
        elif state is None or state.phase in (ChunkPhase.MISSING,):
            if chunk.status == ChunkStatus.RUNNING:
                _attempt_failed(ctx, chunk, "its container disappeared")
        elif state.phase in (ChunkPhase.RUNNING, ChunkPhase.PENDING):
            _adopt(chunk, state)
            chunk.rows_done = min(chunk.rows, output.progress_of(job, chunk.index))
            chunk.save()
            running += 1
        elif state.phase == ChunkPhase.SUCCEEDED:
            _attempt_failed(ctx, chunk, "it exited 0 without a complete output file", state)
        else:
            _attempt_failed(ctx, chunk, state.message or f"exit code {state.exit_code}", state)
    failed = [c for c in chunks if c.status == ChunkStatus.FAILED]
    if failed:
        return _fail_job(ctx, failed[0])
    for chunk in chunks:
        if running >= job.parallelism:
            break
        if chunk.status == ChunkStatus.PENDING:
            try:
                _start(ctx, chunk)
            except NoHostForChunk as exc:  # several Docker hosts, all full: next tick
                chunk.attempts -= 1
                _waiting_for_host(job, str(exc))
                break
            running += 1
    if job.status_message.startswith(WAITING_FOR_HOST) and running:
        job.status_message = "Running."
        job.save(update_fields=["status_message", "updated_at"])
    _progress(job, chunks)
    if all(c.status == ChunkStatus.SUCCEEDED for c in chunks):
        return _finish(ctx)
    return "running"


def _step_whole(ctx: Context) -> str:
    """An orchestrator runs the chunks (Kubernetes Indexed Job, Swarm replicated job): it
    retries them itself; the platform submits the indices still to do (idempotent), reads
    their states, and fails the job when the orchestrator gave up on one."""
    job, runtime = ctx.job, ctx.runtime
    states = runtime.chunk_states(job.name)
    chunks = list(job.chunks.all())
    for chunk in chunks:
        if chunk.status == ChunkStatus.SUCCEEDED:
            continue
        state = states.get(chunk.index)
        if output.chunk_rows(job, chunk.index) == chunk.rows:
            _succeeded(ctx, chunk, None)
        elif state is None or state.phase in (ChunkPhase.MISSING, ChunkPhase.PENDING):
            continue
        elif state.phase == ChunkPhase.RUNNING:
            _adopt(chunk, state)
            chunk.rows_done = min(chunk.rows, output.progress_of(job, chunk.index))
            chunk.save()
        else:  # the orchestrator gave up on it, or it ended without its file
            reason = state.message or (f"exit code {state.exit_code}"
                                       if state.phase == ChunkPhase.FAILED
                                       else "it exited 0 without a complete output file")
            chunk.attempts = max(chunk.attempts, state.attempt, job.max_retries + 1)
            _attempt_failed(ctx, chunk, reason, state, final=True)
    failed = [c for c in chunks if c.status == ChunkStatus.FAILED]
    if failed:
        return _fail_job(ctx, failed[0])
    todo = [c.index for c in chunks if c.status != ChunkStatus.SUCCEEDED]
    if todo:
        runtime.submit_job(ctx.spec, todo)
        for chunk in chunks:
            if chunk.status == ChunkStatus.PENDING and chunk.attempts == 0:
                chunk.attempts = 1
                chunk.save(update_fields=["attempts"])
    _progress(job, chunks)
    if not todo:
        return _finish(ctx)
    return "running"


WAITING_FOR_HOST = "Waiting for a host: "


def _waiting_for_host(job: BatchJob, reason: str) -> None:
    """A chunk stays pending (no attempt counted) while no host has room for it."""
    message = f"{WAITING_FOR_HOST}{reason}"[:2000]
    if job.status_message != message:
        job.status_message = message
        job.save(update_fields=["status_message", "updated_at"])


def _adopt(chunk: JobChunk, state: ChunkState) -> None:
    """A container the database did not know was started (its tick died before committing)."""
    if chunk.status != ChunkStatus.RUNNING:
        chunk.status, chunk.started_at = ChunkStatus.RUNNING, chunk.started_at or timezone.now()
    chunk.attempts = max(chunk.attempts, state.attempt)
    chunk.runtime_id, chunk.host = state.runtime_id, state.host


def _start(ctx: Context, chunk: JobChunk) -> None:
    chunk.attempts += 1
    state = ctx.runtime.start_chunk(ctx.spec, chunk.index, chunk.attempts)
    chunk.status, chunk.started_at, chunk.finished_at = ChunkStatus.RUNNING, timezone.now(), None
    chunk.runtime_id, chunk.host, chunk.rows_done = state.runtime_id, state.host, 0
    chunk.save()


def _succeeded(ctx: Context, chunk: JobChunk, state: ChunkState | None) -> None:
    chunk.status, chunk.rows_done, chunk.finished_at = ChunkStatus.SUCCEEDED, chunk.rows, \
        timezone.now()
    chunk.error = ""
    chunk.save()
    if state is not None and ctx.runtime.mode == "per_chunk":
        # Its own account (model load and scoring times) before the container goes.
        try:
            logs = ctx.runtime.chunk_logs(ctx.job.name, chunk.index, tail=20)
        except Exception:  # noqa: BLE001 - the account is a courtesy; the file is the result
            logs = ""
        summary = [line for line in logs.splitlines() if line.startswith(f"chunk {chunk.index}: ")]
        if summary:
            event(ctx.job, "; ".join(summary), chunk=chunk.index)
        ctx.runtime.remove_chunk(ctx.job.name, chunk.index)


def _attempt_failed(ctx: Context, chunk: JobChunk, reason: str,
                    state: ChunkState | None = None, *, final: bool = False) -> None:
    job = ctx.job
    lines = ""
    if state is not None:
        try:
            lines = ctx.runtime.chunk_logs(job.name, chunk.index, tail=LOG_LINES).strip()
        except Exception:  # noqa: BLE001 - the logs are a courtesy
            lines = ""
        if ctx.runtime.mode == "per_chunk":
            ctx.runtime.remove_chunk(job.name, chunk.index)
    chunk.attempts = max(chunk.attempts, state.attempt if state else 0, 1)
    final = final or chunk.attempts > job.max_retries
    chunk.error = (f"attempt {chunk.attempts}: {reason}" + (f"\n{lines}" if lines else ""))[:20000]
    chunk.status = ChunkStatus.FAILED if final else ChunkStatus.PENDING
    chunk.finished_at = timezone.now() if final else None
    chunk.rows_done = 0
    chunk.save()
    left = job.max_retries - chunk.attempts + 1
    then = "no retries left" if final else f"retrying ({left} more attempt(s) allowed)"
    event(job, f"Chunk {chunk.index} attempt {chunk.attempts} failed: {reason}; {then}."
               + (f"\n{lines}" if lines else ""),
          kind=Kind.ERROR if final else Kind.WARNING, chunk=chunk.index)


def _progress(job: BatchJob, chunks: list[JobChunk]) -> None:
    job.rows_done = sum(c.rows if c.status == ChunkStatus.SUCCEEDED else c.rows_done
                        for c in chunks)
    seconds = (timezone.now() - job.started_at).total_seconds() if job.started_at else 0
    job.rows_per_s = job.rows_done / seconds if seconds > 0 and job.rows_done else None
    job.save(update_fields=["rows_done", "rows_per_s", "updated_at"])


def _fail_job(ctx: Context, chunk: JobChunk) -> str:
    job = ctx.job
    done = job.chunks.filter(status=ChunkStatus.SUCCEEDED).count()
    reason = chunk.error.splitlines()[0] if chunk.error else "failed"
    message = (f"Chunk {chunk.index} failed {chunk.attempts} time(s) ({reason}). "
               f"{done} of {job.chunks_total} chunks are done and kept: retry runs only the "
               "rest.")
    teardown.end(job, JobStatus.FAILED, message)
    event(job, f"Failed: {message}", kind=Kind.ERROR, chunk=chunk.index)
    audit.record(actor=None, action="job.failed", obj=job, team=job.team,
                 after={"status": job.status, "reason": message})
    return "failed"


def _finish(ctx: Context) -> str:
    job = ctx.job
    try:
        name, size = output.assemble(job)
    except output.OutputMismatch as exc:
        teardown.end(job, JobStatus.FAILED, f"The output does not match the input: {exc}.")
        event(job, f"Failed: {exc}.", kind=Kind.ERROR)
        return "failed"
    job.output_name, job.output_size = name, size
    job.rows_done = job.rows_total
    now = timezone.now()
    seconds = max(0.001, (now - (job.started_at or now)).total_seconds())
    job.rows_per_s = job.rows_total / seconds
    message = (f"Succeeded in {seconds:.0f}s, {job.rows_per_s:,.0f} rows/s: {job.rows_total} "
               f"rows to {name}.")
    teardown.end(job, JobStatus.SUCCEEDED, message)
    teardown.remove_chunk_files(job)
    event(job, message, kind=Kind.STEP)
    audit.record(actor=None, action="job.succeeded", obj=job, team=job.team,
                 after={"status": job.status, "rows": job.rows_total, "output": name,
                        "input_sha256": job.input_sha256, "version": job.version.version})
    return "succeeded"


def _fail_now(job_id: int, message: str) -> str:
    with transaction.atomic():
        job = BatchJob.objects.select_for_update(of=("self",)).select_related("team") \
            .filter(pk=job_id).first()
        if job is None or job.finished:
            return "finished"
        teardown.end(job, JobStatus.FAILED, message[:2000])
        event(job, message, kind=Kind.ERROR)
    return "failed"


def _note(job_id: int, message: str) -> None:
    BatchJob.objects.filter(pk=job_id).update(status_message=message[:500],
                                              updated_at=timezone.now())
