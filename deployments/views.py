"""Deployment pages of the portal. Thin: scoped querysets to read, services to change."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.utils import timezone

from core.errors import DomainError
from registry.models import RegisteredModel, version_detail_fields
from teams.models import Team
from teams.roles import Role, at_least, is_platform_admin

from . import retries, services
from .filtersets import DeploymentFilterSet
from .forms import DeploymentCreateForm, DeploymentEditForm
from .models import Deployment
from .reconcile import strategies


def _deployment(request: HttpRequest, name: str) -> Deployment:
    d = (Deployment.objects.visible_to(request.user).select_related("team", "model", "version")
         .filter(name=name).first())
    if d is None:
        raise Http404(f"No deployment '{name}'.")
    return d


def _can_change(request: HttpRequest, team: Team) -> bool:
    return is_platform_admin(request.user) or at_least(team.role_of(request.user), Role.ENGINEER)


def _seconds_until(when) -> int | None:
    return None if when is None else max(0, round((when - timezone.now()).total_seconds()))


def _context(request: HttpRequest, d: Deployment, *, edit_form: DeploymentEditForm | None = None,
             full: bool = False) -> dict:
    """What the page (``full``: with the drift banner and the edit form) and its polled status
    fragment show."""
    current = retries.current_revision(d)
    can_change = _can_change(request, d.team)
    retry, rollout = retries.describe(d, current), strategies.describe(d, current)
    if retry:
        retry["in_s"] = _seconds_until(retry["next_attempt_at"])
    if rollout:
        rollout["in_s"] = _seconds_until(rollout["next_step_at"])
    return {"d": d, "replicas": d.replica_set.order_by("revision", "index"),
            "events": d.events.order_by("-created_at", "-id")[:50],
            "revisions": d.revisions.select_related("model_version").order_by("-number")[:20],
            "endpoint": services.endpoint(d), "can_change": can_change,
            "shadow": services.shadow_summary(d),
            "is_platform_admin": is_platform_admin(request.user),
            "retry": retry, "rollout": rollout,
            "can_retry": can_change and retries.retryable(d, current),
            "busy": d.status in ("pending", "building", "starting")} | (
        {"drift": services.alias_drift(d),
         "edit_form": edit_form or (DeploymentEditForm(deployment=d) if can_change else None)}
        if full else {})


def _writable_teams(request: HttpRequest):
    teams = Team.objects.visible_to(request.user)
    if is_platform_admin(request.user):
        return teams
    return teams.filter(memberships__user=request.user,
                        memberships__role__in=[Role.ENGINEER, Role.MAINTAINER])


def _initial_for_model(request: HttpRequest, name: str) -> dict[str, str]:
    """Prefill the deploy form from a model page's link: the model and its team."""
    initial = {"model": name}
    model = (RegisteredModel.objects.visible_to(request.user).select_related("team")
             .filter(name=name).first() if name else None)
    if model is not None:
        initial["team"] = model.team.slug
    return initial


@login_required
def deployment_list(request: HttpRequest) -> HttpResponse:
    queryset = (Deployment.objects.visible_to(request.user)
                .select_related("team", "model", "version")
                .defer("model__card", "model__search_text", *version_detail_fields("version__"))
                .order_by("name"))
    filtered = DeploymentFilterSet(request.GET, queryset=queryset).qs
    writable = _writable_teams(request)
    initial = _initial_for_model(request, request.GET.get("model", ""))
    if request.GET.get("version", "").isdigit():  # "Deploy v2 to a new deployment"
        initial["version"] = request.GET["version"]
    form = DeploymentCreateForm(request.POST or None, teams=writable, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            d = services.create_deployment(
                actor=request.user, team=data["team"], name=data["name"], model=data["model"],
                version=data["version"], alias=data["alias"] or None,
                replicas=data["replicas"], resources=form.resources(),
                strategy=form.strategy_spec(), target=data.get("target"))
        except DomainError as exc:
            form.add_service_error(exc.field, exc.message, exc.extra)
        else:
            messages.success(request, f"Deploying '{d.name}': revision {d.revision} is "
                                      "rolling out.")
            return redirect("deployments:detail", name=d.name)
    return render(request, "deployments/list.html",
                  {"deployments": filtered, "teams": Team.objects.visible_to(request.user),
                   "form": form, "can_create": writable.exists()})


@login_required
def deployment_detail(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "deployments/detail.html",
                  _context(request, _deployment(request, name), full=True))


@login_required
def deployment_status(request: HttpRequest, name: str) -> HttpResponse:
    """The htmx-polled fragment: status, progress, replicas, events."""
    return render(request, "deployments/_status.html",
                  _context(request, _deployment(request, name)))


@login_required
def deployment_logs(request: HttpRequest, name: str) -> HttpResponse:
    """One replica's recent log lines (or each replica's): the panel htmx puts under the links,
    or a page of its own without JavaScript."""
    d = _deployment(request, name)
    fragment = bool(request.headers.get("HX-Request"))
    replica = request.GET.get("replica") or None
    try:
        logs = services.replica_logs(actor=request.user, deployment=d, replica=replica, tail=200)
    except DomainError as exc:
        if not fragment:
            raise Http404(exc.message) from exc
        logs, error = [], f"{exc.message} It was probably replaced: reload the page."
    else:
        error = ""
    return render(request, "deployments/_logs.html" if fragment else "deployments/logs.html",
                  {"d": d, "logs": logs, "error": error, "replica": replica})


CONFIRMED_VERBS = {"stop", "delete"}  # asked on a page of their own first (works without JS)


@login_required
def deployment_action(request: HttpRequest, name: str, verb: str) -> HttpResponse:
    d = _deployment(request, name)
    if request.method != "POST":
        if verb not in CONFIRMED_VERBS:
            return HttpResponseNotAllowed(["POST"])
        return render(request, "deployments/confirm.html",
                      {"d": d, "verb": verb, "can_change": _can_change(request, d.team),
                       "replica_count": d.replica_set.count()})
    try:
        if _act(request, d, verb):
            return redirect("deployments:list")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("deployments:detail", name=d.name)


def _act(request: HttpRequest, d: Deployment, verb: str) -> bool:
    """Run the verb through its service and say what happens; True when the deployment is
    gone."""
    if verb == "stop":
        services.stop(actor=request.user, deployment=d)
        messages.success(request, f"Stopping '{d.name}': its replicas are removed and its "
                                  "quota is released.")
    elif verb == "start":
        services.start(actor=request.user, deployment=d)
        messages.success(request, f"Starting '{d.name}'.")
    elif verb == "retry":
        services.retry(actor=request.user, deployment=d)
        messages.success(request, f"Retrying '{d.name}': revision {d.revision} runs again.")
    elif verb == "rollback":
        number = request.POST.get("revision")
        services.rollback(actor=request.user, deployment=d,
                          revision=int(number) if number and number.isdigit() else None)
        messages.success(request, f"Rolling '{d.name}' back.")
    elif verb == "follow":
        d = services.update_deployment(actor=request.user, deployment=d, alias=d.alias)
        messages.success(request, f"Rolling out what alias '{d.alias}' names: revision "
                                  f"{d.revision}.")
    elif verb == "promote":
        services.promote(actor=request.user, deployment=d)
        messages.success(request, f"Promoting the shadow of '{d.name}': it rolls out now.")
    elif verb == "discard":
        services.discard_shadow(actor=request.user, deployment=d)
        messages.success(request, f"Discarding the shadow of '{d.name}'.")
    elif verb == "egress":
        allowed = request.POST.get("allowed") == "true"
        services.set_egress(actor=request.user, deployment=d, allowed=allowed,
                            reason=request.POST.get("reason", ""))
        messages.success(request, f"Network access of '{d.name}' "
                                  f"{'granted' if allowed else 'withdrawn'}; its replicas "
                                  "restart.")
    elif verb == "delete":
        services.delete(actor=request.user, deployment=d)
        messages.success(request, f"Deleted '{d.name}': its containers are being removed, its "
                                  "endpoint is gone and its quota is released.")
        return True
    else:
        raise Http404(f"Unknown action '{verb}'.")
    return False
