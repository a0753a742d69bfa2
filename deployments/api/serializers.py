from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from compute.targets import deployment_target
from core.rest import CoresField, StrictTypes, identifier
from registry.models import alias_validator
from registry.models import name_validator as model_name_validator
from teams.models import Team, slug_validator

from .. import retries, services, spec
from ..models import STRATEGIES, Deployment, DeploymentEvent, Revision, name_validator
from ..reconcile import strategies
from .autoscaling import AutoscalingField, AutoscalingSerializer


class DeploymentResourcesSerializer(StrictTypes, serializers.Serializer):
    cpu = CoresField(decimal_places=2, min_value=Decimal("0.01"), max_value=spec.MAX_CPU,
                     required=False, help_text="Cores per replica, e.g. 0.5 (rounded up to "
                                               "0.01); default 1.")
    memory_mb = serializers.IntegerField(required=False, min_value=64,
                                         max_value=spec.MAX_MEMORY_MB,
                                         help_text="Memory per replica (MB); default 1024.")
    gpus = serializers.IntegerField(required=False, min_value=0, max_value=spec.MAX_GPUS,
                                    help_text="GPUs per replica; default 0.")


class DeploymentStrategySerializer(StrictTypes, serializers.Serializer):
    type = serializers.ChoiceField(choices=STRATEGIES, required=False, default="rolling")
    steps = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=100),
                                  required=False, min_length=1,
                                  help_text="Canary: increasing traffic percentages, ending at "
                                            "100 (default [10, 50, 100]).")
    interval_s = serializers.FloatField(required=False, min_value=0, max_value=86400,
                                        help_text="Canary and linear: seconds between "
                                                  "steps (default 60).")
    step_percent = serializers.IntegerField(
        required=False, min_value=1, max_value=99,
        help_text="Linear: the share of traffic each step adds (default 25: 25, 50, 75 %, "
                  "then 100).")
    percent = serializers.IntegerField(
        required=False, min_value=1, max_value=100,
        help_text="Shadow: share of requests (1-100 %, default 100) mirrored to the new "
                  "revision while the old one answers.")
    tolerance = serializers.FloatField(
        required=False, min_value=0, max_value=1e6,
        help_text="Shadow: numeric predictions this close (absolute or relative, default "
                  "1e-6) count as agreeing.")


def _replicas(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=settings.MODELPORT_MAX_REPLICAS,
                                    **kwargs)


class DeploymentCreateSerializer(StrictTypes, serializers.Serializer):
    """Give ``version`` or ``alias``, not both."""

    name = identifier(name_validator, "deployment name", max_length=50)
    team = identifier(slug_validator, "team slug", max_length=50,
                      help_text="Slug of the owning team.")
    model = identifier(model_name_validator, "model name", max_length=100,
                       help_text="Registered model name.")
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                       help_text="Model version to pin (or give alias).")
    alias = identifier(alias_validator, "alias", required=False, allow_blank=True,
                       allow_null=True, max_length=50,
                       help_text="Alias to follow, e.g. production.")
    replicas = _replicas(required=False, default=1,
                         help_text="Replica count; with autoscaling, the count it starts with "
                                   "(held within min_replicas and max_replicas).")
    resources = DeploymentResourcesSerializer(required=False)
    strategy = DeploymentStrategySerializer(required=False)
    autoscaling = AutoscalingField(
        help_text="Let the platform move the replica count (null or absent: a fixed count).")
    target = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=50,
        help_text="Execution target name (GET /api/v1/targets/); default: the default target.")


class DeploymentUpdateSerializer(StrictTypes, serializers.Serializer):
    """Give ``version`` or ``alias`` to change what runs, not both."""

    version = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    alias = identifier(alias_validator, "alias", required=False, allow_blank=True,
                       allow_null=True, max_length=50)
    replicas = _replicas(required=False,
                         help_text="A new fixed count (a new revision); with autoscaling on, "
                                   "the count now, held within the bounds (no new revision).")
    resources = DeploymentResourcesSerializer(required=False)
    strategy = DeploymentStrategySerializer(required=False)
    autoscaling = AutoscalingField(
        help_text="Change the bounds or target, or turn autoscaling on; null turns it off (the "
                  "count stays, at least 1). Never a new revision.")


class RollbackSerializer(StrictTypes, serializers.Serializer):
    revision = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                        help_text="Default: the previous healthy revision.")


class EgressSerializer(StrictTypes, serializers.Serializer):
    allowed = serializers.BooleanField(
        help_text="true: the model's code may open outbound connections; false: no network.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                   help_text="Why the model needs the network (required to "
                                             "grant; kept in the audit log).")


class PromoteSerializer(StrictTypes, serializers.Serializer):
    strategy = DeploymentStrategySerializer(
        required=False, help_text="How the shadow's version rolls out (default rolling).")


class ShadowSerializer(serializers.Serializer):
    revision = serializers.IntegerField(help_text="The shadow revision.")
    percent = serializers.IntegerField(help_text="Share of requests mirrored to it.")
    requests = serializers.IntegerField(help_text="Requests mirrored so far.")
    # A declared field: the serializer's metaclass takes it out of the class, so the errors
    # property stays; the stubs see a clash.
    errors = serializers.IntegerField(  # type: ignore[assignment]
        help_text="5xx, unreachable or timed out.")
    dropped = serializers.IntegerField(help_text="Not mirrored: the shadow was too far behind.")
    compared = serializers.IntegerField(help_text="Mirrored requests the stable revision "
                                                  "answered with 200.")
    agreed = serializers.IntegerField(help_text="Compared requests with equal predictions.")
    agreement = serializers.FloatField(allow_null=True, help_text="agreed / compared.")
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)


class ReplicaSerializer(serializers.Serializer):
    id = serializers.CharField(source="runtime_id")
    revision = serializers.IntegerField()
    index = serializers.IntegerField()
    status = serializers.CharField()
    ready = serializers.BooleanField()
    url = serializers.CharField(
        help_text="Where the platform reaches it (http+unix://… for a replica without a "
                  "network); only the platform can: call the deployment's endpoint.")
    message = serializers.CharField()
    restart_count = serializers.IntegerField()
    last_probe = serializers.DateTimeField(allow_null=True)
    host = serializers.SerializerMethodField(
        help_text="The Docker host it is placed on (a multi-host docker target), else empty.")

    def get_host(self, obj) -> str:
        return obj.host.name if obj.host_id else ""


class RolloutSerializer(serializers.Serializer):
    strategy = serializers.CharField(help_text="The stepped strategy (canary or linear).")
    step = serializers.IntegerField(help_text="The step running now, from 1.")
    steps = serializers.IntegerField(help_text="How many steps before traffic switches to 100%.")
    percent = serializers.IntegerField(help_text="The new revision's share of traffic now.")
    step_started_at = serializers.DateTimeField()
    next_step_at = serializers.DateTimeField(
        allow_null=True, help_text="When this step is judged and the next one starts.")


class RetrySerializer(serializers.Serializer):
    failed = serializers.BooleanField(
        help_text="The current revision failed (false: an automatic retry of it runs now).")
    reason = serializers.CharField(help_text="Why it failed last.")
    attempt = serializers.IntegerField(help_text="Automatic retries so far.")
    max_attempts = serializers.IntegerField(help_text="MODELPORT_RETRY_MAX_ATTEMPTS.")
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text="When the next automatic retry runs; null: none is "
                                   "scheduled (the cause is not transient, or every attempt "
                                   "failed): POST retry/ once it is fixed.")


class TrafficSerializer(serializers.Serializer):
    revision = serializers.IntegerField()
    percent = serializers.IntegerField()


class DeploymentSerializer(serializers.ModelSerializer):
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(slug_field="slug",
                                                                            read_only=True)
    model = serializers.CharField(source="model.name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True, default=None,
                                       allow_null=True)
    alias = serializers.SerializerMethodField(help_text="The alias followed, or null.")
    desired_replicas = serializers.IntegerField(
        source="replicas", read_only=True,
        help_text="The replica count that should run: the fixed count, or with autoscaling the "
                  "scaler's current count (0: idle, scaled to zero).")
    autoscaling = serializers.SerializerMethodField(
        help_text="The autoscaling settings, or null for a fixed replica count.")
    resources = serializers.SerializerMethodField()
    replicas = serializers.SerializerMethodField(
        help_text="Each running replica: {id, revision, status, url, ...}.")
    traffic = TrafficSerializer(many=True, read_only=True)
    endpoint = serializers.SerializerMethodField()
    shadow = serializers.SerializerMethodField(
        help_text="While a shadow revision receives mirrored requests: its numbers; else null.")
    created_by = serializers.CharField(source="created_by.username", read_only=True,
                                       default=None, allow_null=True)
    target = serializers.SerializerMethodField(
        help_text="The execution target it runs on (its own, else the default).")
    runtime = serializers.CharField(
        read_only=True,
        help_text="What runs its replicas — docker, local, docker-hosts, swarm or kubernetes — "
                  "fixed when it was created ('auto' resolved then) and never moved; empty "
                  "until a deployment made before this was decided is reconciled.")
    rollout = serializers.SerializerMethodField(
        help_text="While a canary walks its steps: where it is; else null.")
    retry = serializers.SerializerMethodField(
        help_text="While the current revision is failed or retried automatically: why, and "
                  "when the next automatic attempt runs; else null.")

    class Meta:
        model = Deployment
        fields = ["name", "team", "model", "version", "alias", "desired_replicas", "autoscaling",
                  "scaled_at", "resources", "strategy", "status", "status_message", "progress",
                  "stopped", "egress", "egress_reason", "revision",
                  "endpoint", "replicas", "traffic", "shadow", "rollout", "retry", "target",
                  "runtime", "created_by", "created_at", "updated_at", "reconciled_at"]

    @extend_schema_field(RolloutSerializer(allow_null=True))
    def get_rollout(self, obj: Deployment) -> dict | None:
        found = strategies.describe(obj, retries.current_revision(obj))
        return RolloutSerializer(found).data if found else None

    @extend_schema_field(RetrySerializer(allow_null=True))
    def get_retry(self, obj: Deployment) -> dict | None:
        found = retries.describe(obj, retries.current_revision(obj))
        return RetrySerializer(found).data if found else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_target(self, obj: Deployment) -> str | None:
        target = deployment_target(obj)
        return target.name if target is not None else None

    @extend_schema_field(AutoscalingSerializer(allow_null=True))
    def get_autoscaling(self, obj: Deployment) -> dict | None:
        return obj.autoscaling or None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_alias(self, obj: Deployment) -> str | None:
        return obj.alias or None

    @extend_schema_field(DeploymentResourcesSerializer)
    def get_resources(self, obj: Deployment) -> dict:
        return {"cpu": float(obj.cpu), "memory_mb": obj.memory_mb, "gpus": obj.gpus}

    @extend_schema_field(ReplicaSerializer(many=True))
    def get_replicas(self, obj: Deployment) -> list:
        # many=True: a ReturnList, which the stubs type as ReturnDict.
        return ReplicaSerializer(obj.replica_set.all(), many=True).data  # type: ignore[return-value]

    def get_endpoint(self, obj: Deployment) -> str:
        return services.endpoint(obj)

    @extend_schema_field(ShadowSerializer(allow_null=True))
    def get_shadow(self, obj: Deployment) -> dict | None:
        return services.shadow_summary(obj)


class RevisionSerializer(serializers.ModelSerializer):
    model_version = serializers.IntegerField(source="model_version.version", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True,
                                       default=None, allow_null=True)

    class Meta:
        model = Revision
        fields = ["number", "model_version", "spec", "reason", "image", "state", "healthy_at",
                  "created_by", "created_at"]


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["id", "kind", "message", "revision", "created_at"]


class EventsQuerySerializer(serializers.Serializer):
    since = serializers.IntegerField(required=False, min_value=0,
                                     help_text="Only events with id > since.")


class LogsQuerySerializer(serializers.Serializer):
    replica = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                    help_text="Replica id (default: all).")
    tail = serializers.IntegerField(required=False, min_value=1, max_value=5000, default=200,
                                    help_text="Lines per replica.")


class ReplicaLogsSerializer(serializers.Serializer):
    replica = serializers.CharField()
    logs = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_null=True, help_text="Why the runtime could not give "
                                                             "this replica's logs, else null.")
