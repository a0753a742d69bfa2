"""The dashboard: my teams' models, deployments and their health, quota gauges, firing alerts and
recent activity. The parts that change while people watch (deployment health, alerts) are one
fragment htmx polls (``dashboard-live``). Every read is scoped with ``visible_to(user)`` and
the number of queries does not grow with the number of rows."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Case, Count, Q, Sum, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from deployments.models import Deployment, DeploymentStatus, Replica
from monitoring.models import Alert, AlertState, MinuteRollup
from quotas import services as quota_services
from quotas.models import ResourceRequest
from registry.models import RegisteredModel, attach_version_summary, version_detail_fields
from teams.models import ApiToken, AuditEvent, Membership, Team
from teams.roles import is_platform_admin
from workers.runtime_status import describe_runtime
from workers.services import live_workers

from .requests import AuthenticatedRequest

DEPLOYMENTS_SHOWN = 25
MODELS_SHOWN = 8
GAUGE_TEAMS = 6
UNHEALTHY = (DeploymentStatus.FAILED, DeploymentStatus.DEGRADED)
# Deployments that need attention first, then those rolling out, then the rest.
ATTENTION_FIRST = Case(
    When(status__in=UNHEALTHY, then=Value(0)),
    When(status__in=(DeploymentStatus.PENDING, DeploymentStatus.BUILDING,
                     DeploymentStatus.STARTING), then=Value(1)),
    default=Value(2))


def _scope(request: AuthenticatedRequest) -> tuple[list[Team], dict[int, str]]:
    """The teams the dashboard is about: the user's own, or (a platform admin in no team)
    every team."""
    my_roles = dict(Membership.objects.filter(user=request.user).values_list("team_id", "role"))
    teams = Team.objects.visible_to(request.user)
    if my_roles:
        teams = teams.filter(pk__in=list(my_roles))
    return list(teams.order_by("slug")[:50]), my_roles


def _team_filter(my_roles: dict[int, str], path: str = "team_id") -> Q:
    """Only the user's teams; no filter for a platform admin in no team."""
    return Q(**{f"{path}__in": list(my_roles)}) if my_roles else Q()


def _live_context(request: HttpRequest, my_roles: dict[int, str]) -> dict:
    """Deployment health (status, replicas ready/desired, traffic split, last hour's requests)
    and firing alerts, unhealthy deployments first: five queries whatever the number of
    deployments."""
    queryset = (Deployment.objects.visible_to(request.user).filter(_team_filter(my_roles))
                .select_related("model", "version", "team")
                .defer("model__card", "model__search_text", *version_detail_fields("version__"))
                .order_by(ATTENTION_FIRST, "name"))
    deployments = list(queryset[:DEPLOYMENTS_SHOWN])
    counts = queryset.order_by().aggregate(
        total=Count("pk"), unhealthy=Count("pk", filter=Q(status__in=UNHEALTHY)))
    # Ready replicas of the revision that should run, grouped for the fetched page only.
    ready = {(row["deployment_id"], row["revision"]): row["n"] for row in Replica.objects.filter(
        deployment_id__in=[d.pk for d in deployments], ready=True).order_by()
        .values("deployment_id", "revision").annotate(n=Count("pk"))}
    since = timezone.now() - timedelta(hours=1)
    traffic = {row["deployment_id"]: row for row in MinuteRollup.objects.filter(
        deployment_id__in=[d.pk for d in deployments], minute__gte=since)
        .order_by().values("deployment_id")
        .annotate(requests=Sum("count"), errors=Sum("errors"))}
    for d in deployments:
        d.ready_replicas = ready.get((d.pk, d.revision), 0)
        row = traffic.get(d.pk)
        d.requests_1h = int(row["requests"] or 0) if row else 0
        d.error_rate_1h = (100.0 * (row["errors"] or 0) / row["requests"]
                           if row and row["requests"] else None)
    alerts = list(Alert.objects.visible_to(request.user)
                  .filter(state=AlertState.FIRING)
                  .filter(_team_filter(my_roles, "rule__deployment__team_id"))
                  .select_related("rule__deployment").order_by("-started_at")[:10])
    return {"deployments": deployments, "deployment_total": counts["total"], "alerts": alerts,
            "unhealthy": counts["unhealthy"], "refreshed_at": timezone.now()}


@login_required
def dashboard(request: AuthenticatedRequest) -> HttpResponse:
    teams, my_roles = _scope(request)
    admin = is_platform_admin(request.user)
    models_qs = (RegisteredModel.objects.visible_to(request.user)
                 .filter(_team_filter(my_roles)).select_related("team")
                 .defer("card", "search_text")
                 .order_by("-updated_at"))
    models = attach_version_summary(list(models_qs[:MODELS_SHOWN]))
    model_total = models_qs.count()
    visible_events = AuditEvent.objects.visible_to(request.user)
    activity = (AuditEvent.objects.filter(Q(pk__in=visible_events.values("pk"))
                                          | Q(actor=request.user))
                if not admin else visible_events).order_by("-created_at")[:10]
    return render(request, "frontend/dashboard.html", {
        "teams": teams,
        "my_roles": my_roles,
        "models": models,
        "model_total": model_total,
        "usages": list(quota_services.usages(teams[:GAUGE_TEAMS]).values()),
        "pending_requests": ResourceRequest.objects.filter(
            status=ResourceRequest.Status.PENDING).count() if admin else 0,
        "activity": activity,
        "runtime": describe_runtime(),
        "workers": live_workers(),
        "active_tokens": ApiToken.objects.active().filter(user=request.user).count(),
        "can_register": admin or any(role in ("engineer", "maintainer")
                                     for role in my_roles.values()),
        **_live_context(request, my_roles),
    })


@login_required
def dashboard_live(request: AuthenticatedRequest) -> HttpResponse:
    """The fragment htmx polls: deployment health and firing alerts."""
    my_roles = dict(Membership.objects.filter(user=request.user).values_list("team_id", "role"))
    return render(request, "frontend/_dashboard_live.html", _live_context(request, my_roles))
