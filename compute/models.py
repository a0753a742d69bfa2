"""The platform's capacity inventory, owned here alone: execution targets (where deployments
run), hosts and pools with their GPU devices, and which replica holds which device.

The tables keep their names from before this app existed (``workers_executiontarget``,
``quotas_host``, ``quotas_gpudevice``, ``quotas_gpuallocation``): the models moved, the data did
not (``compute/migrations/0001_initial.py``).
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from quotas.models import CPU_FIELD
from teams.models import Team


class TargetKind(models.TextChoices):
    DOCKER = "docker", "Docker (one host)"
    SWARM = "swarm", "Docker Swarm"
    KUBERNETES = "kubernetes", "Kubernetes"


class RuntimeKind(models.TextChoices):
    """What carries out a deployment, fixed when it is created (``compute.runtime_choice``)."""

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
    is, for the model pods' NetworkPolicies), ``registry`` (several Docker hosts, swarm,
    kubernetes: where serving images are pushed for the engines to pull); the rest of the
    kubernetes runtime's arguments.
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
        db_table = "workers_executiontarget"
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


class Host(models.Model):
    """A machine or a pool of machines that deployments run on."""

    class Kind(models.TextChoices):
        HOST = "host", "Host"
        POOL = "pool", "Pool"

    class State(models.TextChoices):
        ALIVE = "alive", "Alive"
        LOST = "lost", "Lost (no heartbeat)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.HOST)
    cpu = models.DecimalField(**CPU_FIELD)
    memory_mb = models.PositiveBigIntegerField(default=0)
    cpu_overcommit = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("1"))
    memory_overcommit = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("1"))
    active = models.BooleanField(default=True)
    # A Docker host running a host worker (``MODELPORT_HOST_NAME``) registers and refreshes
    # itself with these; hosts registered by hand (capacity only) leave them empty.
    queue = models.CharField(
        max_length=120, blank=True,
        help_text="Celery queue its host worker consumes (host.<name>); empty: capacity only, "
                  "no replicas are placed here.")
    target = models.ForeignKey(
        "ExecutionTarget", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="hosts",
        help_text="The multi-host docker target whose replicas may be placed here.")
    address = models.CharField(max_length=200, blank=True,
                               help_text="Where its replicas answer (the host worker's "
                                         "MODELPORT_HOST_ADDRESS).")
    docker_version = models.CharField(max_length=40, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ALIVE)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    lost_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "quotas_host"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(cpu_overcommit__gte=1, memory_overcommit__gte=1),
                                   name="host_overcommit_at_least_one"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_docker_host(self) -> bool:
        """Registered by a host worker: replicas can be placed here."""
        return bool(self.queue)


class GpuDevice(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="gpus")
    device_id = models.CharField(max_length=100,
                                 help_text="As Docker's device_requests expect: index or UUID.")
    model = models.CharField(max_length=100, db_index=True)
    active = models.BooleanField(default=True)

    class Meta:
        db_table = "quotas_gpudevice"
        ordering = ["host__name", "device_id"]
        constraints = [
            models.UniqueConstraint(fields=["host", "device_id"], name="unique_gpu_per_host"),
        ]

    def __str__(self) -> str:
        return f"{self.host.name}/{self.device_id} ({self.model})"


class GpuAllocationQuerySet(models.QuerySet):
    def active(self) -> GpuAllocationQuerySet:
        return self.filter(released_at__isnull=True)


class GpuAllocation(models.Model):
    """One GPU device handed to one replica; a device has at most one active allocation."""

    device = models.ForeignKey(GpuDevice, on_delete=models.PROTECT, related_name="allocations")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="gpu_allocations")
    owner = models.CharField(max_length=200, db_index=True,
                             help_text="The replica, e.g. 'deployment:fraud-v2/r0'.")
    allocated_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)

    objects = GpuAllocationQuerySet.as_manager()

    class Meta:
        db_table = "quotas_gpuallocation"
        ordering = ["-allocated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["device"], condition=Q(released_at__isnull=True),
                                    name="one_active_allocation_per_gpu"),
        ]

    def __str__(self) -> str:
        return f"{self.device} → {self.owner}"
