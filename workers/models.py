from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """Last time a Celery worker ran the beat-scheduled heartbeat: proves worker *and* beat run."""

    hostname = models.CharField(max_length=200, unique=True)
    last_seen = models.DateTimeField()
    beat_sent_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.hostname

    @property
    def is_alive(self) -> bool:
        stale = timedelta(seconds=settings.MODELPORT_HEARTBEAT_STALE_SECONDS)
        return timezone.now() - self.last_seen < stale


class TargetKind(models.TextChoices):
    DOCKER = "docker", "Docker (one host)"
    SWARM = "swarm", "Docker Swarm"
    KUBERNETES = "kubernetes", "Kubernetes"


class RuntimeKind(models.TextChoices):
    """What carries out a deployment, fixed when it is created (``workers.runtime_choice``)."""

    DOCKER = "docker", "Docker"
    LOCAL = "local", "Local processes (unsandboxed)"
    DOCKER_HOSTS = "docker-hosts", "Docker (several hosts)"
    SWARM = "swarm", "Docker Swarm"
    KUBERNETES = "kubernetes", "Kubernetes"


class ExecutionTargetQuerySet(models.QuerySet):
    def enabled(self) -> ExecutionTargetQuerySet:
        return self.filter(enabled=True)


class ExecutionTarget(models.Model):
    """Where deployments run: one Docker host, a Swarm manager, or a Kubernetes namespace.
    Registered by platform admins; a deployment names one (default: ``default_target()``).

    ``settings`` holds what only some kinds use: ``network`` (docker/swarm: "host" or, for
    docker, a bridge network name; swarm: "overlay"), ``overlay_network`` and
    ``egress_network`` (swarm), ``port_range`` ([first, last], host networking),
    ``gpu_resource`` (swarm generic resource), ``network_policy`` (kubernetes: who the platform
    is, for the model pods' NetworkPolicies); the rest of the kubernetes runtime's arguments.
    Capacity 0 means "not limited here" (the capacity registry and team quotas still apply).
    """

    Kind = TargetKind

    name = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=20, choices=TargetKind.choices, default=TargetKind.DOCKER)
    endpoint = models.CharField(
        max_length=300, blank=True,
        help_text="Docker endpoint, e.g. unix:///var/run/docker.sock or tcp://host:2376. "
                  "Empty: this machine's Docker from the environment (DOCKER_HOST or the "
                  "default socket).")
    kube_context = models.CharField(max_length=200, blank=True,
                                    help_text="Kubernetes: kubeconfig context (empty: current).")
    in_cluster = models.BooleanField(default=False,
                                     help_text="Kubernetes: use the pod's service account.")
    namespace = models.CharField(max_length=63, blank=True, help_text="Kubernetes namespace.")
    settings = models.JSONField(default=dict, blank=True)
    cpu = models.DecimalField(max_digits=9, decimal_places=3, default=0,
                              help_text="CPUs deployments may reserve here (0: no limit).")
    memory_mb = models.PositiveBigIntegerField(default=0, help_text="0: no limit.")
    gpus = models.PositiveIntegerField(default=0, help_text="0: no GPUs limit.")
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ExecutionTargetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True),
                                    name="one_default_execution_target"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_capacity_limit(self) -> bool:
        return bool(self.cpu or self.memory_mb or self.gpus)
