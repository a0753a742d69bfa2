"""Team quotas, the allocation ledger (reservations), temporary grants and resource requests.
The platform's capacity (hosts/pools, their GPU devices and allocations) is ``compute``'s.

Usage is never counted from what happens to run: it is the sum of ``Reservation`` rows, one per
owner (e.g. ``deployment:fraud-v2``), written by ``quotas.services.admit`` — so every number on a
gauge can be explained by listing reservations.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypedDict

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from teams.models import Team
from teams.roles import is_platform_admin


class _DecimalFieldOptions(TypedDict):
    """The keyword arguments every CPU column shares (typed so ``DecimalField(**...)`` checks)."""

    max_digits: int
    decimal_places: int
    default: Decimal


CPU_FIELD: _DecimalFieldOptions = {"max_digits": 9, "decimal_places": 3, "default": Decimal("0")}
RESOURCES = ("cpu", "memory_mb", "gpus")


class TeamQuota(models.Model):
    """A team's base limits. Effective limits add the team's active temporary grants."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="quota")
    cpu = models.DecimalField(**CPU_FIELD)
    memory_mb = models.PositiveBigIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)
    deployments = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team__slug"]

    def __str__(self) -> str:
        return f"quota of {self.team}"


class ReservationQuerySet(models.QuerySet):
    def visible_to(self, user) -> ReservationQuerySet:
        return self.filter(team__in=Team.objects.visible_to(user))


class Reservation(models.Model):
    """Resources admitted for one owner (a deployment): replicas x per-replica resources."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending (admitted, not running yet)"
        RUNNING = "running", "Running"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="reservations")
    owner = models.CharField(max_length=200, unique=True,
                             help_text="Who holds it, e.g. 'deployment:fraud-v2'.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    cpu = models.DecimalField(**CPU_FIELD)
    memory_mb = models.PositiveBigIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)
    deployments = models.PositiveIntegerField(default=0)
    over_limit_since = models.DateTimeField(
        null=True, blank=True,
        help_text="Set when a shrinking quota left this reservation over the limit (flagged, "
                  "not stopped).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReservationQuerySet.as_manager()

    class Meta:
        ordering = ["team__slug", "owner"]

    def __str__(self) -> str:
        return self.owner


class QuotaGrantQuerySet(models.QuerySet):
    def active(self, at=None) -> QuotaGrantQuerySet:
        return self.filter(expired_at__isnull=True, expires_at__gt=at or timezone.now())

    def due(self, at=None) -> QuotaGrantQuerySet:
        return self.filter(expired_at__isnull=True, expires_at__lte=at or timezone.now())


class QuotaGrant(models.Model):
    """A temporary raise of a team's limits, taken back by ``expire_grants`` at ``expires_at``."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quota_grants")
    request = models.OneToOneField("ResourceRequest", null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="grant")
    cpu = models.DecimalField(**CPU_FIELD)
    memory_mb = models.PositiveBigIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = QuotaGrantQuerySet.as_manager()

    class Meta:
        ordering = ["expires_at"]

    def __str__(self) -> str:
        return f"grant to {self.team} until {self.expires_at:%Y-%m-%d %H:%M}"


class ResourceRequestQuerySet(models.QuerySet):
    def visible_to(self, user) -> ResourceRequestQuerySet:
        if is_platform_admin(user):
            return self
        return self.filter(team__in=Team.objects.visible_to(user))


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    PARTIALLY_APPROVED = "partially_approved", "Partially approved"
    DENIED = "denied", "Denied"
    EXPIRED = "expired", "Expired"


class ResourceRequest(models.Model):
    Status = RequestStatus

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="resource_requests")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                     on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    cpu = models.DecimalField(**CPU_FIELD)
    memory_mb = models.PositiveBigIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)
    gpu_model = models.CharField(max_length=100, blank=True)
    justification = models.TextField()
    expires_at = models.DateTimeField(null=True, blank=True,
                                      help_text="Temporary grant until then; empty = permanent.")
    granted_cpu = models.DecimalField(**CPU_FIELD)
    granted_memory_mb = models.PositiveBigIntegerField(default=0)
    granted_gpus = models.PositiveIntegerField(default=0)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ResourceRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RequestStatus.values),
                                   name="resource_request_status_valid"),
        ]

    def __str__(self) -> str:
        return f"request #{self.pk} by {self.team}"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def is_temporary(self) -> bool:
        return self.expires_at is not None
