"""A run of demo traffic: who started it, how far it got (shown on the deployment page)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from deployments.models import Deployment


class TrafficStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class TrafficRun(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE,
                                   related_name="demo_traffic_runs")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    duration_s = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=TrafficStatus.choices,
                              default=TrafficStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    drifted = models.PositiveIntegerField(default=0)
    labelled = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"demo traffic #{self.pk} → {self.deployment.name} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in (TrafficStatus.QUEUED, TrafficStatus.RUNNING)
