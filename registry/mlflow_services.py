"""Business operations of the MLflow bridge: who created what through the MLflow route; the
MLflow tags, version edits and deletions of Modelport's answer to MLflow's registry API
(``mlflow_registry_api``); and the one-off import (``manage.py import_mlflow_registry``) of
versions registered in the tracking server's own registry before Modelport answered that API.

Nothing writes the tracking server's registry any more, so there is no periodic sync. The
one-off import takes a version only for the user who created it through the old route (recorded
from MLflow's answer, ``MlflowVersion``), into the Modelport model of that name or a new one in
the team ``mlflow_teams`` resolves, and only when that user may register there; it is registered
and audited as that user. A version nobody may own is not imported, and the reason is recorded
once: an audit event ``mlflow.version_refused`` (its creator sees it among their recent
activity, the team's maintainers in the audit log), a line on the model's page when Modelport
has the model, and the tag ``modelport.import`` on the version in MLflow.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from core.errors import Conflict, DomainError, InvalidInput, NotFound, PermissionDenied
from teams import audit
from teams.access import require_team_role
from teams.models import Team
from teams.roles import Role

from . import mlflow_teams, mlflow_upstream, services
from .mlflow_import import registered_versions
from .models import (
    MlflowObject,
    MlflowTag,
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


# --- MLflow's Model Registry API, answered by Modelport (``mlflow_registry_api``) -----------
TAG_KEY_MAX, TAG_VALUE_MAX = 250, 5000


def check_tag(key: str, value: str) -> None:
    """Why a tag cannot be set (raised), checked before anything is created with it."""
    if not key or len(key) > TAG_KEY_MAX:
        raise InvalidInput(f"A tag key is 1-{TAG_KEY_MAX} characters.", field="key")
    if len(value) > TAG_VALUE_MAX:
        raise InvalidInput(f"Tag '{key}': values are at most {TAG_VALUE_MAX} characters.",
                           field="value")
    if key.startswith("modelport."):
        raise PermissionDenied(f"Tag '{key}': tags modelport.* are the platform's.")
    if key.startswith("mlflow.prompt."):
        raise PermissionDenied("Prompts are not offered through Modelport's MLflow.")


@transaction.atomic
def set_tag(*, actor, model: RegisteredModel, key: str, value: str,
            version: ModelVersion | None = None) -> MlflowTag:
    """An MLflow tag on ``model`` (or one of its versions): engineer in the model's team."""
    require_team_role(actor, model.team, Role.ENGINEER, "tagging models")
    check_tag(key, value)
    current = MlflowTag.objects.select_for_update().filter(model=model, version=version,
                                                           key=key).first()
    before = {"value": current.value} if current else None
    if current is None:
        current = MlflowTag.objects.create(model=model, version=version, key=key, value=value)
    else:
        current.value = value
        current.save(update_fields=["value"])
    _audit_tag(actor, "mlflow.tag_set", model, version, key, before, {"value": value[:500]})
    return current


@transaction.atomic
def delete_tag(*, actor, model: RegisteredModel, key: str,
               version: ModelVersion | None = None) -> None:
    require_team_role(actor, model.team, Role.ENGINEER, "tagging models")
    current = MlflowTag.objects.select_for_update().filter(model=model, version=version,
                                                           key=key).first()
    if current is None:
        where = f"version {version.version} of '{model.name}'" if version else f"'{model.name}'"
        raise NotFound(f"{where} has no tag '{key}'.", field="key")
    _audit_tag(actor, "mlflow.tag_deleted", model, version, key, {"value": current.value[:500]},
               None)
    current.delete()


def _audit_tag(actor, action: str, model: RegisteredModel, version: ModelVersion | None,
               key: str, before: dict | None, after: dict | None) -> None:
    where = f"{model.name}/{version.version}" if version else model.name
    audit.record(actor=actor, action=action, object_type="mlflow_tag",
                 object_id=f"{where}#{key}", object_repr=f"{where} {key}"[:200],
                 team=model.team, before=before, after=after)


@transaction.atomic
def update_version(*, actor, version: ModelVersion, description: str) -> ModelVersion:
    """A version's description (MLflow's ``update_model_version``): engineer."""
    require_team_role(actor, version.model.team, Role.ENGINEER, "editing versions")
    before = {"description": version.description}
    ModelVersion.objects.filter(pk=version.pk).update(description=description)
    version.refresh_from_db()
    if before["description"] != description:
        audit.record(actor=actor, action="version.updated", obj=version,
                     team=version.model.team, before=before,
                     after={"description": description})
    return version


@transaction.atomic
def delete_version(*, actor, version: ModelVersion) -> None:
    """Delete a version (MLflow's ``delete_model_version``): maintainer, and only when no alias
    points at it and no deployment runs or ran it (their history keeps the version)."""
    model = version.model
    require_team_role(actor, model.team, Role.MAINTAINER, "deleting versions")
    aliases = sorted(version.aliases.values_list("name", flat=True))
    if aliases:
        raise Conflict(f"Version {version.version} of '{model.name}' carries the alias(es) "
                       f"{', '.join(aliases)}; move or delete them first.", code="version_aliased")
    audit.record(actor=actor, action="version.deleted", obj=version, team=model.team,
                 before={"model": model.name, "version": version.version,
                         "status": version.status, "sha256": version.artifact_sha256})
    try:
        with transaction.atomic():
            version.delete()
    except ProtectedError:
        raise Conflict(f"Version {version.version} of '{model.name}' is (or was) deployed; "
                       "deployments keep the versions they ran.", code="version_deployed") \
            from None


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
    """Import versions registered in the tracking server's own registry that Modelport does not
    have yet, each for its recorded creator (see the module docstring); run once, by
    ``import_mlflow_registry``, and idempotent."""
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


def refused_count() -> int:
    return MlflowVersion.objects.filter(status=MlflowVersionStatus.REFUSED).count()
