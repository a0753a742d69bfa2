"""Business operations of the MLflow bridge: who created what through the MLflow route, and the
periodic sync that imports the model versions training scripts registered.

A version is imported only for the user who created it through the route (recorded from MLflow's
answer, ``MlflowVersion``), into the Modelport model of that name or a new one in the team
``mlflow_teams`` resolves, and only when that user may register there; it is registered and
audited as that user. A version nobody may own is not imported, and the reason is recorded
once, not every 30 seconds: an audit event ``mlflow.version_refused`` (its creator sees it among
their recent activity, the team's maintainers in the audit log), a line on the model's page when
Modelport has the model, and the tag ``modelport.import`` on the version in MLflow, where the
script's author looks.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import DomainError
from teams import audit
from teams.models import Team

from . import mlflow_teams, mlflow_upstream, services
from .mlflow_import import registered_versions
from .models import (
    MlflowObject,
    MlflowObjectKind,
    MlflowVersion,
    MlflowVersionStatus,
    ModelVersion,
    RegisteredModel,
)

log = logging.getLogger(__name__)

# A version MLflow has but the route has not recorded yet (its answer is on the way back): the
# sync leaves it for a later pass instead of calling it unowned.
RECORD_GRACE = timedelta(minutes=2)
IMPORT_TAG = "modelport.import"
NO_CREATOR = ("It was not created through Modelport's MLflow route with an API token "
              "(MLFLOW_TRACKING_TOKEN), so it belongs to nobody.")


def record_created(*, actor, kind: str, key: str) -> MlflowObject:
    """The route saw ``actor`` create an MLflow object: only they may change it afterwards."""
    found, _ = MlflowObject.objects.update_or_create(kind=kind, key=key,
                                                     defaults={"created_by": actor})
    return found


@transaction.atomic
def record_registry_write(*, actor, action: str, name: str, version: str, team: Team | None,
                          details: dict[str, Any]) -> None:
    """A registry write went through the route: audit it; for a new registered model or version
    also record its creator (a version's number comes from MLflow's answer)."""
    if action == "mlflow.registered_model.created":
        record_created(actor=actor, kind=MlflowObjectKind.REGISTERED_MODEL, key=name)
    if action == "mlflow.version.created" and version.isdigit():
        MlflowVersion.objects.update_or_create(
            name=name, version=int(version),
            defaults={"created_by": actor, "status": MlflowVersionStatus.PENDING, "reason": "",
                      "imported": None})
    audit.record(actor=actor, action=action, object_type="mlflow_model",
                 object_id=f"{name}/{version}" if version else name,
                 object_repr=f"{name} v{version}" if version else name, team=team,
                 after={"name": name, **({"version": version} if version else {}),
                        **{k: str(v)[:500] for k, v in details.items()}})


def _refuse(record: MlflowVersion, reason: str, team: Team | None) -> None:
    """Record why ``record`` is not imported; audit it only the first time (or a new reason)."""
    if record.status == MlflowVersionStatus.REFUSED and record.reason == reason:
        return
    record.status, record.reason = MlflowVersionStatus.REFUSED, reason
    record.save(update_fields=["status", "reason"])
    audit.record(actor=record.created_by, action="mlflow.version_refused",
                 object_type="mlflow_model", object_id=f"{record.name}/{record.version}",
                 object_repr=f"{record.name} v{record.version}", team=team,
                 after={"name": record.name, "version": record.version, "reason": reason})
    log.warning("MLflow %s v%s not imported: %s", record.name, record.version, reason)
    _tell_mlflow(record, f"not imported: {reason}")


def _tell_mlflow(record: MlflowVersion, status: str) -> None:
    """Leave the outcome on the version in MLflow too (tag ``modelport.import``), where the
    script's author looks. Best effort: the record and the audit event are what count."""
    try:
        mlflow_upstream.call("POST", "/api/2.0/mlflow/model-versions/set-tag", json={
            "name": record.name, "version": str(record.version), "key": IMPORT_TAG,
            "value": status[:5000]})
    except (mlflow_upstream.MlflowError, mlflow_upstream.Unavailable) as exc:
        log.warning("could not tag MLflow %s v%s: %s", record.name, record.version, exc)


def _import_one(remote, known: set[str]) -> ModelVersion | None:
    source = f"models:/{remote.name}/{remote.version}"
    with transaction.atomic():
        record = MlflowVersion.objects.select_for_update().filter(
            name=remote.name, version=int(remote.version)).first()
        if record is None:
            age = timezone.now().timestamp() * 1000 - remote.created_ms
            if age < RECORD_GRACE.total_seconds() * 1000:
                return None
            try:
                with transaction.atomic():
                    record = MlflowVersion.objects.create(name=remote.name,
                                                          version=int(remote.version))
            except IntegrityError:
                return None  # the route recorded it just now: next pass
        if record.status == MlflowVersionStatus.IMPORTED:
            return None
        if source in known:  # imported before creators were recorded
            record.status = MlflowVersionStatus.IMPORTED
            record.save(update_fields=["status"])
            return None
        creator = record.created_by
        if creator is None:
            _refuse(record, NO_CREATOR, None)
            return None
        target = mlflow_teams.resolve(remote.name, acting_user=creator,
                                      tags={mlflow_teams.TEAM_TAG: remote.team_tag}
                                      if remote.team_tag else {})
        if problem := mlflow_teams.refusal(creator, target):
            _refuse(record, problem, target.team)
            return None
        assert target.team is not None  # refusal() gives a reason whenever there is no team
        try:
            model = target.model or services.create_model(
                actor=creator, team=target.team, name=remote.name,
                description="Registered from MLflow.")
            version = services.register_from_source(actor=creator, model=model, source=source)
        except DomainError as exc:  # e.g. the role changed in between: said like any refusal
            _refuse(record, exc.message, target.team)
            return None
        record.status, record.reason, record.imported = MlflowVersionStatus.IMPORTED, "", version
        record.save(update_fields=["status", "reason", "imported"])
        _tell_mlflow(record, f"imported as {model.name} v{version.version} in team "
                             f"{model.team.slug}")
        return version


def sync_from_mlflow() -> list[ModelVersion]:
    """Import versions registered in the tracking server that Modelport does not have yet, each
    for its recorded creator (see the module docstring)."""
    if not mlflow_upstream.answers():
        log.info("MLflow tracking server at %s does not answer; sync skipped",
                 mlflow_upstream.describe())
        return []
    known = set(ModelVersion.objects.filter(source__startswith="models:/")
                .values_list("source", flat=True))
    done = set(MlflowVersion.objects.filter(status=MlflowVersionStatus.IMPORTED)
               .values_list("name", "version"))
    imported: list[ModelVersion] = []
    for remote in registered_versions():
        if not remote.version.isdigit() or (remote.name, int(remote.version)) in done:
            continue
        version = _import_one(remote, known)
        if version is not None:
            imported.append(version)
    return imported


def refused_versions(model: RegisteredModel) -> list[MlflowVersion]:
    """MLflow versions of ``model``'s name the sync did not import, for its page."""
    return list(MlflowVersion.objects.filter(name=model.name,
                                             status=MlflowVersionStatus.REFUSED)
                .select_related("created_by").order_by("-version")[:20])
