from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from core.openapi import api_errors
from teams.access import get_visible_team

from .. import platform, requests, services
from ..filtersets import ResourceRequestFilterSet
from ..models import Reservation, ResourceRequest
from . import serializers as s


def quota_body(team) -> dict:
    usage = services.usage(team)
    body = {name: getattr(usage, name).as_dict() for name in
            ("limits", "base", "granted", "used", "reserved", "pending", "free", "requested")}
    numbers = platform.platform_numbers()
    body.update(team=team, grants=usage.grants,
                reservations=Reservation.objects.filter(team=team).order_by("owner"),
                platform=numbers.as_dict() if numbers else None)
    return s.QuotaSerializer(body).data


class TeamQuotaView(GenericAPIView):
    serializer_class = s.QuotaSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(summary="A team's quota: limits, used, reserved, pending, free",
                   responses=s.QuotaSerializer)
    def get(self, request: Request, team_slug: str) -> Response:
        team = get_visible_team(request.user, team_slug)
        return Response(quota_body(team))

    @extend_schema(summary="Set a team's quota (platform admins)",
                   request=s.QuotaUpdateSerializer, responses=s.QuotaSerializer)
    def put(self, request: Request, team_slug: str) -> Response:
        team = get_visible_team(request.user, team_slug)
        serializer = s.QuotaUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.set_quota(actor=request.user, team=team, **serializer.validated_data)
        return Response(quota_body(team))


@extend_schema_view(
    list=extend_schema(summary="Resource requests of the teams you can see"),
    create=extend_schema(summary="Ask for more CPU, memory or GPUs (any team member)",
                         request=s.ResourceRequestCreateSerializer,
                         responses={201: s.ResourceRequestCreatedSerializer}),
)
class ResourceRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                             viewsets.GenericViewSet):
    serializer_class = s.ResourceRequestSerializer
    filterset_class = ResourceRequestFilterSet
    search_fields = ["justification", "team__slug"]
    queryset = ResourceRequest.objects.none()  # for the schema generator only

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (ResourceRequest.objects.visible_to(self.request.user)
                .select_related("team", "requested_by", "decided_by"))

    @api_errors(404)
    def create(self, request: Request) -> Response:
        serializer = s.ResourceRequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        team = get_visible_team(request.user, data.pop("team"))
        created = requests.file_request(actor=request.user, team=team, **data)
        body = s.ResourceRequestSerializer(created).data
        body["capacity_warnings"] = requests.capacity_flags(created)
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Approve in full or in part (platform admins)",
                   request=s.ResourceRequestApproveSerializer,
                   responses=s.ResourceRequestSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        serializer = s.ResourceRequestApproveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        decided = requests.approve_request(actor=request.user, request=self.get_object(),
                                           **serializer.validated_data)
        return Response(self.get_serializer(decided).data)

    @extend_schema(summary="Deny with a comment (platform admins)",
                   request=s.ResourceRequestDenySerializer, responses=s.ResourceRequestSerializer)
    @action(detail=True, methods=["post"])
    def deny(self, request: Request, pk: str) -> Response:
        resource_request = self.get_object()
        serializer = s.ResourceRequestDenySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        decided = requests.deny_request(actor=request.user, request=resource_request,
                                        **serializer.validated_data)
        return Response(self.get_serializer(decided).data)
