"""Registry pages of the portal. Thin: scoped querysets to read, services to change."""

from __future__ import annotations

import json

import markdown
import nh3
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import DomainError
from teams.models import Team
from teams.roles import Role, at_least, is_platform_admin

from . import mlflow_services, mlmodel, progress, retries, services
from .filtersets import RegisteredModelFilterSet
from .forms import AliasForm, ModelCreateForm, VersionUploadForm
from .models import (
    AliasTransitionRequest,
    ModelAlias,
    RegisteredModel,
    TransitionStatus,
    attach_version_summary,
    version_detail_fields,
)


def _model(request: HttpRequest, name: str) -> RegisteredModel:
    model = (RegisteredModel.objects.visible_to(request.user).select_related("team")
             .filter(name=name).first())
    if model is None:
        raise Http404(f"No model '{name}'.")
    return model


def _role(request: HttpRequest, team: Team) -> str | None:
    return "maintainer" if is_platform_admin(request.user) else team.role_of(request.user)


def _writable_teams(request: HttpRequest):
    teams = Team.objects.visible_to(request.user)
    if is_platform_admin(request.user):
        return teams
    return teams.filter(memberships__user=request.user,
                        memberships__role__in=[Role.ENGINEER, Role.MAINTAINER])


@login_required
def model_list(request: HttpRequest) -> HttpResponse:
    form = ModelCreateForm(request.POST or None, teams=_writable_teams(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            model = services.create_model(actor=request.user, team=data["team"],
                                          name=data["name"], description=data["description"],
                                          tags=data["tags"])
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Model '{model.name}' created. Register its first "
                                      "version below.")
            return redirect("registry:model-detail", name=model.name)
    queryset = (RegisteredModel.objects.visible_to(request.user).select_related("team")
                .defer("card", "search_text")
                .prefetch_related(Prefetch("aliases", queryset=ModelAlias.objects
                                           .select_related("version")
                                           .defer(*version_detail_fields("version__"))))
                .order_by("name"))
    filterset = RegisteredModelFilterSet(request.GET, queryset=queryset)
    models = filterset.qs if filterset.is_valid() else queryset.none()
    page = Paginator(models, 50).get_page(request.GET.get("page"))
    attach_version_summary(page.object_list)
    return render(request, "registry/model_list.html", {
        "page": page, "filterset": filterset, "form": form,
        "teams": Team.objects.visible_to(request.user),
        "can_create": _writable_teams(request).exists(),
    })


def _upload(request: HttpRequest, model: RegisteredModel) -> tuple[VersionUploadForm,
                                                                     HttpResponse | None]:
    """Register the posted version: a redirect on success, else the form with its errors.
    htmx posts (the form's hx-post) get the redirect as ``HX-Redirect`` and the form alone
    with a 400, swapped in place so the chosen file stays selected (``hx-preserve``)."""
    form = VersionUploadForm(request.POST, request.FILES)
    if form.is_valid():
        data = form.cleaned_data
        try:
            version = services.register_upload(
                actor=request.user, model=model, upload=data["file"],
                fmt=data["format"] or None, input_example=data["input_example"] or None,
                reference_data=data["reference_data"], description=data["description"])
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Version {version.version} uploaded; validating.")
            target = reverse("registry:version-detail", args=[model.name, version.version])
            if request.headers.get("HX-Request"):
                return form, HttpResponse(headers={"HX-Redirect": target})
            return form, redirect(target)
    if request.headers.get("HX-Request"):
        return form, render(request, "registry/_upload_form.html",
                            {"model": model, "upload_form": form}, status=400)
    return form, None


@login_required
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = _model(request, name)
    role = _role(request, model.team)
    can_write = at_least(role, Role.ENGINEER)
    upload_form = VersionUploadForm()
    status = 200
    if request.method == "POST" and can_write:
        upload_form, response = _upload(request, model)
        if response is not None:
            return response
        status = 400
    versions = list(model.versions.select_related("created_by").prefetch_related("aliases")
                    .order_by("-version")[:50])
    metric_names = sorted({key for v in versions for key in (v.metrics or {})})
    latest_ready = next((v for v in versions if v.is_ready), None)
    example = json.dumps(latest_ready.input_example) if latest_ready and \
        latest_ready.input_example else None
    card = nh3.clean(markdown.markdown(model.card, extensions=["tables", "fenced_code"]))
    return render(request, "registry/model_detail.html", {
        "model": model, "role": role, "can_write": can_write,
        "can_approve": at_least(role, Role.MAINTAINER), "versions": versions,
        "aliases": model.aliases.select_related("version").order_by("name"),
        "metric_names": metric_names, "latest_ready": latest_ready, "example": example,
        "columns": mlmodel.columns_of(latest_ready.signature if latest_ready else None),
        "card_html": card, "upload_form": upload_form, "alias_form": AliasForm(),
        "deployment_name": model.deployments.visible_to(request.user).order_by("name")
        .values_list("name", flat=True).first(),
        "transitions": model.transition_requests.filter(status=TransitionStatus.PENDING)
        .select_related("version", "requested_by"),
        "mlflow_refused": mlflow_services.refused_versions(model),
    }, status=status)


def _version(request: HttpRequest, name: str, number: int):
    model = _model(request, name)
    version = model.versions.select_related("created_by").filter(version=number).first()
    if version is None:
        raise Http404(f"'{name}' has no version {number}.")
    return model, version


LOG_EVENTS_SHOWN = 300


@login_required
def version_detail(request: HttpRequest, name: str, number: int) -> HttpResponse:
    model, version = _version(request, name, number)
    status = {"model": model, "version": version,
              "can_change": at_least(_role(request, model.team), Role.ENGINEER),
              "retryable": retries.retryable(version)}
    if request.headers.get("HX-Request"):  # the status refreshing itself (Retry included)
        return render(request, "registry/_version_status.html", status)
    shown = list(progress.events_of(version).order_by("-id")[:LOG_EVENTS_SHOWN + 1])
    return render(request, "registry/version_detail.html", {
        **status,
        "columns": mlmodel.columns_of(version.signature),
        "example": json.dumps(version.input_example) if version.input_example else None,
        "aliases": sorted(a.name for a in version.aliases.all()),
        "events": shown[:LOG_EVENTS_SHOWN][::-1], "earlier": len(shown) > LOG_EVENTS_SHOWN,
        "last_event": shown[0].pk if shown else 0,
    })


@login_required
def version_events(request: HttpRequest, name: str, number: int) -> HttpResponse:
    """The validation log's events after ``?since=`` (for the version page's live log, which
    appends them), and the poller again with the new cursor — or without its trigger once the
    version is ready or failed."""
    model, version = _version(request, name, number)
    since = request.GET.get("since", "0")
    if not since.isdigit():
        return HttpResponse("since: a whole number (an event id).", status=400,
                            content_type="text/plain")
    events = list(progress.events_of(version, since=int(since))[:500])
    return render(request, "registry/_version_events.html", {
        "model": model, "version": version, "events": events,
        "last_event": events[-1].pk if events else int(since)})


@login_required
@require_POST
def version_retry(request: HttpRequest, name: str, number: int) -> HttpResponse:
    model = _model(request, name)
    version = model.versions.filter(version=number).first()
    if version is None:
        raise Http404(f"'{name}' has no version {number}.")
    try:
        retries.retry_version(actor=request.user, version=version)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Validating {name} v{number} again.")
    return redirect("registry:version-detail", name=name, number=number)


@login_required
@require_POST
def alias_set(request: HttpRequest, name: str) -> HttpResponse:
    model = _model(request, name)
    form = AliasForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give an alias name and a version number.")
        return redirect("registry:model-detail", name=name)
    try:
        result = services.set_alias(actor=request.user, model=model,
                                    alias=form.cleaned_data["alias"],
                                    version_number=form.cleaned_data["version"])
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        if isinstance(result, AliasTransitionRequest):
            messages.info(request, f"'{result.alias}' is protected: a maintainer must approve "
                                   f"moving it to version {result.version.version}.")
        else:
            messages.success(request, f"'{result.name}' now points to version "
                                      f"{result.version.version}.")
    return redirect("registry:model-detail", name=name)


@login_required
@require_POST
def transition_decide(request: HttpRequest, name: str, pk: int, decision: str) -> HttpResponse:
    model = _model(request, name)
    transition = model.transition_requests.filter(pk=pk).first()
    if transition is None or decision not in {"approve", "reject"}:
        raise Http404("No such request.")
    try:
        services.decide_transition(actor=request.user, request=transition,
                                   approve=decision == "approve")
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Request {decision}d.")
    return redirect("registry:model-detail", name=name)
