"""``GatewayMiddleware``: the gateway's Django path, for installs that run gunicorn alone (with
the edge in front, the edge answers the same paths itself). Listed in ``MIDDLEWARE`` after the
request-id middleware; the views it calls are in ``gateway.views``."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .views import invocations, serve_v2

_SERVE_PATH = re.compile(r"^/serve/([^/]+)(/invocations|/v2(?:/.*)?)$")


class GatewayMiddleware:
    """Answers ``/serve/<name>/invocations`` and ``/serve/<name>/v2/…`` right here, placed
    after the request-id middleware: the gateway needs no session, user, CSRF or messages
    middleware and no URL resolving (it authenticates its own Bearer tokens), and skipping
    them halves its CPU per request. Every other path goes on down the stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = _SERVE_PATH.match(request.path_info)
        if match is None:
            return self.get_response(request)
        if match.group(2) == "/invocations":
            return invocations(request, match.group(1))
        return serve_v2(request, match.group(1), match.group(2))
