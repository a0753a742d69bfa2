"""Business operations on teams, memberships and API tokens.

Every function here is the one way to perform its verb: the API, the portal, Django admin and
management commands all call it. Each checks the actor's role, runs in a transaction and writes an
audit record.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from packaging.utils import canonicalize_name

from core import request_context
from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from core.netguard import parse_allow_entry

from . import audit, sso, tokens, welcome
from .access import get_visible_team, require_platform_admin, require_team_role
from .models import ApiToken, Membership, PlatformSettings, SsoIdentity, Team, slug_validator
from .roles import Role, is_platform_admin

TEAM_FIELDS = ["slug", "name", "description"]
MEMBERSHIP_FIELDS = ["team", "user", "role"]
TOKEN_FIELDS = ["name", "prefix", "user", "expires_at", "revoked_at"]


# --- Teams ------------------------------------------------------------------------------------
def _validate_slug(slug: str) -> None:
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise InvalidInput(f"'{slug}' is not a valid slug. {exc.messages[0]}", field="slug") \
            from None


@transaction.atomic
def create_team(*, actor, slug: str, name: str, description: str = "") -> Team:
    require_platform_admin(actor, "create teams")
    slug = (slug or "").strip()
    _validate_slug(slug)
    if not (name or "").strip():
        raise InvalidInput("A team needs a name.", field="name")
    if Team.objects.filter(slug=slug).exists():
        raise Conflict(f"A team with slug '{slug}' already exists.", code="slug_taken")
    try:
        with transaction.atomic():
            team = Team.objects.create(slug=slug, name=name.strip(), description=description)
    except IntegrityError:
        raise Conflict(f"A team with slug '{slug}' already exists.", code="slug_taken") from None
    audit.record(actor=actor, action="team.created", obj=team, team=team,
                 after=audit.snapshot(team, TEAM_FIELDS))
    return team


@transaction.atomic
def update_team(*, actor, team: Team, name: str | None = None,
                description: str | None = None) -> Team:
    require_team_role(actor, team, Role.MAINTAINER, "editing the team")
    team = Team.objects.select_for_update().get(pk=team.pk)
    before = audit.snapshot(team, TEAM_FIELDS)
    if name is not None:
        if not name.strip():
            raise InvalidInput("A team needs a name.", field="name")
        team.name = name.strip()
    if description is not None:
        team.description = description
    team.save()
    after = audit.snapshot(team, TEAM_FIELDS)
    if after != before:
        audit.record(actor=actor, action="team.updated", obj=team, team=team,
                     before=before, after=after)
    return team


@transaction.atomic
def delete_team(*, actor, team: Team) -> None:
    require_platform_admin(actor, "delete teams")
    before = audit.snapshot(team, TEAM_FIELDS)
    audit.record(actor=actor, action="team.deleted", obj=team, team=None, before=before)
    team.delete()


# --- Memberships ------------------------------------------------------------------------------
def _validate_role(role: str) -> Role:
    if role not in Role.values:
        raise InvalidInput(f"'{role}' is not a role; use one of {', '.join(Role.values)}.",
                           field="role")
    return Role(role)


def _maintainer_count(team: Team) -> int:
    return team.memberships.filter(role=Role.MAINTAINER).count()


@transaction.atomic
def add_member(*, actor, team: Team, username: str, role: str) -> Membership:
    require_team_role(actor, team, Role.MAINTAINER, "adding members")
    role_value = _validate_role(role)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"No user named '{username}'.", field="username")
    if not user.is_active:
        raise InvalidInput(f"User '{username}' is deactivated.", field="username")
    if Membership.objects.filter(team=team, user=user).exists():
        raise Conflict(f"'{username}' is already a member of '{team.slug}'.",
                       code="already_member")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(team=team, user=user, role=role_value)
    except IntegrityError:
        raise Conflict(f"'{username}' is already a member of '{team.slug}'.",
                       code="already_member") from None
    audit.record(actor=actor, action="membership.created", obj=membership, team=team,
                 after=audit.snapshot(membership, MEMBERSHIP_FIELDS))
    return membership


def _membership(team: Team, username: str) -> Membership:
    membership = (Membership.objects.select_for_update().select_related("user", "team")
                  .filter(team=team, user__username=username).first())
    if membership is None:
        raise NotFound(f"'{username}' is not a member of '{team.slug}'.")
    return membership


@transaction.atomic
def change_member_role(*, actor, team: Team, username: str,
                       role: str) -> Membership:
    require_team_role(actor, team, Role.MAINTAINER, "changing roles")
    role_value = _validate_role(role)
    membership = _membership(team, username)
    before = audit.snapshot(membership, MEMBERSHIP_FIELDS)
    if (membership.role == Role.MAINTAINER and role_value != Role.MAINTAINER
            and _maintainer_count(team) == 1 and not is_platform_admin(actor)):
        raise Conflict(f"'{username}' is the last maintainer of '{team.slug}'; "
                       "make someone else maintainer first.", code="last_maintainer")
    membership.role = role_value
    membership.save(update_fields=["role"])
    audit.record(actor=actor, action="membership.updated", obj=membership, team=team,
                 before=before, after=audit.snapshot(membership, MEMBERSHIP_FIELDS))
    return membership


@transaction.atomic
def remove_member(*, actor, team: Team, username: str) -> None:
    require_team_role(actor, team, Role.MAINTAINER, "removing members")
    membership = _membership(team, username)
    if (membership.role == Role.MAINTAINER and _maintainer_count(team) == 1
            and not is_platform_admin(actor)):
        raise Conflict(f"'{username}' is the last maintainer of '{team.slug}'; "
                       "make someone else maintainer first.", code="last_maintainer")
    before = audit.snapshot(membership, MEMBERSHIP_FIELDS)
    audit.record(actor=actor, action="membership.deleted", obj=membership, team=team,
                 before=before)
    membership.delete()


# --- API tokens -------------------------------------------------------------------------------
@transaction.atomic
def create_token(*, actor, name: str,
                 expires_in_days: int | None = None) -> tuple[ApiToken, str]:
    """Create a token for ``actor``; returns it with the secret, which is never stored."""
    if not actor or not actor.is_authenticated:
        raise PermissionDenied("Log in to create a token.")
    name = (name or "").strip()
    if not name:
        raise InvalidInput("A token needs a name.", field="name")
    if len(name) > 100:
        raise InvalidInput("Token names are at most 100 characters.", field="name")
    days = settings.MODELPORT_TOKEN_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInput("expires_in_days must be a whole number of days, at least 1.",
                           field="expires_in_days")
    if days > settings.MODELPORT_TOKEN_MAX_DAYS:
        raise InvalidInput(f"expires_in_days may be at most {settings.MODELPORT_TOKEN_MAX_DAYS}.",
                           field="expires_in_days")
    if ApiToken.objects.active().filter(user=actor, name=name).exists():
        raise Conflict(f"You already have an active token named '{name}'.", code="name_taken")
    secret = tokens.generate()
    token = ApiToken.objects.create(user=actor, name=name, prefix=secret.prefix,
                                    digest=secret.digest,
                                    expires_at=timezone.now() + timedelta(days=days))
    audit.record(actor=actor, action="token.created", obj=token,
                 after=audit.snapshot(token, TOKEN_FIELDS))
    return token, secret.token


@transaction.atomic
def revoke_token(*, actor, token: ApiToken) -> ApiToken:
    if token.user_id != getattr(actor, "pk", None) and not is_platform_admin(actor):
        raise NotFound("No such token.")
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return token
    before = audit.snapshot(token, TOKEN_FIELDS)
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit.record(actor=actor, action="token.revoked", obj=token, before=before,
                 after=audit.snapshot(token, TOKEN_FIELDS))
    return token


# --- Users (platform admins, from Django admin) ------------------------------------------------
USER_FIELDS = ["username", "email", "first_name", "last_name", "is_active", "is_staff",
               "is_superuser"]


def _new_user_fields(username: str, email: str) -> tuple[str, str]:
    username, email = (username or "").strip(), (email or "").strip()
    if not username:
        raise InvalidInput("A user needs a username.", field="username")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], field="username") from None
    if len(username) > 150:
        raise InvalidInput("Usernames are at most 150 characters.", field="username")
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidInput(f"'{email}' is not an email address.", field="email") from None
    users = get_user_model().objects
    if users.filter(username__iexact=username).exists():
        raise Conflict(f"A user named '{username}' already exists.", code="username_taken",
                       field="username")
    if users.filter(email__iexact=email).exists():
        raise Conflict(f"A user with the email '{email}' already exists.", code="email_taken",
                       field="email")
    return username, email


@transaction.atomic
def create_user(*, actor, username: str, email: str, first_name: str = "", last_name: str = "",
                password: str | None = None, team: str | None = None,
                role: str | None = None):
    """Create a user (platform admins only), optionally a member of ``team`` with ``role``.

    Without ``password`` the account has no usable password: the user sets one through a
    welcome link (``teams.welcome``), mailed after commit when email is configured. Nothing
    is written unless every part (user, membership, audit) succeeds."""
    require_platform_admin(actor, "create users")
    username, email = _new_user_fields(username, email)
    user = get_user_model()(username=username, email=email, first_name=first_name.strip()[:150],
                            last_name=last_name.strip()[:150])
    if password:
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise InvalidInput(" ".join(exc.messages), field="password") from None
        user.set_password(password)
    else:
        user.set_unusable_password()
    the_team = None
    if team:
        try:
            the_team = get_visible_team(actor, team)
        except NotFound as exc:
            raise NotFound(exc.message, field="team") from None
        _validate_role(role or "")
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise Conflict(f"A user named '{username}' already exists.", code="username_taken",
                       field="username") from None
    audit.record(actor=actor, action="user.created", obj=user, after={
        **audit.snapshot(user, USER_FIELDS),
        "sign_in": "initial password" if password else "welcome link"})
    if the_team is not None:
        add_member(actor=actor, team=the_team, username=username, role=role or "")
    if not password:
        transaction.on_commit(lambda: welcome.send_welcome(user))
    return user


@transaction.atomic
def issue_welcome_link(*, actor, user) -> str:
    """A new one-time set-password link (its path) for an invited user who has not set a
    password yet; platform admins only, audited, emailed when email is configured. Accounts
    that have a password are refused: a link would let whoever holds it take the account."""
    require_platform_admin(actor, "issue set-password links")
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        raise InvalidInput(f"'{user.get_username()}' is deactivated.", field="username")
    if user.has_usable_password():
        raise Conflict(f"'{user.get_username()}' has set a password already; change it in the "
                       "console if they lost it.", code="has_password", field="username")
    audit.record(actor=actor, action="user.welcome_link_issued", obj=user,
                 after={"username": user.get_username()})
    transaction.on_commit(lambda: welcome.send_welcome(user))
    return welcome.welcome_path(user)


@transaction.atomic
def set_password_with_link(*, user, token: str, password: str) -> None:
    """The user of a welcome (or reset) link sets their password; the link then stops working.
    The token is checked here, not only by the page, so no caller can skip it."""
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    if not user.is_active or not default_token_generator.check_token(user, token):
        raise InvalidInput("This link is invalid or has expired; ask a platform admin for a "
                           "new one.", field="token")
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), field="new_password1") from None
    user.set_password(password)
    user.save(update_fields=["password"])
    audit.record(actor=user, action="user.password_set", obj=user,
                 after={"username": user.get_username(), "via": "welcome link"})


def record_user_change(*, actor, user, before: dict | None, created: bool) -> None:
    """Audit a user saved through Django admin (its forms do the saving)."""
    after = audit.snapshot(user, USER_FIELDS)
    if not created and after == before:
        return
    audit.record(actor=actor, action="user.created" if created else "user.updated", obj=user,
                 before=before, after=after)


# --- Single sign-on ---------------------------------------------------------------------------
SSO_MEMBERSHIP_FIELDS = [*MEMBERSHIP_FIELDS, "sso_managed"]
_USERNAME_CHARS = re.compile(r"[^\w.@+-]")


def _sso_context() -> request_context.RequestContext:
    """The current request's context with the channel ``sso``: what sign-on changed."""
    ctx = request_context.current()
    return request_context.RequestContext(request_id=ctx.request_id, source="sso", ip=ctx.ip)


def _free_username(*candidates: str) -> str:
    User = get_user_model()
    for raw in candidates:
        base = _USERNAME_CHARS.sub("-", (raw or "").strip())[:140].strip("-.")
        if not base:
            continue
        name, n = base, 1
        while User.objects.filter(username__iexact=name).exists():
            n += 1
            name = f"{base}-{n}"
        return name
    raise InvalidInput("The provider sent no usable name for this account.", field="sub")


@transaction.atomic
def create_sso_user(*, issuer: str, subject: str, email: str = "", preferred_username: str = "",
                    first_name: str = "", last_name: str = ""):
    """A new account for a provider's user at their first sign-in, bound to (issuer, sub)."""
    if not subject:
        raise InvalidInput("The provider's answer has no 'sub' claim.", field="sub")
    username = _free_username(preferred_username, email.split("@")[0], f"sso-{subject}")
    user = get_user_model().objects.create_user(
        username, email=email, first_name=first_name[:150], last_name=last_name[:150])
    user.set_unusable_password()
    user.save(update_fields=["password"])
    SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    with request_context.bind(_sso_context()):
        audit.record(actor=user, action="user.created", obj=user,
                     after={**audit.snapshot(user, USER_FIELDS), "sso_subject": subject})
    return user


@transaction.atomic
def link_sso_identity(*, user, issuer: str, subject: str) -> SsoIdentity:
    """Bind an existing local account to a provider's user (first sign-in, verified email,
    ``MODELPORT_OIDC_LINK_BY_EMAIL``)."""
    if SsoIdentity.objects.filter(user=user).exists():
        raise Conflict(f"'{user.get_username()}' already signs in with another provider account.",
                       code="sso_linked")
    identity = SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    with request_context.bind(_sso_context()):
        audit.record(actor=user, action="user.sso_linked", obj=user,
                     after={"issuer": issuer, "sso_subject": subject})
    return identity


def _profile_updates(user, email: str, first_name: str, last_name: str) -> list[str]:
    changed = []
    for field, value in (("email", email), ("first_name", first_name[:150]),
                         ("last_name", last_name[:150])):
        if value and getattr(user, field) != value:
            setattr(user, field, value)
            changed.append(field)
    return changed


@transaction.atomic
def sync_sso_memberships(*, user, groups: list[str], email: str = "", first_name: str = "",
                         last_name: str = "") -> list[str]:
    """At each SSO sign-in: the user's profile, memberships of mapped teams and platform-admin
    flag follow their provider groups (``MODELPORT_OIDC_GROUP_MAP``, ``_ADMIN_GROUPS``).

    Only what sign-on manages changes: memberships it created or took over in mapped teams
    (``sso_managed``), and an admin flag it granted. Hand-made memberships of unmapped teams,
    superusers and staff flags set by hand stay. Each change is audited (actor the user,
    channel ``sso``). Returns the audit actions written, in order."""
    User = get_user_model()
    user = User.objects.select_for_update().get(pk=user.pk)
    identity = SsoIdentity.objects.select_for_update().get(user=user)
    actions: list[str] = []
    with request_context.bind(_sso_context()):
        before_user = audit.snapshot(user, USER_FIELDS)
        changed = _profile_updates(user, email, first_name, last_name)
        admin = sso.wants_admin(groups)
        if admin is True and not user.is_staff:
            user.is_staff, identity.admin_granted = True, True
            changed.append("is_staff")
        elif admin is False and user.is_staff and identity.admin_granted:
            user.is_staff, identity.admin_granted = False, False
            changed.append("is_staff")
        if changed:
            user.save(update_fields=changed)
            action = "user.updated"
            if "is_staff" in changed:
                action = "user.admin_granted" if user.is_staff else "user.admin_removed"
            audit.record(actor=user, action=action, obj=user, before=before_user,
                         after=audit.snapshot(user, USER_FIELDS))
            actions.append(action)

        wanted = sso.wanted_roles(groups)
        teams = {t.slug: t for t in Team.objects.filter(slug__in=sso.mapped_teams())}
        current = {m.team.slug: m for m in Membership.objects.select_for_update()
                   .select_related("team", "user").filter(user=user, team__slug__in=teams)}
        for slug, team in sorted(teams.items()):
            membership, role = current.get(slug), wanted.get(slug)
            if membership is None and role is not None:
                membership = Membership.objects.create(team=team, user=user, role=role,
                                                       sso_managed=True)
                audit.record(actor=user, action="membership.created", obj=membership, team=team,
                             after=audit.snapshot(membership, SSO_MEMBERSHIP_FIELDS))
                actions.append("membership.created")
            elif membership is not None and role is not None and (
                    membership.role != role or not membership.sso_managed):
                before = audit.snapshot(membership, SSO_MEMBERSHIP_FIELDS)
                membership.role, membership.sso_managed = role, True
                membership.save(update_fields=["role", "sso_managed"])
                audit.record(actor=user, action="membership.updated", obj=membership, team=team,
                             before=before,
                             after=audit.snapshot(membership, SSO_MEMBERSHIP_FIELDS))
                actions.append("membership.updated")
            elif membership is not None and role is None and membership.sso_managed:
                audit.record(actor=user, action="membership.deleted", obj=membership, team=team,
                             before=audit.snapshot(membership, SSO_MEMBERSHIP_FIELDS))
                membership.delete()
                actions.append("membership.deleted")
        identity.groups = list(groups)
        identity.last_login_at = timezone.now()
        identity.save(update_fields=["groups", "last_login_at", "admin_granted"])
    return actions


# --- Platform settings ------------------------------------------------------------------------
PLATFORM_SETTINGS_FIELDS = ["package_index_url", "package_extra_index_urls",
                            "package_wheel_folder", "allowed_packages", "outbound_allowlist"]
_PACKAGE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$", re.IGNORECASE)


def platform_settings() -> PlatformSettings:
    """The one row of platform settings (created with defaults on first use)."""
    row, _ = PlatformSettings.objects.get_or_create(pk=1)
    return row


def _index_url(value: str, field: str) -> str:
    value = (value or "").strip()
    if value and (not value.startswith(("http://", "https://")) or " " in value
                  or len(value) > 500):
        raise InvalidInput(f"{value!r} is not an http(s) URL of a package index (a PEP 503 "
                           "'simple' index such as https://pypi.org/simple).", field=field)
    return value


def _wheel_folder(value: str) -> str:
    """An absolute path of a readable folder on this host (pip's --find-links), or empty."""
    value = (value or "").strip()
    if not value:
        return ""
    field = "package_wheel_folder"
    if len(value) > 500 or not os.path.isabs(value) or "\x00" in value:
        raise InvalidInput(f"{value[:100]!r} is not an absolute path (e.g. /srv/wheels).",
                           field=field)
    if not os.path.isdir(value):
        raise InvalidInput(f"{value} is not a folder on this host (mount the wheel mirror "
                           "here first).", field=field)
    if not os.access(value, os.R_OK | os.X_OK):
        raise InvalidInput(f"{value} is not readable by the platform (user "
                           f"{os.getuid()}).", field=field)
    return os.path.normpath(value)


def _string_list(value: object, field: str) -> list[str]:
    if isinstance(value, str):
        value = [part for part in re.split(r"[\s,]+", value) if part]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("Give a list of strings.", field=field)
    return [v.strip() for v in value if v.strip()]


@transaction.atomic
def update_platform_settings(*, actor, package_index_url: str | None = None,
                             package_extra_index_urls: list[str] | None = None,
                             package_wheel_folder: str | None = None,
                             allowed_packages: list[str] | None = None,
                             outbound_allowlist: list[str] | None = None) -> PlatformSettings:
    """Change what is given (None: unchanged). Platform admins only; audited."""
    require_platform_admin(actor, "change platform settings")
    row = PlatformSettings.objects.select_for_update().get_or_create(pk=1)[0]
    before = audit.snapshot(row, PLATFORM_SETTINGS_FIELDS)
    if package_index_url is not None:
        row.package_index_url = _index_url(package_index_url, "package_index_url")
    if package_extra_index_urls is not None:
        row.package_extra_index_urls = [
            _index_url(url, "package_extra_index_urls")
            for url in _string_list(package_extra_index_urls, "package_extra_index_urls")]
    if package_wheel_folder is not None:
        row.package_wheel_folder = _wheel_folder(package_wheel_folder)
    if allowed_packages is not None:
        names = _string_list(allowed_packages, "allowed_packages")
        bad = [n for n in names if not _PACKAGE_NAME.match(n)]
        if bad:
            raise InvalidInput(f"{bad[0]!r} is not a Python package name.",
                               field="allowed_packages")
        row.allowed_packages = sorted({canonicalize_name(n) for n in names})
    if outbound_allowlist is not None:
        entries = []
        for raw in _string_list(outbound_allowlist, "outbound_allowlist"):
            try:
                entries.append(str(parse_allow_entry(raw)))
            except ValueError as exc:
                raise InvalidInput(f"Outbound allow-list: {exc}.",
                                   field="outbound_allowlist") from None
        row.outbound_allowlist = list(dict.fromkeys(entries))
    row.updated_by = actor if getattr(actor, "is_authenticated", False) else None
    row.save()
    audit.record(actor=actor, action="platform.settings_changed", obj=row, before=before,
                 after=audit.snapshot(row, PLATFORM_SETTINGS_FIELDS))
    return row
