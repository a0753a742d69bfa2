"""Lets the portal's Log out form reach the identity provider under the Content-Security-Policy.

Log out is a POST whose answer redirects to the provider's end-session endpoint; Chromium
applies ``form-action`` to that redirect, and the policy allows only ``'self'``. While single
sign-on is on, each response's policy also names the provider's origin there (django-csp's
per-response ``_csp_update``). Nothing changes while it is off."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import sso


class SsoFormActionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        origins = sso.form_action_origins()
        if origins:
            update = dict(getattr(response, "_csp_update", None) or {})
            update["form-action"] = [*update.get("form-action", []), *origins]
            response._csp_update = update  # type: ignore[attr-defined]
        return response
