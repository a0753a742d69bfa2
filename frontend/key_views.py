"""The team's consumer keys page: list, create (the secret shown once, with the curl line that
uses it), change limits, revoke. Thin: ``deployments.consumer_keys`` checks roles (maintainers
change keys, members read them), validates and audits."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core.portal import apply_service
from deployments import consumer_keys as keys
from deployments.models import ConsumerKey, Deployment
from teams.access import get_visible_team
from teams.models import Team
from teams.roles import Role, at_least, is_platform_admin

from .key_forms import ConsumerKeyCreateForm, ConsumerKeyLimitsForm


def _can_manage(request: HttpRequest, team: Team) -> bool:
    return is_platform_admin(request.user) or at_least(team.role_of(request.user),
                                                       Role.MAINTAINER)


def _team_deployments(team: Team) -> list[Deployment]:
    return list(Deployment.objects.filter(team=team).select_related("version").order_by("name"))


def _key(team: Team, key_id: str) -> ConsumerKey:
    key = ConsumerKey.objects.filter(team=team, pk=key_id).select_related("team").first()
    if key is None:
        raise Http404("No such consumer key.")
    return key


def _curl(key: ConsumerKey, request: HttpRequest) -> str:
    """The call a service makes with its new key, on its first deployment."""
    d = key.deployments.select_related("version").order_by("name").first()
    base = settings.MODELPORT_BASE_URL.rstrip("/") or request.build_absolute_uri("/")[:-1]
    example = (d.version.input_example if d is not None and d.version is not None else None) \
        or {"dataframe_split": {"columns": ["x1", "x2"], "data": [[1.0, 2.0]]}}
    return (f"curl -X POST {base}/serve/{d.name if d else '<deployment>'}/invocations \\\n"
            f"  -H \"Authorization: Bearer $MODELPORT_KEY\" "
            f"-H \"Content-Type: application/json\" \\\n  -d '{json.dumps(example)}'")


@login_required
def consumer_keys(request: HttpRequest, slug: str) -> HttpResponse:
    team = get_visible_team(request.user, slug)
    can_manage = _can_manage(request, team)
    deployments = _team_deployments(team)
    form = ConsumerKeyCreateForm(request.POST if request.method == "POST" else None,
                                 team_deployments=deployments)
    created: dict = {}
    if request.method == "POST" and form.is_valid():
        def create() -> None:
            created["key"], created["secret"] = keys.create_consumer_key(
                actor=request.user, team=team, name=form.cleaned_data["name"],
                expires_at=form.expiry(), **form.limits())

        if apply_service(request, form, create):
            form = ConsumerKeyCreateForm(team_deployments=deployments)
    rows = (ConsumerKey.objects.filter(team=team).select_related("created_by")
            .prefetch_related("deployments").order_by("revoked_at", "name", "-created_at"))
    response = render(request, "frontend/consumer_keys.html", {
        "team": team, "keys": rows, "form": form, "can_manage": can_manage,
        "has_deployments": bool(deployments), "created": created.get("key"),
        "secret": created.get("secret"),
        "curl": _curl(created["key"], request) if created else "",
    }, status=400 if request.method == "POST" and not created else 200)
    if created:
        response["Cache-Control"] = "no-store"
    return response


@login_required
def consumer_key_edit(request: HttpRequest, slug: str, key_id: str) -> HttpResponse:
    team = get_visible_team(request.user, slug)
    key = _key(team, key_id)
    form = ConsumerKeyLimitsForm(request.POST if request.method == "POST" else None,
                                 team_deployments=_team_deployments(team), key=key)
    if request.method == "POST" and form.is_valid() and apply_service(
            request, form, lambda: keys.update_consumer_key(actor=request.user, key=key,
                                                            **form.limits())):
        messages.success(request, f"Saved '{key.name}': the gateway applies it within a few "
                                  "seconds.")
        return redirect("frontend:consumer-keys", slug=slug)
    return render(request, "frontend/consumer_key_edit.html", {
        "team": team, "key": key, "form": form, "can_manage": _can_manage(request, team),
    }, status=400 if request.method == "POST" else 200)


@login_required
def consumer_key_revoke(request: HttpRequest, slug: str, key_id: str) -> HttpResponse:
    """GET asks (a page of its own, works without JavaScript); POST revokes."""
    team = get_visible_team(request.user, slug)
    key = _key(team, key_id)
    if request.method == "POST":
        if apply_service(request, None,
                         lambda: keys.revoke_consumer_key(actor=request.user, key=key)):
            messages.success(request, f"Revoked '{key.name}': every gateway refuses it within "
                                      "about a second.")
        return redirect("frontend:consumer-keys", slug=slug)
    return render(request, "frontend/consumer_key_revoke.html", {
        "team": team, "key": key, "can_manage": _can_manage(request, team),
    })
