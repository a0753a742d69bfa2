"""Middleware that binds the request context (request id, source, client IP)."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from . import request_context
from .errors import NotFound, PermissionDenied

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address. Behind the edge (``config/edge.py``) gunicorn listens on a unix
    socket, so ``REMOTE_ADDR`` is empty and the edge's last ``X-Forwarded-For`` entry — the peer
    it saw — is the caller; only processes that can open the socket can send that. On TCP the
    header is ignored: anyone could forge it."""
    remote = request.META.get("REMOTE_ADDR")
    if remote:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    return forwarded.rsplit(",", 1)[-1].strip() or None


def _source_for(path: str) -> str:
    if path.startswith("/api/") or path.startswith("/serve/"):
        return "api"
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/mlflow/"):
        return "mlflow"
    return "portal"


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = (incoming if _VALID_REQUEST_ID.match(incoming)
                      else request_context.new_request_id())
        ctx = request_context.RequestContext(
            request_id=request_id,
            source=_source_for(request.path),
            ip=client_ip(request),
        )
        request.request_id = request_id  # type: ignore[attr-defined]
        with request_context.bind(ctx):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class DomainErrorMiddleware:
    """Portal pages: a service's NotFound is a 404 page, PermissionDenied a 403 — never a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        if isinstance(exception, NotFound):
            raise Http404(exception.message) from exception
        if isinstance(exception, PermissionDenied):
            raise DjangoPermissionDenied(exception.message) from exception


class ApiRequestGuardMiddleware:
    """API requests with a NUL character (U+0000) in the path or the query string, or a query
    parameter given twice. PostgreSQL text cannot hold a NUL, so no object is named with one
    (404) and no filter value may carry one (400) — answered here, before a lookup would make
    the database raise. No API parameter takes several values, and reading one of two silently
    would hide the client's mistake (400)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            if "\x00" in request.path:
                return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
            if any("\x00" in key or any("\x00" in value for value in values)
                   for key, values in request.GET.lists()):
                return JsonResponse({"detail": "NUL characters (\\u0000) are not allowed in "
                                               "query parameters.", "code": "invalid"},
                                    status=400)
            repeated = sorted(key for key, values in request.GET.lists() if len(values) > 1)
            if repeated:
                return JsonResponse({"detail": f"Give each query parameter once (repeated: "
                                               f"{', '.join(repeated)}).", "code": "invalid"},
                                    status=400)
        return self.get_response(request)
