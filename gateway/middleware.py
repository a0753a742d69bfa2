"""``GatewayMiddleware``: the gateway's Django path, for installs that run gunicorn alone (with
the edge in front, the edge answers the same paths itself). Listed in ``MIDDLEWARE`` after the
request-id middleware; the view it calls is ``gateway.routes.invocations``."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .routes import invocations

_SERVE_PATH = re.compile(r"^/serve/([^/]+)/invocations$")


class GatewayMiddleware:
    """Answers ``/serve/<name>/invocations`` right here, placed after the request-id middleware:
    the gateway needs no session, user, CSRF or messages middleware and no URL resolving (it
    authenticates its own Bearer tokens), and skipping them halves its CPU per request. Every
    other path goes on down the stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = _SERVE_PATH.match(request.path_info)
        if match is None:
            return self.get_response(request)
        return invocations(request, match.group(1))
