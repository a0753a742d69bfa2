"""The OpenAPI schema's error responses, added to every operation by one rule.

drf-spectacular documents what a view returns when it succeeds; the errors come from elsewhere
(``core.rest.exception_handler``, authentication, pagination, services' domain errors), so
they are added here from the shape of each operation instead of by hand on every view:

- 400 when the operation takes a request body or query parameters (validation, bad JSON);
- 401 and 403 when it needs authentication (no or bad token; a role that forbids it);
- 404 when it has path parameters or pages through a list (``?page=`` past the end);
- 409 when it changes state (names taken, quotas, the state an object is in);
- 415 when it takes a request body (a content type it does not parse).

A view adds statuses its shape does not imply, or removes ones it cannot return, with
``api_errors(413, without=[409])`` on the handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from drf_spectacular import openapi
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

F = TypeVar("F", bound=Callable[..., Any])

MUTATIONS = {"POST", "PUT", "PATCH", "DELETE"}
DESCRIPTIONS = {
    400: "The request is malformed or a field is invalid: `{\"field\": [\"message\"]}` (nested "
         "for nested fields) or `{\"detail\", \"code\"}`.",
    401: "No token, or an invalid, expired or revoked one.",
    403: "Your role does not allow this.",
    404: "No such object, or one of a team you cannot see.",
    409: "Conflicts with the current state: a name taken, a quota exceeded, an object in the "
         "wrong state. `detail` says which.",
    413: "The upload or batch is larger than the limit.",
    415: "The request body's content type is not accepted here.",
    429: "Too many requests; retry after the `Retry-After` header's seconds.",
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error: what went wrong, in words and as a code. Some errors add "
                   "machine-readable details (e.g. the numbers of a quota refusal).",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "e.g. not_found, permission_denied, "
                                                  "name_taken, quota_exceeded"},
    },
    "required": ["detail", "code"],
}
_MESSAGES: dict[str, Any] = {"type": "array", "items": {"anyOf": [
    {"type": "string"}, {"type": "object"}]}}
FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Invalid fields: each field's messages; a nested field's errors are an "
                   "object of the same shape (list items by index).",
    "additionalProperties": {"anyOf": [_MESSAGES, {"type": "object"}]},
}


# What str.strip() removes: Python's whitespace (ECMA's \s differs: \x1c-\x1f, \x85, \ufeff).
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{_SPACE}]"


def api_errors(*statuses: int, without: Iterable[int] = ()) -> Callable[[F], F]:
    """Declare error statuses of one handler beyond (or, ``without``, within) the defaults."""
    def mark(handler: F) -> F:
        handler._api_errors = (frozenset(statuses), frozenset(without))  # type: ignore[attr-defined]
        return handler
    return mark


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path: str, path_regex: str, path_prefix: str, method: str,
                      registry: Any) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for status in sorted(self.error_statuses(operation)):
            responses.setdefault(str(status), self._error_response(status))
        for parameter in operation.get("parameters", []):
            # core.rest.Router matches integer primary keys with [0-9]+: they are integers.
            if parameter.get("in") == "path" and parameter.get("schema") == {
                    "type": "string", "pattern": "^[0-9]+$"}:
                parameter["schema"] = {"type": "integer", "minimum": 0}
        return operation

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        """Request strings DRF trims and refuses when blank say so: ``pattern`` needs one
        character that is not whitespace."""
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request":
            properties = schema.get("properties", {})
            for field in serializer.fields.values():
                prop = properties.get(field.field_name)
                if (isinstance(field, serializers.CharField) and not field.allow_blank
                        and field.trim_whitespace and prop and prop.get("type") == "string"
                        and not {"pattern", "format", "enum"} & set(prop)):
                    prop["pattern"] = NOT_BLANK
        return schema

    def error_statuses(self, operation: dict[str, Any]) -> set[int]:
        locations = {p["in"] for p in operation.get("parameters", [])}
        has_body = "requestBody" in operation
        authenticated = bool(operation.get("security")) and {} not in operation["security"]
        statuses: set[int] = set()
        if has_body or "query" in locations:
            statuses.add(400)
        if has_body:
            statuses.add(415)
        if authenticated:
            statuses |= {401, 403}
            if self.method in MUTATIONS:
                statuses.add(409)
        if "path" in locations or (self.method == "GET" and self._is_list_view()
                                   and self._get_paginator() is not None):
            statuses.add(404)
        added, removed = getattr(self._handler(), "_api_errors", (frozenset(), frozenset()))
        return (statuses | added) - removed

    def _handler(self) -> Any:
        action = getattr(self.view, "action", None)
        return getattr(self.view, action or self.method.lower(), None)

    def _component(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA,
                                      object=f"modelport.{name}", schema=schema)
        self.registry.register_on_missing(component)
        return component.ref

    def _error_response(self, status: int) -> dict[str, Any]:
        error = self._component("Error", ERROR_SCHEMA)
        schema: dict[str, Any] = error
        if status == 400:
            schema = {"anyOf": [self._component("FieldErrors", FIELD_ERRORS_SCHEMA), error]}
        response: dict[str, Any] = {
            "description": DESCRIPTIONS.get(status, "An error."),
            "content": {"application/json": {"schema": schema}},
        }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"},
                                                        "description": "Bearer realm=\"api\""}}
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                   "description": "Seconds to wait."}}
        return response
