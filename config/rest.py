"""REST framework plumbing shared by every app: pagination and the error format.

Errors follow ``{"detail": "...", "code": "..."}``; validation errors keep DRF's
``{"field": ["message", ...]}``. Domain errors raised by services map to their HTTP status.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import models
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


_UUID = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


class Router(SimpleRouter):
    """``SimpleRouter`` whose detail routes match only well-formed primary keys.

    DRF's default lookup pattern ``[^/.]+`` let ``/alert-rules/null,null/`` reach a view that
    filters an integer pk with it (``ValueError``: a 500). Unless a viewset sets its own
    ``lookup_value_regex`` or looks up by another field, the pattern follows the model's primary
    key — digits or a UUID — so a malformed id is a 404 before any view code runs.
    """

    def get_lookup_regex(self, viewset: Any, lookup_prefix: str = "") -> str:
        if (getattr(viewset, "lookup_value_regex", None) is None
                and getattr(viewset, "lookup_field", "pk") in ("pk", "id")):
            pattern = _primary_key_pattern(viewset)
            if pattern:
                kwarg = getattr(viewset, "lookup_url_kwarg", None) or viewset.lookup_field
                return self._base_pattern.format(lookup_prefix=lookup_prefix,
                                                 lookup_url_kwarg=kwarg, lookup_value=pattern)
        return super().get_lookup_regex(viewset, lookup_prefix)


def _primary_key_pattern(viewset: Any) -> str | None:
    queryset = getattr(viewset, "queryset", None)
    if queryset is None:
        return None
    pk = queryset.model._meta.pk
    if isinstance(pk, models.IntegerField):  # AutoField, BigAutoField, …
        return "[0-9]+"
    if isinstance(pk, models.UUIDField):
        return _UUID
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        if exc.field:
            body: dict[str, Any] = {exc.field: [exc.message]}
        else:
            body = {"detail": exc.message, "code": exc.code, **exc.extra}
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
