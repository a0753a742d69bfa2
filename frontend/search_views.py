"""Global search from the top navigation: models, deployments, aliases and teams the user can
see, grouped by kind. Models match on the registry's lower-cased, trigram-indexed
``search_text`` (name and description); deployments on their name or their model's name."""

from __future__ import annotations

import re

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from deployments.models import Deployment
from registry.models import ModelAlias, RegisteredModel, version_detail_fields
from teams.models import Team

PER_KIND = 10
MAX_QUERY = 100
# "iris v3" / "iris@production": jump straight to a version or an alias.
VERSION_QUERY = re.compile(r"^(?P<name>[a-z0-9._-]+)(?:\s+v|\s*@\s*v?|:v?)(?P<number>\d+)$")
ALIAS_QUERY = re.compile(r"^(?P<name>[a-z0-9._-]+)\s*@\s*(?P<alias>[a-z][a-z0-9_-]*)$")


def _group(queryset, limit: int = PER_KIND) -> dict:
    """The first ``limit`` rows and whether there are more (one query: fetch limit + 1)."""
    rows = list(queryset[:limit + 1])
    return {"items": rows[:limit], "more": len(rows) > limit}


def search_results(user, query: str) -> dict:
    """Results grouped by kind; five queries at most, whatever the catalogue's size."""
    needle = query.lower()
    models = (RegisteredModel.objects.visible_to(user).filter(search_text__contains=needle)
              .select_related("team").defer("card").order_by("name"))
    # Exact and prefix matches first, then the rest alphabetically.
    groups = {
        "models": _group(models.filter(name__startswith=needle).order_by("name"), PER_KIND),
        "deployments": _group(
            Deployment.objects.visible_to(user)
            .filter(Q(name__icontains=needle) | Q(model__name__icontains=needle))
            .select_related("model", "team", "version")
            .defer("model__card", "model__search_text", *version_detail_fields("version__"))
            .order_by("name")),
        "aliases": _group(
            ModelAlias.objects.filter(model__in=RegisteredModel.objects.visible_to(user))
            .filter(Q(name__contains=needle) | Q(model__name__contains=needle))
            .select_related("model", "version")
            .defer("model__card", "model__search_text", *version_detail_fields("version__"))
            .order_by("model__name", "name"), 5),
        "teams": _group(Team.objects.visible_to(user)
                        .filter(Q(slug__icontains=needle) | Q(name__icontains=needle))
                        .order_by("slug"), 5),
    }
    prefixed = groups["models"]["items"]
    if len(prefixed) < PER_KIND:
        rest = _group(models.exclude(name__startswith=needle), PER_KIND - len(prefixed))
        groups["models"] = {"items": prefixed + rest["items"], "more": rest["more"]}
    jump = None
    if match := VERSION_QUERY.match(needle):
        model = RegisteredModel.objects.visible_to(user).filter(name=match["name"]).first()
        if model and model.versions.filter(version=int(match["number"])).exists():
            jump = {"kind": "version", "model": model.name, "version": int(match["number"])}
    elif match := ALIAS_QUERY.match(needle):
        alias = (ModelAlias.objects.filter(model__in=RegisteredModel.objects.visible_to(user))
                 .filter(model__name=match["name"], name=match["alias"])
                 .select_related("model", "version").first())
        if alias:
            jump = {"kind": "version", "model": alias.model.name,
                    "version": alias.version.version, "alias": alias.name}
    total = sum(len(g["items"]) for g in groups.values())
    return {"groups": groups, "total": total, "jump": jump}


@login_required
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:MAX_QUERY]
    context: dict = {"query": query, "groups": None, "total": 0, "jump": None}
    if query:
        context.update(search_results(request.user, query))
    template = ("frontend/_search_results.html" if request.headers.get("HX-Request")
                else "frontend/search.html")
    return render(request, template, context)
