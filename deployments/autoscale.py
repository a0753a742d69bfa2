"""The scaler: how many replicas an autoscaled deployment runs, and waking one scaled to zero.

Beat runs ``autoscale_all`` every ``MODELPORT_AUTOSCALE_SECONDS``. For each deployment with
``autoscaling`` set, ``decide`` reads the load of the last ``MODELPORT_AUTOSCALE_WINDOW_S`` from
what the gateways wrote (``TrafficSample``: requests answered, and the time they spent in flight,
whose sum over the window is the mean number of requests in flight), or the replicas' CPU through
a hook monitoring registers, and wants ``ceil(load / target)`` replicas within the bounds. Like
Kubernetes' HPA it scales up at once, keeps a 10 % tolerance band, and scales down only to the
highest count wanted over the last ``scale_down_delay_s`` (a stabilisation window), so a dip
never removes a replica a burst needs again a moment later. More replicas are admitted against
the team's quota and the target's capacity like any deployment; what does not fit is an event,
once per reason. A deployment with no request for ``idle_to_zero_after_s`` keeps its revision
and route but runs no replica and holds no CPU, memory or GPU of the quota (``IDLE``).

``wake`` is what the edge calls when a request finds a deployment at zero: the first caller
admits ``min_replicas`` under the deployment's row lock and enqueues the wake pass; every
concurrent caller finds the count already raised, so concurrent wakes start one set of
replicas, not many. The count changes here never make a revision (nothing restarts); the
reconciler converges to ``Deployment.replicas`` as for any change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from core.errors import Conflict, DomainError
from core.queue import task
from teams import audit

from . import admission, passes
from .events import event, set_status
from .models import (
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Replica,
    RevisionState,
    ScaleSample,
    TrafficSample,
)
from .spec import Autoscaling, ScaleMetric

log = logging.getLogger(__name__)
Kind = DeploymentEvent.Kind
WAKE = "deployments.tasks.wake"
TOLERANCE = 0.1  # |load / (replicas x target) - 1| within this: no change (as the HPA)
SAMPLE_EVERY_S = 60  # a replica-count sample at least this often, besides every change

# monitoring registers this (MonitoringConfig.ready): the replicas' mean CPU percent over a
# window, summed over replicas (100 = one core), or None without samples.
CpuLoad = Callable[..., "float | None"]
_cpu_load: list[CpuLoad] = []


def register_cpu_load(fn: CpuLoad) -> CpuLoad:
    if fn not in _cpu_load:
        _cpu_load.append(fn)
    return fn


@dataclass(frozen=True)
class Decision:
    """What one look at a deployment concluded: the count it wants now and why."""

    current: int
    wanted: int
    load: float | None  # total load over the window in the metric's unit; None: unknown
    reason: str


# --- reading the load ---------------------------------------------------------------------------
def load(d: Deployment, a: Autoscaling, *, now: datetime | None = None) -> float | None:
    """The deployment's total load over the window, in ``a.metric``'s unit (all replicas)."""
    now = now or timezone.now()
    window = settings.MODELPORT_AUTOSCALE_WINDOW_S
    if a.metric == ScaleMetric.CPU:
        for fn in _cpu_load:
            return fn(deployment=d, since=now - timedelta(seconds=window))
        return None
    totals = (TrafficSample.objects.filter(deployment=d, at__gt=now - timedelta(seconds=window))
              .aggregate(busy=Sum("busy_ms"), answered=Sum("gateway_requests")))
    if a.metric == ScaleMetric.RPS:
        return (totals["answered"] or 0) / window
    return (totals["busy"] or 0.0) / (window * 1000.0)


def last_request_before(d: Deployment, since: datetime) -> bool:
    """Whether any request reached the deployment after ``since``."""
    return TrafficSample.objects.filter(deployment=d, at__gt=since).filter(
        Q(gateway_requests__gt=0) | Q(requests__gt=0)).exists()


def want(a: Autoscaling, current: int, total: float | None) -> tuple[int, str]:
    """The count for ``total`` load (before the scale-down window), and why."""
    if total is None:
        return current, "no load figures yet"
    unit = {ScaleMetric.CONCURRENCY: "requests in flight", ScaleMetric.RPS: "requests/s",
            ScaleMetric.CPU: "% CPU"}[a.metric]
    per = total / max(current, 1)
    why = f"{per:.1f} {unit} per replica against a target of {a.target:g}"
    if current and abs(total / (current * a.target) - 1) <= TOLERANCE:
        return a.clamp(current), why
    return a.clamp(math.ceil(total / a.target - 1e-9) if total > 0 else a.min_replicas), why


def settings_of(d: Deployment) -> Autoscaling:
    """The deployment's autoscaling, its counts held within today's ``MODELPORT_MAX_REPLICAS``
    (stored settings stay valid when an operator lowers it: a sleeping deployment still wakes)."""
    limit = settings.MODELPORT_MAX_REPLICAS
    stored = dict(d.autoscaling)
    for key in ("min_replicas", "max_replicas"):
        if isinstance(stored.get(key), int) and not isinstance(stored.get(key), bool):
            stored[key] = max(1, min(stored[key], limit))
    a = Autoscaling.parse(stored)
    assert a is not None  # only called for autoscaled deployments
    return a


def seed(d: Deployment, count: int, now: datetime) -> None:
    """A count the platform set itself (created, started, resized by a user): the scaler's
    window starts from it, so it is neither undone at the next tick nor idle at once."""
    d.scaled_at = now
    d.scale_state = {"wanted": [[now.timestamp(), count]]}


# --- the beat tick ------------------------------------------------------------------------------
def autoscale_all() -> int:
    """Beat: one look at every running autoscaled deployment; how many changed count."""
    changed = 0
    ids = list(Deployment.objects.filter(stopped=False).exclude(autoscaling={})
               .values_list("pk", flat=True))
    for pk in ids:
        try:
            changed += bool(autoscale(pk))
        except Exception:  # one deployment's trouble never stops the others' scaling
            log.exception("autoscaling deployment %s failed", pk)
    return changed


def autoscale(deployment_id: int, *, now: datetime | None = None) -> Decision | None:
    """Look at one deployment and change its count when due; the decision, or None when it is
    not the scaler's to change now (stopped, fixed, rolling out, failed, asleep, locked)."""
    now = now or timezone.now()
    with transaction.atomic():
        d = (Deployment.objects.select_for_update(skip_locked=True, of=("self",))
             .select_related("team").filter(pk=deployment_id).first())
        if d is None or d.stopped or not d.autoscaling:
            return None
        a = settings_of(d)
        ready = Replica.objects.filter(deployment=d, ready=True, revision=d.revision).count()
        if d.replicas == 0 or not _steady(d):
            _sample(d, d.replicas, ready, None, now)
            return None
        if a.idle_to_zero_after_s and _idle_for(d, a.idle_to_zero_after_s, now):
            _to_zero(d, a, now)
            return Decision(d.replicas, 0, 0.0, "idle")
        total = load(d, a, now=now)
        wanted, why = want(a, d.replicas, total)
        decision = _stabilise(d, a, wanted, now, why, total)
        per = None if total is None else total / max(d.replicas, 1)
        if decision.wanted > d.replicas:
            _scale_up(d, a, decision, now)
        elif decision.wanted < d.replicas:
            d.scale_state.pop("capped", None)  # the episode is over: a new cap is news again
            _set_count(d, decision.wanted, now, f"Scaling down {d.replicas} → "
                                                f"{decision.wanted}: {why} for "
                                                f"{a.scale_down_delay_s} s.")
        d.save(update_fields=["scale_state"])
        _sample(d, d.replicas, ready, per, now)
        return decision if decision.wanted != decision.current else None


def _steady(d: Deployment) -> bool:
    """Only a deployment whose desired revision serves is scaled: never mid-rollout (the
    strategies count replicas) nor while its revision failed."""
    if d.status in (DeploymentStatus.PENDING, DeploymentStatus.BUILDING,
                    DeploymentStatus.FAILED):
        return False
    return d.revisions.filter(number=d.revision, state=RevisionState.ACTIVE).exists()


def _idle_for(d: Deployment, seconds: int, now: datetime) -> bool:
    since = now - timedelta(seconds=seconds)
    if d.scaled_at and d.scaled_at > since:  # woken (or scaled) lately: give it the period
        return False
    if d.created_at > since:
        return False
    return not last_request_before(d, since)


def _stabilise(d: Deployment, a: Autoscaling, wanted: int, now: datetime, why: str,
               total: float | None) -> Decision:
    """Up at once; down only to the highest count wanted over the scale-down window."""
    stamp = now.timestamp()
    history = [(t, n) for t, n in (d.scale_state or {}).get("wanted", [])
               if t > stamp - a.scale_down_delay_s]
    history.append((stamp, wanted))
    d.scale_state = {**(d.scale_state or {}), "wanted": history[-600:]}
    if wanted >= d.replicas:
        return Decision(d.replicas, wanted, total, why)
    held = max(n for _, n in history)
    return Decision(d.replicas, min(d.replicas, max(held, wanted)), total, why)


def _scale_up(d: Deployment, a: Autoscaling, decision: Decision, now: datetime) -> None:
    """Admit the most replicas up to the decision that the quota and the target hold."""
    refusal = code = ""
    for count in range(decision.wanted, d.replicas, -1):
        try:
            with transaction.atomic():
                admission.admit_spec(team=d.team, owner=d.owner, replicas=count, cpu=d.cpu,
                                     memory_mb=d.memory_mb, gpus=d.gpus)
        except DomainError as exc:
            refusal, code = refusal or str(exc), code or exc.code
            continue
        if count < decision.wanted:
            _capped(d, f"Scale-up capped at {count} of the {decision.wanted} replicas wanted "
                       f"({decision.reason}): {refusal}", key=f"{count}: {code}")
        else:
            d.scale_state.pop("capped", None)
        _set_count(d, count, now, f"Scaling up {d.replicas} → {count}: {decision.reason}.",
                   admitted=True)
        return
    _capped(d, f"Cannot scale up to {decision.wanted} replicas ({decision.reason}): {refusal}",
            key=f"{d.replicas}: {code}")


def _capped(d: Deployment, message: str, *, key: str = "") -> None:
    """An event when the scale-up stops short, once per distinct reason: ``key`` (the count
    it stopped at and the refusal's code, quota or target) leaves out the figures of
    ``message`` (the load, what the count tried needs), which differ at every look while the
    cap stays the same."""
    key = key or message
    if (d.scale_state or {}).get("capped") != key:
        event(d, message, kind=Kind.WARNING, revision=d.revision)
        d.scale_state = {**(d.scale_state or {}), "capped": key}


def _set_count(d: Deployment, count: int, now: datetime, message: str, *,
               admitted: bool = False) -> None:
    before = d.replicas
    if not admitted:  # scaling down or to zero: give back what the fewer replicas free
        # (never refused: a target whose capacity was lowered below its use must still let
        # a deployment shrink)
        admission.shrink_spec(owner=d.owner, replicas=count, cpu=d.cpu,
                              memory_mb=d.memory_mb, gpus=d.gpus)
    d.replicas, d.scaled_at = count, now
    d.save(update_fields=["replicas", "scaled_at", "scale_state"])
    event(d, message, revision=d.revision)
    audit.record(actor=None, action="deployment.scaled", obj=d, team=d.team,
                 before={"replicas": before}, after={"replicas": count, "why": message})
    passes.reconcile_on_commit(d)


def _to_zero(d: Deployment, a: Autoscaling, now: datetime) -> None:
    d.scale_state = {"wanted": []}
    _set_count(d, 0, now, f"Scaling to zero: no request for {a.idle_to_zero_after_s} s. The "
                          "next request wakes it.")
    set_status(d, DeploymentStatus.IDLE, "Idle (scaled to zero): the next request starts a "
                                         "replica.", 100)
    _sample(d, 0, 0, 0.0, now, force=True)


def _sample(d: Deployment, desired: int, ready: int, per: float | None, now: datetime, *,
            force: bool = False) -> None:
    last = d.scale_samples.order_by("-at").values("at", "desired", "ready").first()
    if (force or last is None or (last["desired"], last["ready"]) != (desired, ready)
            or (now - last["at"]).total_seconds() >= SAMPLE_EVERY_S):
        ScaleSample.objects.create(deployment=d, at=now, desired=desired, ready=ready,
                                   metric=per)


# --- waking -------------------------------------------------------------------------------------
def wake(deployment_id: int) -> bool:
    """Start a deployment that is asleep (scaled to zero); True when this call woke it, False
    when it was awake already (or woken by a concurrent call). ``Conflict`` when the team's
    quota or the target no longer has room for one replica: the caller says so."""
    with transaction.atomic():
        d = (Deployment.objects.select_for_update(of=("self",)).select_related("team")
             .filter(pk=deployment_id).first())
        if d is None or d.stopped or d.replicas > 0 or not d.autoscaling:
            return False
        a = settings_of(d)
        count = a.min_replicas
        try:
            with transaction.atomic():  # a savepoint: the refusal's note below is kept
                admission.admit_spec(team=d.team, owner=d.owner, replicas=count, cpu=d.cpu,
                                     memory_mb=d.memory_mb, gpus=d.gpus)
        except Conflict as exc:
            _capped(d, f"Cannot wake: {exc}")
            d.save(update_fields=["scale_state"])
            refused: Conflict | None = exc
        else:
            refused = None
            now = timezone.now()
            d.scale_state = {"wanted": [[now.timestamp(), count]]}
            _set_count_no_pass(d, count, now)
            set_status(d, DeploymentStatus.STARTING, "Waking: a request arrived; starting "
                                                     f"{count} replica(s).", 50)
            _sample(d, count, 0, None, now, force=True)
            pk = d.pk
            transaction.on_commit(lambda: task(WAKE).delay(pk))
    if refused is not None:  # raised out of the block: the event and the note are committed
        raise refused
    return True


def _set_count_no_pass(d: Deployment, count: int, now: datetime) -> None:
    before = d.replicas
    d.replicas, d.scaled_at = count, now
    d.save(update_fields=["replicas", "scaled_at", "scale_state"])
    event(d, f"Waking from zero: a request arrived; starting {count} replica(s).",
          revision=d.revision)
    audit.record(actor=None, action="deployment.woken", obj=d, team=d.team,
                 before={"replicas": before}, after={"replicas": count})


def asleep(d: Deployment | dict[str, Any]) -> bool:
    """Whether a deployment (or its row's values) is scaled to zero and waits for a request."""
    get = d.get if isinstance(d, dict) else (lambda key: getattr(d, key))
    return bool(get("autoscaling")) and get("replicas") == 0 and not get("stopped")
