"""Look-ups that enforce visibility and role: other teams' objects are 404, too-low roles 403."""

from __future__ import annotations

from core.errors import NotFound, PermissionDenied

from .models import Team
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
