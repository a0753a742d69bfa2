"""The portal's main navigation: which pages a user may open.

Each entry names its page and the predicate that page itself checks (``teams.access``'s
``may_*`` functions, the console's own ``has_permission``), so a link is shown exactly when
following it would not end in "Not allowed". ``tests/frontend/test_nav_roles.py`` follows every
shown link per role (200) and every hidden one (refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import admin
from django.http import HttpRequest

from teams.access import may_manage_users, may_read_audit_log


def _signed_in(request: HttpRequest) -> bool:
    return bool(request.user.is_authenticated)


@dataclass(frozen=True)
class NavPage:
    key: str
    url_name: str
    may_open: Callable[[HttpRequest], bool]


PAGES = (
    NavPage("dashboard", "frontend:dashboard", _signed_in),
    NavPage("models", "registry:models", _signed_in),
    NavPage("monitoring", "monitoring:index", _signed_in),
    NavPage("deployments", "deployments:list", _signed_in),
    NavPage("jobs", "jobs:list", _signed_in),
    NavPage("teams", "frontend:teams", _signed_in),
    NavPage("users", "frontend:users", lambda request: may_manage_users(request.user)),
    NavPage("tokens", "frontend:tokens", _signed_in),
    NavPage("requests", "frontend:quota-requests", _signed_in),
    NavPage("capacity", "frontend:capacity", _signed_in),
    NavPage("audit", "frontend:audit", lambda request: may_read_audit_log(request.user)),
    NavPage("notifications", "frontend:notifications", _signed_in),
    NavPage("api", "api-v1:docs", lambda request: True),
    # Django's admin site decides itself (active staff); its views redirect others to its login.
    NavPage("console", "admin:index", lambda request: admin.site.has_permission(request)),
)


def visible(request: HttpRequest) -> dict[str, bool]:
    """``{key: may open}`` for every page of the navigation."""
    if not request.user.is_authenticated:
        return {page.key: False for page in PAGES}
    return {page.key: page.may_open(request) for page in PAGES}
