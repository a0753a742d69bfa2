"""Business operations on deployments: one function per verb.

Each verb checks the actor's role, validates everything before touching anything, admits the
resources through ``admission.admit_spec``, writes a new immutable revision when the spec
changes, records an audit event, and enqueues ``reconcile`` after the transaction commits.
Nothing here calls the container runtime except ``replica_logs`` (read-only).
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from compute import targets
from compute.runtime_choice import choose_runtime
from core.errors import Conflict, InvalidInput, NotFound
from registry.models import ModelAlias, ModelVersion, RegisteredModel, VersionStatus
from teams import audit
from teams.access import require_platform_admin, require_team_role
from teams.models import Team
from teams.roles import Role

from . import admission, autoscale, passes, retries
from .events import event
from .models import (
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Revision,
    RevisionState,
    ShadowSample,
    name_validator,
)
from .revisions import DEPLOYMENT_FIELDS, locked, new_revision, rollback_revision, spec_of
from .runtime_health import deployment_runtime
from .spec import (
    Autoscaling,
    DeploymentSpec,
    ResourcesArg,
    StrategyArg,
    StrategyKind,
    as_autoscaling,
    as_resources,
    as_strategy,
    parse_replicas,
)

# Who acts: a signed-in user, or None for the platform itself (an alias it follows moved).
Actor = User | AnonymousUser | None
_UNSET: Any = object()  # "leave as it is" for update_deployment's keyword arguments


# --- Validation ---------------------------------------------------------------------------------
def _model(team: Team, name: Any) -> RegisteredModel:
    model = RegisteredModel.objects.filter(name=str(name or "")).first()
    if model is None or model.team_id != team.pk:
        raise NotFound(f"Team '{team.slug}' has no model '{name}'.", field="model")
    return model


def _resolve(model: RegisteredModel, version: Any, alias: Any) -> tuple[ModelVersion | None,
                                                                        str, ModelVersion]:
    """(pinned version or None, alias or "", the ready version a revision runs)."""
    if version not in (None, "") and alias not in (None, ""):
        raise InvalidInput("Give either version or alias, not both.", field="version")
    if alias not in (None, ""):
        found = ModelAlias.objects.select_related("version").filter(model=model,
                                                                    name=str(alias)).first()
        if found is None:
            raise NotFound(f"Model '{model.name}' has no alias '{alias}'.", field="alias")
        target, pinned, alias = found.version, None, str(alias)
    else:
        if version in (None, ""):
            raise InvalidInput("Give the model version (a number) or an alias to deploy.",
                               field="version")
        if isinstance(version, bool):
            version = "x"
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise InvalidInput(f"version must be a number (got {version!r}).",
                               field="version") from None
        numbered = ModelVersion.objects.filter(model=model, version=number).first()
        if numbered is None:
            raise NotFound(f"Model '{model.name}' has no version {number}.", field="version")
        target, pinned, alias = numbered, numbered, ""
    if target.status != VersionStatus.READY:
        raise Conflict(f"'{model.name}' v{target.version} is {target.status}, not ready; "
                       "only ready versions can be deployed.", code="version_not_ready",
                       field="version")
    return pinned, alias, target


# --- Verbs --------------------------------------------------------------------------------------
@transaction.atomic
def create_deployment(*, actor: Actor, team: Team, name: str, model: str,
                      version: int | str | None = None, alias: str | None = None,
                      replicas: int | str = 1, resources: ResourcesArg = None,
                      strategy: StrategyArg = None, target: Any = None,
                      autoscaling: Autoscaling | dict[str, Any] | None = None) -> Deployment:
    """``target``: the execution target's name (default: ``compute.targets.default_target``).
    ``resources``, ``strategy`` and ``autoscaling`` are typed (``deployments.spec``) or the
    API's dicts, checked here after the name, model, version and target. With ``autoscaling``
    the deployment starts with ``replicas`` held within its bounds (the scaler moves it)."""
    require_team_role(actor, team, Role.ENGINEER, "deploying models")
    try:
        name_validator(name)
    except ValidationError as exc:
        raise InvalidInput(f"'{name}' is not a valid deployment name. {exc.messages[0]}",
                           field="name") from None
    registered = _model(team, model)
    pinned, alias, resolved = _resolve(registered, version, alias)
    execution_target = targets.resolve_target(target)
    spec = DeploymentSpec.parse(replicas=replicas, resources=resources, strategy=strategy)
    scaling = as_autoscaling(autoscaling)
    count = scaling.clamp(spec.replicas) if scaling else spec.replicas
    cpu, memory_mb, gpus = spec.resources.cpu, spec.resources.memory_mb, spec.resources.gpus
    if Deployment.objects.filter(name=name).exists():
        raise Conflict(f"A deployment named '{name}' already exists.", code="name_taken")
    try:
        with transaction.atomic():  # the actor is a member: require_team_role checked
            d = Deployment.objects.create(name=name, team=team, model=registered, version=pinned,
                                          alias=alias, replicas=count, cpu=cpu,
                                          autoscaling=scaling.as_dict() if scaling else {},
                                          memory_mb=memory_mb, gpus=gpus,
                                          strategy=spec.strategy.as_dict(),
                                          target=execution_target,
                                          runtime=choose_runtime(execution_target),
                                          created_by=cast(User | None, actor))
    except IntegrityError:
        raise Conflict(f"A deployment named '{name}' already exists.", code="name_taken") from None
    if scaling:
        autoscale.seed(d, count, timezone.now())
        d.save(update_fields=["scaled_at", "scale_state"])
    admission.admit_spec(team=team, owner=d.owner, replicas=count, cpu=cpu,
                         memory_mb=memory_mb, gpus=gpus, actor=actor)
    new_revision(d, resolved, actor=actor, reason="created")
    audit.record(actor=actor, action="deployment.created", obj=d, team=team,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def update_deployment(*, actor: Actor, deployment: Deployment, version: int | str | None = _UNSET,
                      alias: str | None = _UNSET, replicas: int | str = _UNSET,
                      resources: ResourcesArg = _UNSET, strategy: StrategyArg = _UNSET,
                      autoscaling: Autoscaling | dict[str, Any] | None = _UNSET,
                      system: bool = False) -> Deployment:
    """Any spec change (or re-resolving a followed alias) makes a new revision; what is not
    given stays as it is. ``resources`` as a dict may give only some keys (the others are
    the deployment's); a ``Resources`` replaces all three. ``system``: a rollout the platform
    starts itself (an alias the deployment follows has moved).

    The replica count of an autoscaled deployment and its ``autoscaling`` settings are not
    part of a revision: changing only those (or turning autoscaling on or off) resizes in
    place, nothing restarts. ``autoscaling`` None turns it off (the count stays, at least 1);
    ``replicas`` given with autoscaling on is held within the bounds."""
    if not system:
        require_team_role(actor, deployment.team, Role.ENGINEER, "changing deployments")
    d = locked(deployment)
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    current = Revision.objects.filter(deployment=d, number=d.revision).first()
    if version is not _UNSET or alias is not _UNSET:
        new_version = None if version is _UNSET else version
        new_alias = None if alias is _UNSET else alias
        if version is _UNSET and new_alias in (None, ""):
            raise InvalidInput("Give the model version (a number) or an alias to deploy.",
                               field="alias")
        pinned, new_alias, target = _resolve(d.model, new_version, new_alias)
    else:
        pinned, new_alias = d.version, d.alias
        if d.alias:  # following an alias: re-resolve it
            pinned, new_alias, target = _resolve(d.model, None, d.alias)
        else:
            assert d.version is not None  # a deployment pins a version or follows an alias
            target = d.version
    new_replicas = d.replicas if replicas is _UNSET else parse_replicas(replicas)
    scaling = d.autoscaler if autoscaling is _UNSET else as_autoscaling(autoscaling)
    if scaling is not None:
        asleep = d.replicas == 0 and replicas is _UNSET and d.autoscaling
        new_replicas = 0 if asleep else scaling.clamp(new_replicas)
    else:
        new_replicas = max(new_replicas, 1)
    if resources is _UNSET:
        cpu, memory_mb, gpus = d.cpu, d.memory_mb, d.gpus
    else:
        if isinstance(resources, dict):
            resources = {"cpu": float(d.cpu), "memory_mb": d.memory_mb, "gpus": d.gpus,
                         **resources}
        new_resources = as_resources(resources)
        cpu, memory_mb, gpus = new_resources.cpu, new_resources.memory_mb, new_resources.gpus
    new_strategy = d.strategy if strategy is _UNSET else as_strategy(strategy).as_dict()
    resized = new_replicas != d.replicas or (scaling.as_dict() if scaling else {}) \
        != d.autoscaling
    count_in_revision = scaling is None and not d.autoscaling and "replicas" in (
        current.spec if current else {"replicas": 1})
    d.version, d.alias, d.replicas, d.strategy = pinned, new_alias, new_replicas, new_strategy
    d.autoscaling = scaling.as_dict() if scaling else {}
    if scaling is not None and resized:  # the scaler starts from the count set here
        autoscale.seed(d, new_replicas, timezone.now())
    d.cpu, d.memory_mb, d.gpus = cpu, memory_mb, gpus
    ignored = {"model_version", "rollback_of"} | (set() if count_in_revision else {"replicas"})
    changed = (current is None or current.model_version_id != target.pk
               or {k: v for k, v in spec_of(d).items() if k not in ignored}
               != {k: v for k, v in current.spec.items() if k not in ignored})
    if not changed:
        if resized:
            if not d.stopped:
                admission.admit_spec(team=d.team, owner=d.owner, replicas=new_replicas,
                                     cpu=cpu, memory_mb=memory_mb, gpus=gpus, actor=actor)
            d.save()
            event(d, f"Replicas {before['replicas']} → {new_replicas}"
                     + (f"; autoscaling {_describe(scaling)}" if scaling else
                        "; autoscaling off") + ".", revision=d.revision)
            audit.record(actor=actor, action="deployment.updated", obj=d, team=d.team,
                         before=before, after=audit.snapshot(d, DEPLOYMENT_FIELDS))
            passes.reconcile_on_commit(d)
            return d
        d.save()
        return d
    if not d.stopped:
        admission.admit_spec(team=d.team, owner=d.owner, replicas=new_replicas, cpu=cpu,
                             memory_mb=memory_mb, gpus=gpus, actor=actor)
    new_revision(d, target, actor=actor, reason="spec changed")
    audit.record(actor=actor, action="deployment.updated", obj=d, team=d.team, before=before,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


def _describe(a: Autoscaling) -> str:
    zero = (f", to zero after {a.idle_to_zero_after_s} s idle" if a.idle_to_zero_after_s
            else "")
    return (f"{a.min_replicas} to {a.max_replicas} replicas at {a.target:g} {a.metric.value} per "
            f"replica{zero}")


@transaction.atomic
def set_egress(*, actor: Actor, deployment: Deployment, allowed: bool,
               reason: str = "") -> Deployment:
    """Grant or withdraw outbound network access for a deployment's model code. Platform admins
    only, with a reason when granting; a new revision, so replicas restart on the network
    (docs/security.md: what a model can reach with and without it)."""
    require_platform_admin(actor, "grant or withdraw a deployment's network access")
    if not isinstance(allowed, bool):
        raise InvalidInput("allowed must be true or false.", field="allowed")
    reason = (reason or "").strip()
    if allowed and not reason:
        raise InvalidInput("Say why this model needs the network (the audit log keeps it).",
                           field="reason")
    if len(reason) > 300:
        raise InvalidInput("The reason is at most 300 characters.", field="reason")
    d = locked(deployment)
    if d.egress == allowed:
        return d
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    d.egress, d.egress_reason = allowed, reason if allowed else ""
    current = Revision.objects.filter(deployment=d, number=d.revision) \
        .select_related("model_version").first()
    target = current.model_version if current is not None else d.version
    if target is None:
        raise Conflict(f"'{d.name}' has no revision yet.", code="no_revision")
    new_revision(d, target, actor=actor,
                  reason="network access granted" if allowed else "network access withdrawn")
    audit.record(actor=actor, action="deployment.egress_granted" if allowed
                 else "deployment.egress_withdrawn", obj=d, team=d.team, before=before,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def follow_alias(*, actor: Actor, model: RegisteredModel, alias: str) -> list[Deployment]:
    """Roll out every deployment that follows ``model@alias`` to the version the alias names
    now. Called by the registry right after it moves an alias (by whoever was allowed to move
    it), each rollout by the deployment's own strategy; unchanged deployments stay as they are."""
    rolled = []
    for d in Deployment.objects.filter(model=model, alias=alias).select_related("team"):
        before = d.revision
        d = update_deployment(actor=actor, deployment=d, system=True)
        if d.revision != before:
            rolled.append(d)
    return rolled


def on_alias_moved(sender: object, *, actor: Actor, model: RegisteredModel, alias: str,
                   **kwargs: object) -> None:
    """Receiver of ``registry.signals.alias_moved``."""
    follow_alias(actor=actor, model=model, alias=alias)


@transaction.atomic
def rollback(*, actor: Actor, deployment: Deployment, revision: int | None = None,
             system: bool = False) -> Deployment:
    """A new revision with the spec and model version of an earlier one (default: the newest
    earlier revision that was healthy). ``system``: the reconciler's automatic rollback."""
    if not system:
        require_team_role(actor, deployment.team, Role.ENGINEER, "rolling back deployments")
    d = locked(deployment)
    earlier = d.revisions.filter(number__lt=d.revision)
    if revision is None:
        source = earlier.filter(healthy_at__isnull=False).order_by("-number").first()
        if source is None:
            raise Conflict(f"'{d.name}' has no earlier healthy revision to roll back to.",
                           code="no_previous_revision")
    else:
        source = d.revisions.filter(number=revision).first()
        if source is None:
            raise NotFound(f"'{d.name}' has no revision {revision}.", field="revision")
        if source.number == d.revision:
            raise Conflict(f"Revision {revision} is the current revision.",
                           code="current_revision", field="revision")
    return rollback_revision(d, source, actor=actor)


def _shadowing(d: Deployment, verb: str) -> Revision:
    current = d.revisions.select_related("model_version").filter(number=d.revision).first()
    if current is None or current.state != RevisionState.SHADOW:
        state = current.get_state_display().lower() if current else "missing"
        raise Conflict(f"'{d.name}' has no shadow to {verb}: revision {d.revision} is {state}"
                       f"{'' if d.strategy_type == 'shadow' else ', not a shadow'}.",
                       code="no_shadow")
    return current


@transaction.atomic
def promote(*, actor: Actor, deployment: Deployment, strategy: StrategyArg = None) -> Deployment:
    """End a shadow by rolling its model version out for real: a new revision with the shadow's
    spec and a strategy that takes the traffic (default rolling); the shadow's replicas are
    removed and the stable revision is drained like in any rollout."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "promoting shadow revisions")
    d = locked(deployment)
    shadow = _shadowing(d, "promote")
    new_strategy = as_strategy(strategy)
    if new_strategy.type == StrategyKind.SHADOW:
        raise InvalidInput("Promoting rolls the shadow out for real: give strategy rolling, "
                           "blue_green, canary or linear.", field="strategy")
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    d.strategy = new_strategy.as_dict()
    if not d.stopped:
        admission.admit_spec(team=d.team, owner=d.owner, replicas=d.replicas, cpu=d.cpu,
                             memory_mb=d.memory_mb, gpus=d.gpus, actor=actor)
    new_revision(d, shadow.model_version, actor=actor,
                  reason=f"promote shadow revision {shadow.number}")
    audit.record(actor=actor, action="deployment.promoted", obj=d, team=d.team, before=before,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def discard_shadow(*, actor: Actor, deployment: Deployment) -> Deployment:
    """End a shadow without promoting it: back to the revision that serves (a rollback to it,
    which removes the shadow's replicas)."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "discarding shadow revisions")
    d = locked(deployment)
    _shadowing(d, "discard")
    serving = (d.revisions.filter(state=RevisionState.ACTIVE).exclude(number=d.revision)
               .order_by("-number").first())
    if serving is None:
        raise Conflict(f"'{d.name}' has no serving revision to go back to.",
                       code="no_previous_revision")
    return rollback(actor=actor, deployment=d, revision=serving.number)


@transaction.atomic
def stop(*, actor: Actor, deployment: Deployment) -> Deployment:
    require_team_role(actor, deployment.team, Role.ENGINEER, "stopping deployments")
    d = locked(deployment)
    if d.stopped:
        return d
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    d.stopped = True
    d.status, d.status_message, d.progress = DeploymentStatus.PENDING, "Stopping.", 0
    d.save()
    admission.release_spec(owner=d.owner, actor=actor)
    event(d, "Stop requested.", revision=d.revision)
    audit.record(actor=actor, action="deployment.stopped", obj=d, team=d.team, before=before,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def start(*, actor: Actor, deployment: Deployment) -> Deployment:
    require_team_role(actor, deployment.team, Role.ENGINEER, "starting deployments")
    d = locked(deployment)
    if not d.stopped:
        return d
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    admission.admit_spec(team=d.team, owner=d.owner, replicas=d.replicas, cpu=d.cpu,
                         memory_mb=d.memory_mb, gpus=d.gpus, actor=actor)
    d.stopped = False
    d.status, d.status_message, d.progress = DeploymentStatus.PENDING, "Starting.", 0
    if d.autoscaling:  # a full idle period and scale-down window from now
        autoscale.seed(d, d.replicas, timezone.now())
    d.save()
    event(d, "Start requested.", revision=d.revision)
    retries.rerun_failed(d, actor=actor, why="Started")  # a failed revision is tried again
    audit.record(actor=actor, action="deployment.started", obj=d, team=d.team, before=before,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def retry(*, actor: User | AnonymousUser, deployment: Deployment) -> Deployment:
    """Re-run a failed deployment's current revision (or, for a deployment that is failed or
    degraded with its revision still active, replace its replicas again, crash-loop count
    reset). The reconciler does the work after commit."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "retrying deployments")
    d = locked(deployment)
    revision = Revision.objects.filter(deployment=d, number=d.revision).first()
    if d.stopped:
        raise Conflict(f"'{d.name}' is stopped: Start it (a failed revision runs again when "
                       "started).", code="stopped")
    if revision is None or not retries.retryable(d, revision):
        state = revision.get_state_display().lower() if revision else "missing"
        raise Conflict(f"'{d.name}' has nothing to retry: it is {d.status} and revision "
                       f"{d.revision} is {state}.", code="nothing_to_retry")
    before = {"revision": revision.number, "state": revision.state, "status": d.status,
              "failure": revision.failure, "retry_attempts": revision.retry_attempts}
    if retries.rerun_failed(d, actor=actor, why="Retry requested") is None:
        Revision.objects.filter(pk=revision.pk).update(retried_at=timezone.now())
        DeploymentEvent.objects.create(
            deployment=d, revision=revision.number,
            message=f"Retry requested by {actor.username}: replicas of revision "
                    f"{revision.number} are replaced again (crash-loop count reset).")
    d.status, d.status_message, d.progress = (DeploymentStatus.PENDING,
                                              f"Retrying revision {d.revision}.", 0)
    d.save(update_fields=["status", "status_message", "progress", "updated_at"])
    revision.refresh_from_db()
    audit.record(actor=actor, action="deployment.retried", obj=d, team=d.team, before=before,
                 after={"revision": revision.number, "state": revision.state,
                        "status": d.status, "retry_attempts": revision.retry_attempts})
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def delete(*, actor: Actor, deployment: Deployment) -> None:
    """Forget the deployment and give back its quota; its containers are removed after commit
    (and by the orphan sweep, ``deployments.orphans``, if that is interrupted)."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "deleting deployments")
    d = locked(deployment)
    name, target_id, runtime = d.name, d.target_id, d.runtime
    audit.record(actor=actor, action="deployment.deleted", obj=d, team=d.team,
                 before=audit.snapshot(d, DEPLOYMENT_FIELDS))
    admission.release_spec(owner=d.owner, actor=actor)
    d.delete()
    transaction.on_commit(lambda: passes.enqueue_remove(name, target_id, runtime))


def get_visible(user: Actor, name: str) -> Deployment:
    d = (Deployment.objects.visible_to(user).select_related("team", "model", "version")
         .filter(name=name).first())
    if d is None:
        raise NotFound(f"No deployment '{name}'.")
    return d


def replica_logs(*, actor: Actor, deployment: Deployment, replica: str | None = None,
                 tail: int = 200) -> list[dict[str, str | None]]:
    """Recent log lines of one replica (or of each), read through the runtime; ``error`` says
    why a replica's could not be read."""
    require_team_role(actor, deployment.team, Role.VIEWER, "reading logs")
    ids = list(deployment.replica_set.values_list("runtime_id", flat=True))
    if replica:
        if replica not in ids:
            raise NotFound(f"Deployment '{deployment.name}' has no replica '{replica}'.")
        ids = [replica]
    tail = max(1, min(int(tail), 5000))
    out = []
    runtime = None
    for rid in ids:
        # An unreachable runtime is an answer per replica, not a 500.
        try:
            runtime = runtime or deployment_runtime(deployment)
            out.append({"replica": rid, "logs": runtime.logs(rid, tail=tail), "error": None})
        except Exception as exc:  # noqa: BLE001 - e.g. Docker down, no cluster credentials
            out.append({"replica": rid, "logs": "",
                        "error": f"The runtime did not give the logs: {type(exc).__name__}: "
                                 f"{exc}"})
    return out


def shadow_summary(d: Deployment) -> dict[str, Any] | None:
    """The numbers of the revision the gateways mirror requests to now, or None."""
    revision = (d.shadow or {}).get("revision")
    if revision is None:
        return None
    summary = ShadowSample.objects.summary(d.pk, int(revision))
    return {**summary, "percent": int(d.shadow.get("percent", 100))}


def alias_drift(d: Deployment) -> dict[str, Any] | None:
    """When ``d`` follows an alias that now names another version than its desired revision
    runs (its rollout failed and was rolled back, or the move found it over quota): the alias,
    the version it names and the one that runs. None otherwise. Rolling out is
    ``update_deployment(..., alias=d.alias)``."""
    if not d.alias:
        return None
    alias = ModelAlias.objects.select_related("version").filter(model=d.model_id,
                                                                name=d.alias).first()
    current = d.revisions.select_related("model_version").filter(number=d.revision).first()
    if alias is None or current is None or current.model_version_id == alias.version_id:
        return None
    return {"alias": d.alias, "alias_version": alias.version.version,
            "running_version": current.model_version.version,
            "ready": alias.version.status == VersionStatus.READY}


def endpoint(d: Deployment) -> str:
    return f"{settings.MODELPORT_BASE_URL.rstrip('/')}/serve/{d.name}/invocations"
