"""What a job says about itself (its events), written by the verbs and the runner alike."""

from __future__ import annotations

from .models import BatchJob, JobEvent

Kind = JobEvent.Kind


def event(job: BatchJob, message: str, *, kind: str = Kind.INFO,
          chunk: int | None = None) -> JobEvent:
    return JobEvent.objects.create(job=job, kind=kind, chunk=chunk, message=message[:20000])
