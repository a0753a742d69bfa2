from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.rest import CoresField, StrictTypes, identifier
from teams.models import slug_validator

from ..models import Reservation, ResourceRequest
from ..services import MAX_AMOUNT


def _cpu(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=12, decimal_places=3, coerce_to_string=False,
                                    **kwargs)


class QuotaResourcesSerializer(serializers.Serializer):
    cpu = _cpu(help_text="Cores; fractions allowed (0.5 = 500 millicores).")
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()
    deployments = serializers.IntegerField(required=False)


def _amount(name: str, **kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=int(MAX_AMOUNT[name]), **kwargs)


class QuotaUpdateSerializer(StrictTypes, serializers.Serializer):
    cpu = CoresField(max_value=MAX_AMOUNT["cpu"], help_text="Cores, in millicores (0.001).")
    memory_mb = _amount("memory_mb")
    gpus = _amount("gpus")
    deployments = _amount("deployments")


class QuotaReservationSerializer(serializers.ModelSerializer):
    cpu = _cpu()

    class Meta:
        model = Reservation
        fields = ["owner", "state", "cpu", "memory_mb", "gpus", "deployments",
                  "over_limit_since", "created_at"]
        read_only_fields = fields


class QuotaGrantSerializer(serializers.Serializer):
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    request = serializers.IntegerField(source="request_id", allow_null=True)


class PlatformAmountsSerializer(serializers.Serializer):
    cpu = _cpu()
    memory_mb = serializers.IntegerField()
    gpus = serializers.IntegerField()


class PlatformNumbersSerializer(serializers.Serializer):
    """``quotas.platform.PlatformNumbers``: the same numbers on the capacity page, each quota
    page, GET /capacity/ and GET /teams/{slug}/quota/."""

    total = PlatformAmountsSerializer(help_text="Schedulable CPU and memory of the active "
                                                "hosts and pools (overcommit applied), and "
                                                "their active GPU devices.")
    allocated = PlatformAmountsSerializer(help_text="Promised to teams: every quota plus "
                                                    "active temporary grants.")
    used = PlatformAmountsSerializer(help_text="Held by deployments (running or starting).")
    free = PlatformAmountsSerializer(help_text="total - used.")
    unallocated = PlatformAmountsSerializer(help_text="total - allocated; negative when "
                                                      "quotas overbook the platform.")


class QuotaSerializer(serializers.Serializer):
    team = serializers.CharField(source="team.slug")
    limits = QuotaResourcesSerializer(help_text="Base quota plus active temporary grants.")
    base = QuotaResourcesSerializer(help_text="The quota set by platform admins.")
    granted = QuotaResourcesSerializer(help_text="Active temporary grants, summed.")
    used = QuotaResourcesSerializer(help_text="reserved + pending: what admission counts.")
    reserved = QuotaResourcesSerializer(help_text="Held by running deployments.")
    pending = QuotaResourcesSerializer(help_text="Admitted deployments not running yet.")
    free = QuotaResourcesSerializer(help_text="limits - used; negative after a grant expired.")
    requested = QuotaResourcesSerializer(help_text="Asked for in pending resource requests.")
    grants = QuotaGrantSerializer(many=True)
    reservations = QuotaReservationSerializer(many=True)
    platform = PlatformNumbersSerializer(allow_null=True, help_text="The whole platform's "
                                         "capacity; null until a host or pool is registered.")


class ResourceRequestSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    cpu = _cpu()
    requested_by = serializers.CharField(source="requested_by.username", default=None,
                                         allow_null=True)
    decided_by = serializers.CharField(source="decided_by.username", default=None,
                                       allow_null=True)
    granted = serializers.SerializerMethodField()

    class Meta:
        model = ResourceRequest
        fields = ["id", "team", "status", "cpu", "memory_mb", "gpus", "gpu_model",
                  "justification", "expires_at", "granted", "requested_by", "decided_by",
                  "decided_at", "comment", "created_at"]
        read_only_fields = fields

    @extend_schema_field(QuotaResourcesSerializer)
    def get_granted(self, obj: ResourceRequest) -> dict:
        return QuotaResourcesSerializer({"cpu": obj.granted_cpu, "memory_mb": obj.granted_memory_mb,
                                    "gpus": obj.granted_gpus}).data


class ResourceRequestCreateSerializer(StrictTypes, serializers.Serializer):
    team = identifier(slug_validator, "team slug", max_length=50)
    cpu = CoresField(max_value=MAX_AMOUNT["cpu"], required=False, default=0)
    memory_mb = _amount("memory_mb", required=False, default=0)
    gpus = _amount("gpus", required=False, default=0)
    gpu_model = serializers.CharField(required=False, allow_blank=True, default="",
                                      max_length=100)
    justification = serializers.CharField()
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                           help_text="End of a temporary grant; omit for "
                                                     "a permanent raise.")


class ResourceRequestCreatedSerializer(ResourceRequestSerializer):
    capacity_warnings = serializers.ListField(
        child=serializers.CharField(), read_only=True,
        help_text="Where granting the request in full would take the team beyond what the "
                  "whole platform has; the request is filed anyway and the approver sees the "
                  "same flag.")

    class Meta(ResourceRequestSerializer.Meta):
        fields = [*ResourceRequestSerializer.Meta.fields, "capacity_warnings"]
        read_only_fields = fields


class ResourceRequestApproveSerializer(StrictTypes, serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    cpu = CoresField(max_value=MAX_AMOUNT["cpu"], required=False, allow_null=True, default=None,
                     help_text="Grant less than asked; omit to grant what was asked.")
    memory_mb = _amount("memory_mb", required=False, allow_null=True, default=None)
    gpus = _amount("gpus", required=False, allow_null=True, default=None)


class ResourceRequestDenySerializer(StrictTypes, serializers.Serializer):
    comment = serializers.CharField(help_text="Why; the requester reads it.")
