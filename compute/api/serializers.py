from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.rest import CoresField, StrictTypes, identifier
from quotas.api.serializers import PlatformNumbersSerializer
from teams.models import slug_validator

from ..models import ExecutionTarget, TargetKind
from ..targets import ENDPOINT_SCHEMES, MAX_CPU


def _cpu(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=12, decimal_places=3, coerce_to_string=False,
                                    **kwargs)


class TargetSerializer(serializers.ModelSerializer):
    capacity = serializers.SerializerMethodField(
        help_text="What deployments may reserve here; 0 = not limited here.")

    class Meta:
        model = ExecutionTarget
        fields = ["name", "kind", "endpoint", "kube_context", "in_cluster", "namespace",
                  "settings", "capacity", "enabled", "is_default", "created_at", "updated_at"]

    def get_capacity(self, obj: ExecutionTarget) -> dict:
        return {"cpu": float(obj.cpu), "memory_mb": obj.memory_mb, "gpus": obj.gpus}


class TargetCapacitySerializer(StrictTypes, serializers.Serializer):
    cpu = CoresField(required=False, max_value=MAX_CPU)
    memory_mb = serializers.IntegerField(required=False, min_value=0, max_value=1024 ** 3)
    gpus = serializers.IntegerField(required=False, min_value=0, max_value=10000)


_ENDPOINT = "^(?:(?:" + "|".join(s.removesuffix("://") for s in ENDPOINT_SCHEMES) + r")://.*)?\Z"


class TargetWriteSerializer(StrictTypes, serializers.Serializer):
    """Fields are checked together by ``compute.targets`` (the kind decides what applies)."""

    name = identifier(slug_validator, "target name", max_length=50)
    kind = serializers.ChoiceField(choices=TargetKind.choices, default=TargetKind.DOCKER)
    endpoint = serializers.RegexField(
        _ENDPOINT, required=False, allow_blank=True, max_length=300, trim_whitespace=False,
        help_text="unix:///var/run/docker.sock, tcp://host:2376…",
        error_messages={"invalid": "endpoint must start with one of "
                                   f"{', '.join(ENDPOINT_SCHEMES)}."})
    kube_context = serializers.CharField(required=False, allow_blank=True, max_length=200)
    in_cluster = serializers.BooleanField(required=False)
    namespace = serializers.CharField(required=False, allow_blank=True, max_length=63)
    settings = serializers.JSONField(
        required=False, allow_null=True,
        help_text='e.g. {"network": "overlay", "overlay_network": "models", '
                  '"port_range": [20000, 20999]}; null: none.')
    capacity = TargetCapacitySerializer(required=False)
    enabled = serializers.BooleanField(required=False)
    is_default = serializers.BooleanField(required=False)


class TargetUpdateSerializer(TargetWriteSerializer):
    name = identifier(slug_validator, "target name", max_length=50, required=False,
                      help_text="Cannot change; accepted when it is the target's own.")
    kind = serializers.ChoiceField(choices=TargetKind.choices, required=False)


class NodeSerializer(serializers.Serializer):
    name = serializers.CharField()
    role = serializers.CharField()
    state = serializers.CharField()
    available = serializers.BooleanField()
    cpu = serializers.FloatField()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField(allow_null=True)


class AllocatableSerializer(serializers.Serializer):
    cpu = serializers.FloatField()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField(allow_null=True, help_text="null: not reported.")


class ReservedSerializer(serializers.Serializer):
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()


class TargetHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    reachable = serializers.BooleanField()
    message = serializers.CharField(allow_blank=True)
    version = serializers.CharField(allow_blank=True)
    nodes = NodeSerializer(many=True)
    allocatable = AllocatableSerializer()
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="What operators should know about the isolation replicas get on this target "
                  "(e.g. replicas share the node's network; the overlay network is not "
                  "internal; no default-deny NetworkPolicy).")
    reserved = ReservedSerializer()
    capacity = TargetCapacitySerializer()
    checked_at = serializers.DateTimeField()


# --- The capacity inventory (GET /capacity/) ---------------------------------------------------
class CapacityGpuHolderSerializer(serializers.Serializer):
    team = serializers.CharField()
    owner = serializers.CharField()
    since = serializers.DateTimeField()


class CapacityGpuDeviceSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    model = serializers.CharField()
    active = serializers.BooleanField()
    allocated_to = CapacityGpuHolderSerializer(allow_null=True)


class CapacityFreeSerializer(serializers.Serializer):
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()


class CapacityDockerHostSerializer(serializers.Serializer):
    """A Docker host with a host worker (several plain Docker hosts)."""

    state = serializers.ChoiceField(choices=["alive", "silent", "lost"],
                                    help_text="silent: no heartbeat lately, not lost yet.")
    queue = serializers.CharField()
    address = serializers.CharField()
    target = serializers.CharField()
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    lost_at = serializers.DateTimeField(allow_null=True)
    docker_version = serializers.CharField()
    replicas = serializers.IntegerField(help_text="Replicas placed on it.")
    free = CapacityFreeSerializer(help_text="Schedulable minus what placed replicas reserve.")


class CapacityHostSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    active = serializers.BooleanField()
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    cpu_overcommit = serializers.DecimalField(max_digits=5, decimal_places=2,
                                              coerce_to_string=False)
    memory_overcommit = serializers.DecimalField(max_digits=5, decimal_places=2,
                                                 coerce_to_string=False)
    schedulable_cpu = _cpu()
    schedulable_memory_mb = serializers.IntegerField()
    gpus_allocated = serializers.IntegerField()
    gpus = CapacityGpuDeviceSerializer(many=True)
    docker = CapacityDockerHostSerializer(
        allow_null=True, help_text="Set for hosts a host worker registered; null for capacity "
                                   "registered by hand.")


class CapacityTotalsSerializer(serializers.Serializer):
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    schedulable_cpu = _cpu()
    schedulable_memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()


class CapacityAllocatedSerializer(serializers.Serializer):
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()
    gpu_devices = serializers.IntegerField(required=False)


class CapacityGpuModelSerializer(serializers.Serializer):
    model = serializers.CharField()
    total = serializers.IntegerField()
    allocated = serializers.IntegerField()
    free = serializers.IntegerField()


class CapacitySerializer(serializers.Serializer):
    hosts = CapacityHostSerializer(many=True)
    totals = CapacityTotalsSerializer()
    allocated = CapacityAllocatedSerializer(help_text="Sum of every team's reservations "
                                                      "(platform.used).")
    committed = CapacityAllocatedSerializer(help_text="Sum of every team's quota and active "
                                                      "grants (platform.allocated).")
    gpu_models = CapacityGpuModelSerializer(many=True)
    platform = PlatformNumbersSerializer(
        allow_null=True, help_text="Total, allocated to quotas, used by deployments and free: "
                                   "the numbers GET /teams/{slug}/quota/ shows as well; null "
                                   "until a host or pool is registered.")
