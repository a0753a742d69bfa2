"""Prediction logs, their per-minute rollups, ground truth, and alert rules.

Raw ``PredictionRecord`` rows are kept a few days (``MODELPORT_MONITORING_RAW_RETENTION_DAYS``);
pages and the API read only ``MinuteRollup`` (traffic, errors, latency histogram, predictions)
and ``FeatureSketch`` (per hour: feature histograms on the reference bins plus a small sample),
which the ``monitoring.tasks.rollup`` beat task builds incrementally.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from deployments.models import Deployment
from jobs.models import BatchJob
from registry.models import ModelVersion, RegisteredModel
from teams.roles import is_platform_admin

# Fixed latency bucket upper bounds (ms); the last bucket is everything above the last bound.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000, 30000,
)


class ScopedQuerySet(models.QuerySet):
    """Objects hanging off a deployment: visible to the deployment's team and platform admins."""

    team_path = "deployment__team"

    def visible_to(self, user):
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(**{f"{self.team_path}__memberships__user": user})


class IngestToken(models.Model):
    """A deployment-scoped secret replicas use to ship prediction logs; only its digest is kept."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="ingest_tokens")
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.deployment.name} {self.prefix}…"


class TaskType(models.TextChoices):
    AUTO = "auto", "Auto (from the labels)"
    CLASSIFICATION = "classification", "Classification"
    REGRESSION = "regression", "Regression"


class ModelMonitoring(models.Model):
    """Per-model drift thresholds and the kind of quality metrics to compute."""

    model = models.OneToOneField(RegisteredModel, on_delete=models.CASCADE,
                                 related_name="monitoring")
    psi_threshold = models.FloatField(default=0.2)
    p_value_threshold = models.FloatField(default=0.01)
    task = models.CharField(max_length=20, choices=TaskType.choices, default=TaskType.AUTO)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring of {self.model.name}"


class DeploymentMonitoring(models.Model):
    deployment = models.OneToOneField(Deployment, on_delete=models.CASCADE,
                                      related_name="monitoring")
    sampling_rate = models.FloatField(default=1.0, help_text="Share of records kept, 0-1.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring of {self.deployment.name}"


class PredictionRecord(models.Model):
    """One logged prediction request as shipped by a replica. Raw, short-lived.

    No database foreign-key constraint: checking it row by row halves COPY throughput, and a
    deleted deployment's raw records simply age out with the retention (``prune``)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.DO_NOTHING, related_name="+",
                                   db_index=False, db_constraint=False)
    revision = models.PositiveIntegerField(default=0)
    replica = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=100)
    timestamp = models.DateTimeField()
    latency_ms = models.FloatField(default=0)
    status = models.PositiveSmallIntegerField(default=200)
    endpoint = models.CharField(max_length=40, blank=True)
    inputs = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    weight = models.FloatField(default=1.0, help_text="1 / sampling rate at ingest.")
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["deployment", "request_id"], name="mon_rec_dep_req"),
            models.Index(fields=["timestamp"], name="mon_rec_ts"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id}/{self.request_id}"


class MinuteRollup(models.Model):
    """Everything the charts need for one deployment revision and one minute."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="+",
                                   db_index=False)
    revision = models.PositiveIntegerField(default=0)
    minute = models.DateTimeField()
    count = models.FloatField(default=0)
    errors = models.FloatField(default=0)
    latency_sum = models.FloatField(default=0)
    # Plus one column per latency bucket (``lat_00`` … , see LATENCY_COLUMNS): plain columns so
    # the database sums them per step (a week of minutes in one GROUP BY), unlike a JSON array.
    predictions = models.JSONField(default=dict)  # {"classes": {label: n}} or {"values": [...]}
    # What the gateway answered itself (from its traffic samples, ``monitoring.gateway_errors``):
    # requests of admitted callers, and those it failed with 500/502/503/504 — failures no
    # replica saw, so they are in no prediction log and not in ``count``.
    gateway_requests = models.PositiveIntegerField(default=0)
    gateway_500 = models.PositiveIntegerField(default=0)
    gateway_502 = models.PositiveIntegerField(default=0)
    gateway_503 = models.PositiveIntegerField(default=0)
    gateway_504 = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "minute", "revision"],
                                               name="mon_rollup_unique")]

    def __str__(self) -> str:
        return f"{self.deployment_id} r{self.revision} {self.minute:%Y-%m-%d %H:%M}"

    @property
    def latency_buckets(self) -> list[float]:
        return [getattr(self, c) for c in LATENCY_COLUMNS]

    @latency_buckets.setter
    def latency_buckets(self, values: list[float]) -> None:
        for column, value in zip(LATENCY_COLUMNS, values, strict=True):
            setattr(self, column, value)


LATENCY_COLUMNS = tuple(f"lat_{i:02d}" for i in range(len(LATENCY_BUCKETS_MS) + 1))
for _column in LATENCY_COLUMNS:
    MinuteRollup.add_to_class(_column, models.FloatField(default=0))


class FeatureSketch(models.Model):
    """Per hour: each feature's counts on the reference bins (or categories) and a sample."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="+",
                                   db_index=False)
    revision = models.PositiveIntegerField(default=0)
    hour = models.DateTimeField()
    rows = models.PositiveIntegerField(default=0)
    features = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "hour", "revision"],
                                               name="mon_sketch_unique")]

    def __str__(self) -> str:
        return f"{self.deployment_id} r{self.revision} {self.hour:%Y-%m-%d %H}h"


class ReplicaStat(models.Model):
    """One CPU/memory sample of one replica (``monitoring.tasks.collect_replica_stats``, every
    ``MODELPORT_MONITORING_REPLICA_STATS_SECONDS``). Kept as long as raw prediction records."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="+",
                                   db_index=False)
    runtime_id = models.CharField(max_length=200, help_text="The replica's id in its runtime.")
    revision = models.PositiveIntegerField(default=0)
    index = models.PositiveIntegerField(default=0, help_text="Replica number in its revision.")
    at = models.DateTimeField()
    cpu_percent = models.FloatField(help_text="100 = one core fully used.")
    memory_mb = models.FloatField()
    memory_limit_mb = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["deployment", "at"], name="mon_replstat_dep_at"),
                   models.Index(fields=["at"], name="mon_replstat_at")]

    def __str__(self) -> str:
        return f"{self.runtime_id} {self.at:%Y-%m-%d %H:%M:%S}"


class RollupCursor(models.Model):
    """How far the rollup task got through ``PredictionRecord`` ids (one row, name='rollup')."""

    name = models.CharField(max_length=40, unique=True)
    last_id = models.BigIntegerField(default=0)
    last_timestamp = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_id}"


class Feedback(models.Model):
    """Ground truth for one request, joined with its prediction when it arrived."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="+")
    revision = models.PositiveIntegerField(default=0)
    request_id = models.CharField(max_length=100)
    timestamp = models.DateTimeField(help_text="When the prediction was made.")
    prediction = models.JSONField(null=True)
    label = models.JSONField(null=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "request_id"],
                                               name="mon_feedback_unique")]
        indexes = [models.Index(fields=["deployment", "timestamp"], name="mon_fb_dep_ts")]

    def __str__(self) -> str:
        return f"{self.deployment_id}/{self.request_id}"


class Comparison(models.TextChoices):
    GT = ">", ">"
    GTE = ">=", ">="
    LT = "<", "<"
    LTE = "<=", "<="


class Verdict(models.TextChoices):
    OK = "ok", "OK"
    BREACH = "breach", "Breached"
    NOT_ENOUGH_DATA = "not_enough_data", "Not enough data"
    NO_DATA = "no_data", "No data"
    ERROR = "error", "Evaluation failed"


class AlertRule(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="alert_rules")
    name = models.CharField(max_length=100)
    metric = models.CharField(max_length=30)
    window_minutes = models.PositiveIntegerField(default=5)
    comparison = models.CharField(max_length=2, choices=Comparison.choices, default=">")
    threshold = models.FloatField()
    enabled = models.BooleanField(default=True)
    webhook_url = models.URLField(max_length=500, blank=True)
    emails = models.JSONField(default=list, blank=True)
    retrain_webhook_url = models.URLField(max_length=500, blank=True)
    job_schedule = models.ForeignKey(
        "jobs.JobSchedule", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="alert_rules",
        help_text="Retraining hook: a job schedule of the deployment's team started (one job, "
                  "trigger 'alert') when an alert of this rule opens.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    min_samples = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Below this many rows in the window the rule does not fire (not enough "
                  "data); empty: the metric's default (100 drift, 50 quality, 0 otherwise).")
    silenced_until = models.DateTimeField(null=True, blank=True,
                                          help_text="No notifications until then.")
    silenced_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    # The last evaluation (the beat's), shown on the monitoring page and in the API.
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_samples = models.PositiveIntegerField(null=True, blank=True)
    last_verdict = models.CharField(max_length=20, blank=True, choices=Verdict.choices)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["deployment__name", "name"]
        constraints = [models.UniqueConstraint(fields=["deployment", "name"],
                                               name="mon_rule_unique_name")]

    def __str__(self) -> str:
        return f"{self.deployment.name}: {self.name}"


class AlertState(models.TextChoices):
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


class AlertQuerySet(ScopedQuerySet):
    team_path = "rule__deployment__team"


class Alert(models.Model):
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    state = models.CharField(max_length=10, choices=AlertState.choices,
                             default=AlertState.FIRING, db_index=True)
    value = models.FloatField(null=True)
    message = models.TextField()
    started_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified = models.JSONField(default=dict, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True,
                                            help_text="Last firing notification (re-sent while "
                                                      "firing and not acknowledged).")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="+")

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.rule}: {self.state}"


class ModelScopedQuerySet(ScopedQuerySet):
    team_path = "model__team"


class BatchDrift(models.Model):
    """Drift of one succeeded batch job's input against its version's reference
    (``monitoring.batch``): the same tests and thresholds as a deployment's live drift, on the
    job's staged input instead of sampled requests. Shown apart, marked batch."""

    job = models.OneToOneField(BatchJob, on_delete=models.CASCADE, related_name="drift")
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    rows = models.PositiveBigIntegerField(default=0, help_text="The job's input rows.")
    profiled_rows = models.PositiveBigIntegerField(default=0)
    reference = models.JSONField(default=dict, blank=True)  # {source, rows}
    thresholds = models.JSONField(default=dict, blank=True)
    rules = models.JSONField(default=dict, blank=True)
    features = models.JSONField(default=list, blank=True)
    drifted = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True, help_text="Why no feature was compared, if so.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ModelScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-job__created_at", "-job_id"]
        indexes = [models.Index(fields=["model", "-created_at"], name="mon_batchdrift_model")]

    def __str__(self) -> str:
        return f"batch drift of job {self.job_id}"
