"""REST framework plumbing shared by every app: pagination and the error format.

Errors follow ``{"detail": "...", "code": "..."}``; validation errors keep DRF's
``{"field": ["message", ...]}``. Domain errors raised by services map to their HTTP status.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, parsers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError

NUL = "\x00"


def nul_location(data: Any) -> str | None:
    """Where a NUL character sits in parsed JSON (keys included), e.g. ``$.tags[2]``, or None.
    Iterative: a deeply nested body must not exhaust the stack here either."""
    pending: list[tuple[str, Any]] = [("$", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            if NUL in value:
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    return where
                pending.append((f"{where}.{key}", item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing what the database could not store (a NUL character: PostgreSQL
    text and jsonb cannot hold one) and bodies nested too deeply to parse, as 400s."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON nested too deeply.") from None
        where = nul_location(data)
        if where is not None:
            raise exceptions.ParseError(f"NUL characters (\\u0000) are not allowed (at {where}).")
        return data


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        # Invalid input names its field like serializer errors do; any other refusal (404,
        # 409…) is {"detail", "code"} whatever it concerns, so each status has one shape.
        if exc.field and exc.status_code == status.HTTP_400_BAD_REQUEST:
            body: dict[str, Any] = {exc.field: [exc.message]}
        else:
            body = {"detail": exc.message, "code": exc.code, **exc.extra}
            if exc.field:
                body["field"] = exc.field
        return Response(body, status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ParseError):
        response.data = {"detail": f"Malformed request body: {exc.detail}", "code": "parse_error"}
    elif isinstance(exc, exceptions.APIException) and isinstance(response.data, dict) \
            and "detail" in response.data and "code" not in response.data:
        codes = exc.get_codes()
        response.data["code"] = codes if isinstance(codes, str) else "error"
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 404 (a path no URL pattern matches, e.g. a malformed name in it): JSON under
    /api/, like every other API error; the portal's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400 (e.g. a request Django itself refuses before any view): JSON under /api/."""
    if _is_api(request):
        return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)
