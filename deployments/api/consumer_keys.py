"""``/api/v1/consumer-keys/`` and ``/api/v1/deployments/{name}/callers/``. Thin: the verbs in
``deployments.consumer_keys`` check roles, validate and audit.

The body names the limit ``rate_limit: {per_second, burst}`` (``docs/`` API table); the
service's ``rate_per_s``/``burst`` errors are reported under ``rate_limit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import django_filters
from django.db.models import Q, QuerySet
from django.utils import timezone
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput
from core.openapi import api_errors
from core.rest import FilterBackend, NoUnknownFields, StrictTypes, identifier, query
from teams.access import get_visible_team
from teams.models import slug_validator

from .. import consumer_keys as keys
from .. import services
from ..models import ConsumerKey, name_validator

T = TypeVar("T")


# --- Serializers --------------------------------------------------------------------------------
class RateLimitSerializer(NoUnknownFields, StrictTypes, serializers.Serializer):
    per_second = serializers.FloatField(min_value=0.001, max_value=keys.MAX_RATE_PER_S,
                                        help_text="Sustained requests per second.")
    burst = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                     max_value=keys.MAX_BURST,
                                     help_text="Requests allowed at once (the token bucket's "
                                               "size); default: a second's worth, "
                                               "max(1, ceil(per_second)).")


class ConsumerKeySerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    deployments = serializers.SerializerMethodField()
    rate_limit = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=keys.KEY_STATUSES)
    created_by = serializers.CharField(source="created_by.username", default=None,
                                       allow_null=True)

    class Meta:
        model = ConsumerKey
        fields = ["id", "team", "name", "prefix", "deployments", "rate_limit", "status",
                  "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]
        read_only_fields = fields

    def get_deployments(self, key: ConsumerKey) -> list[str]:
        return sorted(d.name for d in key.deployments.all())

    @extend_schema_field(RateLimitSerializer(allow_null=True))
    def get_rate_limit(self, key: ConsumerKey) -> dict[str, Any] | None:
        if key.rate_per_s is None:
            return None
        return {"per_second": key.rate_per_s, "burst": key.burst}


class ConsumerKeyCreatedSerializer(ConsumerKeySerializer):
    secret = serializers.SerializerMethodField(
        help_text="The key (mpk_…). Shown only in this response: store it in the calling "
                  "service's secrets now.")

    class Meta(ConsumerKeySerializer.Meta):
        fields = [*ConsumerKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def get_secret(self, key: ConsumerKey) -> str:
        return self.context["secret"]


class ConsumerKeyCreateSerializer(NoUnknownFields, StrictTypes, serializers.Serializer):
    team = identifier(slug_validator, "team slug", max_length=50)
    name = identifier(name_validator, "key name", max_length=50,
                      help_text="The calling service, e.g. 'search-api'.")
    deployments = serializers.ListField(child=serializers.CharField(max_length=50),
                                        min_length=1, max_length=100,
                                        help_text="Names of the team's deployments the key "
                                                  "may call.")
    rate_limit = RateLimitSerializer(required=False, allow_null=True,
                                     help_text="Omit or null: no limit.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True,
                                           help_text="Omit or null: never expires.")


class ConsumerKeyUpdateSerializer(NoUnknownFields, StrictTypes, serializers.Serializer):
    deployments = serializers.ListField(child=serializers.CharField(max_length=50),
                                        min_length=1, max_length=100, required=False)
    rate_limit = RateLimitSerializer(required=False, allow_null=True,
                                     help_text="Replaces the limit; null lifts it.")


class CallersQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(keys.WINDOWS), required=False, default="24h",
                                     help_text="How far back to count.")


class CallerSerializer(serializers.Serializer):
    key = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.CharField()
    rate_limit = RateLimitSerializer(allow_null=True)
    requests = serializers.IntegerField(help_text="Admitted in the window.")
    limited = serializers.IntegerField(help_text="Refused 429 by the key's rate limit.")
    last_seen = serializers.DateTimeField(allow_null=True,
                                          help_text="Last traffic in the window.")


class CallersSerializer(serializers.Serializer):
    deployment = serializers.CharField()
    window = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    callers = CallerSerializer(many=True)


# --- Filters ------------------------------------------------------------------------------------
class ConsumerKeyFilterSet(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", label="Team (slug)")
    deployment = django_filters.CharFilter(field_name="deployments__name",
                                           label="Deployment (name)")
    status = django_filters.ChoiceFilter(
        choices=keys.KEY_STATUSES, method="filter_status", label="Status")

    class Meta:
        model = ConsumerKey
        fields = ["team", "deployment", "status"]

    def filter_status(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        now = timezone.now()
        expired = Q(expires_at__isnull=False, expires_at__lte=now)
        if value == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if value == "expired":
            return queryset.filter(expired, revoked_at__isnull=True)
        return queryset.filter(revoked_at__isnull=True).exclude(expired)


# --- Views --------------------------------------------------------------------------------------
def _as_api_fields(call: Callable[[], T]) -> T:
    """The service names the limit's parts ``rate_per_s``/``burst``; the body ``rate_limit``."""
    try:
        return call()
    except InvalidInput as exc:
        if exc.field in ("rate_per_s", "burst"):
            exc.field = "rate_limit"
        raise


def _limit(data: dict[str, Any]) -> dict[str, Any]:
    if "rate_limit" not in data:
        return {}
    limit = data["rate_limit"]
    if limit is None:
        return {"rate_per_s": None}
    return {"rate_per_s": limit["per_second"], "burst": limit.get("burst")}


@extend_schema_view(
    create=extend_schema(summary="Create a consumer key (team maintainers); the secret is in "
                                 "this response only",
                         request=ConsumerKeyCreateSerializer,
                         responses={201: ConsumerKeyCreatedSerializer}),
    partial_update=extend_schema(summary="Change a key's deployments or rate limit",
                                 request=ConsumerKeyUpdateSerializer,
                                 responses={200: ConsumerKeySerializer}),
    destroy=extend_schema(summary="Revoke a consumer key", responses={204: None}),
)
class ConsumerKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                         viewsets.GenericViewSet):
    """Keys of calling applications: usable only at ``/serve/<deployment>/…`` of the listed
    deployments, never on this API. Lists never show secrets."""

    serializer_class = ConsumerKeySerializer
    filterset_class = ConsumerKeyFilterSet
    filter_backends = [FilterBackend]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    queryset = ConsumerKey.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (ConsumerKey.objects.visible_to(self.request.user)
                .select_related("team", "created_by").prefetch_related("deployments")
                .order_by("team__slug", "name", "-created_at").distinct())

    def _show(self, key: ConsumerKey, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=key.pk)).data,
                        status=code)

    @api_errors(404)
    def create(self, request: Request) -> Response:
        body = ConsumerKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team = get_visible_team(request.user, data["team"])
        key, secret = _as_api_fields(lambda: keys.create_consumer_key(
            actor=request.user, team=team, name=data["name"], deployments=data["deployments"],
            expires_at=data.get("expires_at"), **_limit(data)))
        created = ConsumerKeyCreatedSerializer(self.get_queryset().get(pk=key.pk),
                                               context={"secret": secret})
        response = Response(created.data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response

    def partial_update(self, request: Request, pk: str) -> Response:
        key = self.get_object()
        # Not partial: every field is optional already, and a rate_limit given is whole.
        body = ConsumerKeyUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        changes = _limit(data)
        if "deployments" in data:
            changes["deployments"] = data["deployments"]
        key = _as_api_fields(lambda: keys.update_consumer_key(actor=request.user, key=key,
                                                              **changes))
        return self._show(key)

    @api_errors(without=[409])
    def destroy(self, request: Request, pk: str) -> Response:
        keys.revoke_consumer_key(actor=request.user, key=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Revoke a consumer key (as DELETE, answering the key)", request=None,
                   responses={200: ConsumerKeySerializer})
    @api_errors(without=[409])
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        key = keys.revoke_consumer_key(actor=request.user, key=self.get_object())
        return self._show(key)


class CallersView(APIView):
    """Who calls a deployment with a consumer key, and how much."""

    @extend_schema(summary="Per consumer key: requests, 429s and last seen over a window",
                   parameters=[CallersQuerySerializer],
                   responses={200: CallersSerializer})
    def get(self, request: Request, name: str) -> Response:
        d = services.get_visible(request.user, name)
        window = query(CallersQuerySerializer, request)["window"]
        end = timezone.now()
        start = end - keys.WINDOWS[window]
        rows = keys.callers(actor=request.user, deployment=d, since=[start], until=end)
        body = {"deployment": d.name, "window": window, "start": start, "end": end,
                "callers": [{**c.as_dict([window]), "requests": c.requests[0],
                             "limited": c.limited[0]} for c in rows]}
        return Response(CallersSerializer(body).data)
