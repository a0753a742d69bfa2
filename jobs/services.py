"""Business operations on batch jobs: one function per verb.

Each verb checks the actor's role, validates everything before touching anything (the input
is read, checked against the version's signature and typed before a row or a file exists),
admits the resources through ``admission``, records an audit event and enqueues a runner tick
after the transaction commits. The runner (``jobs.runner``) does the rest, one tick at a time.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal, InvalidOperation
from typing import IO, Any, cast

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.files.base import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from compute import targets
from compute.runtime_choice import choose_runtime
from core.errors import Conflict, InvalidInput, NotFound
from registry.models import ModelAlias, ModelVersion, RegisteredModel, VersionStatus
from registry.storage import artifact_storage
from teams import audit
from teams.access import require_team_role
from teams.models import Team
from teams.roles import Role

from . import admission, datasets, passes
from .events import Kind, event
from .models import (
    BatchJob,
    ChunkStatus,
    JobChunk,
    JobSchedule,
    JobStatus,
    OutputFormat,
    Trigger,
)
from .runner import runtimes, teardown

Actor = User | AnonymousUser | None
JOB_FIELDS = ["team", "model", "version", "alias", "status", "input_filename", "input_uri",
              "input_sha256", "rows_total", "chunks_total", "parallelism", "cpu", "memory_mb",
              "gpus", "output_format", "output_columns", "output_name", "trigger"]
MAX_PARALLELISM = 32
MAX_RETRIES = 10
CONTENT_TYPES = {OutputFormat.PARQUET: "application/vnd.apache.parquet",
                 OutputFormat.CSV: "text/csv"}


# --- Reads --------------------------------------------------------------------------------------
def visible_jobs(user) -> QuerySet[BatchJob]:
    return BatchJob.objects.visible_to(user).select_related("team", "model", "version")


def get_visible(user, job_id: int | str) -> BatchJob:
    try:
        pk = int(job_id)
    except (TypeError, ValueError):
        raise NotFound(f"No job '{job_id}'.") from None
    job = visible_jobs(user).filter(pk=pk).first()
    if job is None:
        raise NotFound(f"No job {pk}.")
    return job


def progress(job: BatchJob) -> dict[str, Any]:
    counts = {s.value: 0 for s in ChunkStatus}
    for status in job.chunks.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    rate = job.rows_per_s or None
    left = max(0, job.rows_total - job.rows_done)
    eta = round(left / rate) if rate and job.status == JobStatus.RUNNING else None
    return {"rows_done": job.rows_done, "rows_total": job.rows_total,
            "rows_per_s": round(rate, 1) if rate else None, "eta_s": eta, "chunks": counts}


# --- Validation ---------------------------------------------------------------------------------
def _model(team: Team, name: Any) -> RegisteredModel:
    model = RegisteredModel.objects.filter(name=str(name or "")).first()
    if model is None or model.team_id != team.pk:
        raise NotFound(f"Team '{team.slug}' has no model '{name}'.", field="model")
    return model


def _resolve(model: RegisteredModel, version: Any, alias: Any) -> tuple[ModelVersion, str]:
    """(the ready version the job runs, the alias asked for or "")."""
    if version not in (None, "") and alias not in (None, ""):
        raise InvalidInput("Give either version or alias, not both.", field="version")
    if alias not in (None, ""):
        found = ModelAlias.objects.select_related("version").filter(model=model,
                                                                    name=str(alias)).first()
        if found is None:
            raise NotFound(f"Model '{model.name}' has no alias '{alias}'.", field="alias")
        target, alias = found.version, str(alias)
    else:
        if version in (None, "") or isinstance(version, bool):
            raise InvalidInput("Give the model version (a number) or an alias to run.",
                               field="version")
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise InvalidInput(f"version must be a number (got {version!r}).",
                               field="version") from None
        numbered = ModelVersion.objects.filter(model=model, version=number).first()
        if numbered is None:
            raise NotFound(f"Model '{model.name}' has no version {number}.", field="version")
        target, alias = numbered, ""
    if target.status != VersionStatus.READY:
        raise Conflict(f"'{model.name}' v{target.version} is {target.status}, not ready; "
                       "only ready versions can run jobs.", code="version_not_ready",
                       field="version")
    return target, alias


def _whole(value: Any, field: str, low: int, high: int, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
        if isinstance(value, bool) or number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(f"{field} must be a whole number.", field=field) from None
    if not low <= number <= high:
        raise InvalidInput(f"{field} must be {low}-{high}.", field=field)
    return number


def _resources(resources: dict | None) -> tuple[Decimal, int, int]:
    if resources is None:
        resources = {}
    if not isinstance(resources, dict):
        raise InvalidInput("resources must be an object {cpu, memory_mb, gpus}.",
                           field="resources")
    unknown = set(resources) - {"cpu", "memory_mb", "gpus"}
    if unknown:
        raise InvalidInput(f"Unknown resources: {', '.join(sorted(unknown))}.",
                           field="resources")
    try:
        cpu = Decimal(str(resources.get("cpu", 1)))
    except InvalidOperation:
        raise InvalidInput("resources.cpu must be a number.", field="resources") from None
    if not cpu.is_finite() or not Decimal("0.1") <= cpu <= Decimal(64):
        raise InvalidInput("resources.cpu must be 0.1-64.", field="resources")
    memory_mb = _whole(resources.get("memory_mb"), "resources.memory_mb", 128, 1024 * 1024,
                       1024)
    gpus = _whole(resources.get("gpus"), "resources.gpus", 0, 16, 0)
    return cpu.quantize(Decimal("0.01")), memory_mb, gpus


def _output_columns(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput("output_columns must be a list of column names.",
                           field="output_columns")
    return list(dict.fromkeys(value))


def _open_uri(team: Team, uri: str) -> tuple[IO[bytes], str]:
    """The object an ``input_uri`` names, opened, and its name. Only the platform's artifact
    storage: a team's datasets (``artifacts:/datasets/<team-slug>/…``) or an earlier job's
    staged input or output (``jobs:/<id>/input|output``) of the same team. Nothing is fetched
    from a URL."""
    storage = artifact_storage()
    if uri.startswith("artifacts:/"):
        name = datasets.check_storage_name(uri.removeprefix("artifacts:/").lstrip("/"))
        prefix = f"datasets/{team.slug}/"
        if not name.startswith(prefix):
            raise InvalidInput(f"input_uri must name an object under '{prefix}' (the team's "
                               "datasets) in artifact storage.", field="input_uri")
    elif uri.startswith("jobs:/"):
        parts = uri.removeprefix("jobs:/").strip("/").split("/")
        earlier = None
        if len(parts) == 2 and parts[0].isdigit() and parts[1] in ("input", "output"):
            earlier = BatchJob.objects.filter(pk=int(parts[0]), team=team).first()
        if earlier is None:
            raise InvalidInput(f"input_uri '{uri}' names no job of team '{team.slug}' "
                               "(jobs:/<id>/input or jobs:/<id>/output).", field="input_uri")
        name = earlier.input_name if parts[1] == "input" else earlier.output_name
        if not name:
            raise InvalidInput(f"Job {earlier.pk} has no {parts[1]} (yet).", field="input_uri")
    else:
        raise InvalidInput("input_uri must be artifacts:/datasets/<team>/<name> or "
                           "jobs:/<id>/input|output (URLs are not fetched).", field="input_uri")
    if not storage.exists(name):
        raise InvalidInput(f"input_uri '{uri}': no such object in artifact storage.",
                           field="input_uri")
    return storage.open(name, "rb"), name


# --- Verbs --------------------------------------------------------------------------------------
def create_job(*, actor, team: Team, model: str, version: int | str | None = None,
               alias: str | None = None, input_file: UploadedFile | None = None,
               input_uri: str | None = None, output_format: str = "parquet",
               resources: dict | None = None, parallelism: int = 1,
               output_columns: list[str] | None = None, chunk_rows: int | None = None,
               max_retries: int | None = None, trigger: str = "api",
               schedule: JobSchedule | None = None, target: Any = None) -> BatchJob:
    """Check everything, read and stage the input, admit, and leave the job ``queued`` for
    the runner. On any refusal nothing is left: no row, no file, no reservation.
    ``target``: the execution target's name, as for a deployment (default: the default
    target)."""
    require_team_role(actor, team, Role.ENGINEER, "running batch jobs")
    registered = _model(team, model)
    resolved, alias = _resolve(registered, version, alias)
    if output_format not in OutputFormat.values:
        raise InvalidInput("output_format must be 'parquet' or 'csv'.", field="output_format")
    if trigger not in Trigger.values:
        raise InvalidInput(f"Unknown trigger '{trigger}'.", field="trigger")
    cpu, memory_mb, gpus = _resources(resources)
    parallelism = _whole(parallelism, "parallelism", 1, MAX_PARALLELISM, 1)
    retries = _whole(max_retries, "max_retries", 0, MAX_RETRIES,
                     int(getattr(settings, "MODELPORT_JOB_MAX_RETRIES", 2)))
    keep = _output_columns(output_columns)
    execution_target = targets.resolve_target(target)
    if (input_file is None) == (not input_uri):
        raise InvalidInput("Give the input as a file (input) or as input_uri, not both.",
                           field="input")
    if input_file is not None:
        stream, name, uri = cast(IO[bytes], input_file), input_file.name or "input", ""
    else:
        uri = str(input_uri)
        stream, name = _open_uri(team, uri)
    try:
        data = datasets.read_input(stream, name, signature=resolved.signature, keep=keep,
                                   uri=uri)
    finally:
        if input_file is None:
            stream.close()
    size = datasets.chunk_size(data.rows, parallelism, chunk_rows)
    chunks = -(-data.rows // size)
    job: BatchJob | None = None
    stored: str = ""
    try:
        with transaction.atomic():
            job = BatchJob.objects.create(
                team=team, model=registered, version=resolved, alias=alias,
                input_filename=data.filename, input_uri=data.uri, input_format=data.fmt,
                input_sha256=data.sha256, input_size=data.size,
                columns=list(data.table.column_names), rows_total=data.rows, chunk_rows=size,
                chunks_total=chunks, parallelism=parallelism, cpu=cpu, memory_mb=memory_mb,
                gpus=gpus, max_retries=retries, output_format=output_format,
                output_columns=keep, target=execution_target,
                runtime=choose_runtime(execution_target),
                trigger=trigger, schedule=schedule,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                status_message="Queued.")
            admission.admit(job, actor=actor)
            _make_chunks(job)
            path = datasets.stage(data.table, job.pk, size)
            with path.open("rb") as f:
                stored = artifact_storage().save(f"jobs/{job.pk}/input.parquet", File(f))
            job.input_name = stored
            job.save(update_fields=["input_name"])
            source = data.uri or data.filename
            event(job, f"Created: {data.rows} rows of {source} (sha256 {data.sha256[:12]}), "
                       f"{chunks} chunk(s) of up to {size} rows, parallelism {parallelism}, "
                       f"{resolved}.", kind=Kind.STEP)
            audit.record(actor=actor, action="job.created", obj=job, team=team,
                         after=audit.snapshot(job, JOB_FIELDS))
            passes.tick_on_commit(job.pk)
    except BaseException:
        if job is not None and job.pk:
            datasets.remove_work_dir(job.pk)
            if stored:
                with contextlib.suppress(Exception):
                    artifact_storage().delete(stored)
        raise
    return job


def _make_chunks(job: BatchJob) -> None:
    JobChunk.objects.bulk_create([
        JobChunk(job=job, index=i, row_start=i * job.chunk_rows,
                 rows=min(job.chunk_rows, job.rows_total - i * job.chunk_rows))
        for i in range(job.chunks_total)])


def _locked(job: BatchJob) -> BatchJob:
    return BatchJob.objects.select_for_update(of=("self",)).select_related("team").get(pk=job.pk)


@transaction.atomic
def cancel_job(*, actor, job: BatchJob) -> BatchJob:
    """Stop it now: no container left, reservation released, partial outputs deleted. 409 for
    a finished job."""
    require_team_role(actor, job.team, Role.ENGINEER, "cancelling batch jobs")
    job = _locked(job)
    if job.finished:
        raise Conflict(f"Job {job.pk} is {job.status}; only a queued or running job can be "
                       "cancelled.", code="job_finished")
    before = audit.snapshot(job, JOB_FIELDS)
    teardown.cancel(job, actor=actor)
    audit.record(actor=actor, action="job.cancelled", obj=job, team=job.team, before=before,
                 after=audit.snapshot(job, JOB_FIELDS))
    return job


@transaction.atomic
def retry_job(*, actor, job: BatchJob) -> BatchJob:
    """Resume a failed job: only its chunks without output run again (their attempts reset);
    the finished ones are kept. Admitted again like a new job."""
    require_team_role(actor, job.team, Role.ENGINEER, "retrying batch jobs")
    job = _locked(job)
    if job.status != JobStatus.FAILED:
        raise Conflict(f"Job {job.pk} is {job.status}; only a failed job can be retried.",
                       code="job_not_failed")
    if not datasets.work_dir(job.pk).joinpath("input", datasets.INPUT_FILE).is_file():
        raise Conflict(f"Job {job.pk}'s staged input is gone; run a new job on "
                       f"jobs:/{job.pk}/input.", code="input_gone")
    before = audit.snapshot(job, JOB_FIELDS)
    admission.admit(job, actor=actor)
    job.chunks.exclude(status=ChunkStatus.SUCCEEDED).update(
        status=ChunkStatus.PENDING, attempts=0, rows_done=0, error="", runtime_id="",
        started_at=None, finished_at=None)
    job.status, job.status_message = JobStatus.QUEUED, "Queued again (retry)."
    job.finished_at, job.cancel_requested = None, False
    job.save()
    done = job.chunks.filter(status=ChunkStatus.SUCCEEDED).count()
    event(job, f"Retry: {job.chunks_total - done} chunk(s) to run again, {done} kept.",
          kind=Kind.STEP)
    audit.record(actor=actor, action="job.retried", obj=job, team=job.team, before=before,
                 after=audit.snapshot(job, JOB_FIELDS))
    passes.tick_on_commit(job.pk)
    return job


def job_logs(*, actor, job: BatchJob, chunk: int | None = None, tail: int = 200) -> str:
    """The last lines of a chunk's container (the first running or failed chunk by default),
    else the failure kept in its chunk row."""
    require_team_role(actor, job.team, Role.VIEWER, "reading job logs")
    tail = max(1, min(int(tail or 200), 5000))
    chunks = job.chunks.all()
    if chunk is not None:
        row = chunks.filter(index=chunk).first()
        if row is None:
            raise NotFound(f"Job {job.pk} has no chunk {chunk}.", field="chunk")
    else:
        row = (chunks.filter(status=ChunkStatus.RUNNING).first()
               or chunks.filter(status=ChunkStatus.FAILED).first()
               or chunks.exclude(error="").order_by("-index").first())
    if row is None:
        return ""
    text = ""
    if not job.finished:
        with contextlib.suppress(Exception):
            text = runtimes.batch_runtime(job).chunk_logs(job.name, row.index, tail=tail)
    return text or row.error


def open_output(*, actor, job: BatchJob) -> tuple[IO[bytes], str, str]:
    """The output file (opened), its download name and content type; 409 unless succeeded."""
    require_team_role(actor, job.team, Role.VIEWER, "downloading job outputs")
    if job.status != JobStatus.SUCCEEDED or not job.output_name:
        raise Conflict(f"Job {job.pk} is {job.status}; its output exists once it succeeded.",
                       code="job_not_succeeded")
    fmt = OutputFormat(job.output_format)
    audit.record(actor=actor, action="job.output_downloaded", obj=job, team=job.team)
    return (artifact_storage().open(job.output_name, "rb"), f"job-{job.pk}-output.{fmt.value}",
            CONTENT_TYPES[fmt])


def elapsed(job: BatchJob) -> float:
    if job.started_at is None:
        return 0.0
    end = job.finished_at or timezone.now()
    return max(0.0, (end - job.started_at).total_seconds())


__all__ = ["cancel_job", "create_job", "get_visible", "job_logs", "open_output", "progress",
           "retry_job", "visible_jobs"]
