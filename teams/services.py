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

from core.errors import Conflict, DomainError, InvalidInput, NotFound, PermissionDenied
from core.netguard import parse_allow_entry

from . import audit, cli_login, tokens, welcome
from .access import get_visible_team, require_platform_admin, require_team_role
from .models import (
    ApiToken,
    CliLoginCode,
    Membership,
    PlatformSettings,
    Team,
    slug_validator,
)
from .roles import Role, is_platform_admin

TEAM_FIELDS = ["slug", "name", "description"]
MEMBERSHIP_FIELDS = ["team", "user", "role"]
TOKEN_FIELDS = ["name", "prefix", "user", "expires_at", "revoked_at"]
CLI_CODE_SCHEME = "mpc"  # one-time codes of modelport login --sso, never a credential


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
    days = _token_days(expires_in_days)
    _check_token_name_free(actor, name)
    secret = tokens.generate()
    token = ApiToken.objects.create(user=actor, name=name, prefix=secret.prefix,
                                    digest=secret.digest,
                                    expires_at=timezone.now() + timedelta(days=days))
    audit.record(actor=actor, action="token.created", obj=token,
                 after=audit.snapshot(token, TOKEN_FIELDS))
    return token, secret.token


def _token_days(expires_in_days: int | None) -> int:
    days = settings.MODELPORT_TOKEN_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInput("expires_in_days must be a whole number of days, at least 1.",
                           field="expires_in_days")
    if days > settings.MODELPORT_TOKEN_MAX_DAYS:
        raise InvalidInput(f"expires_in_days may be at most {settings.MODELPORT_TOKEN_MAX_DAYS}.",
                           field="expires_in_days")
    return days


def _check_token_name_free(user, name: str) -> None:
    if ApiToken.objects.active().filter(user=user, name=name).exists():
        raise Conflict(f"You already have an active token named '{name}'.", code="name_taken")


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


# --- modelport login --sso (teams/cli_login.py: the flow's shapes) ---------------------------
CLI_LOGIN_FIELDS = ["user", "token_name", "token_days", "expires_at", "used_at"]


@transaction.atomic
def approve_cli_login(*, actor, code_challenge: str, token_name: str,
                      expires_in_days: int | None = None) -> str:
    """The signed-in ``actor`` allowed the command line to act as them: a one-time code, bound
    to them, the CLI's PKCE challenge and the token's name, that the CLI trades for a token
    within ``cli_login.CODE_TTL``. Returns the code; only its digest is stored."""
    if not actor or not actor.is_authenticated or not actor.is_active:
        raise PermissionDenied("Log in to allow the command line.")
    code_challenge = cli_login.check_challenge(code_challenge)
    token_name = cli_login.check_token_name(token_name)
    days = _token_days(expires_in_days)
    _check_token_name_free(actor, token_name)
    secret = tokens.generate(CLI_CODE_SCHEME)
    # codes older than a day are spent or dead; the audit log keeps who approved what
    CliLoginCode.objects.filter(expires_at__lt=timezone.now() - timedelta(days=1)).delete()
    row = CliLoginCode.objects.create(
        user=actor, digest=secret.digest, code_challenge=code_challenge, token_name=token_name,
        token_days=None if expires_in_days is None else days,
        expires_at=timezone.now() + cli_login.CODE_TTL)
    audit.record(actor=actor, action="cli_login.approved", obj=row,
                 after=audit.snapshot(row, CLI_LOGIN_FIELDS))
    return secret.token


def redeem_cli_login(*, code: str, code_verifier: str) -> tuple[ApiToken, str]:
    """The CLI trades a code for an API token of the user who approved it (``create_token``,
    audited). Unknown, used and expired codes are refused; a wrong verifier is refused and
    burns the code (whoever holds a stolen code cannot try again)."""
    refusal: DomainError | None = None
    with transaction.atomic():
        row = (CliLoginCode.objects.select_for_update().select_related("user")
               .filter(digest=tokens.digest_of(code or "")).first())
        if row is None:
            raise InvalidInput("This sign-in code is unknown; run 'modelport login --sso' again.",
                               code="code_unknown")
        if row.used_at is not None:
            raise InvalidInput("This sign-in code was used already; run 'modelport login --sso' "
                               "again.", code="code_used")
        now = timezone.now()
        if row.expires_at <= now:
            raise InvalidInput("This sign-in code has expired (codes last "
                               f"{int(cli_login.CODE_TTL.total_seconds())} s); run 'modelport "
                               "login --sso' again.", code="code_expired")
        if not row.user.is_active:
            raise PermissionDenied("This account is deactivated.", code="account_disabled")
        before = audit.snapshot(row, CLI_LOGIN_FIELDS)
        row.used_at = now
        if not cli_login.verifier_matches(code_verifier or "", row.code_challenge):
            row.save(update_fields=["used_at"])
            audit.record(actor=None, action="cli_login.refused", obj=row, before=before,
                         after={**audit.snapshot(row, CLI_LOGIN_FIELDS),
                                "reason": "wrong_verifier"})
            refusal = InvalidInput("code_verifier does not match the code's challenge; the code "
                                   "is spent, run 'modelport login --sso' again.",
                                   code="wrong_verifier")
        else:
            token, secret = create_token(actor=row.user, name=row.token_name,
                                         expires_in_days=row.token_days)
            row.token = token
            row.save(update_fields=["used_at", "token"])
            audit.record(actor=row.user, action="cli_login.redeemed", obj=row, before=before,
                         after={**audit.snapshot(row, CLI_LOGIN_FIELDS), "token": str(token.pk)})
    if refusal is not None:
        raise refusal  # after the commit: the spent code stays spent
    return token, secret


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
