from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from teams.models import Team
from teams.roles import is_platform_admin

name_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$",
    "Use 1-100 lowercase letters, digits, '.', '_' and '-', starting and ending with a letter "
    "or digit.",
)
alias_validator = RegexValidator(
    r"^[a-z][a-z0-9_-]{0,49}$",
    "Aliases are 1-50 lowercase letters, digits, '_' and '-', starting with a letter.",
)


# Large JSON columns that list pages never show: ``defer`` them when versions are joined in
# (``.defer(*version_detail_fields("version__"))``); a page of 100 rows otherwise decodes
# ~3,000 JSON documents it throws away.
VERSION_DETAIL_FIELDS = ("signature", "input_example", "requirements", "params", "metrics",
                         "lineage", "reference_stats", "validation")


_Page = TypeVar("_Page", bound=Iterable["RegisteredModel"])


def version_detail_fields(prefix: str = "") -> list[str]:
    return [prefix + name for name in VERSION_DETAIL_FIELDS]


def attach_version_summary(page: _Page) -> _Page:
    """Set ``latest_version`` and ``version_count`` on a page of models with one grouped query.

    Done after pagination on purpose: as annotations, PostgreSQL would compute them for every
    row an OFFSET skips too (page 100 of 10,000 models: 5,000 rows' worth)."""
    ids = [model.pk for model in page]
    stats = {row["model_id"]: row for row in ModelVersion.objects.filter(model_id__in=ids)
             .order_by().values("model_id")
             .annotate(latest=models.Max("version"), n=models.Count("pk"))}
    for model in page:
        row = stats.get(model.pk)
        model.latest_version = row["latest"] if row else None
        model.version_count = row["n"] if row else 0
    return page


class RegisteredModelQuerySet(models.QuerySet):
    def visible_to(self, user) -> RegisteredModelQuerySet:
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(team__memberships__user=user)


class RegisteredModel(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="models")
    description = models.TextField(blank=True)
    card = models.TextField(blank=True, help_text="Model card, in Markdown.")
    tags = models.JSONField(default=list, blank=True)
    search_text = models.TextField(blank=True, editable=False,
                                   help_text="Lower-case name and description, for ?search=.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RegisteredModelQuerySet.as_manager()

    # Not columns: set per page by ``attach_version_summary``.
    latest_version: int | None
    version_count: int

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.search_text = self.compute_search_text(self.name, self.description)
        super().save(*args, **kwargs)

    @staticmethod
    def compute_search_text(name: str, description: str) -> str:
        return f"{name}\n{description}".lower()


class VersionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    VALIDATING = "validating", "Validating"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ReferenceStatus(models.TextChoices):
    """The drift baseline's state: uploaded reference data (or the input example) is profiled
    by a worker (``registry.services.compute_reference``)."""

    NONE = "none", "None"
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ModelVersion(models.Model):
    """One immutable version. Only the validation task moves ``status`` (pending → ready/failed)
    and fills in what validation learns; nothing else changes after creation."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=VersionStatus.choices,
                              default=VersionStatus.PENDING, db_index=True)
    status_message = models.TextField(blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    source_format = models.CharField(max_length=20)  # mlflow | sklearn | runs | models
    source = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    flavor = models.CharField(max_length=60, blank=True)
    signature = models.JSONField(null=True, blank=True)
    input_example = models.JSONField(null=True, blank=True)
    requirements = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True)
    reference_stats = models.JSONField(null=True, blank=True)
    reference_status = models.CharField(max_length=10, choices=ReferenceStatus.choices,
                                        default=ReferenceStatus.NONE)
    reference_message = models.TextField(blank=True)
    reference_file = models.CharField(max_length=500, blank=True,
                                      help_text="Uploaded reference data waiting for the "
                                                "profiling task.")
    validation = models.JSONField(default=dict, blank=True)
    sandboxed = models.BooleanField(null=True)
    artifact_name = models.CharField(max_length=200, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    artifact_size = models.BigIntegerField(null=True, blank=True)
    # The serving image validation ran in (the one its replicas run): built or reused, and how
    # long that took and how big it is. Null: validated without Docker, or before issue 19.
    image_tag = models.CharField(max_length=200, blank=True)
    image_reused = models.BooleanField(null=True, blank=True)
    image_build_seconds = models.FloatField(null=True, blank=True)
    image_size = models.BigIntegerField(null=True, blank=True)
    staging_dir = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    validated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="unique_model_version"),
            models.CheckConstraint(condition=Q(version__gte=1), name="version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    @property
    def is_ready(self) -> bool:
        return self.status == VersionStatus.READY

    @property
    def reference_state(self) -> str:
        """pending, ready, failed or none: versions profiled before the state was kept (and
        imports, whose example the validation profiles) are ready when they have statistics."""
        if self.reference_status != ReferenceStatus.NONE:
            return self.reference_status
        return ReferenceStatus.READY if self.reference_stats else ReferenceStatus.NONE


class VersionEvent(models.Model):
    """What validating a version did, as it happened: steps (with the percent reached), batches
    of log lines (pip fetching wheels, the docker build, the sandbox's output) and the outcome.
    The portal, ``GET …/versions/{n}/events/?since=`` and the CLI's ``--watch`` follow these.
    Bounded per version: its last ``MODELPORT_VERSION_LOG_LINES`` log lines are kept
    (``registry.progress``)."""

    class Kind(models.TextChoices):
        STEP = "step", "Step"
        LOG = "log", "Log lines"
        INFO = "info", "Info"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LOG)
    progress = models.PositiveSmallIntegerField(null=True, blank=True,
                                                help_text="Steps: the percent reached.")
    message = models.TextField(help_text="Log events: their lines, one per line.")
    lines = models.PositiveIntegerField(default=0, help_text="Log lines in the message.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["version", "id"], name="registry_vevent_version_id")]

    def __str__(self) -> str:
        return f"{self.version_id} {self.kind}: {self.message[:60]}"


class ModelAlias(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=50, validators=[alias_validator])
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="unique_alias")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class TransitionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class AliasTransitionRequest(models.Model):
    """An engineer's request to move a protected alias; a maintainer approves or rejects it."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE,
                              related_name="transition_requests")
    alias = models.CharField(max_length=50)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=20, choices=TransitionStatus.choices,
                              default=TransitionStatus.PENDING, db_index=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                     on_delete=models.SET_NULL, related_name="+")
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias} → v{self.version.version} ({self.status})"


class MlflowObjectKind(models.TextChoices):
    EXPERIMENT = "experiment", "Experiment"
    RUN = "run", "Run"
    LOGGED_MODEL = "logged_model", "Logged model"
    REGISTERED_MODEL = "registered_model", "Registered model"


class MlflowObject(models.Model):
    """Who created an MLflow experiment, run, logged model or registered model through the
    platform's MLflow route. Only that user (and platform admins) may change it afterwards: a
    run's or logged model's artifacts are what imports and synced versions read, so another
    team must not be able to overwrite them."""

    kind = models.CharField(max_length=20, choices=MlflowObjectKind.choices)
    key = models.CharField(max_length=256)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key"],
                                               name="unique_mlflow_object")]

    def __str__(self) -> str:
        return f"MLflow {self.kind} {self.key}"


class MlflowVersionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IMPORTED = "imported", "Imported"
    REFUSED = "refused", "Refused"


class MlflowVersion(models.Model):
    """A version in MLflow's model registry and who created it (through the platform's route,
    which read the number from MLflow's answer). The sync imports it for that user only, and
    only where they may register; otherwise ``reason`` says why, recorded once."""

    name = models.CharField(max_length=256)
    version = models.PositiveIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=20, choices=MlflowVersionStatus.choices,
                              default=MlflowVersionStatus.PENDING)
    reason = models.TextField(blank=True)
    imported = models.ForeignKey(ModelVersion, null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"],
                                               name="unique_mlflow_version")]

    def __str__(self) -> str:
        return f"MLflow {self.name} v{self.version}"


class MlflowTag(models.Model):
    """A key/value tag MLflow clients set on a registered model (``version`` empty) or on one
    of its versions, through Modelport's answer to MLflow's Model Registry API. Modelport's own
    ``RegisteredModel.tags`` are labels (a list of words): MLflow's tags are kept apart."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE,
                              related_name="mlflow_tags")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="mlflow_tags")
    key = models.CharField(max_length=250)
    value = models.TextField(blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["model", "key"], condition=Q(version__isnull=True),
                                    name="unique_mlflow_model_tag"),
            models.UniqueConstraint(fields=["version", "key"],
                                    condition=Q(version__isnull=False),
                                    name="unique_mlflow_version_tag"),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.value[:40]}"
