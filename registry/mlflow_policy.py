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
- The model registry (``registered-models/*``, ``model-versions/*``) and downloads of its
  versions: answered by Modelport itself (``mlflow_registry_api``), never forwarded.
- The rules' vocabulary (refusals, the caller, plans, calls, parameters): ``mlflow_calls``.
- Tags ``modelport.*`` are the platform's: refused (the registry API takes ``modelport.team``
  when a registered model is created, to name its team).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from .mlflow_calls import (
    ENDPOINT_NOT_FOUND,
    Call,
    Caller,
    Plan,
    Refusal,
    Rule,
    denied,
    invalid,
    param,
    refuse_platform_tags,
    tag_keys,
)
from .mlflow_registry_api import is_registry, is_registry_artifact
from .mlflow_services import record_created
from .models import MlflowObject, MlflowObjectKind


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
              "experiments/search-datasets",
              "traces/search", "traces/batchGetInfos", "datasets/search"}
# Not offered through Modelport, not even to read (secrets, outbound calls, code execution).
REFUSED_FAMILIES = {"gateway", "gateway-proxy", "webhooks", "assistant", "jobs",
                    "prompt-optimization", "secrets"}
UI_PATHS = re.compile(r"^(?:|health|version|get-artifact|static-files/.+)$")
# The UI's read of a registered version's files: Modelport's (the tracking server would answer
# from its own registry, which still holds every team's versions registered before the upgrade).
VERSION_ARTIFACT = "model-versions/get-artifact"
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


def classify(method: str, rest: str, listed: str = "") -> Call:
    """The endpoint ``method /mlflow/<rest>`` names, and the rule that decides it (``listed``:
    the ``path`` an artifact listing asks for). The model registry and downloads of its
    versions are Modelport's own (``local``: ``mlflow_registry_api`` answers them)."""
    upstream = canonical(rest)
    read = method in READ_METHODS
    if UI_PATHS.match(rest) and read:
        return Call(upstream=upstream, endpoint=rest or "ui")
    if rest == VERSION_ARTIFACT and read:
        return Call(upstream=upstream, endpoint=VERSION_ARTIFACT, local=True)
    if rest == "graphql" and method in ("GET", "POST"):
        return Call(upstream=upstream, endpoint="graphql", rule=graphql_rule,
                    json_body=method == "POST")
    if artifacts := _ARTIFACTS.match(rest):
        path = artifacts["path"] or artifacts["mpu_path"] or ""
        if read and is_registry_artifact(artifacts["path"] or listed):
            return Call(upstream=upstream, endpoint="mlflow-artifacts", local=True,
                        args={"path": artifacts["path"]} if artifacts["path"] else {})
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
        if is_registry(endpoint):
            return Call(upstream=upstream, endpoint=endpoint, write=not read, local=True,
                        json_body=not read)
        if read or (method == "POST" and endpoint in READ_POSTS):
            return Call(upstream=upstream, endpoint=endpoint, json_body=not read)
        rule = TRACKING_WRITES.get((method, endpoint))
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
# Not mlflowSearchModelVersions: the tracking server answers it from its own registry, which
# holds every team's versions registered before the upgrade (Modelport's visibility is not its).
GRAPHQL_FIELDS = {"mlflowGetExperiment", "mlflowGetMetricHistoryBulkInterval", "mlflowGetRun",
                  "mlflowListArtifacts", "mlflowSearchRuns", "mlflowSearchDatasets", "test",
                  "__typename"}


def graphql_rule(caller: Caller, params: dict, args: dict) -> Plan:
    from graphql import GraphQLError, parse  # noqa: PLC0415 - lazy: ~0.1 s, GraphQL reads only
    from graphql.language import FieldNode, OperationDefinitionNode  # noqa: PLC0415 - as above

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
