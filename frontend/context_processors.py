from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from notifications.models import Notification
from teams.roles import is_platform_admin

from . import nav


def portal(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    unread = 0
    if user is not None and user.is_authenticated:
        unread = Notification.objects.unread().filter(user=user).count()
    return {
        "modelport_version": settings.MODELPORT_VERSION,
        "modelport_base_url": settings.MODELPORT_BASE_URL.rstrip("/"),
        "is_platform_admin": is_platform_admin(user),
        "unread_notifications": unread,
        # Which navigation links to show (frontend/nav.py); worked out only when a page's
        # navigation is rendered, not for htmx fragments.
        "nav": SimpleLazyObject(lambda: nav.visible(request)) if user is not None else {},
    }
