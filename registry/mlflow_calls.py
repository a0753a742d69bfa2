"""The vocabulary of the MLflow route's rules (``mlflow_policy``) and of Modelport's answers to
MLflow's registry API (``mlflow_registry_api``): a refusal in MLflow's error format, the caller,
a rule's plan, a classified call, and request parameters as MLflow reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from teams.models import Membership
from teams.roles import is_platform_admin

from .mlflow_teams import writer_teams

UNAUTHENTICATED, PERMISSION_DENIED = "UNAUTHENTICATED", "PERMISSION_DENIED"
INVALID_PARAMETER_VALUE, ENDPOINT_NOT_FOUND = "INVALID_PARAMETER_VALUE", "ENDPOINT_NOT_FOUND"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


class Refusal(Exception):
    """An answer in MLflow's error format, given instead of forwarding."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def denied(message: str) -> Refusal:
    return Refusal(403, PERMISSION_DENIED, message)


def invalid(message: str) -> Refusal:
    return Refusal(400, INVALID_PARAMETER_VALUE, message)


def missing(message: str) -> Refusal:
    return Refusal(404, RESOURCE_DOES_NOT_EXIST, message)


def exists(message: str) -> Refusal:
    return Refusal(400, RESOURCE_ALREADY_EXISTS, message)


@dataclass
class Caller:
    user: Any
    via_token: bool  # False: a portal session (the UI), which only reads

    @cached_property
    def admin(self) -> bool:
        return is_platform_admin(self.user)

    @cached_property
    def member(self) -> bool:
        return self.admin or Membership.objects.filter(user=self.user).exists()

    @cached_property
    def writer(self) -> bool:
        return self.admin or bool(writer_teams(self.user))

    @property
    def name(self) -> str:
        return self.user.get_username()


@dataclass
class Plan:
    """An allowed write: an optional rewritten body, and what to record from MLflow's answer."""

    body: dict[str, Any] | None = None
    after: Callable[[dict[str, Any]], None] | None = None


Rule = Callable[[Caller, dict[str, Any], dict[str, str]], Plan]


@dataclass(frozen=True)
class Call:
    upstream: str  # the canonical path forwarded, percent-encoded, no query
    endpoint: str
    write: bool = False
    rule: Rule | None = None  # writes, and reads with a body to check (GraphQL)
    json_body: bool = False  # the body is JSON the rule reads (else it streams through)
    args: dict[str, str] = field(default_factory=dict)
    local: bool = False  # answered by Modelport itself (``mlflow_registry_api``), not forwarded


# --- Parameters: as MLflow reads them ---------------------------------------------------------
def parse_json(body: bytes) -> dict[str, Any]:
    """The request parameters as MLflow's handlers see them (``json.loads`` of the bytes, a
    string decoded once more), refusing what MLflow would silently read as ``{}``."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
        if isinstance(value, str):  # MLflow accepts double-encoded JSON from old clients
            value = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise invalid("The request body is not JSON.") from None
    if not isinstance(value, dict):
        raise invalid("The request body must be a JSON object.")
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def param(params: dict[str, Any], *names: str) -> str:
    """A field MLflow accepts under several names (``run_id``, ``runId``, ``run_uuid``, …): every
    spelling given must agree, or the call is refused — the rule must judge what MLflow acts on."""
    values = {str(params[key]) for name in names for key in {name, _camel(name)}
              if key in params and params[key] not in (None, "")}
    if len(values) > 1:
        raise invalid(f"{' / '.join(names)} given twice with different values.")
    return values.pop() if values else ""


def tag_keys(params: dict[str, Any]) -> list[str]:
    keys = [str(t.get("key", "")) for t in params.get("tags") or [] if isinstance(t, dict)]
    if "key" in params:
        keys.append(str(params["key"]))
    return keys


def refuse_platform_tags(keys: list[str], *, allow_team: bool = False) -> None:
    for key in keys:
        if key.startswith("modelport.") and not (allow_team and key == "modelport.team"):
            raise denied(f"Tag '{key}': tags modelport.* are set by the platform, not through "
                         "MLflow.")
