"""The jobs API's shapes: what a job shows (``BatchJobSerializer``), what creating one takes
(multipart with a file, or JSON with ``input_uri``), and the schedules'."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.rest import CoresField, StrictTypes, identifier
from registry.models import alias_validator
from registry.models import name_validator as model_name_validator
from teams.models import slug_validator

from .. import services
from ..models import BatchJob, JobChunk, JobEvent, JobSchedule, OutputFormat

MAX_PARALLELISM = services.MAX_PARALLELISM
MAX_CPU = Decimal(64)
MAX_MEMORY_MB = 1024 * 1024
MAX_GPUS = 16


class ResourcesSerializer(StrictTypes, serializers.Serializer):
    cpu = CoresField(decimal_places=2, min_value=Decimal("0.1"), max_value=MAX_CPU,
                     required=False, help_text="Cores per chunk container; default 1.")
    memory_mb = serializers.IntegerField(required=False, min_value=128, max_value=MAX_MEMORY_MB,
                                         help_text="Memory per chunk container (MB); "
                                                   "default 1024.")
    gpus = serializers.IntegerField(required=False, min_value=0, max_value=MAX_GPUS,
                                    help_text="GPUs per chunk container; default 0.")


@extend_schema_field(ResourcesSerializer)
class JSONTextField(serializers.Field):
    """A JSON value that multipart sends as text (``resources='{"cpu": 2}'``) and JSON sends
    as itself."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            try:
                return json.loads(data) if data.strip() else None
            except ValueError:
                self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value

    default_error_messages = {"invalid": "Not valid JSON."}


@extend_schema_field({"type": "array", "items": {"type": "string"},
                      "description": "Column names; multipart also takes a JSON list or "
                                     "comma-separated names."})
class ColumnsField(serializers.Field):
    default_error_messages = {"invalid": "A list of column names (JSON list or "
                                         "comma-separated)."}

    def get_value(self, dictionary: Any) -> Any:
        if hasattr(dictionary, "getlist") and self.field_name in dictionary:
            values = dictionary.getlist(self.field_name)
            return values if len(values) > 1 else values[0]
        return super().get_value(dictionary)

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, str):
            text = data.strip()
            if text.startswith("["):
                try:
                    data = json.loads(text)
                except ValueError:
                    self.fail("invalid")
            else:
                data = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(data, list) or not all(isinstance(c, str) and c.strip()
                                                 for c in data):
            self.fail("invalid")
        return [c.strip() for c in data]

    def to_representation(self, value: Any) -> Any:
        return value


class JobCreateSerializer(serializers.Serializer):
    """Give ``version`` or ``alias``, and ``input`` (a file) or ``input_uri``."""

    team = identifier(slug_validator, "team slug", max_length=50,
                      help_text="Slug of the owning team.")
    model = identifier(model_name_validator, "model name", max_length=100,
                       help_text="Registered model name.")
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                       help_text="Model version (or give alias).")
    alias = identifier(alias_validator, "alias", required=False, allow_blank=True,
                       allow_null=True, max_length=50, help_text="Alias, e.g. production.")
    input = serializers.FileField(required=False, allow_null=True,
                                  help_text="The dataset: a CSV (header row) or Parquet file.")
    input_uri = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="Or an object in the platform's artifact storage: artifacts:/<name>, or "
                  "jobs:/<id>/input | jobs:/<id>/output of an earlier job of the team.")
    output_format = serializers.ChoiceField(choices=OutputFormat.choices, required=False,
                                            default=OutputFormat.PARQUET)
    resources = JSONTextField(required=False, allow_null=True,
                              help_text='Per chunk container: {"cpu", "memory_mb", "gpus"} '
                                        "(JSON text in multipart).")
    parallelism = serializers.IntegerField(required=False, min_value=1,
                                           max_value=MAX_PARALLELISM, default=1,
                                           help_text="Chunks scored at the same time.")
    output_columns = ColumnsField(required=False,
                                  help_text="Input columns copied next to each prediction "
                                            "(e.g. an id).")
    chunk_rows = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                          help_text="Rows per chunk (default: the platform's).")
    max_retries = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                           max_value=10,
                                           help_text="Retries of a failed chunk.")
    target = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                   help_text="The execution target's name (default: the "
                                             "platform's default target).")
    schedule = serializers.CharField(
        required=False, allow_blank=True, max_length=100,
        help_text="A cron expression (5 fields, UTC): also repeat this job on it. The "
                  "repeats read input_uri afresh, or this job's staged input.")
    schedule_name = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                          help_text="The schedule's name (default "
                                                    "'<model>-<the job id>').")

    def validate_resources(self, value: Any) -> dict | None:
        if value is None:
            return None
        body = ResourcesSerializer(data=value)
        if not isinstance(value, dict):
            raise serializers.ValidationError('A JSON object: {"cpu", "memory_mb", "gpus"}.')
        body.is_valid(raise_exception=True)
        return {k: (float(v) if isinstance(v, Decimal) else v)
                for k, v in body.validated_data.items()}

    def validate(self, attrs: dict) -> dict:
        if attrs.get("input") and attrs.get("input_uri"):
            raise serializers.ValidationError({"input": ["Give input or input_uri, not both."]})
        if not attrs.get("input") and not attrs.get("input_uri"):
            raise serializers.ValidationError(
                {"input": ["Give the dataset: input (a CSV or Parquet file) or input_uri."]})
        return attrs


class ProgressSerializer(serializers.Serializer):
    rows_done = serializers.IntegerField()
    rows_total = serializers.IntegerField()
    rows_per_s = serializers.FloatField(allow_null=True)
    eta_s = serializers.FloatField(allow_null=True, required=False,
                                   help_text="Seconds left at the current rate, or null.")
    chunks = serializers.DictField(child=serializers.IntegerField(), required=False,
                                   help_text="Chunks by state: pending, running, succeeded, "
                                             "failed.")


class JobInputSerializer(serializers.Serializer):
    filename = serializers.CharField(source="input_filename")
    uri = serializers.CharField(source="input_uri")
    format = serializers.CharField(source="input_format")
    sha256 = serializers.CharField(source="input_sha256")
    size = serializers.IntegerField(source="input_size")
    rows = serializers.IntegerField(source="rows_total")
    columns = serializers.ListField(child=serializers.CharField())


def progress_of(job: BatchJob) -> dict:
    """The core service's numbers; what the row says when they cannot be read."""
    try:
        return services.progress(job)
    except Exception:  # noqa: BLE001 - a page must show even if progress files are unreadable
        return {"rows_done": job.rows_done, "rows_total": job.rows_total,
                "rows_per_s": job.rows_per_s, "eta_s": None}


class BatchJobSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    model = serializers.CharField(source="model.name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)
    alias = serializers.SerializerMethodField(help_text="The alias asked for, or null.")
    input = serializers.SerializerMethodField()
    resources = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    output = serializers.SerializerMethodField(
        help_text="Where to download the output once succeeded (GET), else null.")
    created_by = serializers.CharField(source="created_by.username", read_only=True,
                                       default=None, allow_null=True)
    schedule = serializers.IntegerField(source="schedule_id", read_only=True, allow_null=True)
    target = serializers.CharField(source="target.name", read_only=True, default=None,
                                   allow_null=True, help_text="The execution target it runs on.")

    class Meta:
        model = BatchJob
        fields = ["id", "team", "model", "version", "alias", "status", "status_message",
                  "input", "output_format", "output_columns", "resources", "parallelism",
                  "chunk_rows", "chunks_total", "max_retries", "progress", "output",
                  "output_size", "trigger", "schedule", "target", "runtime", "created_by",
                  "created_at", "started_at", "finished_at", "updated_at"]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_alias(self, obj: BatchJob) -> str | None:
        return obj.alias or None

    @extend_schema_field(JobInputSerializer)
    def get_input(self, obj: BatchJob) -> dict:
        return dict(JobInputSerializer(obj).data)

    @extend_schema_field(ResourcesSerializer)
    def get_resources(self, obj: BatchJob) -> dict:
        return {"cpu": float(obj.cpu), "memory_mb": obj.memory_mb, "gpus": obj.gpus}

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, obj: BatchJob) -> dict:
        return progress_of(obj)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_output(self, obj: BatchJob) -> str | None:
        if obj.status != "succeeded":
            return None
        return f"/api/v1/jobs/{obj.pk}/output/"


class JobAcceptedSerializer(BatchJobSerializer):
    """``202``: the job (``status: queued``) and, when ``schedule`` was given, the schedule's
    id under ``schedule``."""


class JobChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobChunk
        fields = ["index", "row_start", "rows", "status", "attempts", "rows_done", "host",
                  "error", "started_at", "finished_at"]


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["id", "kind", "chunk", "message", "created_at"]


class JobEventsQuerySerializer(serializers.Serializer):
    since = serializers.IntegerField(required=False, min_value=0,
                                     help_text="Only events with id > since.")


class JobLogsQuerySerializer(serializers.Serializer):
    chunk = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                     help_text="One chunk's container (default: all).")
    tail = serializers.IntegerField(required=False, min_value=1, max_value=5000, default=200,
                                    help_text="Lines per container.")


class JobLogsSerializer(serializers.Serializer):
    logs = serializers.CharField(allow_blank=True)


# --- Schedules ---------------------------------------------------------------------------------
class ScheduleSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    model = serializers.CharField(source="model.name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True, default=None,
                                       allow_null=True)
    alias = serializers.SerializerMethodField()
    resources = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True,
                                       default=None, allow_null=True)

    class Meta:
        model = JobSchedule
        fields = ["id", "team", "name", "model", "version", "alias", "input_uri", "cron",
                  "parallelism", "resources", "output_format", "output_columns", "enabled",
                  "next_run_at", "last_run_at", "created_by", "created_at"]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_alias(self, obj: JobSchedule) -> str | None:
        return obj.alias or None

    @extend_schema_field(ResourcesSerializer)
    def get_resources(self, obj: JobSchedule) -> dict:
        return {"cpu": float(obj.cpu), "memory_mb": obj.memory_mb, "gpus": obj.gpus}


class ScheduleWriteSerializer(StrictTypes, serializers.Serializer):
    """Create: ``team``, ``name``, ``model``, ``version`` or ``alias``, ``input_uri``; ``cron``
    empty: runs only when started (an alert rule's hook or ``run/``)."""

    team = identifier(slug_validator, "team slug", max_length=50)
    name = serializers.CharField(max_length=100)
    model = identifier(model_name_validator, "model name", max_length=100)
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    alias = identifier(alias_validator, "alias", required=False, allow_blank=True,
                       allow_null=True, max_length=50)
    input_uri = serializers.CharField(max_length=500)
    cron = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                 help_text="5 fields, UTC, e.g. '0 2 * * *' (02:00 daily).")
    parallelism = serializers.IntegerField(required=False, min_value=1,
                                           max_value=MAX_PARALLELISM)
    resources = ResourcesSerializer(required=False)
    output_format = serializers.ChoiceField(choices=OutputFormat.choices, required=False)
    output_columns = serializers.ListField(child=serializers.CharField(), required=False)
    enabled = serializers.BooleanField(required=False)


class ScheduleUpdateSerializer(ScheduleWriteSerializer):
    team = None  # type: ignore[assignment]
    model = None  # type: ignore[assignment]
