"""Deployment pages of the portal. Thin: scoped querysets to read, services to change."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render

from core.errors import DomainError
from registry.models import RegisteredModel, version_detail_fields
from teams.models import Team
from teams.roles import Role, is_platform_admin

from . import services
from .filtersets import DeploymentFilterSet
from .forms import AutoscalingForm, DeploymentCreateForm
from .models import Deployment
from .page import can_change, page_context, visible_deployment


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
    scaling = AutoscalingForm(request.POST or None)
    if request.method == "POST" and all([form.is_valid(), scaling.is_valid()]):
        data = form.cleaned_data
        try:
            d = services.create_deployment(
                actor=request.user, team=data["team"], name=data["name"], model=data["model"],
                version=data["version"], alias=data["alias"] or None,
                replicas=data["replicas"], resources=form.resources(),
                strategy=form.strategy_spec(), target=data.get("target"),
                autoscaling=scaling.spec())
        except DomainError as exc:
            if exc.field == "autoscaling":
                scaling.add_service_error(exc.message)
            else:
                form.add_service_error(exc.field, exc.message, exc.extra)
        else:
            messages.success(request, f"Deploying '{d.name}': revision {d.revision} is "
                                      "rolling out.")
            return redirect("deployments:detail", name=d.name)
    return render(request, "deployments/list.html",
                  {"deployments": filtered, "teams": Team.objects.visible_to(request.user),
                   "form": form, "scaling_form": scaling, "can_create": writable.exists()})


@login_required
def deployment_detail(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "deployments/detail.html",
                  page_context(request, visible_deployment(request, name), full=True))


@login_required
def deployment_status(request: HttpRequest, name: str) -> HttpResponse:
    """The htmx-polled fragment: status, progress, replicas, events."""
    return render(request, "deployments/_status.html",
                  page_context(request, visible_deployment(request, name)))


@login_required
def deployment_logs(request: HttpRequest, name: str) -> HttpResponse:
    """One replica's recent log lines (or each replica's): the panel htmx puts under the links,
    or a page of its own without JavaScript."""
    d = visible_deployment(request, name)
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
    d = visible_deployment(request, name)
    if request.method != "POST":
        if verb not in CONFIRMED_VERBS:
            return HttpResponseNotAllowed(["POST"])
        return render(request, "deployments/confirm.html",
                      {"d": d, "verb": verb, "can_change": can_change(request, d.team),
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
