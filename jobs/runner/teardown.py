"""Ending a job, whichever way: its containers removed, its reservation released, its work
files removed (a failed job keeps its finished chunks for a resume)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from functools import partial

from django.db import transaction
from django.utils import timezone

from registry.storage import artifact_storage

from .. import admission, datasets, passes
from ..events import Kind, event
from ..models import BatchJob, ChunkStatus, JobStatus
from ..signals import job_finished
from .runtimes import batch_runtime

log = logging.getLogger(__name__)


def remove_containers(job: BatchJob) -> bool:
    """Remove every container of the job; False when the backend did not answer (the next
    tick of a finished job tries again)."""
    try:
        batch_runtime(job).remove_job(job.name)
    except Exception as exc:  # noqa: BLE001 - an unreachable backend must not block the verb
        log.warning("job %s: removing its containers failed: %s", job.pk, exc)
        return False
    return True


def requeue_waiting(job: BatchJob) -> None:
    """The team's queued jobs may start now that this one ended."""
    for pk in BatchJob.objects.filter(team_id=job.team_id, status=JobStatus.QUEUED) \
            .exclude(pk=job.pk).values_list("pk", flat=True)[:5]:
        passes.tick_on_commit(pk)


def end(job: BatchJob, status: str, message: str, *, actor=None) -> None:
    """Set the final status, release the quota, remove the containers (a chunk that was
    running is pending again: only a complete file counts)."""
    job.chunks.filter(status=ChunkStatus.RUNNING).update(status=ChunkStatus.PENDING,
                                                         rows_done=0, runtime_id="")
    job.status, job.status_message = status, message
    job.finished_at = timezone.now()
    job.save()
    admission.release(job, actor=actor)
    remove_containers(job)
    requeue_waiting(job)
    # Apps above jobs (monitoring: batch drift) learn of it once the status is committed.
    transaction.on_commit(partial(job_finished.send, sender=BatchJob, job_id=job.pk,
                                  status=status))


def cancel(job: BatchJob, *, actor=None) -> None:
    """Cancel the locked job: containers gone now, partial outputs and work files deleted."""
    job.cancel_requested = True
    end(job, JobStatus.CANCELLED, "Cancelled.", actor=actor)
    datasets.remove_work_dir(job.pk)
    if job.output_name:
        with contextlib.suppress(Exception):
            artifact_storage().delete(job.output_name)
        job.output_name = ""
        job.save(update_fields=["output_name"])
    event(job, "Cancelled: containers removed, quota released, partial outputs deleted.",
          kind=Kind.STEP)


def remove_chunk_files(job: BatchJob) -> None:
    """A succeeded job's work dir (its output is in artifact storage; so is its input)."""
    shutil.rmtree(datasets.work_dir(job.pk), ignore_errors=True)
