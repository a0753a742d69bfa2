from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from teams.roles import is_platform_admin


def portal(request: HttpRequest) -> dict:
    return {
        "modelport_version": settings.MODELPORT_VERSION,
        "is_platform_admin": is_platform_admin(getattr(request, "user", None)),
    }
