from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.rest import StrictTypes, identifier

from ..models import ApiToken, AuditEvent, Membership, Team, slug_validator
from ..roles import Role


class TeamSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField()
    member_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Team
        fields = ["slug", "name", "description", "my_role", "member_count", "created_at",
                  "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        # Uniqueness → 409 from the service.
        extra_kwargs: dict[str, dict[str, Any]] = {"slug": {"validators": []}}

    def get_my_role(self, team: Team) -> str | None:
        roles = self.context.get("my_roles", {})
        return roles.get(team.pk)


class TeamCreateSerializer(StrictTypes, serializers.Serializer):
    slug = identifier(slug_validator, "slug", max_length=50)
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class TeamUpdateSerializer(StrictTypes, serializers.Serializer):
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    email = serializers.EmailField(source="user.email", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices)
    sso_managed = serializers.BooleanField(
        read_only=True, help_text="Follows the user's identity-provider groups at each sign-in "
        "(MODELPORT_OIDC_GROUP_MAP): a change by hand lasts until their next sign-in.")

    class Meta:
        model = Membership
        fields = ["username", "email", "role", "sso_managed", "created_at"]
        read_only_fields = ["created_at"]


class MemberCreateSerializer(StrictTypes, serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="An existing user's username.")
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipRoleSerializer(StrictTypes, serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "status", "created_at", "expires_at", "revoked_at",
                  "last_used_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(StrictTypes, serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_in_days = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.MODELPORT_TOKEN_MAX_DAYS,
        allow_null=True, help_text="Default: MODELPORT_TOKEN_DEFAULT_DAYS.")


class ApiTokenCreatedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    token = serializers.CharField(help_text="The secret. Shown only in this response.")
    expires_at = serializers.DateTimeField()


class CliLoginRedeemSerializer(StrictTypes, serializers.Serializer):
    code = serializers.CharField(max_length=200, help_text="The one-time code the portal sent "
                                 "to the CLI's loopback address.")
    code_verifier = serializers.CharField(min_length=43, max_length=128,
                                          help_text="The PKCE verifier (RFC 7636) whose S256 "
                                          "challenge the portal page was given.")


class CliLoginTokenSerializer(ApiTokenCreatedSerializer):
    username = serializers.CharField(help_text="Whom the token acts as.")


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_username")
    team = serializers.CharField(source="team_slug")

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "object_type", "object_id",
                  "object_repr", "team", "before", "after", "request_id", "source", "ip"]
        read_only_fields = fields


class PlatformSettingsSerializer(StrictTypes, serializers.Serializer):
    """Platform settings (``GET`` any signed-in user, ``PATCH`` platform admins)."""

    package_index_url = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="PEP 503 index model environments' wheels come from; empty: the index this "
                  "host's pip uses.")
    package_extra_index_urls = serializers.ListField(
        child=serializers.CharField(max_length=500), required=False,
        help_text="More indexes searched besides it (e.g. a CPU-only PyTorch index).")
    package_wheel_folder = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="Absolute path of a folder of wheels on the platform's host (pip "
                  "--find-links), e.g. a mounted mirror on an air-gapped site; empty: none.")
    allowed_packages = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False,
        help_text="Packages a model's requirements (and their dependencies) may name; empty: "
                  "any package the index has as a wheel.")
    outbound_allowlist = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False,
        help_text="Internal destinations (host, host:port, IP or CIDR) the platform may call "
                  "although they are loopback, private or link-local (e.g. an in-house alert "
                  "receiver).")
    updated_at = serializers.DateTimeField(read_only=True)
    updated_by = serializers.CharField(source="updated_by.username", read_only=True,
                                       default=None, allow_null=True)
