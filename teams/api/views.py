from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from core.errors import NotFound, PermissionDenied
from core.openapi import api_errors

from .. import services
from ..access import get_visible_team, may_read_audit_log
from ..authentication import BearerTokenAuthentication, TokenBasicAuthentication
from ..filtersets import AuditEventFilterSet, TeamFilterSet
from ..models import ApiToken, AuditEvent, Membership, Team
from . import serializers as s


@extend_schema_view(
    create=extend_schema(summary="Create a team (platform admins)",
                         request=s.TeamCreateSerializer),
    partial_update=extend_schema(request=s.TeamUpdateSerializer),
)
class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.TeamSerializer
    lookup_field = "slug"
    lookup_value_regex = "[a-z0-9-]+"
    filterset_class = TeamFilterSet
    search_fields = ["slug", "name", "description"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return (Team.objects.visible_to(self.request.user)
                .annotate(member_count=Count("memberships", distinct=True)).order_by("slug"))

    def get_serializer_context(self) -> dict:
        context = dict(super().get_serializer_context())
        user = self.request.user
        if user.is_authenticated:
            context["my_roles"] = dict(Membership.objects.filter(user=user)
                                       .values_list("team_id", "role"))
        return context

    def get_object(self) -> Team:
        team = get_visible_team(self.request.user, self.kwargs["slug"])
        return self.get_queryset().get(pk=team.pk)

    def create(self, request: Request) -> Response:
        serializer = s.TeamCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = services.create_team(actor=request.user, **serializer.validated_data)
        return Response(self.get_serializer(self.get_queryset().get(pk=team.pk)).data,
                        status=status.HTTP_201_CREATED)

    @api_errors(without=[409])
    def partial_update(self, request: Request, slug: str) -> Response:
        team = get_visible_team(request.user, slug)
        serializer = s.TeamUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.update_team(actor=request.user, team=team, **serializer.validated_data)
        return Response(self.get_serializer(self.get_queryset().get(pk=team.pk)).data)


@extend_schema_view(
    create=extend_schema(request=s.MemberCreateSerializer),
    partial_update=extend_schema(request=s.MembershipRoleSerializer),
)
class MemberViewSet(viewsets.GenericViewSet):
    serializer_class = s.MembershipSerializer
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    pagination_class = None
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    queryset = Membership.objects.none()  # for the schema generator only

    def _team(self) -> Team:
        return get_visible_team(self.request.user, self.kwargs["team_slug"])

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (Membership.objects.filter(team=self._team()).select_related("user")
                .order_by("user__username"))

    def list(self, request: Request, team_slug: str) -> Response:
        return Response(self.get_serializer(self.get_queryset(), many=True).data)

    def create(self, request: Request, team_slug: str) -> Response:
        team = self._team()
        serializer = s.MemberCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.add_member(actor=request.user, team=team,
                                         **serializer.validated_data)
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, team_slug: str, username: str) -> Response:
        membership = self.get_queryset().filter(user__username=username).first()
        if membership is None:
            raise NotFound(f"'{username}' is not a member of '{team_slug}'.")
        return Response(self.get_serializer(membership).data)

    def partial_update(self, request: Request, team_slug: str, username: str) -> Response:
        team = self._team()
        serializer = s.MembershipRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.change_member_role(actor=request.user, team=team,
                                                 username=username,
                                                 role=serializer.validated_data["role"])
        return Response(self.get_serializer(membership).data)

    def destroy(self, request: Request, team_slug: str, username: str) -> Response:
        services.remove_member(actor=request.user, team=self._team(), username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenCreateThrottle(ScopedRateThrottle):
    scope_attr = "throttle_scope"

    def allow_request(self, request, view):
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


@extend_schema_view(
    create=extend_schema(
        summary="Create an API token (HTTP Basic accepted here only)",
        request=s.ApiTokenCreateSerializer,
        description="429 (code `locked_out`) after too many failed sign-ins of one username "
                    "from one address, or (code `throttled`) too many tokens created; wait "
                    "`Retry-After` seconds.",
        responses={201: s.ApiTokenCreatedSerializer},
    ),
    destroy=extend_schema(summary="Revoke a token", responses={204: OpenApiResponse()}),
)
class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.ApiTokenSerializer
    authentication_classes = [TokenBasicAuthentication, BearerTokenAuthentication,
                              SessionAuthentication]
    throttle_classes = [TokenCreateThrottle]
    throttle_scope = "token_create"
    filterset_class = None
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_authenticators(self):
        # HTTP Basic is accepted only to obtain a token (POST on the collection).
        authenticators = super().get_authenticators()
        if getattr(self.request, "method", "POST") != "POST":
            authenticators = [a for a in authenticators
                              if not isinstance(a, TokenBasicAuthentication)]
        return authenticators

    queryset = ApiToken.objects.none()  # for the schema generator only

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return ApiToken.objects.filter(user=self.request.user).order_by("-created_at")

    @api_errors(429)
    def create(self, request: Request) -> Response:
        serializer = s.ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, secret = services.create_token(actor=request.user, **serializer.validated_data)
        body = s.ApiTokenCreatedSerializer(
            {"id": token.id, "name": token.name, "token": secret, "expires_at": token.expires_at})
        return Response(body.data, status=status.HTTP_201_CREATED)

    @api_errors(without=[409])
    def destroy(self, request: Request, pk: str) -> Response:
        token = self.get_object()
        services.revoke_token(actor=request.user, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.AuditEventSerializer
    filterset_class = AuditEventFilterSet
    search_fields = ["object_repr", "action", "actor_username"]

    queryset = AuditEvent.objects.none()  # for the schema generator only

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        user = self.request.user
        if not may_read_audit_log(user):
            raise PermissionDenied("Only platform admins and team maintainers read the audit log.")
        return AuditEvent.objects.visible_to(user)


class PlatformSettingsView(APIView):
    """One object: the settings platform admins change at run time."""

    serializer_class = s.PlatformSettingsSerializer

    @extend_schema(summary="Platform settings", responses={200: s.PlatformSettingsSerializer})
    def get(self, request: Request) -> Response:
        return Response(s.PlatformSettingsSerializer(services.platform_settings()).data)

    @extend_schema(summary="Change platform settings (platform admins)",
                   request=s.PlatformSettingsSerializer,
                   responses={200: s.PlatformSettingsSerializer})
    def patch(self, request: Request) -> Response:
        serializer = s.PlatformSettingsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        row = services.update_platform_settings(actor=request.user, **serializer.validated_data)
        return Response(s.PlatformSettingsSerializer(row).data)


@extend_schema(
    summary="Trade a one-time code of 'modelport login --sso' for an API token",
    description="No authentication: the code (sent by the portal to the CLI's loopback "
                "address after the signed-in user allowed it) and the PKCE verifier are the "
                "proof. 400 with code `code_unknown`, `code_used`, `code_expired` or "
                "`wrong_verifier` (which spends the code); 403 `account_disabled`; 409 "
                "`name_taken`. The token is shown only in this response.",
    request=s.CliLoginRedeemSerializer, responses={201: s.CliLoginTokenSerializer}, auth=[],
    tags=["tokens"],
)
class CliLoginView(APIView):
    authentication_classes: list = []  # no session: nothing here a cross-site form could use
    permission_classes = [AllowAny]
    throttle_classes = [TokenCreateThrottle]
    throttle_scope = "token_create"

    @api_errors(403, 409, 429)
    def post(self, request: Request) -> Response:
        serializer = s.CliLoginRedeemSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, secret = services.redeem_cli_login(**serializer.validated_data)
        body = s.CliLoginTokenSerializer(
            {"id": token.id, "name": token.name, "token": secret, "expires_at": token.expires_at,
             "username": token.user.get_username()})
        response = Response(body.data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response
