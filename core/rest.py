"""REST framework plumbing shared by every app: pagination and the error format.

Errors follow ``{"detail": "...", "code": "..."}``; validation errors keep DRF's
``{"field": ["message", ...]}``. Domain errors raised by services map to their HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_UP, Decimal
from typing import TYPE_CHECKING, Any

from django import forms as django_forms
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import models
from django.http import Http404
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError


class Pagination(PageNumberPagination):
    """Pages of 50 (``?page_size=`` 1-500). A page_size that is not such a number is refused
    (DRF would silently use the default)."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise exceptions.ValidationError({self.page_size_query_param: [
                f"A whole number from 1 to {self.max_page_size}."]})
        return int(raw)

    def get_page_number(self, request, paginator) -> int:
        raw = request.query_params.get(self.page_query_param, "1")
        if not raw.isdigit() or int(raw) < 1:
            raise exceptions.NotFound("Invalid page: a whole number from 1.")
        return int(raw)

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
            elif parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters


class FilterBackend(DjangoFilterBackend):
    """django-filter for the API: a typed filter given empty (``?since=``) or a boolean that is
    not ``true``/``false`` is refused, not ignored as the portal's forms need."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            errors = {}
            for name, flt in filterset_class.base_filters.items():
                value = request.query_params.get(name)
                if value == "" and not isinstance(flt.field, django_forms.CharField):
                    errors[name] = ["May not be empty."]
                elif value is not None and isinstance(flt.field, django_forms.NullBooleanField) \
                        and value not in ("true", "false"):
                    errors[name] = ["Must be true or false."]
            if errors:
                raise exceptions.ValidationError(errors)
        return super().filter_queryset(request, queryset, view)


# --- Strict JSON input ---------------------------------------------------------------------
_KINDS = (  # (field classes, accepted Python types, DRF-style message)
    ((serializers.BooleanField,), (bool,), "Must be a valid boolean."),
    ((serializers.IntegerField,), (int,), "A valid integer is required."),
    ((serializers.FloatField, serializers.DecimalField), (int, float),
     "A valid number is required."),
    ((serializers.ListField, serializers.ListSerializer, serializers.MultipleChoiceField),
     (list,), 'Expected a list of items but got type "{type}".'),
    ((serializers.DictField, serializers.Serializer), (dict,),
     'Expected a dictionary of items but got type "{type}".'),
    ((serializers.CharField, serializers.ChoiceField, serializers.DateTimeField,
      serializers.DateField, serializers.UUIDField), (str,), "Not a valid string."),
)


def type_error(field: serializers.Field, value: Any) -> Any:
    """DRF coerces (``0`` becomes ``"0"``, ``false`` becomes ``0.0``); a JSON API takes the
    types its schema states. The error for ``value`` in ``field``, or None."""
    if value is None or isinstance(field, serializers.JSONField):
        return None
    for classes, types, message in _KINDS:
        if isinstance(field, classes):
            if isinstance(field, serializers.IntegerField) and isinstance(value, float) \
                    and value.is_integer():
                return None  # 2.0 is an integer in JSON Schema too
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                return [message.format(type=type(value).__name__)]
            if isinstance(field, serializers.ListField) and isinstance(value, list) \
                    and not isinstance(field.child, serializers.JSONField | serializers.Serializer):
                items = {str(i): e for i, item in enumerate(value)
                         if (e := type_error(field.child, item))}
                return items or None
            return None
    return None


if TYPE_CHECKING:  # what the mixin is mixed into, for the checker only
    _Serializer = serializers.Serializer
else:
    _Serializer = object


class StrictTypes(_Serializer):
    """Mixin for serializers of JSON bodies: every field takes only its JSON type."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            # What ``_writable_fields`` yields, by the name each field is bound to.
            errors = {name: error for name, field in self.fields.items()
                      if not field.read_only and name in data
                      and (error := type_error(field, data[name]))}
            if errors:
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)


class NoUnknownFields(_Serializer):
    """Mixin for bodies where a misspelt field must not pass silently (DRF drops unknown keys):
    a key created with ``"rate_per_s": 2`` instead of ``rate_limit`` would be unlimited."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(name) for name in data if name not in known)
            if unknown:
                raise exceptions.ValidationError({
                    name: [f"Unknown field '{name}'; expected one of: "
                           f"{', '.join(sorted(known))}."] for name in unknown})
        return super().to_internal_value(data)


class CoresField(serializers.DecimalField):
    """CPU cores as a JSON number, rounded up to the field's step (millicores by default:
    0.0001 → 0.001) rather than refused for its digits — a float has more of them than any
    quota needs, and rounding up keeps a positive amount positive."""

    # Always numbers here (``__init__`` defaults them), where the base allows None.
    max_digits: int
    decimal_places: int

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 12)
        kwargs.setdefault("decimal_places", 3)
        kwargs.setdefault("min_value", Decimal(0))
        kwargs.setdefault("max_value", Decimal(100000))
        super().__init__(coerce_to_string=False, **kwargs)

    def validate_precision(self, value: Decimal) -> Decimal:
        if value.adjusted() >= self.max_digits - self.decimal_places:
            self.fail("max_whole_digits", max_whole_digits=self.max_whole_digits)
        return super().validate_precision(
            value.quantize(Decimal(1).scaleb(-self.decimal_places), rounding=ROUND_UP))


_UUID = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


class Router(SimpleRouter):
    """``SimpleRouter`` whose detail routes match only well-formed primary keys.

    DRF's default lookup pattern ``[^/.]+`` let ``/alert-rules/null,null/`` reach a view that
    filters an integer pk with it (``ValueError``: a 500). Unless a viewset sets its own
    ``lookup_value_regex`` or looks up by another field, the pattern follows the model's primary
    key — digits or a UUID — so a malformed id is a 404 before any view code runs.
    """

    _base_pattern: str  # set by SimpleRouter.__init__; the stubs do not declare it

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
    if isinstance(exc, exceptions.ValidationError) and isinstance(response.data, list):
        # A list body's errors (one entry per item) or a bare message: an object, as the
        # schema's FieldErrors says every 400 of a field is.
        key = "items" if any(isinstance(e, dict) for e in response.data) else "non_field_errors"
        response.data = {key: response.data}
    if isinstance(exc, exceptions.ParseError):
        response.data = {"detail": f"Malformed request body: {exc.detail}", "code": "parse_error"}
    elif isinstance(exc, exceptions.APIException) and isinstance(response.data, dict) \
            and "detail" in response.data and "code" not in response.data:
        codes = exc.get_codes()
        response.data["code"] = codes if isinstance(codes, str) else "error"
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def identifier(validator: Any, what: str, **kwargs: Any) -> serializers.RegexField:
    """A name checked against a model's RegexValidator, as the schema's ``pattern`` too: not
    trimmed (a name with spaces is not the name without them), ``$`` as ECMA reads it (no
    trailing newline)."""
    pattern = validator.regex.pattern
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return serializers.RegexField(pattern, trim_whitespace=False, error_messages={
        "invalid": f"This is not a valid {what}: {validator.message[0].lower()}"
                   f"{validator.message[1:]}"}, **kwargs)


def query(serializer_class: type[serializers.Serializer], request: Any) -> dict[str, Any]:
    """Validated query parameters. A plain dict, not the QueryDict: DRF reads an empty value in
    a QueryDict as "not given" (form semantics); in the API ``?since=`` is a malformed since."""
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
