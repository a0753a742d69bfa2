"""Business operations on quotas, reservations, usage and admission (resource requests and
the grants they lead to are ``resource_requests.py``).

One function per verb; the API, the portal, Django admin and Celery tasks all call these. Each
mutation checks the actor's role (``teams.access``), runs in a transaction and writes an audit
record. ``admit`` is the single call site deployments use when they create, scale or change
resources: it locks the team's quota row so concurrent deploys cannot over-allocate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from notifications.services import notify
from teams import audit
from teams.access import require_platform_admin
from teams.models import Team

from . import capacity
from .models import (
    QuotaGrant,
    Reservation,
    ResourceRequest,
    TeamQuota,
)

QUOTA_FIELDS = ["cpu", "memory_mb", "gpus", "deployments"]
RESERVATION_FIELDS = ["owner", "state", "cpu", "memory_mb", "gpus", "deployments"]

# Anything above these is a typo, not a request (400, not 409).
MAX_AMOUNT: dict[str, Decimal | int] = {"cpu": Decimal("100000"), "memory_mb": 1024 ** 3,
                                        "gpus": 10000, "deployments": 100000}
UNIT = {"cpu": "CPU", "memory_mb": "MB memory", "gpus": "GPU", "deployments": "deployment"}
LABEL = {"cpu": "CPU", "memory_mb": "Memory (MB)", "gpus": "GPUs", "deployments": "Deployments"}


# --- Amounts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    cpu: Decimal = Decimal("0")
    memory_mb: int = 0
    gpus: int = 0
    deployments: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, f.name) + getattr(other, f.name)
                           for f in fields(self)))

    def __sub__(self, other: Resources) -> Resources:
        return Resources(*(getattr(self, f.name) - getattr(other, f.name)
                           for f in fields(self)))

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls, obj) -> Resources:
        return cls(cpu=Decimal(obj.cpu), memory_mb=obj.memory_mb, gpus=obj.gpus,
                   deployments=getattr(obj, "deployments", 0))


def fmt(value) -> str:
    """4 → '4', 1.500 → '1.5': numbers as people write them."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _cpu(value, field: str = "cpu") -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{field} must be a number of cores, e.g. 0.5 or 4.",
                           field=field) from None
    if not number.is_finite():
        raise InvalidInput(f"{field} must be a finite number.", field=field)
    if abs(number) > MAX_AMOUNT["cpu"] * 1000:
        raise InvalidInput(f"{field}={value} is beyond any machine here.", field=field)
    if number != number.quantize(Decimal("0.001")):
        raise InvalidInput(f"{field} has at most 3 decimal places (1 millicore).", field=field)
    return number.quantize(Decimal("0.001"))


def _whole(value, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        if isinstance(value, bool):
            raise ValueError
        number = Decimal(str(value))
        if number != number.to_integral_value():
            raise ValueError
        return int(number)
    except (InvalidOperation, ValueError, OverflowError):
        raise InvalidInput(f"{field} must be a whole number.", field=field) from None


def _amounts(*, cpu=0, memory_mb=0, gpus=0, deployments=0,
             allow_negative: bool = False) -> Resources:
    """Validated amounts; negative only for deltas (scale down), absurd values refused."""
    resources = Resources(cpu=_cpu(cpu or 0), memory_mb=_whole(memory_mb or 0, "memory_mb"),
                          gpus=_whole(gpus or 0, "gpus"),
                          deployments=_whole(deployments or 0, "deployments"))
    for name, value in resources.as_dict().items():
        if value < 0 and not allow_negative:
            raise InvalidInput(f"{name} cannot be negative.", field=name)
        if abs(value) > MAX_AMOUNT[name]:
            raise InvalidInput(f"{name}={fmt(value)} is beyond any machine here "
                               f"(at most {fmt(MAX_AMOUNT[name])}).", field=name)
    return resources


def _default_limits() -> dict:
    return {"cpu": _cpu(settings.MODELPORT_DEFAULT_QUOTA_CPU),
            "memory_mb": settings.MODELPORT_DEFAULT_QUOTA_MEMORY_MB,
            "gpus": settings.MODELPORT_DEFAULT_QUOTA_GPUS,
            "deployments": settings.MODELPORT_DEFAULT_QUOTA_DEPLOYMENTS}


# --- Reading usage ------------------------------------------------------------------------------
def get_quota(team: Team) -> TeamQuota:
    """The team's quota row, created with the settings' defaults the first time it is needed."""
    quota = TeamQuota.objects.filter(team=team).first()
    if quota is None:
        try:
            with transaction.atomic():
                quota = TeamQuota.objects.create(team=team, **_default_limits())
        except IntegrityError:  # created concurrently
            quota = TeamQuota.objects.get(team=team)
    return quota


def _locked_quota(team: Team) -> TeamQuota:
    get_quota(team)
    return TeamQuota.objects.select_for_update().get(team=team)


def lock_team(team: Team) -> TeamQuota:
    """Lock the team's quota row: what serialises every admission (and GPU allocation) of
    this team, until the transaction ends."""
    return _locked_quota(team)


def reserved(team: Team) -> Resources:
    """What the team's reservations hold now (running and pending)."""
    return _reserved(team)


def _sum(queryset, names: Iterable[str]) -> dict:
    totals = queryset.aggregate(**{name: Sum(name) for name in names})
    return {name: totals[name] or 0 for name in names}


def _grants(team: Team, at: datetime | None = None) -> Resources:
    totals = _sum(QuotaGrant.objects.active(at).filter(team=team), ["cpu", "memory_mb", "gpus"])
    return Resources(cpu=Decimal(totals["cpu"]), memory_mb=totals["memory_mb"],
                     gpus=totals["gpus"])


def _reserved(team: Team, state: str | None = None) -> Resources:
    queryset = Reservation.objects.filter(team=team)
    if state:
        queryset = queryset.filter(state=state)
    totals = _sum(queryset, ["cpu", "memory_mb", "gpus", "deployments"])
    return Resources(cpu=Decimal(totals["cpu"]), memory_mb=totals["memory_mb"],
                     gpus=totals["gpus"], deployments=totals["deployments"])


def effective_limits(team: Team, quota: TeamQuota | None = None) -> Resources:
    return Resources.of(quota or get_quota(team)) + _grants(team)


@dataclass(frozen=True)
class Usage:
    team: Team
    base: Resources       # the team's quota
    granted: Resources    # active temporary grants on top
    limits: Resources     # base + granted
    reserved: Resources   # held by running deployments
    pending: Resources    # admitted, not running yet
    used: Resources       # reserved + pending: what admission counts
    free: Resources       # limits - used (negative when a grant expired under running load)
    requested: Resources  # asked for in pending resource requests
    grants: list[QuotaGrant]

    def percent(self, name: str) -> int:
        limit = getattr(self.limits, name)
        return min(100, round(100 * getattr(self.used, name) / limit)) if limit else 0

    @property
    def gauges(self) -> list[dict]:
        return [{"name": name, "label": LABEL[name],
                 "limit": getattr(self.limits, name), "used": getattr(self.used, name),
                 "reserved": getattr(self.reserved, name),
                 "pending": getattr(self.pending, name), "free": getattr(self.free, name),
                 "percent": self.percent(name),
                 "over": getattr(self.free, name) < 0}
                for name in QUOTA_FIELDS]


def usage(team: Team) -> Usage:
    """Limits, reservations, pending and free for one team (callers check visibility)."""
    quota = get_quota(team)
    base, granted = Resources.of(quota), _grants(team)
    reserved = _reserved(team, Reservation.State.RUNNING)
    pending = _reserved(team, Reservation.State.PENDING)
    limits, used = base + granted, reserved + pending
    asked = _sum(ResourceRequest.objects.filter(team=team, status=ResourceRequest.Status.PENDING),
                 ["cpu", "memory_mb", "gpus"])
    return Usage(team=team, base=base, granted=granted, limits=limits, reserved=reserved,
                 pending=pending, used=used, free=limits - used,
                 requested=Resources(cpu=Decimal(asked["cpu"]), memory_mb=asked["memory_mb"],
                                     gpus=asked["gpus"]),
                 grants=list(QuotaGrant.objects.active().filter(team=team)))


def usages(teams: Iterable[Team]) -> dict[int, Usage]:
    """``usage`` for many teams at once (dashboard, request queue): four grouped queries
    whatever the number of teams, plus two for teams that have no quota row yet."""
    teams = list(teams)
    ids = [team.pk for team in teams]
    quotas = {q.team_id: q for q in TeamQuota.objects.filter(team_id__in=ids)}
    missing = [pk for pk in ids if pk not in quotas]
    if missing:  # first look at these teams: their rows get the settings' defaults
        TeamQuota.objects.bulk_create([TeamQuota(team_id=pk, **_default_limits())
                                       for pk in missing], ignore_conflicts=True)
        quotas.update({q.team_id: q for q in TeamQuota.objects.filter(team_id__in=missing)})
    grants: dict[int, list[QuotaGrant]] = {pk: [] for pk in ids}
    for grant in QuotaGrant.objects.active().filter(team_id__in=ids):
        grants[grant.team_id].append(grant)
    held: dict[tuple[int, str], Resources] = {}
    for row in (Reservation.objects.filter(team_id__in=ids).order_by()
                .values("team_id", "state")
                .annotate(t_cpu=Sum("cpu"), t_memory_mb=Sum("memory_mb"), t_gpus=Sum("gpus"),
                          t_deployments=Sum("deployments"))):
        held[(row["team_id"], row["state"])] = Resources(
            cpu=Decimal(row["t_cpu"] or 0), memory_mb=row["t_memory_mb"] or 0,
            gpus=row["t_gpus"] or 0, deployments=row["t_deployments"] or 0)
    asked = {row["team_id"]: row for row in (
        ResourceRequest.objects.filter(team_id__in=ids, status=ResourceRequest.Status.PENDING)
        .order_by().values("team_id")
        .annotate(t_cpu=Sum("cpu"), t_memory_mb=Sum("memory_mb"), t_gpus=Sum("gpus")))}
    result = {}
    for team in teams:
        granted = Resources()
        for grant in grants[team.pk]:
            granted += Resources(cpu=Decimal(grant.cpu), memory_mb=grant.memory_mb,
                                 gpus=grant.gpus)
        base = Resources.of(quotas[team.pk])
        reserved = held.get((team.pk, Reservation.State.RUNNING), Resources())
        pending = held.get((team.pk, Reservation.State.PENDING), Resources())
        limits, used = base + granted, reserved + pending
        ask: Mapping[str, Any] = asked.get(team.pk) or {}
        result[team.pk] = Usage(
            team=team, base=base, granted=granted, limits=limits, reserved=reserved,
            pending=pending, used=used, free=limits - used,
            requested=Resources(cpu=Decimal(ask.get("t_cpu") or 0),
                                memory_mb=ask.get("t_memory_mb") or 0,
                                gpus=ask.get("t_gpus") or 0),
            grants=grants[team.pk])
    return result


# --- Admission (used by deployments) ------------------------------------------------------------
def _refusal(team: Team, needs: Resources, limits: Resources, used: Resources) -> Conflict | None:
    parts, numbers = [], {}
    free = limits - used
    for name in QUOTA_FIELDS:
        need = getattr(needs, name)
        if need > 0 and need > getattr(free, name):
            unit = UNIT[name] + ("s" if name in ("gpus", "deployments") and need != 1 else "")
            if name == "memory_mb":
                parts.append(f"needs {fmt(need)} MB memory; team {team.slug} has "
                             f"{fmt(getattr(free, name))} of {fmt(getattr(limits, name))} MB free")
            else:
                parts.append(f"needs {fmt(need)} {unit}; team {team.slug} has "
                             f"{fmt(getattr(free, name))} of {fmt(getattr(limits, name))} free")
            numbers[name] = {"needs": need, "free": getattr(free, name),
                             "limit": getattr(limits, name)}
    if not parts:
        return None
    return Conflict("; ".join(parts) + ".", code="quota_exceeded",
                    extra={"team": team.slug, "resources": {
                        name: {k: float(v) if isinstance(v, Decimal) else v
                               for k, v in value.items()} for name, value in numbers.items()}})


@transaction.atomic
def admit(*, team: Team, owner: str, cpu=0, memory_mb=0, gpus=0,
          deployments=0, actor=None) -> Reservation:
    """Add a delta to ``owner``'s reservation (created if absent) if the team's quota allows.

    Create a deployment: ``admit(owner="deployment:x", cpu=2, memory_mb=4096, deployments=1)``;
    scale 2 → 3 replicas of 1 CPU: ``admit(owner=..., cpu=1, ...)``; scale down with negative
    deltas (never refused). Raises ``Conflict(code="quota_exceeded")`` with the numbers.
    """
    delta = _amounts(cpu=cpu, memory_mb=memory_mb, gpus=gpus, deployments=deployments,
                     allow_negative=True)
    return _apply_reservation(team=team, owner=_owner(owner), actor=actor,
                              target=lambda current: current + delta)


@transaction.atomic
def resize(*, owner: str, cpu=0, memory_mb=0, gpus=0, deployments=0,
           team: Team | None = None, actor=None) -> Reservation:
    """Set ``owner``'s reservation to these totals, admitting only the growth.

    With ``team`` it also creates the reservation when there is none, so "make it so" calls
    (reconcile, retries) are idempotent and race-free: the totals are applied under the lock.
    """
    owner = _owner(owner)
    target = _amounts(cpu=cpu, memory_mb=memory_mb, gpus=gpus, deployments=deployments)
    if team is None:
        reservation = Reservation.objects.filter(owner=owner).select_related("team").first()
        if reservation is None:
            raise NotFound(f"No reservation for '{owner}'.")
        team = reservation.team
    return _apply_reservation(team=team, owner=owner, actor=actor, target=lambda current: target)


def _apply_reservation(*, team: Team, owner: str, actor, target) -> Reservation:
    """Under the team's quota lock: read the owner's reservation, compute the new totals,
    refuse growth that does not fit, save and audit."""
    quota = _locked_quota(team)  # serialises every admission of this team
    reservation = Reservation.objects.select_for_update().filter(owner=owner).first()
    if reservation is not None and reservation.team_id != team.pk:
        raise Conflict(f"'{owner}' already holds resources of team "
                       f"'{reservation.team.slug}'.", code="owner_taken")
    current = Resources.of(reservation) if reservation else Resources()
    after = target(current)
    for name, value in after.as_dict().items():
        if value < 0:
            raise InvalidInput(f"{owner} holds {fmt(getattr(current, name))} {name}; "
                               f"cannot release {fmt(getattr(current, name) - value)}.",
                               field=name)
    growth = Resources(*(max(a - c, 0) for a, c in zip(after.as_dict().values(),
                                                      current.as_dict().values(),
                                                      strict=True)))
    refusal = _refusal(team, growth, effective_limits(team, quota), _reserved(team))
    if refusal:
        raise refusal
    before = audit.snapshot(reservation, RESERVATION_FIELDS)
    if reservation is None:
        reservation = Reservation(team=team, owner=owner)
    elif after == current:
        return reservation  # nothing to change, nothing to audit
    for name, value in after.as_dict().items():
        setattr(reservation, name, value)
    reservation.save()
    audit.record(actor=actor, action="quota.admitted" if before is None else "quota.resized",
                 obj=reservation, team=team, before=before,
                 after=audit.snapshot(reservation, RESERVATION_FIELDS))
    if Reservation.objects.filter(team=team, over_limit_since__isnull=False).exists():
        flag_over_limit(team, quota, reason="usage changed")  # scaling down clears flags
    return reservation


@transaction.atomic
def mark_running(*, owner: str, running: bool = True) -> Reservation:
    """The deployment's replicas are up (or no longer are): moves it between pending/reserved."""
    reservation = Reservation.objects.select_for_update().filter(owner=_owner(owner)).first()
    if reservation is None:
        raise NotFound(f"No reservation for '{owner}'.")
    state = Reservation.State.RUNNING if running else Reservation.State.PENDING
    if reservation.state != state:
        reservation.state = state
        reservation.save(update_fields=["state", "updated_at"])
    return reservation


@transaction.atomic
def release(*, owner: str, actor=None) -> bool:
    """Give back ``owner``'s reservation (its replicas' GPUs: ``compute.inventory``)."""
    owner = _owner(owner)
    reservation = Reservation.objects.select_for_update().filter(owner=owner) \
        .select_related("team").first()
    if reservation is None:
        return False
    audit.record(actor=actor, action="quota.released", obj=reservation, team=reservation.team,
                 before=audit.snapshot(reservation, RESERVATION_FIELDS))
    reservation.delete()
    return True


def _owner(owner: str) -> str:
    owner = (owner or "").strip()
    if not owner or len(owner) > 200:
        raise InvalidInput("owner must be 1-200 characters, e.g. 'deployment:fraud-v2'.",
                           field="owner")
    return owner


# --- Quotas set by platform admins --------------------------------------------------------------
@transaction.atomic
def set_quota(*, actor, team: Team, cpu, memory_mb, gpus, deployments) -> TeamQuota:
    require_platform_admin(actor, "set quotas")
    limits = _amounts(cpu=cpu, memory_mb=memory_mb, gpus=gpus, deployments=deployments)
    quota = _locked_quota(team)
    check_capacity(team, limits + _grants(team), gpu_model=None)
    before = audit.snapshot(quota, QUOTA_FIELDS)
    for name, value in limits.as_dict().items():
        setattr(quota, name, value)
    quota.save()
    after = audit.snapshot(quota, QUOTA_FIELDS)
    if after != before:
        audit.record(actor=actor, action="quota.updated", obj=quota, team=team,
                     before=before, after=after)
        flag_over_limit(team, quota, reason="its quota was lowered")
    return quota


def check_capacity(team: Team, limits: Resources, *, gpu_model: str | None) -> None:
    """A team may not be promised more than the whole platform can run (with overcommit).

    Skipped until capacity is registered, so a fresh install works with default quotas.
    """
    for name in ("cpu", "memory_mb", "gpus"):
        if getattr(limits, name) > MAX_AMOUNT[name]:
            raise Conflict(f"That would give team {team.slug} a {name} limit of "
                           f"{fmt(getattr(limits, name))}, beyond any machine here.",
                           code="exceeds_capacity")
    total = capacity.current()
    if total is None:
        return
    problems = []
    if limits.cpu > total.schedulable_cpu:
        problems.append(f"{fmt(limits.cpu)} CPU but the platform has "
                        f"{fmt(total.schedulable_cpu)} (with overcommit)")
    if limits.memory_mb > total.schedulable_memory_mb:
        problems.append(f"{limits.memory_mb} MB memory but the platform has "
                        f"{total.schedulable_memory_mb} MB (with overcommit)")
    devices = total.gpus_by_model.get(gpu_model, 0) if gpu_model else total.gpus
    if limits.gpus > devices:
        what = f" {gpu_model}" if gpu_model else ""
        problems.append(f"{limits.gpus} GPUs but the platform has {devices}{what}")
    if problems:
        raise Conflict(f"That would give team {team.slug} a limit of " + "; ".join(problems)
                       + ".", code="exceeds_capacity")


def flag_over_limit(team: Team, quota: TeamQuota, *, reason: str) -> list[Reservation]:
    """Flag (never stop) the newest reservations that no longer fit; tell the team."""
    limits = effective_limits(team, quota)
    reservations = list(Reservation.objects.select_for_update().filter(team=team)
                        .order_by("-created_at", "-id"))
    remaining = _reserved(team)
    flagged: list[Reservation] = []
    newly_flagged = False
    now = timezone.now()
    for reservation in reservations:
        over = any(getattr(remaining, n) > getattr(limits, n) for n in QUOTA_FIELDS)
        if over:
            flagged.append(reservation)
            remaining = remaining - Resources.of(reservation)
            if reservation.over_limit_since is None:
                newly_flagged = True
                reservation.over_limit_since = now
                reservation.save(update_fields=["over_limit_since", "updated_at"])
        elif reservation.over_limit_since is not None:
            reservation.over_limit_since = None
            reservation.save(update_fields=["over_limit_since", "updated_at"])
    if newly_flagged:  # tell the team once, not at every later check
        owners = ", ".join(r.owner for r in flagged)
        audit.record(actor=None, action="quota.over_limit", object_type="teamquota",
                     object_id=str(quota.pk), object_repr=str(quota), team=team,
                     after={"flagged": [r.owner for r in flagged], "reason": reason})
        notify(users=[m.user for m in team.memberships.select_related("user")],
               text=f"Team {team.slug} is over its quota because {reason}: {owners} keep "
                    "running but are flagged; scale down or request resources.",
               link=team_link(team), kind="quota.over_limit")
    return flagged


# --- Links and recipients of notifications ----------------------------------------------------
def team_link(team: Team) -> str:
    return reverse("frontend:team-detail", args=[team.slug])


def platform_admins():
    """Whom requests and drift are reported to: active staff and superusers."""
    return get_user_model().objects.filter(Q(is_staff=True) | Q(is_superuser=True),
                                           is_active=True)


# --- Drift between desired state and what runs ----------------------------------------------------
@dataclass(frozen=True)
class DriftReport:
    missing: list[str]      # reserved as running, but nothing runs for it
    unreserved: list[str]   # runs, but holds no reservation
    stale_gpus: list[str]   # GPU holders (replicas) that no longer run

    @property
    def has_drift(self) -> bool:
        return bool(self.missing or self.unreserved or self.stale_gpus)

    def as_dict(self) -> dict:
        return {"missing": self.missing, "unreserved": self.unreserved,
                "stale_gpus": self.stale_gpus}


@transaction.atomic
def check_usage_drift(*, running_owners: Iterable[str],
                      stale_gpus: Iterable[str] = ()) -> DriftReport:
    """Compare reservations with what actually runs (owners found by container labels);
    ``stale_gpus``: GPU holders that no longer run (``compute.inventory.stale_gpu_owners``).

    Reports, never fixes: an audit event ``quota.drift_detected`` and a notification to
    platform admins when they disagree.
    """
    running = set(running_owners)
    reserved_running = set(Reservation.objects.filter(state=Reservation.State.RUNNING)
                           .values_list("owner", flat=True))
    all_reserved = set(Reservation.objects.values_list("owner", flat=True))
    report = DriftReport(missing=sorted(reserved_running - running),
                         unreserved=sorted(running - all_reserved),
                         stale_gpus=sorted(set(stale_gpus)))
    if report.has_drift:
        audit.record(actor=None, action="quota.drift_detected", object_type="capacity",
                     object_repr="usage vs running containers", after=report.as_dict())
        notify(users=platform_admins(), kind="quota.drift",
               text=f"Usage drift: {len(report.missing)} reserved but not running, "
                    f"{len(report.unreserved)} running without a reservation, "
                    f"{len(report.stale_gpus)} GPU holders gone.",
               link=reverse("frontend:capacity"))
    return report
