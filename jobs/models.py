"""Batch scoring jobs: what should be scored (``BatchJob``), its chunks (``JobChunk``, every
step's state in the database so any worker resumes it), what happened (``JobEvent``) and
repeated runs (``JobSchedule``).

A job's input is staged once as a Parquet file whose row groups are its chunks
(``jobs.datasets``); each chunk is scored by one hardened container of the version's image and
writes its own output file, so a chunk is either wholly done or not at all, and the output is
the chunks' files joined in index order (input order, no row twice).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from registry.models import ModelVersion, RegisteredModel
from teams.models import Team
from teams.roles import is_platform_admin


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class OutputFormat(models.TextChoices):
    PARQUET = "parquet", "Parquet"
    CSV = "csv", "CSV"


class Trigger(models.TextChoices):
    API = "api", "API"
    PORTAL = "portal", "Portal"
    SCHEDULE = "schedule", "Schedule"
    ALERT = "alert", "Alert rule"


class TeamScopedQuerySet(models.QuerySet):
    def visible_to(self, user) -> TeamScopedQuerySet:
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(team__memberships__user=user)


class BatchJob(models.Model):
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="jobs")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="jobs")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="jobs")
    alias = models.CharField(max_length=50, blank=True,
                             help_text="The alias asked for, resolved to `version` at creation.")
    status = models.CharField(max_length=20, choices=JobStatus.choices,
                              default=JobStatus.QUEUED, db_index=True)
    status_message = models.TextField(blank=True)
    # The input: as given, and as staged (a Parquet file whose row groups are the chunks).
    input_filename = models.CharField(max_length=300, blank=True)
    input_uri = models.CharField(max_length=500, blank=True)
    input_format = models.CharField(max_length=10, blank=True)  # csv | parquet
    input_sha256 = models.CharField(max_length=64, blank=True)
    input_size = models.BigIntegerField(default=0)
    input_name = models.CharField(max_length=300, blank=True,
                                  help_text="The staged input in artifact storage.")
    columns = models.JSONField(default=list, blank=True)
    rows_total = models.PositiveBigIntegerField(default=0)
    chunk_rows = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    # What to run it with.
    parallelism = models.PositiveSmallIntegerField(default=1)
    cpu = models.DecimalField(max_digits=7, decimal_places=2, default=1)
    memory_mb = models.PositiveIntegerField(default=1024)
    gpus = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveSmallIntegerField(
        default=2, help_text="Retries of a failed chunk before the job fails.")
    output_format = models.CharField(max_length=10, choices=OutputFormat.choices,
                                     default=OutputFormat.PARQUET)
    output_columns = models.JSONField(default=list, blank=True,
                                      help_text="Input columns copied next to each prediction.")
    target = models.ForeignKey("compute.ExecutionTarget", null=True, blank=True,
                               on_delete=models.PROTECT, related_name="jobs")
    runtime = models.CharField(max_length=20, blank=True)
    # Progress, written by the runner.
    rows_done = models.PositiveBigIntegerField(default=0)
    rows_per_s = models.FloatField(null=True, blank=True)
    output_name = models.CharField(max_length=300, blank=True)
    output_size = models.BigIntegerField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # When the running job's next tick is due (``jobs.passes.follow_up``): one chain per job.
    next_tick_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.API)
    schedule = models.ForeignKey("JobSchedule", null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.model.name} v{self.version.version})"

    @property
    def owner(self) -> str:
        """The quota reservation this job holds while it runs."""
        return f"job:{self.pk}"

    @property
    def name(self) -> str:
        """The runtime's name for it (containers, Kubernetes Job, Swarm service)."""
        return f"job-{self.pk}"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class ChunkStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class JobChunk(models.Model):
    """One row group of the staged input, scored by one container run (``attempts`` counts
    them); ``succeeded`` only once its output file is complete."""

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    row_start = models.PositiveBigIntegerField()
    rows = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=ChunkStatus.choices,
                              default=ChunkStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    runtime_id = models.CharField(max_length=200, blank=True)
    host = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"],
                                               name="jobs_chunk_unique_index")]

    def __str__(self) -> str:
        return f"job {self.job_id} chunk {self.index}"


class JobEvent(models.Model):
    class Kind(models.TextChoices):
        INFO = "info", "Info"
        STEP = "step", "Step"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.INFO)
    chunk = models.PositiveIntegerField(null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.message[:60]}"


class JobSchedule(models.Model):
    """A job repeated on a cron expression (beat starts it when due), or started by an alert
    rule's retraining hook. Its input is an object in the platform's artifact storage, read
    afresh at each run."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="job_schedules")
    name = models.CharField(max_length=100)
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE,
                              related_name="job_schedules")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="+")
    alias = models.CharField(max_length=50, blank=True)
    input_uri = models.CharField(max_length=500)
    cron = models.CharField(max_length=100, blank=True,
                            help_text="Five fields, UTC (minute hour day month weekday).")
    parallelism = models.PositiveSmallIntegerField(default=1)
    cpu = models.DecimalField(max_digits=7, decimal_places=2, default=1)
    memory_mb = models.PositiveIntegerField(default=1024)
    gpus = models.PositiveIntegerField(default=0)
    output_format = models.CharField(max_length=10, choices=OutputFormat.choices,
                                     default=OutputFormat.PARQUET)
    output_columns = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"],
                                               name="jobs_schedule_unique_name")]

    def __str__(self) -> str:
        return f"{self.team.name}/{self.name}"


class HostChunk(models.Model):
    """Where a chunk runs on a target with several plain Docker hosts, and what that host's
    worker last reported of it (``jobs.hosts_batch``, ``jobs.host_tasks``): the platform has no
    access to a remote engine, so this row is the runtime's state, as ``Replica`` rows are for
    replicas. ``spec`` is the chunk's ``BatchSpec`` (the host worker starts it from the row)."""

    class State(models.TextChoices):
        PLACING = "placing"  # sent to the host, not started yet
        RUNNING = "running"
        SUCCEEDED = "succeeded"  # the container exited 0
        FAILED = "failed"  # exited non-zero, or the host could not start it
        MISSING = "missing"  # the host reports no container for it

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="host_chunks")
    index = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField(default=1)
    host = models.ForeignKey("compute.Host", on_delete=models.CASCADE,
                             related_name="job_chunks")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PLACING)
    runtime_id = models.CharField(max_length=200, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    logs = models.TextField(blank=True)  # the last lines the host reported
    spec = models.JSONField(default=dict, blank=True)
    requirements = models.JSONField(default=list, blank=True)
    placed_at = models.DateTimeField(default=timezone.now)  # of this attempt
    reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"],
                                               name="jobs_hostchunk_unique_index")]

    def __str__(self) -> str:
        return f"job {self.job_id} chunk {self.index} on host {self.host_id}"
