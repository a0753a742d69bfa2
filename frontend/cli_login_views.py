"""``/cli/login/``: the page ``modelport login --sso`` opens. A signed-in user (password or SSO:
any sign-in that makes a session) allows the command line to act as them; the browser then
goes to the CLI's loopback address with a one-time code (``teams.services.approve_cli_login``).

Only a POST (with Django's CSRF check) mints a code: a link alone, or a cross-site page, never
does. The redirect always targets 127.0.0.1 at the port the CLI gave.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from core.errors import DomainError
from teams import cli_login, services

from .requests import AuthenticatedRequest

TEMPLATE = "frontend/cli_login.html"


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def cli_login_page(request: AuthenticatedRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else request.GET
    try:
        port = cli_login.check_port(data.get("port"))
        state = cli_login.check_state(data.get("state"))
        challenge = cli_login.check_challenge(data.get("code_challenge"))
        name = cli_login.check_token_name(data.get("name"))
        days = cli_login.check_days(data.get("expires_in_days"))
    except DomainError as exc:
        return render(request, TEMPLATE, {"error": exc.message}, status=400)
    callback = cli_login.callback_url(port)
    if request.method == "POST":
        if request.POST.get("decision") != "allow":
            refused = urlencode({"error": "access_denied", "state": state})
            return HttpResponseRedirect(f"{callback}?{refused}")
        try:
            code = services.approve_cli_login(actor=request.user, code_challenge=challenge,
                                              token_name=name, expires_in_days=days)
        except DomainError as exc:
            return render(request, TEMPLATE, {"error": exc.message}, status=exc.status_code)
        return HttpResponseRedirect(f"{callback}?{urlencode({'code': code, 'state': state})}")
    lifetime = days or settings.MODELPORT_TOKEN_DEFAULT_DAYS
    response = render(request, TEMPLATE, {
        "port": port, "state": state, "code_challenge": challenge, "name": name,
        "expires_in_days": days or "", "expires_at": timezone.now() + timedelta(days=lifetime),
    })
    # The form's answer redirects to the CLI: the page's policy must let the form go there.
    response._csp_update = {"form-action": [f"http://127.0.0.1:{port}"]}  # type: ignore[attr-defined]
    return response
