"""Team roles and what each allows. The single source for role checks in services and views."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    ENGINEER = "engineer", "Engineer"
    MAINTAINER = "maintainer", "Maintainer"


_RANK = {Role.VIEWER: 1, Role.ENGINEER: 2, Role.MAINTAINER: 3}


def rank(role: str | None) -> int:
    return _RANK.get(role, 0) if role else 0  # type: ignore[call-overload]


def at_least(role: str | None, minimum: Role) -> bool:
    return rank(role) >= _RANK[minimum]


def is_platform_admin(user) -> bool:
    """Platform admins are staff users: they run the platform and may use Django admin."""
    return bool(user and user.is_authenticated and user.is_active and
                (user.is_staff or user.is_superuser))
