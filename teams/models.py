from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .roles import Role, is_platform_admin

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


class TeamQuerySet(models.QuerySet):
    def visible_to(self, user) -> TeamQuerySet:
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user).distinct()


class Team(models.Model):
    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TeamQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def role_of(self, user) -> str | None:
        if not user or not user.is_authenticated:
            return None
        membership = self.memberships.filter(user=user).only("role").first()
        return membership.role if membership else None


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    # Set by single sign-on: this membership follows the user's provider groups (added, changed,
    # removed at each login). Memberships added by hand are never touched by the sync.
    sso_managed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team__slug", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="unique_membership"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class SsoIdentity(models.Model):
    """Which provider account a user signs in with: the issuer and the ``sub`` claim, which a
    provider never reassigns (an email address can be). ``admin_granted`` records that single
    sign-on made the user a platform admin, so that only such a grant is withdrawn when the
    admin group is gone."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="sso_identity")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    admin_granted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"],
                                               name="unique_sso_identity")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class ApiToken(models.Model):
    """A named, expiring, revocable API token. Only a SHA-256 digest of the secret is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired

    @property
    def status(self) -> str:
        if self.is_revoked:
            return "revoked"
        return "expired" if self.is_expired else "active"


class CliLoginCode(models.Model):
    """A one-time code of ``modelport login --sso``: a signed-in user allowed the command line
    on their computer, and the CLI trades the code (with its PKCE verifier) for an API token.
    Only the code's SHA-256 digest is stored; it is bound to the user, the PKCE challenge and
    the token's name, expires within minutes and works once (``used_at``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    code_challenge = models.CharField(max_length=43, editable=False)
    token_name = models.CharField(max_length=100)
    token_days = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")

    def __str__(self) -> str:
        return f"CLI sign-in of {self.user} ({self.token_name})"


class AuditEventQuerySet(models.QuerySet):
    def visible_to(self, user) -> AuditEventQuerySet:
        """Platform admins see everything; maintainers see their teams' events."""
        if is_platform_admin(user):
            return self
        if not user or not user.is_authenticated:
            return self.none()
        return self.filter(team__memberships__user=user,
                           team__memberships__role=Role.MAINTAINER)


class AuditEvent(models.Model):
    """An immutable record of one mutation: who, what, which object, before and after."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=80, db_index=True)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=120, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    team_slug = models.CharField(max_length=50, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    source = models.CharField(max_length=20, default="system")
    ip = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["actor_username", "-created_at"])]

    def __str__(self) -> str:
        who = self.actor_username or "system"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {who} {self.action}"


class PlatformSettings(models.Model):
    """Settings platform admins change at run time, one row (pk=1): where model environments'
    packages come from, which packages they may use, and which internal destinations the
    platform may call (alert webhooks…) although they are loopback or private addresses.
    Read through ``teams.services.platform_settings()``; changed only by
    ``teams.services.update_platform_settings`` (audited)."""

    # Empty: the index this host's pip uses (MODELPORT_PIP_INDEX_URL / PIP_INDEX_URL / pip config).
    package_index_url = models.CharField(max_length=500, blank=True)
    package_extra_index_urls = models.JSONField(default=list, blank=True)
    # A folder of wheels on the host that fetches them (pip --find-links): a mounted mirror for
    # air-gapped sites, used besides the indexes. Empty: none.
    package_wheel_folder = models.CharField(max_length=500, blank=True)
    # Canonical project names a model's requirements may name (dependencies included); empty: any.
    allowed_packages = models.JSONField(default=list, blank=True)
    # "host", "host:port", an IP address or a CIDR network the platform may call even though it
    # resolves to a loopback, private, link-local or otherwise internal address.
    outbound_allowlist = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name = verbose_name_plural = "platform settings"
        constraints = [models.CheckConstraint(condition=Q(pk=1),
                                              name="platform_settings_singleton")]

    def __str__(self) -> str:
        return "Platform settings"


class Installation(models.Model):
    """Who this installation is, one row (pk=1): a random id generated once, by the migration
    (or on first use), for every process that shares this database — web, workers, beat, host
    workers on other machines. Every container, Swarm service and Kubernetes object the
    platform creates carries it (``modelport.installation``), and a runtime lists, adopts or
    removes only objects carrying its own. Read through ``teams.installation.installation_id``.
    Never changed: a new id would orphan everything this installation runs."""

    uid = models.CharField(max_length=32, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="installation_singleton")]

    def __str__(self) -> str:
        return f"Installation {self.uid}"
