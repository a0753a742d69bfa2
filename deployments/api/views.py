from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.openapi import api_errors
from core.rest import FilterBackend, query
from teams.access import get_visible_team

from .. import services
from ..filtersets import DeploymentFilterSet
from ..models import Deployment, Replica, Revision, RevisionState
from . import serializers as s

_SPEC_KEYS = ("version", "alias", "replicas", "resources", "strategy", "autoscaling")


def _spec_args(data: dict) -> dict:
    """Only the keys the client sent (PATCH leaves the rest as they are)."""
    out = {}
    for key in _SPEC_KEYS:
        if key in data:
            value = data[key]
            out[key] = dict(value) if isinstance(value, dict) else value
    return out


@extend_schema_view(
    create=extend_schema(request=s.DeploymentCreateSerializer,
                         responses={202: s.DeploymentSerializer}),
    partial_update=extend_schema(request=s.DeploymentUpdateSerializer,
                                 responses={202: s.DeploymentSerializer}),
)
class DeploymentViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.DeploymentSerializer
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9-]+"
    filterset_class = DeploymentFilterSet
    filter_backends = [FilterBackend]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    queryset = Deployment.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (Deployment.objects.visible_to(self.request.user)
                .select_related("team", "model", "version", "created_by")
                .prefetch_related(Prefetch("replica_set",
                                           queryset=Replica.objects.order_by("revision", "index")),
                                  # What the rollout and retry fields read (never an active or
                                  # superseded revision: those show neither).
                                  Prefetch("revisions", to_attr="unsettled_revisions",
                                           queryset=Revision.objects.exclude(
                                               state__in=[RevisionState.ACTIVE,
                                                          RevisionState.SUPERSEDED])))
                .order_by("name"))

    def _deployment(self, name: str) -> Deployment:
        return services.get_visible(self.request.user, name)

    def _show(self, d: Deployment, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=d.pk)).data, status=code)

    def retrieve(self, request: Request, name: str) -> Response:
        return self._show(self._deployment(name))

    @api_errors(404)
    def create(self, request: Request) -> Response:
        body = s.DeploymentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team = get_visible_team(request.user, data.pop("team"))
        d = services.create_deployment(actor=request.user, team=team, name=data.pop("name"),
                                       model=data.pop("model"), target=data.pop("target", None),
                                       **_spec_args(data))
        return self._show(d, status.HTTP_202_ACCEPTED)

    def partial_update(self, request: Request, name: str) -> Response:
        d = self._deployment(name)
        body = s.DeploymentUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        d = services.update_deployment(actor=request.user, deployment=d,
                                       **_spec_args(dict(body.validated_data)))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(responses={204: None})
    @api_errors(without=[409])
    def destroy(self, request: Request, name: str) -> Response:
        services.delete(actor=request.user, deployment=self._deployment(name))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.RollbackSerializer, responses={202: s.DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, name: str) -> Response:
        body = s.RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = services.rollback(actor=request.user, deployment=self._deployment(name),
                              revision=body.validated_data.get("revision"))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.PromoteSerializer, responses={202: s.DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, name: str) -> Response:
        """End a shadow: roll the shadow revision's version out for real."""
        body = s.PromoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        strategy = body.validated_data.get("strategy")
        d = services.promote(actor=request.user, deployment=self._deployment(name),
                             strategy=dict(strategy) if strategy else None)
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def discard(self, request: Request, name: str) -> Response:
        """End a shadow without promoting it: back to the serving revision."""
        d = services.discard_shadow(actor=request.user, deployment=self._deployment(name))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.EgressSerializer, responses={202: s.DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def egress(self, request: Request, name: str) -> Response:
        """Grant or withdraw the model's outbound network access (platform admins)."""
        body = s.EgressSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = services.set_egress(actor=request.user, deployment=self._deployment(name),
                                allowed=body.validated_data["allowed"],
                                reason=body.validated_data.get("reason", ""))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, name: str) -> Response:
        """Re-run a failed deployment's current revision (409 when nothing failed, or when it
        is stopped: Start runs a failed revision again)."""
        d = services.retry(actor=request.user, deployment=self._deployment(name))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.DeploymentSerializer})
    @api_errors(without=[409])
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, name: str) -> Response:
        d = services.stop(actor=request.user, deployment=self._deployment(name))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, name: str) -> Response:
        d = services.start(actor=request.user, deployment=self._deployment(name))
        return self._show(d, status.HTTP_202_ACCEPTED)

    @extend_schema(responses=s.RevisionSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def revisions(self, request: Request, name: str) -> Response:
        d = self._deployment(name)
        page = self.paginate_queryset(d.revisions.select_related("model_version", "created_by")
                                      .order_by("-number"))
        return self.get_paginated_response(s.RevisionSerializer(page, many=True).data)

    @extend_schema(responses=s.EventSerializer(many=True), parameters=[s.EventsQuerySerializer])
    @action(detail=True, methods=["get"], filter_backends=[])
    def events(self, request: Request, name: str) -> Response:
        d = self._deployment(name)
        events = d.events.order_by("-created_at", "-id")
        since = query(s.EventsQuerySerializer, request).get("since")
        if since is not None:
            events = events.filter(id__gt=since)
        page = self.paginate_queryset(events)
        return self.get_paginated_response(s.EventSerializer(page, many=True).data)

    @extend_schema(responses=s.ReplicaLogsSerializer(many=True),
                   parameters=[s.LogsQuerySerializer])
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def logs(self, request: Request, name: str) -> Response:
        d = self._deployment(name)
        params = query(s.LogsQuerySerializer, request)
        logs = services.replica_logs(actor=request.user, deployment=d,
                                     replica=params.get("replica") or None, tail=params["tail"])
        return Response(s.ReplicaLogsSerializer(logs, many=True).data)
