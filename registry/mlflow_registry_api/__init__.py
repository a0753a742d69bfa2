"""MLflow's Model Registry REST API, answered by Modelport itself: Modelport is the registry of
record, and stock clients (``MlflowClient``, ``mlflow.register_model``,
``mlflow.pyfunc.load_model("models:/<name>@<alias>")``) pointed at the platform's ``/mlflow``
(or ``MLFLOW_PORT``) with a platform token read and change it with Modelport's rules.

The MLflow route (``mlflow_route``) sends here every ``registered-models/*`` and
``model-versions/*`` call (``ENDPOINTS``) and the artifact reads under
``mlflow-artifacts:/modelport-registry/`` (``artifacts``); nothing of the tracking server's own
registry is read or written any more. Reads: whoever may see the model in Modelport (members of
its team, platform admins); writes: the roles Modelport's services check (engineer; deletes:
maintainer), audited there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from ..mlflow_calls import Call, Caller, Refusal, parse_json
from . import artifacts, registered, versions
from .render import ARTIFACT_ROOT

Handler = Callable[[Caller, dict[str, Any]], dict[str, Any]]
ENDPOINTS: dict[tuple[str, str], Handler] = {
    ("POST", "registered-models/create"): registered.create,
    ("GET", "registered-models/get"): registered.get,
    ("PATCH", "registered-models/update"): registered.update,
    ("POST", "registered-models/rename"): registered.rename,
    ("DELETE", "registered-models/delete"): registered.delete,
    ("GET", "registered-models/search"): registered.search,
    ("GET", "registered-models/get-latest-versions"): registered.latest_versions,
    ("POST", "registered-models/get-latest-versions"): registered.latest_versions,
    ("POST", "registered-models/set-tag"): registered.set_tag,
    ("DELETE", "registered-models/delete-tag"): registered.delete_tag,
    ("POST", "registered-models/alias"): registered.set_alias,
    ("DELETE", "registered-models/alias"): registered.delete_alias,
    ("GET", "registered-models/alias"): registered.get_by_alias,
    ("POST", "model-versions/create"): versions.create,
    ("GET", "model-versions/get"): versions.get,
    ("PATCH", "model-versions/update"): versions.update,
    ("DELETE", "model-versions/delete"): versions.delete,
    ("GET", "model-versions/search"): versions.search,
    ("POST", "model-versions/search"): versions.search,
    ("GET", "model-versions/get-download-uri"): versions.download_uri,
    ("POST", "model-versions/set-tag"): versions.set_tag,
    ("DELETE", "model-versions/delete-tag"): versions.delete_tag,
    ("POST", "model-versions/transition-stage"): versions.transition_stage,
}
FAMILIES = ("registered-models/", "model-versions/")
READS = {"GET", "HEAD"}


def is_registry(endpoint: str) -> bool:
    return endpoint.startswith(FAMILIES)


def is_registry_artifact(path: str) -> bool:
    return path.strip("/").split("/", 1)[0] == ARTIFACT_ROOT


def _params(request: HttpRequest, body: bytes) -> dict[str, Any]:
    if request.method in READS:
        return {key: values if len(values) > 1 or key == "order_by" else values[0]
                for key, values in request.GET.lists()}
    return parse_json(body)


def answer(request: HttpRequest, caller: Caller, call: Call, body: bytes) -> HttpResponseBase:
    """The answer to ``call`` (classified by ``mlflow_policy``), in MLflow's format."""
    if call.endpoint == "model-versions/get-artifact":  # the UI's read of a version's file
        return artifacts.version_file(caller, request.GET.get("name", ""),
                                      request.GET.get("version", ""),
                                      request.GET.get("path", ""))
    if call.endpoint == "mlflow-artifacts":
        path = call.args.get("path") or request.GET.get("path", "")
        return (artifacts.file(caller, path) if call.args.get("path")
                else artifacts.listing(caller, path))
    handler = ENDPOINTS.get((request.method or "GET", call.endpoint))
    if handler is None:
        raise Refusal(404, "ENDPOINT_NOT_FOUND", f"Modelport does not offer {request.method} "
                                                 f"{call.endpoint} of MLflow's registry.")
    return JsonResponse(handler(caller, _params(request, body)))
