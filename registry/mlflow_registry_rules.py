"""MLflow's model registry endpoints, as the MLflow route lets them through: every write is
checked against the Modelport model of that name (``mlflow_teams``) before MLflow sees it.

This is the one place that intercepts registry paths (``WRITES``); issue 25 grows it into
Modelport answering MLflow's Model Registry REST API itself.

- ``registered-models/create`` and ``model-versions/create``: engineer (or maintainer) in the
  model's team — or, for a name Modelport does not have yet, in the team the sync will put it in;
  the creator is recorded from MLflow's answer (``MlflowVersion``), the only user a synced
  version can belong to.
- updates and tags: engineer; deletes: maintainer (as in Modelport).
- ``modelport.team``: only a team the caller may register in, and never another team than the
  model's; other ``modelport.*`` and prompt tags are refused.
- aliases, stage transitions and renames: refused, with where to do it instead.
"""

from __future__ import annotations

from typing import Any

from teams.roles import Role

from . import mlflow_teams, mlflow_upstream
from .mlflow_calls import (
    Caller,
    Plan,
    Rule,
    denied,
    invalid,
    param,
    refuse_platform_tags,
    tag_keys,
)
from .mlflow_services import record_registry_write
from .mlflow_teams import TEAM_TAG, Target
from .models import MlflowObject, MlflowObjectKind, RegisteredModel

SOURCE_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def _tags(items: Any) -> dict[str, str]:
    return {str(t.get("key")): str(t.get("value", "")) for t in items or []
            if isinstance(t, dict) and t.get("key") is not None}


def _current_tags(name: str) -> dict[str, str]:
    """The registered model's tags in MLflow, which name its team while Modelport has no model
    of that name (once it has one, the Modelport model decides and tags are not read)."""
    if not name or RegisteredModel.objects.filter(name=name).exists():
        return {}
    try:
        body = mlflow_upstream.call("GET", "/api/2.0/mlflow/registered-models/get",
                                    params={"name": name})
    except mlflow_upstream.MlflowError:
        return {}
    return _tags((body.get("registered_model") or {}).get("tags"))


def _target(caller: Caller, name: str, tags: dict[str, str], minimum: Role) -> Target:
    if not name:
        raise invalid("Name the registered model ('name' is missing).")
    if not caller.writer:
        raise denied(f"Changing MLflow's model registry needs the engineer or maintainer role "
                     f"in a team; '{caller.name}' has neither.")
    target = mlflow_teams.resolve(name, tags=tags, acting_user=caller.user)
    if problem := mlflow_teams.refusal(caller.user, target, minimum):
        raise denied(problem)
    return target


def _check_tags(caller: Caller, target: Target, keys: list[str], tags: dict[str, str]) -> None:
    """Tags a write sets: no ``modelport.*`` but the team tag, which must name the model's team
    (a model Modelport has) or one where the caller registers (checked by ``_target``)."""
    refuse_platform_tags(keys, allow_team=True)
    if any(key.startswith("mlflow.prompt.") for key in keys):
        raise denied("Prompts are not offered through Modelport's MLflow.")
    slug = tags.get(TEAM_TAG)
    if slug is not None and target.model is not None and slug != target.model.team.slug:
        raise denied(f"Model '{target.name}' belongs to team '{target.model.team.slug}'; "
                     f"{TEAM_TAG} cannot name another team (move models in Modelport).")


def _audited(caller: Caller, action: str, name: str, version_from: str | None,
             target: Target, params: dict[str, Any]) -> Plan:
    def after(answer: dict[str, Any]) -> None:
        version = ""
        if version_from:
            version = str(((answer.get(version_from) or {}).get("version")) or
                          param(params, "version"))
        record_registry_write(actor=caller.user, action=action, name=name, version=version,
                              team=target.team, details={k: v for k, v in params.items()
                                                         if k in ("description", "key",
                                                                  "value", "source")})

    return Plan(after=after)


def create_registered_model(caller: Caller, params: dict, args: dict) -> Plan:
    name = param(params, "name")
    problem = mlflow_teams.invalid_name(name) if name else ""
    if problem:
        raise invalid(problem)
    tags = _tags(params.get("tags"))
    target = _target(caller, name, tags, Role.ENGINEER)
    _check_tags(caller, target, tag_keys(params), tags)
    return _audited(caller, "mlflow.registered_model.created", name, None, target, params)


def create_version(caller: Caller, params: dict, args: dict) -> Plan:
    name = param(params, "name")
    source = param(params, "source")
    if source and not source.startswith(SOURCE_SCHEMES):
        raise denied(f"source {source!r}: versions come from runs:/, models:/ or the tracking "
                     "server's own artifact store (mlflow-artifacts:/).")
    version_tags = _tags(params.get("tags"))
    target = _target(caller, name, {**_current_tags(name), **version_tags}, Role.ENGINEER)
    _check_tags(caller, target, tag_keys(params), version_tags)
    return _audited(caller, "mlflow.version.created", name, "model_version", target, params)


def _writer(minimum: Role, action: str, *, version: bool) -> Rule:
    """Updates and deletes: the role ``minimum`` in the team that owns ``name``."""

    def rule(caller: Caller, params: dict, args: dict) -> Plan:
        name = param(params, "name")
        target = _target(caller, name, _current_tags(name), minimum)
        refuse_platform_tags(tag_keys(params))
        return _audited(caller, action, name, "model_version" if version else None, target,
                        params)

    return rule


def _set_tag(action: str, *, version: bool) -> Rule:
    """A tag: engineer in the owning team. Setting ``modelport.team`` on a model Modelport does
    not have yet also needs the role in the team it names, and — when no team owns the name yet
    (its creator is an engineer in several) — being the one who created it."""

    def rule(caller: Caller, params: dict, args: dict) -> Plan:
        name, key = param(params, "name"), str(params.get("key", ""))
        value = str(params.get("value", ""))
        current = _current_tags(name)
        if key == TEAM_TAG and not RegisteredModel.objects.filter(name=name).exists():
            now = mlflow_teams.resolve(name, tags=current, acting_user=caller.user)
            if now.team is None and not caller.admin and not MlflowObject.objects.filter(
                    kind=MlflowObjectKind.REGISTERED_MODEL, key=name,
                    created_by=caller.user).exists():
                raise denied(f"Only the creator of '{name}' may name its team.")
            if now.team is not None:
                _target(caller, name, current, Role.ENGINEER)
            current = {**current, TEAM_TAG: value}
        target = _target(caller, name, current, Role.ENGINEER)
        _check_tags(caller, target, [key], {key: value})
        return _audited(caller, action, name, "model_version" if version else None, target,
                        params)

    return rule


def refuse(message: str) -> Rule:
    def rule(caller: Caller, params: dict, args: dict) -> Plan:
        raise denied(message)

    return rule


ALIASES = ("Aliases are Modelport's: move one with PUT /api/v1/models/<name>/aliases/<alias>/ "
           "(protected aliases need a maintainer's approval).")
WRITES: dict[tuple[str, str], Rule] = {
    ("POST", "registered-models/create"): create_registered_model,
    ("PATCH", "registered-models/update"): _writer(Role.ENGINEER,
                                                   "mlflow.registered_model.updated",
                                                   version=False),
    ("DELETE", "registered-models/delete"): _writer(Role.MAINTAINER,
                                                    "mlflow.registered_model.deleted",
                                                    version=False),
    ("POST", "registered-models/set-tag"): _set_tag("mlflow.registered_model.tag_set",
                                                    version=False),
    ("DELETE", "registered-models/delete-tag"): _writer(Role.ENGINEER,
                                                        "mlflow.registered_model.tag_deleted",
                                                        version=False),
    ("POST", "registered-models/rename"): refuse(
        "Renaming would detach the model from its Modelport model; register under the new "
        "name instead."),
    ("POST", "registered-models/alias"): refuse(ALIASES),
    ("DELETE", "registered-models/alias"): refuse(ALIASES),
    ("POST", "model-versions/create"): create_version,
    ("PATCH", "model-versions/update"): _writer(Role.ENGINEER, "mlflow.version.updated",
                                                version=True),
    ("DELETE", "model-versions/delete"): _writer(Role.MAINTAINER, "mlflow.version.deleted",
                                                 version=True),
    ("POST", "model-versions/set-tag"): _set_tag("mlflow.version.tag_set", version=True),
    ("DELETE", "model-versions/delete-tag"): _writer(Role.ENGINEER,
                                                     "mlflow.version.tag_deleted",
                                                     version=True),
    ("POST", "model-versions/transition-stage"): refuse(
        "Stages are not used by Modelport: " + ALIASES),
}
