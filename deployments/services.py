"""Business operations on deployments: one function per verb.

Each verb checks the actor's role, validates everything before touching anything, admits the
resources through ``admission.admit_spec``, writes a new immutable revision when the spec
changes, records an audit event, and enqueues ``reconcile`` after the transaction commits.
Nothing here calls the container runtime except ``replica_logs`` (read-only).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
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

from . import admission, passes, retries
from .events import event
from .models import (
    STRATEGIES,
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

MAX_CPU = Decimal("256")
MAX_MEMORY_MB = 1024 * 1024
MAX_GPUS = 64
_UNSET: Any = object()
SHADOW_DEFAULT_PERCENT = 100
SHADOW_DEFAULT_TOLERANCE = 1e-6
LINEAR_DEFAULT_STEP_PERCENT = 25


# --- Validation ---------------------------------------------------------------------------------
def _replicas(value: Any) -> int:
    limit = settings.MODELPORT_MAX_REPLICAS
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, bool) or str(value).strip() != str(int(str(value).strip())):
                raise ValueError
            value = int(str(value).strip())
        except (TypeError, ValueError):
            raise InvalidInput("replicas must be a whole number.", field="replicas") from None
    if value < 1 or value > limit:
        raise InvalidInput(f"replicas must be between 1 and {limit} (got {value}).",
                           field="replicas")
    return value


def _resources(raw: Any) -> tuple[Decimal, int, int]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput("resources must be an object like {\"cpu\": 1, \"memory_mb\": 1024, "
                           "\"gpus\": 0}.", field="resources")
    unknown = sorted(set(raw) - {"cpu", "memory_mb", "gpus"})
    if unknown:
        raise InvalidInput(f"resources has unknown key(s) {', '.join(unknown)}; expected cpu, "
                           "memory_mb, gpus.", field="resources")
    try:
        cpu_raw = raw.get("cpu", 1)
        if isinstance(cpu_raw, bool):
            raise InvalidOperation
        cpu = Decimal(str(cpu_raw))
        if not cpu.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"resources.cpu must be a number of cores, e.g. 0.5 (got "
                           f"{raw.get('cpu')!r}).", field="resources") from None
    if cpu <= 0 or cpu > MAX_CPU or cpu != cpu.quantize(Decimal("0.01")):
        raise InvalidInput(f"resources.cpu must be more than 0 and at most {MAX_CPU}, in steps "
                           "of 0.01.", field="resources")

    def whole(key: str, default: int, minimum: int, maximum: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"resources.{key} must be a whole number (got {value!r}).",
                               field="resources")
        if value < minimum or value > maximum:
            raise InvalidInput(f"resources.{key} must be between {minimum} and {maximum} "
                               f"(got {value}).", field="resources")
        return value

    memory_mb = whole("memory_mb", 1024, 64, MAX_MEMORY_MB)
    gpus = whole("gpus", 0, 0, MAX_GPUS)
    return cpu, memory_mb, gpus


def _strategy(raw: Any) -> dict[str, Any]:
    if raw in (None, {}):
        return {"type": "rolling"}
    if not isinstance(raw, dict):
        raise InvalidInput("strategy must be an object like {\"type\": \"rolling\"}.",
                           field="strategy")
    kind = raw.get("type", "rolling")
    if kind not in STRATEGIES:
        raise InvalidInput(f"strategy.type must be one of {', '.join(STRATEGIES)} "
                           f"(got {kind!r}).", field="strategy")
    unknown = sorted(set(raw) - {"type", "steps", "interval_s", "percent", "tolerance",
                                 "step_percent"})
    if unknown:
        raise InvalidInput(f"strategy has unknown key(s) {', '.join(unknown)}.", field="strategy")
    out: dict[str, Any] = {"type": kind}
    if kind == "shadow":
        percent = raw.get("percent", SHADOW_DEFAULT_PERCENT)
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            raise InvalidInput("strategy.percent (the share of requests mirrored to the shadow "
                               f"revision) must be a whole number from 1 to 100 (got {percent!r}).",
                               field="strategy")
        tolerance = raw.get("tolerance", SHADOW_DEFAULT_TOLERANCE)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
                or not 0 <= tolerance <= 1e6:
            raise InvalidInput("strategy.tolerance (how far apart two numeric predictions may be "
                               "and still agree) must be a number from 0 to 1000000 "
                               f"(got {tolerance!r}).", field="strategy")
        if "steps" in raw or "interval_s" in raw or "step_percent" in raw:
            raise InvalidInput("strategy.steps, interval_s and step_percent apply only to "
                               "canary and linear.", field="strategy")
        out.update(percent=percent, tolerance=tolerance)
        return out
    if "percent" in raw or "tolerance" in raw:
        raise InvalidInput("strategy.percent and tolerance apply only to shadow.",
                           field="strategy")
    if "step_percent" in raw and kind != "linear":
        raise InvalidInput("strategy.step_percent applies only to linear.", field="strategy")
    if kind == "linear":
        step = raw.get("step_percent", LINEAR_DEFAULT_STEP_PERCENT)
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 99:
            raise InvalidInput("strategy.step_percent (the share of traffic each step adds) "
                               f"must be a whole number from 1 to 99 (got {step!r}).",
                               field="strategy")
        if "steps" in raw:
            raise InvalidInput("strategy.steps applies only to canary; linear steps by "
                               "step_percent.", field="strategy")
        out.update(step_percent=step, interval_s=_interval(raw))
    elif kind == "canary":
        steps = raw.get("steps", [10, 50, 100])
        if (not isinstance(steps, list) or not steps
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100
                           for s in steps)
                or steps != sorted(steps) or steps[-1] != 100):
            raise InvalidInput("strategy.steps must be increasing percentages ending at 100, "
                               "e.g. [10, 50, 100].", field="strategy")
        out.update(steps=steps, interval_s=_interval(raw))
    elif "steps" in raw or "interval_s" in raw:
        raise InvalidInput("strategy.steps and interval_s apply only to canary (interval_s "
                           "also to linear).", field="strategy")
    return out


def _interval(raw: dict[str, Any]) -> int | float:
    interval = raw.get("interval_s", 60)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
            or not 0 <= interval <= 86400:
        raise InvalidInput("strategy.interval_s must be seconds between 0 and 86400.",
                           field="strategy")
    return interval


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
def create_deployment(*, actor, team: Team, name: str, model: str, version: Any = None,
                      alias: Any = None, replicas: Any = 1, resources: Any = None,
                      strategy: Any = None, target: Any = None) -> Deployment:
    """``target``: the execution target's name (default: ``compute.targets.default_target``)."""
    require_team_role(actor, team, Role.ENGINEER, "deploying models")
    try:
        name_validator(name)
    except ValidationError as exc:
        raise InvalidInput(f"'{name}' is not a valid deployment name. {exc.messages[0]}",
                           field="name") from None
    registered = _model(team, model)
    pinned, alias, resolved = _resolve(registered, version, alias)
    execution_target = targets.resolve_target(target)
    replicas = _replicas(replicas)
    cpu, memory_mb, gpus = _resources(resources)
    strategy = _strategy(strategy)
    if Deployment.objects.filter(name=name).exists():
        raise Conflict(f"A deployment named '{name}' already exists.", code="name_taken")
    try:
        with transaction.atomic():
            d = Deployment.objects.create(name=name, team=team, model=registered, version=pinned,
                                          alias=alias, replicas=replicas, cpu=cpu,
                                          memory_mb=memory_mb, gpus=gpus, strategy=strategy,
                                          target=execution_target,
                                          runtime=choose_runtime(execution_target),
                                          created_by=actor)
    except IntegrityError:
        raise Conflict(f"A deployment named '{name}' already exists.", code="name_taken") from None
    admission.admit_spec(team=team, owner=d.owner, replicas=replicas, cpu=cpu,
                         memory_mb=memory_mb, gpus=gpus, actor=actor)
    new_revision(d, resolved, actor=actor, reason="created")
    audit.record(actor=actor, action="deployment.created", obj=d, team=team,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def update_deployment(*, actor, deployment: Deployment, version: Any = _UNSET,
                      alias: Any = _UNSET, replicas: Any = _UNSET, resources: Any = _UNSET,
                      strategy: Any = _UNSET, system: bool = False) -> Deployment:
    """Any spec change (or re-resolving a followed alias) makes a new revision. ``system``: a
    rollout the platform starts itself (an alias the deployment follows has moved)."""
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
    new_replicas = d.replicas if replicas is _UNSET else _replicas(replicas)
    if resources is _UNSET:
        cpu, memory_mb, gpus = d.cpu, d.memory_mb, d.gpus
    else:
        merged = {"cpu": float(d.cpu), "memory_mb": d.memory_mb, "gpus": d.gpus,
                  **(resources if isinstance(resources, dict) else {})}
        cpu, memory_mb, gpus = _resources(merged if isinstance(resources, dict) else resources)
    new_strategy = d.strategy if strategy is _UNSET else _strategy(strategy)
    d.version, d.alias, d.replicas, d.strategy = pinned, new_alias, new_replicas, new_strategy
    d.cpu, d.memory_mb, d.gpus = cpu, memory_mb, gpus
    changed = (current is None or current.model_version_id != target.pk
               or spec_of(d) != {k: v for k, v in current.spec.items()
                               if k not in ("model_version", "rollback_of")})
    if not changed:
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


@transaction.atomic
def set_egress(*, actor, deployment: Deployment, allowed: bool, reason: str = "") -> Deployment:
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
def follow_alias(*, actor, model: RegisteredModel, alias: str) -> list[Deployment]:
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


def on_alias_moved(sender: object, *, actor, model: RegisteredModel, alias: str,
                   **kwargs: object) -> None:
    """Receiver of ``registry.signals.alias_moved``."""
    follow_alias(actor=actor, model=model, alias=alias)


@transaction.atomic
def rollback(*, actor, deployment: Deployment, revision: int | None = None,
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
def promote(*, actor, deployment: Deployment, strategy: Any = None) -> Deployment:
    """End a shadow by rolling its model version out for real: a new revision with the shadow's
    spec and a strategy that takes the traffic (default rolling); the shadow's replicas are
    removed and the stable revision is drained like in any rollout."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "promoting shadow revisions")
    d = locked(deployment)
    shadow = _shadowing(d, "promote")
    new_strategy = _strategy(strategy if strategy not in (None, {}) else {"type": "rolling"})
    if new_strategy["type"] == "shadow":
        raise InvalidInput("Promoting rolls the shadow out for real: give strategy rolling, "
                           "blue_green, canary or linear.", field="strategy")
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    d.strategy = new_strategy
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
def discard_shadow(*, actor, deployment: Deployment) -> Deployment:
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
def stop(*, actor, deployment: Deployment) -> Deployment:
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
def start(*, actor, deployment: Deployment) -> Deployment:
    require_team_role(actor, deployment.team, Role.ENGINEER, "starting deployments")
    d = locked(deployment)
    if not d.stopped:
        return d
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    admission.admit_spec(team=d.team, owner=d.owner, replicas=d.replicas, cpu=d.cpu,
                         memory_mb=d.memory_mb, gpus=d.gpus, actor=actor)
    d.stopped = False
    d.status, d.status_message, d.progress = DeploymentStatus.PENDING, "Starting.", 0
    d.save()
    event(d, "Start requested.", revision=d.revision)
    retries.rerun_failed(d, actor=actor, why="Started")  # a failed revision is tried again
    audit.record(actor=actor, action="deployment.started", obj=d, team=d.team, before=before,
                 after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d


@transaction.atomic
def retry(*, actor, deployment: Deployment) -> Deployment:
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
def delete(*, actor, deployment: Deployment) -> None:
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


def get_visible(user, name: str) -> Deployment:
    d = (Deployment.objects.visible_to(user).select_related("team", "model", "version")
         .filter(name=name).first())
    if d is None:
        raise NotFound(f"No deployment '{name}'.")
    return d


def replica_logs(*, actor, deployment: Deployment, replica: str | None = None,
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


def endpoint(d: Deployment) -> str:
    return f"{settings.MODELPORT_BASE_URL.rstrip('/')}/serve/{d.name}/invocations"
