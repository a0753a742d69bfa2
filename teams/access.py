"""Look-ups that enforce visibility and role: other teams' objects are 404, too-low roles 403."""

from __future__ import annotations

from core.errors import NotFound, PermissionDenied

from .models import Membership, Team
from .roles import Role, at_least, is_platform_admin


def get_visible_team(user, slug: str) -> Team:
    team = Team.objects.visible_to(user).filter(slug=slug).first()
    if team is None:
        raise NotFound(f"No team '{slug}'.")
    return team


def require_platform_admin(user, action: str) -> None:
    if not is_platform_admin(user):
        raise PermissionDenied(f"Only platform admins may {action}.")


def require_team_role(user, team: Team, minimum: Role, action: str) -> None:
    """Platform admins pass; members need at least ``minimum``; non-members get a 404."""
    if is_platform_admin(user):
        return
    role = team.role_of(user)
    if role is None:
        raise NotFound(f"No team '{team.slug}'.")
    if not at_least(role, minimum):
        raise PermissionDenied(
            f"Your role in team '{team.slug}' is {role}; {action} needs {minimum.value} or higher."
        )


# --- Who may open which page: one predicate per page, used by the page (or API) and by the
# portal's navigation alike (frontend/nav.py), so a link is shown exactly when it opens.
def may_read_audit_log(user) -> bool:
    """Platform admins (everything) and maintainers of at least one team (their teams')."""
    if is_platform_admin(user):
        return True
    if not user or not user.is_authenticated:
        return False
    return Membership.objects.filter(user=user, role=Role.MAINTAINER).exists()


def may_manage_users(user) -> bool:
    """Creating and inviting users: platform admins only."""
    return is_platform_admin(user)
