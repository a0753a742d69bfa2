"""Brute-force protection of sign-in (django-axes): what a locked-out client is told.

Axes counts failed sign-ins of the portal, the console and HTTP Basic at ``POST
/api/v1/tokens/`` (settings ``AXES_*``, from ``MODELPORT_LOGIN_*``). Once a username/IP
reaches the limit, further attempts are refused — even with the right password — until the
cool-off has passed: the API answers 429 ``{"detail", "code": "locked_out"}`` with
``Retry-After``; a page answers 429 with the login form and the same message. Each lockout is
also written to the audit log; axes' own records are in the console (Axes → Access attempts).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off
from axes.signals import user_locked_out
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Max
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from rest_framework import exceptions

from . import audit, sso

LOGIN_TEMPLATE = "frontend/login.html"


class LockedOut(exceptions.APIException):
    """429 with ``Retry-After`` (DRF sets the header from ``wait``)."""

    status_code = 429
    default_code = "locked_out"

    def __init__(self, detail: str, wait: int) -> None:
        super().__init__(detail, "locked_out")
        self.wait = wait


def retry_after(request: Any, credentials: dict | None) -> int:
    """Seconds until this username/IP may try again: the cool-off counts from the last failure
    that was recorded (refused attempts during a lockout do not extend it)."""
    cool_off = get_cool_off(request) or timedelta(0)
    handler = AxesProxyHandler.get_implementation()
    latest = None
    get_attempts = getattr(handler, "get_user_attempts", None)
    if get_attempts is not None:
        times = [attempts.aggregate(last=Max("attempt_time"))["last"]
                 for attempts in get_attempts(request, credentials)]
        latest = max((t for t in times if t is not None), default=None)
    remaining = (latest + cool_off - timezone.now()) if latest else cool_off
    return max(1, math.ceil(remaining.total_seconds()))


def message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (f"Too many failed sign-ins for this username from your address. Try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}, or ask a platform admin to unlock "
            "it (console → Axes → Access attempts).")


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: JSON under /api/, the login page with the message elsewhere."""
    seconds = retry_after(request, credentials)
    text = message(seconds)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": text, "code": "locked_out"}, status=429)
    else:
        username = get_client_username(request, credentials) or ""
        form = AuthenticationForm(request, initial={"username": username})
        response = render(request, LOGIN_TEMPLATE, {
            "form": form, "lockout": text, "sso_enabled": sso.enabled(),
            "sso_provider": sso.provider_name(), "password_for_all": sso.password_for_all(),
            "next": request.POST.get("next", request.GET.get("next", "")),
        }, status=429)
    response["Retry-After"] = str(seconds)
    return response


def refuse_if_locked_out(request: Any, credentials: dict | None) -> None:
    """For DRF: axes flags its own request wrapper, which the middleware never sees, so the
    authentication class asks here after a failed sign-in."""
    if getattr(request, "axes_locked_out", False):
        seconds = retry_after(request, credentials)
        raise LockedOut(message(seconds), seconds)


def signed_in(request: Any, user: Any) -> None:
    """A correct password over HTTP Basic counts as a sign-in for axes, as a portal login does:
    the failure count is reset (``AXES_RESET_ON_SUCCESS``) and the access is logged."""
    AxesProxyHandler.user_logged_in(sender=type(user), request=request, user=user)


def _record_lockout(sender: Any, request: Any = None, username: str | None = None,
                    ip_address: str | None = None, **kwargs: Any) -> None:
    audit.record(actor=None, action="auth.locked_out", object_type="user",
                 object_id=username or "", object_repr=f"{username or '?'} from {ip_address}")


def connect_signals() -> None:
    receiver(user_locked_out, dispatch_uid="modelport-audit-lockout")(_record_lockout)


def not_a_password_attempt(request: Any, credentials: dict | None) -> bool:
    """``AXES_WHITELIST_CALLABLE``: a single sign-on callback is not a password guess (the
    provider checks the password and throttles it), so a refused one — a deactivated account,
    a bad token — is neither counted nor locked out, and never locks out the password sign-ins
    of others from the same address."""
    path = getattr(request, "path", "") or ""
    return path == reverse("oidc_authentication_callback") and "username" not in (credentials or {})
