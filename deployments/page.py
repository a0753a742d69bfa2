"""What the deployment pages share: the visible deployment by name, who may change it, and the
context the page and its polled status fragment render (used by views and edit_views alike)."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest
from django.utils import timezone

from teams.models import Team
from teams.roles import Role, at_least, is_platform_admin

from . import consumer_keys, retries, services
from .forms import AutoscalingForm, DeploymentEditForm
from .models import Deployment, Replica
from .reconcile import strategies


def visible_deployment(request: HttpRequest, name: str) -> Deployment:
    d = (Deployment.objects.visible_to(request.user).select_related("team", "model", "version")
         .filter(name=name).first())
    if d is None:
        raise Http404(f"No deployment '{name}'.")
    return d


def can_change(request: HttpRequest, team: Team) -> bool:
    return is_platform_admin(request.user) or at_least(team.role_of(request.user), Role.ENGINEER)


def seconds_until(when) -> int | None:
    return None if when is None else max(0, round((when - timezone.now()).total_seconds()))


UNITS = {"concurrency": "requests in flight", "rps": "requests/s", "cpu": "% CPU"}


def scaling_of(d: Deployment, replicas: list[Replica]) -> dict[str, Any] | None:
    """What the page says of an autoscaled deployment: its settings, the count it wants now,
    how many replicas are ready, and whether it sleeps (scaled to zero); None when fixed."""
    if not d.autoscaling:
        return None
    return {**d.autoscaling, "unit": UNITS.get(d.autoscaling.get("metric", ""), ""),
            "wanted": d.replicas, "ready": sum(1 for r in replicas if r.ready),
            "idle": d.replicas == 0 and not d.stopped, "scaled_at": d.scaled_at,
            "capped": (d.scale_state or {}).get("capped", "")}


def callers_panel(request: HttpRequest, d: Deployment) -> dict[str, Any]:
    """Who calls ``d`` with a consumer key over the last hour and day."""
    now = timezone.now()
    return consumer_keys.panel(actor=request.user, deployment=d, until=now, windows=[
        ("last hour", now - consumer_keys.WINDOWS["1h"]),
        ("last 24 h", now - consumer_keys.WINDOWS["24h"])])


def page_context(request: HttpRequest, d: Deployment, *,
                 edit_form: DeploymentEditForm | None = None,
                 scaling_form: AutoscalingForm | None = None, full: bool = False) -> dict:
    """What the page (``full``: with the drift banner and the edit form) and its polled status
    fragment show."""
    current = retries.current_revision(d)
    can_change_ = can_change(request, d.team)
    retry, rollout = retries.describe(d, current), strategies.describe(d, current)
    if retry:
        retry["in_s"] = seconds_until(retry["next_attempt_at"])
    if rollout:
        rollout["in_s"] = seconds_until(rollout["next_step_at"])
    replicas = list(d.replica_set.order_by("revision", "index"))
    return {"d": d, "replicas": replicas, "scaling": scaling_of(d, replicas),
            "events": d.events.order_by("-created_at", "-id")[:50],
            "revisions": d.revisions.select_related("model_version").order_by("-number")[:20],
            "endpoint": services.endpoint(d), "can_change": can_change_,
            "shadow": services.shadow_summary(d),
            "is_platform_admin": is_platform_admin(request.user),
            "retry": retry, "rollout": rollout,
            "can_retry": can_change_ and retries.retryable(d, current),
            "busy": d.status in ("pending", "building", "starting")} | (
        {"drift": services.alias_drift(d), "callers": callers_panel(request, d),
         "edit_form": edit_form or (DeploymentEditForm(deployment=d) if can_change_ else None),
         "scaling_form": scaling_form or (AutoscalingForm(deployment=d) if can_change_
                                          else None)}
        if full else {})
