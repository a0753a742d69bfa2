"""``model-versions/*``: MLflow's model versions, answered from Modelport's versions.

A version created by an MLflow client (``mlflow.register_model``, ``log_model(...,
registered_model_name=...)``) is a Modelport import: ``register_from_source`` downloads the
source from the tracking server and validates it in the sandbox like an upload. Until then it
is PENDING_REGISTRATION, READY once validated, FAILED_REGISTRATION with the reason — the status
``register_model`` waits on. Version numbers are Modelport's, whoever registered the version.
"""

from __future__ import annotations

from typing import Any

from django.db.models.functions import Coalesce

from .. import mlflow_services, services
from ..mlflow_calls import Caller, invalid
from ..models import ModelVersion, RegisteredModel, VersionStatus
from . import render
from .lookup import (
    VERSION_RESULTS,
    mlflow_errors,
    model,
    narrowed,
    page,
    pairs,
    sql_order,
    sql_page,
    strings,
    text,
    version,
)

LOGGED_MODEL_ID = "mlflow_model_id"


def _source(params: dict[str, Any]) -> str:
    """What to import: MLflow 3 sends the logged model (``models:/m-…``) with ``model_id``,
    a run's artifacts (``runs:/``), or where the run stored them (``mlflow-artifacts:/``)."""
    source = text(params, "source")
    model_id = text(params, "model_id", required=False)
    if model_id and not source.startswith("models:/m-"):
        source = f"models:/{model_id}"  # the logged model itself: a run's folder may be empty
    if source.startswith("models:/") and not source.startswith("models:/m-"):
        raise invalid(f"source {source!r}: copying registered versions is not supported; "
                      "register the run or logged model they came from.")
    if not source.startswith(render.MLFLOW_SOURCES):
        raise invalid(f"source {source!r}: versions come from runs:/, models:/<logged model "
                      "id> or the tracking server's artifact store (mlflow-artifacts:/).")
    return source


def create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"), write=True)
    source = _source(params)
    tags = pairs(params)
    with mlflow_errors():
        for key, value in tags.items():  # before anything is created
            mlflow_services.check_tag(key, value)
        services.authorize_upload(actor=caller.user, model=found)
        created = services.register_from_source(
            actor=caller.user, model=found, source=source,
            description=text(params, "description", required=False))
        for key, value in tags.items():
            mlflow_services.set_tag(actor=caller.user, model=found, version=created, key=key,
                                    value=value)
    return {"model_version": render.version_of(created)}


def get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = version(caller, text(params, "name"), text(params, "version"))
    return {"model_version": render.version_of(found)}


def update(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = version(caller, text(params, "name"), text(params, "version"), write=True)
    with mlflow_errors():
        found = mlflow_services.update_version(
            actor=caller.user, version=found,
            description=text(params, "description", required=False))
    return {"model_version": render.version_of(found)}


def delete(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = version(caller, text(params, "name"), text(params, "version"), write=True)
    with mlflow_errors():
        mlflow_services.delete_version(actor=caller.user, version=found)
    return {}


def _search(items: list, filter_string: str, order_by: list[str]) -> list:
    from mlflow.utils.search_utils import SearchModelVersionUtils  # noqa: PLC0415 - lazy

    found = SearchModelVersionUtils.filter(items, filter_string)
    return SearchModelVersionUtils.sort(
        found, order_by or ["last_updated_timestamp DESC", "name ASC", "version_number DESC"])


VERSION_COLUMNS = {"name": "model__name", "version_number": "version",
                   "creation_timestamp": "created_at", "last_updated_timestamp": "last_updated"}


def search(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    filter_string = text(params, "filter", required=False)
    visible = narrowed(ModelVersion.objects.filter(
        model__in=RegisteredModel.objects.visible_to(caller.user)), filter_string,
        name_field="model__name", run_field="lineage__mlflow_run_id")
    ordering = sql_order(filter_string, strings(params, "order_by"), VERSION_COLUMNS,
                         versions=True)
    if ordering is not None:  # the database pages alone: a page costs a page
        keys, token = sql_page(visible.annotate(
            last_updated=Coalesce("validated_at", "created_at")).order_by(*ordering),
            params, VERSION_RESULTS)
        by_key = dict(zip(ModelVersion.objects.filter(pk__in=keys).order_by("pk")
                          .values_list("pk", flat=True),
                          render.versions(ModelVersion.objects.filter(pk__in=keys)
                                          .order_by("pk")), strict=True))
        found = [by_key[key] for key in keys]
    else:
        found, token = page(render.versions(visible), params, _search, VERSION_RESULTS)
    return {"model_versions": [render.to_json(e) for e in found],
            **({"next_page_token": token} if token else {})}


def set_tag(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = version(caller, text(params, "name"), text(params, "version"), write=True)
    with mlflow_errors():
        mlflow_services.set_tag(actor=caller.user, model=found.model, version=found,
                                key=text(params, "key"),
                                value=text(params, "value", required=False))
    return {}


def delete_tag(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = version(caller, text(params, "name"), text(params, "version"), write=True)
    with mlflow_errors():
        mlflow_services.delete_tag(actor=caller.user, model=found.model, version=found,
                                   key=text(params, "key"))
    return {}


def download_uri(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = version(caller, text(params, "name"), text(params, "version"))
    if found.status != VersionStatus.READY or not found.artifact_name:
        raise invalid(f"Version {found.version} of '{found.model.name}' is {found.status}: "
                      "only ready versions can be downloaded.")
    return {"artifact_uri": render.download_uri(found)}


def transition_stage(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    version(caller, text(params, "name"), text(params, "version"), write=True)
    raise invalid("Stages are not used by Modelport: set an alias instead "
                  "(MlflowClient.set_registered_model_alias); protected aliases need a "
                  "maintainer's approval.")
