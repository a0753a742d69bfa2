"""Single sign-on's writes (``teams.oidc`` calls them at each OpenID Connect sign-in): the
account bound to the provider's (issuer, sub), and memberships and the admin flag that follow
the provider's groups. The only writers of ``SsoIdentity`` and ``sso_managed`` memberships; kept
apart from ``teams.services`` by topic, with the same rules (keyword arguments, audited)."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from core import request_context
from core.errors import Conflict, InvalidInput

from . import audit, sso
from .models import Membership, SsoIdentity, Team
from .services import MEMBERSHIP_FIELDS, USER_FIELDS

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
