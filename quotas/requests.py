"""Resource requests: a team asks for more CPU, memory or GPUs (for good or until a date),
a platform admin approves it in full or in part — raising the quota, or adding a temporary
``QuotaGrant`` — or denies it; the beat takes back grants that ended and expires requests nobody
decided in time.

Verbs like ``services``: each checks the actor's role, runs in a transaction, writes an audit
record and notifies. Quotas, reservations and usage are ``services``.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound
from notifications.services import notify
from teams import audit
from teams.access import require_platform_admin, require_team_role
from teams.models import Team
from teams.roles import Role

from . import capacity
from .models import QuotaGrant, ResourceRequest
from .platform import PlatformNumbers, beyond_platform
from .services import (
    QUOTA_FIELDS,
    Resources,
    _amounts,
    check_capacity,
    effective_limits,
    flag_over_limit,
    fmt,
    lock_team,
    platform_admins,
    team_link,
)

REQUEST_FIELDS = ["status", "cpu", "memory_mb", "gpus", "gpu_model", "expires_at",
                  "granted_cpu", "granted_memory_mb", "granted_gpus", "comment"]


def _request_link(request: ResourceRequest) -> str:
    return reverse("frontend:quota-requests") + f"#request-{request.pk}"


def _describe(amounts: Resources) -> str:
    parts = [f"{fmt(amounts.cpu)} CPU" if amounts.cpu else "",
             f"{amounts.memory_mb} MB memory" if amounts.memory_mb else "",
             f"{amounts.gpus} GPU{'s' if amounts.gpus != 1 else ''}" if amounts.gpus else ""]
    return ", ".join(p for p in parts if p) or "nothing"


def capacity_flags(request: ResourceRequest, *, limits: Resources | None = None,
                   numbers: PlatformNumbers | None = None) -> list[str]:
    """Where granting ``request`` in full would give its team more than the whole platform
    has (the check approval makes, ``services.check_capacity``), one sentence each with the
    numbers. Filing is still allowed: the demand is what tells the platform team to add
    hardware, and an approver may grant part of it. ``limits``: the team's current limits,
    when the caller has them already (the request queue)."""
    if limits is None:
        limits = effective_limits(request.team)
    problems = beyond_platform(limits + Resources.of(request), gpu_model=request.gpu_model,
                               numbers=numbers)
    return [f"Granted in full, team {request.team.slug} would have {p}." for p in problems]


@transaction.atomic
def file_request(*, actor, team: Team, justification: str, cpu=0, memory_mb=0,
                 gpus=0, gpu_model: str = "", expires_at: datetime | None = None
                 ) -> ResourceRequest:
    require_team_role(actor, team, Role.VIEWER, "requesting resources")
    amounts = _amounts(cpu=cpu, memory_mb=memory_mb, gpus=gpus)
    if not (amounts.cpu or amounts.memory_mb or amounts.gpus):
        raise InvalidInput("Ask for some CPU, memory or GPUs.")
    justification = (justification or "").strip()
    if not justification:
        raise InvalidInput("Say why the team needs it.", field="justification")
    gpu_model = (gpu_model or "").strip()
    if gpu_model:
        known = capacity.gpu_models()
        if gpu_model not in known:
            choices = ", ".join(known) or "none registered"
            raise InvalidInput(f"Unknown GPU model '{gpu_model}'; the platform has: {choices}.",
                               field="gpu_model")
        if not amounts.gpus:
            raise InvalidInput("A GPU model needs a number of GPUs.", field="gpus")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at is in the past; a temporary grant must end in the "
                           "future.", field="expires_at")
    request = ResourceRequest.objects.create(
        team=team, requested_by=actor, cpu=amounts.cpu, memory_mb=amounts.memory_mb,
        gpus=amounts.gpus, gpu_model=gpu_model, justification=justification,
        expires_at=expires_at)
    audit.record(actor=actor, action="resource_request.created", obj=request, team=team,
                 after=audit.snapshot(request, REQUEST_FIELDS))
    until = f" until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    beyond = " ".join(capacity_flags(request))
    notify(users=platform_admins(),
           text=f"{actor.get_username()} asks {_describe(amounts)} more for team "
                f"{team.slug}{until}." + (f" Beyond the platform: {beyond}" if beyond else ""),
           link=_request_link(request), kind="resource_request.created",
           subject=f"[Modelport] Resource request #{request.pk} from {team.slug}")
    return request


def _locked_request(request: ResourceRequest) -> ResourceRequest:
    locked = ResourceRequest.objects.select_for_update().filter(pk=request.pk).first()
    if locked is None:
        raise NotFound(f"No resource request #{request.pk}.")
    if not locked.is_pending:
        raise Conflict(f"Request #{locked.pk} is already {locked.get_status_display().lower()}.",
                       code="already_decided")
    return locked


@transaction.atomic
def approve_request(*, actor, request: ResourceRequest, comment: str = "",
                    cpu=None, memory_mb=None, gpus=None) -> ResourceRequest:
    """Grant the request in full or in part; raises the quota (or adds a temporary grant)."""
    require_platform_admin(actor, "approve resource requests")
    request = _locked_request(request)
    team = request.team
    asked = Resources.of(request)
    granted = _amounts(cpu=asked.cpu if cpu is None else cpu,
                       memory_mb=asked.memory_mb if memory_mb is None else memory_mb,
                       gpus=asked.gpus if gpus is None else gpus)
    for name in ("cpu", "memory_mb", "gpus"):
        if getattr(granted, name) > getattr(asked, name):
            raise InvalidInput(f"Cannot grant more {name} than asked ({fmt(getattr(asked, name))});"
                               " set the quota directly instead.", field=name)
    if not (granted.cpu or granted.memory_mb or granted.gpus):
        raise InvalidInput("Granting nothing is a denial; deny the request instead.")
    if request.expires_at is not None and request.expires_at <= timezone.now():
        raise Conflict(f"Request #{request.pk} asked for resources until "
                       f"{request.expires_at:%Y-%m-%d %H:%M} UTC, which has passed.",
                       code="request_expired")
    quota = lock_team(team)
    check_capacity(team, effective_limits(team, quota) + granted, gpu_model=request.gpu_model)
    before = audit.snapshot(request, REQUEST_FIELDS)
    if request.expires_at is not None:  # a temporary request: a grant that lapses
        grant = QuotaGrant.objects.create(team=team, request=request, cpu=granted.cpu,
                                          memory_mb=granted.memory_mb, gpus=granted.gpus,
                                          expires_at=request.expires_at)
        audit.record(actor=actor, action="quota.granted", obj=grant, team=team,
                     after={**audit.snapshot(grant, ["cpu", "memory_mb", "gpus", "expires_at"]),
                            "request": request.pk})
    else:
        quota_before = audit.snapshot(quota, QUOTA_FIELDS)
        quota.cpu += granted.cpu
        quota.memory_mb += granted.memory_mb
        quota.gpus += granted.gpus
        quota.save()
        audit.record(actor=actor, action="quota.updated", obj=quota, team=team,
                     before=quota_before, after=audit.snapshot(quota, QUOTA_FIELDS))
    full = granted == Resources(cpu=asked.cpu, memory_mb=asked.memory_mb, gpus=asked.gpus)
    request.status = (ResourceRequest.Status.APPROVED if full
                      else ResourceRequest.Status.PARTIALLY_APPROVED)
    request.granted_cpu, request.granted_memory_mb, request.granted_gpus = \
        granted.cpu, granted.memory_mb, granted.gpus
    request.decided_by, request.decided_at = actor, timezone.now()
    request.comment = (comment or "").strip()
    request.save()
    audit.record(actor=actor, action="resource_request.approved", obj=request, team=team,
                 before=before, after=audit.snapshot(request, REQUEST_FIELDS))
    flag_over_limit(team, quota, reason="its limits changed")  # clears flags that now fit
    how = "approved" if full else f"partially approved ({_describe(granted)})"
    until = f" until {request.expires_at:%Y-%m-%d %H:%M} UTC" if request.is_temporary else ""
    note = f" Comment: {request.comment}" if request.comment else ""
    notify(users=[request.requested_by],
           text=f"Your request #{request.pk} for team {team.slug} was {how}{until}.{note}",
           link=team_link(team), kind="resource_request.approved",
           subject=f"[Modelport] Request #{request.pk} {how.split(' (')[0]}")
    return request


@transaction.atomic
def deny_request(*, actor, request: ResourceRequest, comment: str) -> ResourceRequest:
    require_platform_admin(actor, "deny resource requests")
    comment = (comment or "").strip()
    if not comment:
        raise InvalidInput("Tell the team why (comment).", field="comment")
    request = _locked_request(request)
    before = audit.snapshot(request, REQUEST_FIELDS)
    request.status = ResourceRequest.Status.DENIED
    request.decided_by, request.decided_at, request.comment = actor, timezone.now(), comment
    request.save()
    audit.record(actor=actor, action="resource_request.denied", obj=request,
                 team=request.team, before=before, after=audit.snapshot(request, REQUEST_FIELDS))
    notify(users=[request.requested_by],
           text=f"Your request #{request.pk} for team {request.team.slug} was denied: {comment}",
           link=team_link(request.team), kind="resource_request.denied",
           subject=f"[Modelport] Request #{request.pk} denied")
    return request


def expire_grants(*, now: datetime | None = None) -> list[QuotaGrant]:
    """Beat task: take back temporary grants that ended; expire undecided requests whose
    period passed. Over-limit deployments are flagged and the team notified."""
    now = now or timezone.now()
    expired = []
    for grant_id in list(QuotaGrant.objects.due(now).values_list("pk", flat=True)):
        with transaction.atomic():
            grant = (QuotaGrant.objects.select_for_update().select_related("team")
                     .filter(pk=grant_id, expired_at__isnull=True).first())
            if grant is None:
                continue
            quota = lock_team(grant.team)
            grant.expired_at = now
            grant.save(update_fields=["expired_at"])
            audit.record(actor=None, action="quota.grant_expired", obj=grant, team=grant.team,
                         before=audit.snapshot(grant, ["cpu", "memory_mb", "gpus",
                                                       "expires_at"]))
            notify(users=[m.user for m in grant.team.memberships.select_related("user")],
                   text=f"A temporary grant of {_describe(Resources.of(grant))} to team "
                        f"{grant.team.slug} ended.", link=team_link(grant.team),
                   kind="quota.grant_expired")
            flag_over_limit(grant.team, quota, reason="a temporary grant ended")
            expired.append(grant)
    stale = ResourceRequest.objects.filter(status=ResourceRequest.Status.PENDING,
                                           expires_at__lte=now)
    for request_id in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            request = ResourceRequest.objects.select_for_update().select_related("team") \
                .filter(pk=request_id, status=ResourceRequest.Status.PENDING).first()
            if request is None:
                continue
            request.status = ResourceRequest.Status.EXPIRED
            request.save(update_fields=["status"])
            audit.record(actor=None, action="resource_request.expired", obj=request,
                         team=request.team, after={"status": "expired"})
            notify(users=[request.requested_by],
                   text=f"Your request #{request.pk} for team {request.team.slug} expired "
                        "before anyone decided on it.", link=team_link(request.team),
                   kind="resource_request.expired")
    return expired
