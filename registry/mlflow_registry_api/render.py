"""Modelport's models and versions as MLflow's registry entities: what MLflow clients read.

MLflow's own entity classes are built and serialised with MLflow's own ``message_to_json``, and
searched with MLflow's own filter and order-by parsers (``SearchModelUtils``), so field names,
enums and search semantics are exactly the ones ``MlflowClient`` expects.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from ..models import MlflowTag, ModelAlias, ModelVersion, RegisteredModel, VersionStatus

ARTIFACT_ROOT = "modelport-registry"  # beside the tracking store's experiment ids (digits)
MLFLOW_SOURCES = ("runs:/", "models:/", "mlflow-artifacts:/")
STATUS = {VersionStatus.READY: "READY", VersionStatus.FAILED: "FAILED_REGISTRATION"}


def millis(moment) -> int:
    return int((moment or timezone.now()).timestamp() * 1000)


def download_uri(version: ModelVersion) -> str:
    """Where MLflow clients fetch a version: Modelport's own storage of it, served by the
    route's artifact endpoint (``artifacts.py``) with the caller's token."""
    return f"mlflow-artifacts:/{ARTIFACT_ROOT}/{version.model.name}/{version.version}"


def _tags(rows: list[MlflowTag]):
    from mlflow.entities.model_registry import ModelVersionTag  # noqa: PLC0415 - lazy: mlflow

    return [ModelVersionTag(t.key, t.value) for t in rows]


def version_entity(version: ModelVersion, *, aliases: list[str], tags: list[MlflowTag]):
    from mlflow.entities.model_registry import ModelVersion as Entity  # noqa: PLC0415 - lazy

    source = version.source if version.source.startswith(MLFLOW_SOURCES) else \
        download_uri(version)
    return Entity(
        # a number (typed str by MLflow): its in-memory searches compare version_number with it
        name=version.model.name, version=version.version,  # type: ignore[arg-type]
        creation_timestamp=millis(version.created_at),
        last_updated_timestamp=millis(version.validated_at or version.created_at),
        description=version.description, user_id=(version.created_by.get_username()
                                                  if version.created_by else ""),
        current_stage="None", source=source,
        run_id=str((version.lineage or {}).get("mlflow_run_id") or ""),
        status=STATUS.get(version.status, "PENDING_REGISTRATION"),  # type: ignore[call-overload]
        status_message=version.status_message, tags=_tags(tags), aliases=aliases,
        model_id=(version.lineage or {}).get("mlflow_model_id") or None)


def versions(queryset) -> list:
    """Entities for ``queryset`` of versions, with their aliases and tags in two queries."""
    rows = list(queryset.select_related("model", "created_by"))
    ids = [v.pk for v in rows]
    aliases: dict[int, list[str]] = {}
    for alias in ModelAlias.objects.filter(version_id__in=ids).order_by("name"):
        aliases.setdefault(alias.version_id, []).append(alias.name)
    tags: dict[int, list[MlflowTag]] = {}
    for tag in MlflowTag.objects.filter(version_id__in=ids):
        tags.setdefault(tag.version_id or 0, []).append(tag)
    return [version_entity(v, aliases=aliases.get(v.pk, []), tags=tags.get(v.pk, []))
            for v in rows]


def model_entities(queryset) -> list:
    """Entities for ``queryset`` of models: tags, aliases and the latest version of each."""
    from mlflow.entities.model_registry import (  # noqa: PLC0415 - lazy: mlflow
        RegisteredModel as Entity,
    )
    from mlflow.entities.model_registry import (  # noqa: PLC0415 - lazy: mlflow
        RegisteredModelAlias,
        RegisteredModelTag,
    )

    models = list(queryset.select_related("created_by"))
    ids = [m.pk for m in models]
    tags: dict[int, list] = {}
    for tag in MlflowTag.objects.filter(model_id__in=ids, version__isnull=True):
        tags.setdefault(tag.model_id, []).append(RegisteredModelTag(tag.key, tag.value))
    aliases: dict[int, list] = {}
    for alias in ModelAlias.objects.filter(model_id__in=ids).select_related("version") \
            .order_by("name"):
        aliases.setdefault(alias.model_id, []).append(
            RegisteredModelAlias(alias.name, str(alias.version.version)))
    # Each model's highest version, in SQL both PostgreSQL and SQLite (`make run`) speak.
    highest = ModelVersion.objects.filter(model_id=OuterRef("model_id")).order_by("-version")
    latest_entities = {v.name: v for v in versions(ModelVersion.objects.filter(
        model_id__in=ids, version=Subquery(highest.values("version")[:1])))}
    found = []
    for model in models:
        entity = Entity(name=model.name, creation_timestamp=millis(model.created_at),
                        last_updated_timestamp=millis(model.updated_at),
                        description=model.description, tags=tags.get(model.pk, []),
                        aliases=aliases.get(model.pk, []),
                        latest_versions=[latest_entities[model.name]]
                        if model.name in latest_entities else [])
        found.append(entity)
    return found


def to_json(entity) -> dict[str, Any]:
    from mlflow.utils.proto_json_utils import message_to_json  # noqa: PLC0415 - lazy: mlflow

    return json.loads(message_to_json(entity.to_proto()))


def model_of(model: RegisteredModel) -> dict[str, Any]:
    return to_json(model_entities(RegisteredModel.objects.filter(pk=model.pk))[0])


def version_of(version: ModelVersion) -> dict[str, Any]:
    return to_json(versions(ModelVersion.objects.filter(pk=version.pk))[0])
