"""What the MLflow route lets through, decided before anything reaches the tracking server.

A path is classified once (``classify``) into the canonical path that is forwarded — the same
one that was checked, so ``..``, ``//`` or percent-encoding cannot make MLflow act on another
endpoint than the one judged — and a rule. ``/api/…`` and ``/ajax-api/…`` (and every API
version) map to the same endpoint name and rule. Deny by default: an endpoint that is neither a
known read nor a known write below is refused, so MLflow features the platform does not offer
(webhooks, the LLM gateway and its secrets, jobs, the assistant, traces written by clients, …)
are out of reach even as MLflow grows.

- Reads (every ``GET`` of the tracking API but the refused families, the searches that MLflow
  spells ``POST``, the UI, artifacts, GraphQL queries): any member of a team.
- Tracking writes (experiments, runs, logged models, artifact uploads): engineers and
  maintainers; a change to an existing object only by the user who created it through this route
  (``MlflowObject``), because a run's or logged model's artifacts are what imports read.
- Model registry writes: ``mlflow_registry_rules`` (checked against the Modelport model).
- Tags ``modelport.*`` are the platform's: refused, but for ``modelport.team`` on registry
  objects, which the registry rules check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote

from teams.models import Membership
from teams.roles import is_platform_admin

from .mlflow_teams import writer_teams
from .models import MlflowObject, MlflowObjectKind

UNAUTHENTICATED, PERMISSION_DENIED = "UNAUTHENTICATED", "PERMISSION_DENIED"
INVALID_PARAMETER_VALUE, ENDPOINT_NOT_FOUND = "INVALID_PARAMETER_VALUE", "ENDPOINT_NOT_FOUND"


class Refusal(Exception):
    """An answer in MLflow's error format, given instead of forwarding."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def denied(message: str) -> Refusal:
    return Refusal(403, PERMISSION_DENIED, message)


def invalid(message: str) -> Refusal:
    return Refusal(400, INVALID_PARAMETER_VALUE, message)


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


# --- Tracking writes --------------------------------------------------------------------------
def need_writer(caller: Caller, action: str) -> None:
    if not caller.writer:
        raise denied(f"{action} needs the engineer or maintainer role in a team; "
                     f"'{caller.name}' has neither.")


def need_owner(caller: Caller, kind: str, key: str, what: str) -> None:
    need_writer(caller, f"Changing {what}")
    if not key:
        raise invalid(f"Name the {what} (its id is missing).")
    if caller.admin:
        return
    owner = (MlflowObject.objects.filter(kind=kind, key=key)
             .values_list("created_by", flat=True).first())
    if owner != caller.user.pk:
        raise denied(f"{what.capitalize()} {key} was not created by '{caller.name}' through "
                     "Modelport; only its creator (or a platform admin) may change it.")


def _recorder(kind: str, caller: Caller, pick: Callable[[dict], Any]) -> Callable[[dict], None]:
    from .mlflow_services import record_created

    def after(answer: dict[str, Any]) -> None:
        key = pick(answer)
        if key:
            record_created(actor=caller.user, kind=kind, key=str(key))

    return after


def create_experiment(caller: Caller, params: dict, args: dict) -> Plan:
    need_writer(caller, "Creating an experiment")
    if param(params, "artifact_location"):
        raise denied("artifact_location cannot be set through Modelport: experiments keep their "
                     "artifacts in the tracking server's own store.")
    refuse_platform_tags(tag_keys(params))
    return Plan(after=_recorder(MlflowObjectKind.EXPERIMENT, caller,
                                lambda a: a.get("experiment_id")))


def own_experiment(caller: Caller, params: dict, args: dict) -> Plan:
    refuse_platform_tags(tag_keys(params))
    need_owner(caller, MlflowObjectKind.EXPERIMENT, param(params, "experiment_id"),
               "experiment")
    return Plan()


def create_run(caller: Caller, params: dict, args: dict) -> Plan:
    """Any engineer may start a run, in any experiment; MLflow's ``user_id`` becomes the
    token's user (the client's local login name proves nothing)."""
    need_writer(caller, "Creating a run")
    refuse_platform_tags(tag_keys(params))
    body = {k: v for k, v in params.items() if k not in ("user_id", "userId")}
    body["user_id"] = caller.name
    tags = [t for t in params.get("tags") or [] if isinstance(t, dict)
            and t.get("key") != "mlflow.user"]
    body["tags"] = [*tags, {"key": "mlflow.user", "value": caller.name}]
    return Plan(body=body, after=_recorder(MlflowObjectKind.RUN, caller,
                                           lambda a: ((a.get("run") or {}).get("info") or {})
                                           .get("run_id")))


def own_run(caller: Caller, params: dict, args: dict) -> Plan:
    refuse_platform_tags(tag_keys(params))
    need_owner(caller, MlflowObjectKind.RUN, param(params, "run_id", "run_uuid"), "run")
    return Plan()


def create_logged_model(caller: Caller, params: dict, args: dict) -> Plan:
    """A logged model names its source run: it must be the caller's, else another team could
    hang a model on someone's run and have ``runs:/<their run>/model`` import it."""
    need_writer(caller, "Logging a model")
    refuse_platform_tags(tag_keys(params))
    run_id = param(params, "source_run_id")
    if run_id:
        need_owner(caller, MlflowObjectKind.RUN, run_id, "run")
    return Plan(after=_recorder(MlflowObjectKind.LOGGED_MODEL, caller,
                                lambda a: ((a.get("model") or {}).get("info") or {})
                                .get("model_id")))


def own_logged_model(caller: Caller, params: dict, args: dict) -> Plan:
    refuse_platform_tags([*tag_keys(params), args.get("tag", "")])
    need_owner(caller, MlflowObjectKind.LOGGED_MODEL, args["model_id"], "logged model")
    return Plan()


_RUN_ARTIFACTS = re.compile(r"^[^/]+/(?P<run>[^/]+)/artifacts(?:/|$)")
_MODEL_ARTIFACTS = re.compile(r"^[^/]+/models/(?P<model>[^/]+)/artifacts(?:/|$)")


def own_artifact_path(caller: Caller, params: dict, args: dict) -> Plan:
    """Uploads and deletes in the artifact store go only under the caller's own run or logged
    model (``<experiment>/<run>/artifacts/…``, ``<experiment>/models/<model>/artifacts/…``)."""
    path = args["path"]
    if model := _MODEL_ARTIFACTS.match(path):
        need_owner(caller, MlflowObjectKind.LOGGED_MODEL, model["model"], "logged model")
    elif run := _RUN_ARTIFACTS.match(path):
        need_owner(caller, MlflowObjectKind.RUN, run["run"], "run")
    elif not caller.admin:
        raise denied(f"Artifacts go under a run or a logged model of yours, not {path!r}.")
    return Plan()


TRACKING_WRITES: dict[tuple[str, str], Rule] = {
    ("POST", "experiments/create"): create_experiment,
    **{("POST", f"experiments/{verb}"): own_experiment
       for verb in ("update", "delete", "restore", "set-experiment-tag",
                    "delete-experiment-tag")},
    ("POST", "runs/create"): create_run,
    **{("POST", f"runs/{verb}"): own_run
       for verb in ("update", "delete", "restore", "log-metric", "log-parameter", "set-tag",
                    "delete-tag", "log-batch", "log-model", "log-inputs", "outputs")},
    ("POST", "logged-models"): create_logged_model,
}
_LOGGED_MODEL_WRITE = re.compile(
    r"^logged-models/(?P<model_id>[^/]+)(?:/(?P<sub>params|tags)(?:/(?P<tag>[^/]+))?)?$")
_LOGGED_MODEL_METHODS = {None: {"PATCH", "DELETE"}, "params": {"POST"},
                         "tags": {"PATCH", "DELETE"}}

# Searches MLflow spells POST; reads all the same.
READ_POSTS = {"experiments/search", "runs/search", "logged-models/search",
              "registered-models/get-latest-versions", "experiments/search-datasets",
              "traces/search", "traces/batchGetInfos", "datasets/search"}
# Not offered through Modelport, not even to read (secrets, outbound calls, code execution).
REFUSED_FAMILIES = {"gateway", "gateway-proxy", "webhooks", "assistant", "jobs",
                    "prompt-optimization", "secrets"}
UI_PATHS = re.compile(r"^(?:|health|version|get-artifact|model-versions/get-artifact"
                      r"|static-files/.+)$")
_API = re.compile(r"^(?P<base>api|ajax-api)/(?P<v>[23])\.0/mlflow/(?P<endpoint>.+)$")
_ARTIFACTS = re.compile(
    r"^(?:api|ajax-api)/2\.0/mlflow-artifacts/(?:artifacts(?:/(?P<path>.+))?"
    r"|mpu/(?P<mpu>create|complete|abort)/(?P<mpu_path>.+)|presigned/(?P<presigned>.+))$")
READ_METHODS = ("GET", "HEAD")


def canonical(rest: str) -> str:
    """Refuse paths whose segments could be read two ways; the forwarded path is re-encoded
    from the decoded, checked segments."""
    if "\x00" in rest or "\\" in rest:
        raise Refusal(404, ENDPOINT_NOT_FOUND, "Not an MLflow path.")
    if rest and any(part in ("", ".", "..") for part in rest.split("/")):
        raise Refusal(404, ENDPOINT_NOT_FOUND,
                      "Paths with empty, '.' or '..' segments are not forwarded.")
    return "/" + quote(rest, safe="/-_.~@:")


def classify(method: str, rest: str) -> Call:
    """The endpoint ``method /mlflow/<rest>`` names, and the rule that decides it."""
    from . import mlflow_registry_rules

    upstream = canonical(rest)
    read = method in READ_METHODS
    if UI_PATHS.match(rest) and read:
        return Call(upstream=upstream, endpoint=rest or "ui")
    if rest == "graphql" and method in ("GET", "POST"):
        return Call(upstream=upstream, endpoint="graphql", rule=graphql_rule,
                    json_body=method == "POST")
    if artifacts := _ARTIFACTS.match(rest):
        path = artifacts["path"] or artifacts["mpu_path"] or ""
        if read:
            return Call(upstream=upstream, endpoint="mlflow-artifacts")
        if (artifacts["path"] and method in ("PUT", "DELETE")) or \
                (artifacts["mpu"] and method == "POST"):
            return Call(upstream=upstream, endpoint="mlflow-artifacts", write=True,
                        rule=own_artifact_path, json_body=bool(artifacts["mpu"]),
                        args={"path": path})
    elif api := _API.match(rest):
        endpoint = api["endpoint"]
        if endpoint.split("/", 1)[0] in REFUSED_FAMILIES:
            raise denied(f"Modelport does not offer MLflow's {endpoint.split('/', 1)[0]} API.")
        if read or (method == "POST" and endpoint in READ_POSTS):
            return Call(upstream=upstream, endpoint=endpoint, json_body=not read)
        rule = (TRACKING_WRITES.get((method, endpoint))
                or mlflow_registry_rules.WRITES.get((method, endpoint)))
        args: dict[str, str] = {}
        logged = _LOGGED_MODEL_WRITE.match(endpoint) if rule is None else None
        if logged and method in _LOGGED_MODEL_METHODS[logged["sub"]]:
            rule, args = own_logged_model, {k: v for k, v in logged.groupdict().items()
                                            if v is not None}
        if rule is not None:
            return Call(upstream=upstream, endpoint=endpoint, write=True, rule=rule,
                        json_body=True, args=args)
        raise denied(f"Modelport does not offer {method} {endpoint} through MLflow.")
    raise Refusal(404, ENDPOINT_NOT_FOUND,
                  f"Modelport's MLflow route does not offer {method} /{rest}.")


# --- GraphQL: MLflow's UI reads runs through it; only its known queries pass ---------------------
GRAPHQL_FIELDS = {"mlflowGetExperiment", "mlflowGetMetricHistoryBulkInterval", "mlflowGetRun",
                  "mlflowListArtifacts", "mlflowSearchModelVersions", "mlflowSearchRuns",
                  "mlflowSearchDatasets", "test", "__typename"}


def graphql_rule(caller: Caller, params: dict, args: dict) -> Plan:
    from graphql import GraphQLError, parse
    from graphql.language import FieldNode, OperationDefinitionNode

    query = params.get("query")
    if not isinstance(query, str):
        raise invalid("A GraphQL request needs a query.")
    try:
        document = parse(query)
    except GraphQLError as exc:
        raise invalid(f"Not a GraphQL query: {exc.message}") from None
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        for selection in definition.selection_set.selections:
            if not isinstance(selection, FieldNode) or \
                    selection.name.value not in GRAPHQL_FIELDS:
                raise denied("Only MLflow's read queries pass through Modelport's GraphQL.")
    return Plan()
