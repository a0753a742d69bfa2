"""``registered-models/*``: MLflow's registered models, aliases and their tags, answered from
Modelport's models. Every change goes through ``registry.services`` / ``mlflow_services`` (role
checks, audit); an alias moved here is the same move as in the portal or the API, so protected
aliases wait for a maintainer and deployments following the alias roll out."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from .. import mlflow_services, mlflow_teams, services
from ..mlflow_calls import Caller, denied, exists, invalid, missing
from ..models import AliasTransitionRequest, ModelVersion, RegisteredModel
from . import render
from .lookup import (
    mlflow_errors,
    model,
    narrowed,
    page,
    pairs,
    sql_order,
    sql_page,
    strings,
    text,
    version_number,
)


def _with_tags(caller: Caller, found: RegisteredModel, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        if key == mlflow_teams.TEAM_TAG:
            continue  # it chose the team; Modelport keeps the team on the model
        mlflow_services.set_tag(actor=caller.user, model=found, key=key, value=value)


def create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """A new model, in the team ``mlflow_teams`` resolves (``modelport.team`` tag, else the
    caller's only team where they are an engineer)."""
    name = text(params, "name")
    tags = pairs(params)
    if RegisteredModel.objects.filter(name=name).exists():
        raise exists(f"Registered Model (name={name}) already exists.")
    if not caller.writer:
        raise denied(f"Registering models needs the engineer or maintainer role in a team; "
                     f"'{caller.name}' has neither.")
    target = mlflow_teams.resolve(name, tags=tags, acting_user=caller.user)
    if target.team is None:
        raise invalid(target.reason)
    if problem := mlflow_teams.refusal(caller.user, target):
        raise denied(problem)
    with mlflow_errors(), transaction.atomic():  # a refused tag leaves no model behind
        for key, value in tags.items():
            if key != mlflow_teams.TEAM_TAG:
                mlflow_services.check_tag(key, value)
        found = services.create_model(actor=caller.user, team=target.team, name=name,
                                      description=text(params, "description", required=False))
        _with_tags(caller, found, tags)
    return {"registered_model": render.model_of(found)}


def get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return {"registered_model": render.model_of(model(caller, text(params, "name")))}


def update(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"), write=True)
    with mlflow_errors():
        found = services.update_model(
            actor=caller.user, model=found,
            description=text(params, "description", required=False))
    return {"registered_model": render.model_of(found)}


def rename(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    model(caller, text(params, "name"), write=True)
    raise invalid("Renaming registered models is not supported by Modelport: deployments, "
                  "URLs and the audit trail name the model. Register under the new name.")


def delete(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"), write=True)
    with mlflow_errors():
        services.delete_model(actor=caller.user, model=found)
    return {}


def _search(items: list, filter_string: str, order_by: list[str]) -> list:
    from mlflow.utils.search_utils import SearchModelUtils  # noqa: PLC0415 - lazy: mlflow

    found = SearchModelUtils.filter(items, filter_string)
    return SearchModelUtils.sort(found, order_by or ["name ASC"])


MODEL_COLUMNS = {"name": "name", "creation_timestamp": "created_at",
                 "last_updated_timestamp": "updated_at"}


def search(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    filter_string = text(params, "filter", required=False)
    rows = narrowed(RegisteredModel.objects.visible_to(caller.user), filter_string,
                    name_field="name")
    ordering = sql_order(filter_string, strings(params, "order_by"), MODEL_COLUMNS)
    if ordering is not None:  # the database pages alone: a page costs a page
        keys, token = sql_page(rows.order_by(*ordering), params)
        entities = {e.name: e for e in render.model_entities(
            RegisteredModel.objects.filter(pk__in=keys))}
        names = dict(RegisteredModel.objects.filter(pk__in=keys).values_list("pk", "name"))
        found = [entities[names[key]] for key in keys]
    else:
        found, token = page(render.model_entities(rows), params, _search)
    return {"registered_models": [render.to_json(e) for e in found],
            **({"next_page_token": token} if token else {})}


def latest_versions(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """Stages are gone: every version is in stage ``None``; the latest is the highest number
    (asked for no stage or for ``None``), other stages have none."""
    found = model(caller, text(params, "name"))
    stages = [s.lower() for s in strings(params, "stages")]
    if stages and "none" not in stages:
        return {"model_versions": []}
    latest = found.versions.order_by("-version")[:1]
    return {"model_versions": [render.to_json(e) for e in render.versions(latest)]}


def set_tag(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"), write=True)
    with mlflow_errors():
        mlflow_services.set_tag(actor=caller.user, model=found, key=text(params, "key"),
                                value=text(params, "value", required=False))
    return {}


def delete_tag(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"), write=True)
    with mlflow_errors():
        mlflow_services.delete_tag(actor=caller.user, model=found, key=text(params, "key"))
    return {}


def set_alias(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """Modelport's ``set_alias``: a protected alias moved by an engineer files a request for a
    maintainer and answers PERMISSION_DENIED saying so (the alias has not moved)."""
    found = model(caller, text(params, "name"), write=True)
    alias, number = text(params, "alias"), text(params, "version")
    with mlflow_errors():
        moved = services.set_alias(actor=caller.user, model=found, alias=alias,
                                   version_number=version_number(number))
    if isinstance(moved, AliasTransitionRequest):
        raise denied(f"Alias '{alias}' of '{found.name}' is protected: moving it to version "
                     f"{number} needs a maintainer's approval. Request #{moved.pk} is pending "
                     "approval; the alias has not moved yet.")
    return {}


def delete_alias(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"), write=True)
    with mlflow_errors():
        services.delete_alias(actor=caller.user, model=found, alias=text(params, "alias"))
    return {}


def get_by_alias(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    found = model(caller, text(params, "name"))
    alias = text(params, "alias")
    target = found.aliases.filter(name=alias).values_list("version_id", flat=True).first()
    if target is None:
        raise missing(f"Registered model alias {alias} not found.")
    return {"model_version": render.to_json(
        render.versions(ModelVersion.objects.filter(pk=target))[0])}
