"""Desired state of deployments (what should run) and a cache of what runs.

``Deployment`` holds the spec people edit; every spec change creates an immutable ``Revision``.
The reconciler (``deployments.reconcile``) writes ``Replica`` rows, ``traffic`` and ``status`` so
API reads never call the container runtime.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from compute.models import RuntimeKind
from core.replica_keys import new_key
from registry.models import ModelVersion, RegisteredModel
from teams.models import Team
from teams.roles import is_platform_admin

from .spec import KINDS, Autoscaling

name_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)

STRATEGIES = KINDS  # the names of deployments.spec.StrategyKind, for choices


class DeploymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    BUILDING = "building", "Building"
    STARTING = "starting", "Starting"
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    IDLE = "idle", "Idle (scaled to zero)"


class DeploymentQuerySet(models.QuerySet):
    def visible_to(self, user) -> DeploymentQuerySet:
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(team__memberships__user=user)


class Deployment(models.Model):
    name = models.CharField(max_length=50, unique=True, validators=[name_validator])
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="deployments")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT,
                              related_name="deployments")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="+", help_text="Pinned version (or follow alias).")
    alias = models.CharField(max_length=50, blank=True,
                             help_text="Alias followed; resolved when a revision is made.")
    # The replica count that should run. With ``autoscaling`` set the scaler
    # (``deployments.autoscale``) moves it within its bounds, without a new revision; 0 when an
    # idle deployment was scaled to zero (the first request wakes it).
    replicas = models.PositiveIntegerField(default=1)
    autoscaling = models.JSONField(
        default=dict, blank=True,
        help_text="{} for a fixed count; else deployments.spec.Autoscaling.as_dict().")
    scale_state = models.JSONField(
        default=dict, blank=True,
        help_text='The scaler\'s memory: {"wanted": [[unix time, count], ...]} over the '
                  'scale-down window, "capped": why the last scale-up stopped short.')
    scaled_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the count last changed: the scaler, a wake, or a user.")
    cpu = models.DecimalField(max_digits=7, decimal_places=2, default=1)
    memory_mb = models.PositiveIntegerField(default=1024)
    gpus = models.PositiveIntegerField(default=0)
    strategy = models.JSONField(default=dict, blank=True)
    target = models.ForeignKey(
        "compute.ExecutionTarget", null=True, blank=True, on_delete=models.PROTECT,
        related_name="deployments",
        help_text="Where it runs; empty: the default target (MODELPORT_DEFAULT_TARGET or the "
                  "one flagged default).")
    # Fixed when the deployment is created ("auto" resolved then), used by every reconcile:
    # never moved to another runtime (compute/runtime_choice.py). Empty: made before runtimes
    # were fixed and never reconciled since; decided on its next reconcile, once.
    runtime = models.CharField(max_length=20, blank=True, choices=RuntimeKind.choices,
                               help_text="What runs its replicas, fixed when it was created.")
    stopped = models.BooleanField(default=False)
    # Outbound network access for the model's code, granted by a platform admin (audited,
    # ``services.set_egress``). Without it a replica has no network at all.
    egress = models.BooleanField(default=False)
    egress_reason = models.CharField(max_length=300, blank=True)
    # Written by the reconciler.
    revision = models.PositiveIntegerField(default=0, help_text="The revision that should run.")
    status = models.CharField(max_length=20, choices=DeploymentStatus.choices,
                              default=DeploymentStatus.PENDING, db_index=True)
    status_message = models.TextField(blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    traffic = models.JSONField(default=list, blank=True,
                               help_text='[{"revision": N, "percent": P}, ...]')
    shadow = models.JSONField(
        default=dict, blank=True,
        help_text='Mirroring now: {"revision": N, "percent": P, "tolerance": T} or {}.')
    routing_version = models.PositiveBigIntegerField(default=0)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def owner(self) -> str:
        """The quota reservation this deployment holds."""
        return f"deployment:{self.name}"

    @property
    def autoscaler(self) -> Autoscaling | None:
        """The typed autoscaling settings; None for a fixed replica count."""
        return Autoscaling.parse(self.autoscaling) if self.autoscaling else None

    @property
    def strategy_type(self) -> str:
        return (self.strategy or {}).get("type", "rolling")


class RevisionState(models.TextChoices):
    PENDING = "pending", "Pending"
    ROLLING_OUT = "rolling_out", "Rolling out"
    ACTIVE = "active", "Active"
    SHADOW = "shadow", "Shadowing"
    SUPERSEDED = "superseded", "Superseded"
    FAILED = "failed", "Failed"


class Revision(models.Model):
    """One immutable snapshot of a deployment's spec, with the model version it resolved to.
    What is filled in later is the reconciler's bookkeeping: ``state``, ``image``, ``healthy_at``,
    where a stepped rollout is (``deployments/reconcile/strategies/``) and its failures and retries
    (``deployments/retries.py``)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="revisions")
    number = models.PositiveIntegerField()
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    spec = models.JSONField(default=dict)
    reason = models.CharField(max_length=200, blank=True)
    image = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=20, choices=RevisionState.choices,
                             default=RevisionState.PENDING)
    healthy_at = models.DateTimeField(null=True, blank=True)
    # What its replicas demand in X-Modelport-Replica-Key (core/replica_keys.py); empty for
    # revisions made before replica keys existed (their replicas demand none).
    replica_key = models.CharField(max_length=64, blank=True, default=new_key, editable=False)
    # A stepped rollout (canary) in progress, persisted so that a reconcile pass does only what
    # is due and returns: beat or a countdown task brings the next pass.
    rollout_step = models.PositiveSmallIntegerField(
        null=True, blank=True,
        help_text="Index of the current step in the strategy's steps (equal to their number once "
                  "every step passed); empty before the rollout's first step.")
    step_started_at = models.DateTimeField(null=True, blank=True)
    next_step_at = models.DateTimeField(null=True, blank=True,
                                        help_text="When the current step is judged and the next "
                                                  "one starts.")
    # Failures and retries: a user's Retry (or Start) and the automatic retry of transient
    # failures re-run the revision.
    failure = models.TextField(blank=True, help_text="Why it failed last.")
    retry_attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Automatic retries since it was made or a user last retried it.")
    next_retry_at = models.DateTimeField(null=True, blank=True,
                                         help_text="When the next automatic retry runs.")
    retried_at = models.DateTimeField(null=True, blank=True,
                                      help_text="Last retry (crash loops are counted from here).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment", "-number"]
        constraints = [models.UniqueConstraint(fields=["deployment", "number"],
                                               name="unique_deployment_revision")]

    def __str__(self) -> str:
        return f"{self.deployment.name} r{self.number}"


class DeploymentEvent(models.Model):
    class Kind(models.TextChoices):
        INFO = "info", "Info"
        BUILD = "build", "Build"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"
        TRAFFIC = "traffic", "Traffic"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    revision = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.INFO)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment.name}: {self.message[:60]}"


class Replica(models.Model):
    """The reconciler's view of one container (a cache: the runtime is the truth)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="replica_set")
    runtime_id = models.CharField(max_length=200, unique=True)
    revision = models.PositiveIntegerField()
    index = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20)
    ready = models.BooleanField(default=False)
    url = models.CharField(max_length=300, blank=True)
    message = models.TextField(blank=True)
    restart_count = models.PositiveIntegerField(default=0)
    last_probe = models.DateTimeField(null=True, blank=True)
    # Placement on one of several plain Docker hosts (a docker target with "placement":
    # "hosts", see deployments/hosts_runtime.py). Empty on every other target: there the runtime
    # is the truth and this row only a cache.
    host = models.ForeignKey("compute.Host", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="replicas")
    cpu = models.DecimalField(max_digits=7, decimal_places=2, default=0,
                              help_text="What it reserves on its host.")
    memory_mb = models.PositiveIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)
    host_status = models.CharField(
        max_length=20, blank=True,
        help_text="What its host worker last reported: placing, running, starting, exited, "
                  "dead, missing, failed; lost when the host stopped answering.")
    exit_code = models.IntegerField(null=True, blank=True)
    host_logs = models.TextField(blank=True, help_text="The last log lines its host reported.")
    placed_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment", "revision", "index"]

    def __str__(self) -> str:
        return self.runtime_id



class ScaleSample(models.Model):
    """The replica count of an autoscaled deployment at one moment: written by the scaler when
    the count it wants or the count ready changes, and at least once a minute, so the monitoring
    page draws replicas over time as steps."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="scale_samples")
    at = models.DateTimeField()
    desired = models.PositiveIntegerField()
    ready = models.PositiveIntegerField()
    metric = models.FloatField(null=True, blank=True,
                               help_text="The load per replica the decision saw.")

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["deployment", "at"], name="dep_scale_dep_at")]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.desired}/{self.ready} @ {self.at:%H:%M:%S}"


class TrafficSample(models.Model):
    """What the gateway saw for one revision over about a second (written at most once a second
    per gateway process): the canary compares new and old revisions with these, and monitoring
    folds the ``gateway_*`` counts into its minute rollups (failures no replica ever saw)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="traffic_samples")
    revision = models.PositiveIntegerField()
    at = models.DateTimeField(db_index=True)
    requests = models.PositiveIntegerField(default=0, help_text="Attempts at a replica.")
    errors = models.PositiveIntegerField(default=0,
                                         help_text="Attempts answered 5xx, unreachable or "
                                                   "timed out.")
    p95_ms = models.FloatField(default=0)
    gateway_requests = models.PositiveIntegerField(
        default=0, help_text="Requests of admitted callers answered, whatever the outcome.")
    gateway_500 = models.PositiveIntegerField(default=0, help_text="Gateway bugs.")
    gateway_502 = models.PositiveIntegerField(default=0, help_text="Replicas did not answer.")
    gateway_503 = models.PositiveIntegerField(
        default=0, help_text="No ready replica (or the control plane not answering).")
    gateway_504 = models.PositiveIntegerField(default=0, help_text="A replica timed out.")
    busy_ms = models.FloatField(
        default=0, help_text="Sum of the attempts' durations: divided by the sample's span it "
                             "is the mean number of requests in flight (the scaler's load).")

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.deployment_id} r{self.revision} @ {self.at:%H:%M:%S}"


class ShadowSampleQuerySet(models.QuerySet):
    def summary(self, deployment_id: int, revision: int) -> dict:
        """Totals for one shadow revision: requests, errors, agreement (share of compared
        requests whose predictions agreed, None before any) and request-weighted p50/p95."""
        n = errors = compared = agreed = dropped = 0
        p50 = p95 = 0.0
        for row in self.filter(deployment_id=deployment_id, revision=revision).values_list(
                "requests", "errors", "compared", "agreed", "dropped", "p50_ms", "p95_ms"):
            n, errors, compared = n + row[0], errors + row[1], compared + row[2]
            agreed, dropped = agreed + row[3], dropped + row[4]
            p50, p95 = p50 + row[5] * row[0], p95 + row[6] * row[0]
        return {"revision": revision, "requests": n, "errors": errors, "compared": compared,
                "agreed": agreed, "dropped": dropped,
                "agreement": round(agreed / compared, 4) if compared else None,
                "p50_ms": round(p50 / n, 2) if n else None,
                "p95_ms": round(p95 / n, 2) if n else None}


class ShadowSample(models.Model):
    """What the gateway saw of the requests it mirrored to a shadow revision over about a
    second (one row per gateway process and second): the stable answer is what callers got, the
    shadow's answer is only compared with it."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="shadow_samples")
    revision = models.PositiveIntegerField(help_text="The shadow revision.")
    at = models.DateTimeField(db_index=True)
    requests = models.PositiveIntegerField(default=0, help_text="Requests mirrored.")
    errors = models.PositiveIntegerField(default=0,
                                         help_text="5xx, unreachable or timed out.")
    compared = models.PositiveIntegerField(
        default=0, help_text="Mirrored requests whose stable answer was a 200 to compare with.")
    agreed = models.PositiveIntegerField(
        default=0, help_text="Compared requests with equal predictions (numbers within the "
                             "strategy's tolerance).")
    dropped = models.PositiveIntegerField(
        default=0, help_text="Requests not mirrored because the shadow was too far behind.")
    p50_ms = models.FloatField(default=0)
    p95_ms = models.FloatField(default=0)

    objects = ShadowSampleQuerySet.as_manager()

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["deployment", "revision", "at"])]

    def __str__(self) -> str:
        return f"{self.deployment_id} shadow r{self.revision} @ {self.at:%H:%M:%S}"


class ConsumerKeyQuerySet(models.QuerySet):
    def visible_to(self, user) -> ConsumerKeyQuerySet:
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(team__memberships__user=user)


class ConsumerKey(models.Model):
    """A key for one calling application (named after it), good only for the listed deployments
    of its team at the gateway — never the API. Only the SHA-256 digest of the secret is stored;
    ``rate_per_s``/``burst`` (a token bucket at the edge) limit it when set."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="consumer_keys")
    name = models.CharField(max_length=100, validators=[name_validator],
                            help_text="The calling service, e.g. 'search-api'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    deployments = models.ManyToManyField(Deployment, related_name="consumer_keys")
    rate_per_s = models.FloatField(null=True, blank=True,
                                   help_text="Sustained requests per second; empty: no limit.")
    burst = models.PositiveIntegerField(null=True, blank=True,
                                        help_text="Requests allowed at once above the rate.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ConsumerKeyQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], condition=Q(revoked_at__isnull=True),
                                    name="unique_active_consumer_key_name"),
            models.CheckConstraint(condition=Q(rate_per_s__isnull=True) | Q(rate_per_s__gt=0),
                                   name="consumer_key_rate_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ConsumerTraffic(models.Model):
    """What the gateway saw of one consumer key on one deployment over about a second (written
    with ``TrafficSample``, at most once a second per gateway process): requests admitted and
    requests refused 429 by the key's rate limit. The deployment page sums these per key."""

    key = models.ForeignKey(ConsumerKey, on_delete=models.CASCADE, related_name="traffic")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="consumer_traffic")
    at = models.DateTimeField(db_index=True)
    requests = models.PositiveIntegerField(default=0)
    limited = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["deployment", "at"])]

    def __str__(self) -> str:
        return f"{self.key_id} on {self.deployment_id} @ {self.at:%H:%M:%S}"
