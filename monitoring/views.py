"""Monitoring pages of the portal and the Prometheus endpoint. Thin: services compute."""

from __future__ import annotations

import hmac
from datetime import UTC, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import AuthenticationFailed

from core.errors import DomainError
from deployments import consumer_keys
from deployments.models import Deployment, Revision
from jobs.models import JobSchedule
from registry.models import RegisteredModel
from teams.authentication import authenticate_token
from teams.roles import Role, at_least, is_platform_admin

from . import alerts, batch, ingest, overlays, prom, rollups, scale, services
from . import replica_metrics as replica_metrics_
from .forms import (
    SILENCE_CHOICES,
    AlertRuleForm,
    DriftThresholdsForm,
    SamplingForm,
    SilenceForm,
)
from .models import Alert, AlertRule, Comparison, ModelMonitoring, TaskType

RANGES = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24),
          "7d": timedelta(days=7), "30d": timedelta(days=30)}


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """Who may read ``/metrics`` (it names every deployment): Prometheus with the bearer
    ``MODELPORT_METRICS_TOKEN``, or a platform admin by API token or session. None: allowed."""
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    value = value.strip()
    user: AbstractBaseUser | AnonymousUser
    if scheme.lower() == "bearer" and value:
        expected = settings.MODELPORT_METRICS_TOKEN
        if expected and hmac.compare_digest(value.encode(), expected.encode()):
            return None
        try:
            user = authenticate_token(value).user
        except AuthenticationFailed:
            return _metrics_401("Invalid bearer token: send MODELPORT_METRICS_TOKEN or a "
                                "platform admin's API token.")
    else:
        user = request.user
        if not user.is_authenticated:
            return _metrics_401("Authentication required: send 'Authorization: Bearer "
                                "<MODELPORT_METRICS_TOKEN>' (or a platform admin's API token).")
    if not is_platform_admin(user):
        return HttpResponse("forbidden: only platform admins read /metrics\n", status=403,
                            content_type="text/plain")
    return None


def _metrics_401(text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: platform metrics in the Prometheus text format, for Prometheus (bearer
    ``MODELPORT_METRICS_TOKEN``) and platform admins; anonymous callers get a 401. Every
    process's counters added up (``prom.exposition``), whichever web worker answers."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(prom.exposition(), content_type=CONTENT_TYPE_LATEST)


@require_GET
def replica_metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics/replicas``: every ready replica's own metrics, labelled with its
    deployment, revision and index (replicas have no network: Prometheus cannot reach them).
    The same callers as ``/metrics``."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(replica_metrics_.exposition(), content_type=CONTENT_TYPE_LATEST)


def _utc(value):
    """datetime-local inputs have no offset: they are read as UTC, like the page shows."""
    if value is not None and timezone.is_naive(value):
        return timezone.make_aware(value, UTC)
    return value


def _range(request: HttpRequest):
    choice = request.GET.get("range", "24h")
    start = _utc(parse_datetime(request.GET.get("start", "") or ""))
    end = _utc(parse_datetime(request.GET.get("end", "") or ""))
    if start is None:
        choice = choice if choice in RANGES else "24h"
        end = end or timezone.now()
        start = end - RANGES[choice]
    else:
        choice = "custom"
    start, end, step = services.time_range(start, end)
    return choice, start, end, step


def _deployment(request: HttpRequest, name: str) -> Deployment:
    deployment = (Deployment.objects.visible_to(request.user)
                  .select_related("team", "model", "version").filter(name=name).first())
    if deployment is None:
        raise Http404(f"No deployment '{name}'.")
    return deployment


def _can_edit(request: HttpRequest, deployment: Deployment) -> bool:
    if is_platform_admin(request.user):
        return True
    return at_least(deployment.team.role_of(request.user), Role.ENGINEER)


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """Every deployment the user can see, with the last hour at a glance."""
    end = timezone.now()
    start, end, _ = services.time_range(end - timedelta(hours=1), end)
    deployments = list(Deployment.objects.visible_to(request.user)
                       .select_related("model", "team").order_by("name"))
    totals = services.totals_by_deployment(deployment_ids=[d.pk for d in deployments],
                                           start=start, end=end)
    rows = [{"deployment": d, "totals": totals[d.pk], "firing": totals[d.pk]["firing"]}
            for d in deployments]
    return render(request, "monitoring/index.html", {"rows": rows})


@login_required
def deployment_page(request: HttpRequest, name: str) -> HttpResponse:
    deployment = _deployment(request, name)
    try:
        choice, start, end, step = _range(request)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("monitoring:deployment", name=name)
    revisions = list(Revision.objects.filter(deployment=deployment)
                     .select_related("model_version").order_by("-number")[:50])
    compare = [int(r) for r in request.GET.getlist("compare") if r.isdigit()][:2]
    markers = overlays.revision_markers(deployment=deployment, start=start, end=end)
    panels = []
    for revision in (compare if len(compare) == 2 else [None]):
        series = services.metrics_series(deployments=[deployment], start=start, end=end,
                                         step=step, revision=revision)
        series["quality"] = services.quality_series(deployment=deployment, start=start,
                                                    end=end, step=step, revision=revision)
        series |= rollups.replica_series(deployment=deployment, start=start, end=end,
                                         step=step, revision=revision)
        series["markers"] = markers
        if revision is None:
            series["split"] = overlays.split_series(deployment=deployment, start=start,
                                                    end=end, step=step)
            series["scale"] = scale.scale_series(deployments=[deployment], start=start,
                                                 end=end, step=step)
        drift = services.drift_report(deployment=deployment, start=start, end=end,
                                      revision=revision)
        pid = f"r{revision}" if revision is not None else "all"
        panels.append({"revision": revision, "series": series, "drift": drift, "id": pid,
                       "series_id": f"series-{pid}", "drift_id": f"drift-{pid}"})
    rules = list(AlertRule.objects.filter(deployment=deployment)
                 .select_related("silenced_by").prefetch_related("alerts"))
    for rule in rules:
        rule.verdict_text = alerts.verdict_text(rule)  # type: ignore[attr-defined]
    recent_alerts = (Alert.objects.filter(rule__deployment=deployment)
                     .select_related("rule", "acknowledged_by")[:20])
    callers = consumer_keys.panel(actor=request.user, deployment=deployment, until=end,
                                  windows=[("this range" if choice == "custom" else choice,
                                            start)])
    return render(request, "monitoring/deployment.html", {
        "callers": callers,
        "deployment": deployment, "panels": panels, "comparing": len(panels) == 2,
        "compare": compare, "revisions": revisions, "range": choice, "ranges": list(RANGES),
        "start": start, "end": end, "step": step, "rules": rules, "alerts": recent_alerts,
        "can_edit": _can_edit(request, deployment), "metrics": alerts.METRICS,
        "comparisons": Comparison.values, "now": timezone.now(),
        "silence_choices": SILENCE_CHOICES, "auto_refresh": choice != "custom",
        "sampling_rate": ingest.sampling_rate_of(deployment),
        "replica_stats_seconds": settings.MODELPORT_MONITORING_REPLICA_STATS_SECONDS,
    })


@login_required
def model_page(request: HttpRequest, name: str) -> HttpResponse:
    model = (RegisteredModel.objects.visible_to(request.user).select_related("team")
             .filter(name=name).first())
    if model is None:
        raise Http404(f"No model '{name}'.")
    try:
        choice, start, end, step = _range(request)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("monitoring:model", name=name)
    deployments = list(Deployment.objects.visible_to(request.user).filter(model=model)
                       .order_by("name"))
    series = services.metrics_series(deployments=deployments, start=start, end=end, step=step)
    series["scale"] = scale.scale_series(deployments=deployments, start=start, end=end,
                                         step=step)
    rows = []
    for deployment in deployments:
        totals = services.metrics_series(deployments=[deployment], start=start, end=end,
                                         step=step)["totals"]
        drift = services.drift_report(deployment=deployment, start=start, end=end)
        firing = Alert.objects.filter(rule__deployment=deployment, state="firing").count()
        rows.append({"deployment": deployment, "totals": totals, "drifted": drift["drifted"],
                     "firing": firing})
    batch_rows = [{"drift": row, "job_url": job_url(row.job_id)}
                  for row in batch.batch_drift(user=request.user, model=model)]
    return render(request, "monitoring/model.html", {
        "model": model, "rows": rows, "series": series, "range": choice, "batch": batch_rows,
        "ranges": list(RANGES), "start": start, "end": end, "step": step,
        "p": {"id": "model", "series": series, "series_id": "series-model"},
    })


def job_url(job_id: int) -> str:
    """The job's portal page (the frontend's ``jobs:detail`` when installed), else its API."""
    try:
        return reverse("jobs:detail", args=[job_id])
    except NoReverseMatch:
        return f"/api/v1/jobs/{job_id}/"


def _form_page(request: HttpRequest, template: str, context: dict, *, invalid: bool
               ) -> HttpResponse:
    return render(request, template, context, status=400 if invalid else 200)


def _schedules(deployment: Deployment):
    """The job schedules an alert rule of ``deployment`` may start: its team's."""
    return (JobSchedule.objects.filter(team_id=deployment.team_id).select_related("model")
            .order_by("name"))


def _attach(form, exc: DomainError) -> None:
    """A service's error, shown next to the field it names (else above the form)."""
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


@login_required
@require_http_methods(["GET", "POST"])
def rule_create(request: HttpRequest, name: str) -> HttpResponse:
    deployment = _deployment(request, name)
    form = AlertRuleForm(request.POST or None, schedules=_schedules(deployment))
    if request.method == "POST" and form.is_valid():
        try:
            rule = alerts.create_alert_rule(actor=request.user, deployment=deployment,
                                            **form.cleaned_data)
        except DomainError as exc:
            _attach(form, exc)
        else:
            messages.success(request, f"Alert rule '{rule.name}' created.")
            return redirect(reverse("monitoring:deployment", args=[name]) + "#alert-rules")
    return _form_page(request, "monitoring/rule_form.html",
                      {"deployment": deployment, "form": form, "rule": None},
                      invalid=request.method == "POST")


@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    deployment = _deployment(request, name)
    rule = AlertRule.objects.filter(deployment=deployment, pk=pk).first()
    if rule is None:
        raise Http404("No such rule.")
    form = AlertRuleForm(request.POST or None, initial=AlertRuleForm.initial_from(rule),
                         schedules=_schedules(deployment))
    if request.method == "POST" and form.is_valid():
        try:
            rule = alerts.update_alert_rule(actor=request.user, rule=rule,
                                            **form.cleaned_data)
        except DomainError as exc:
            _attach(form, exc)
        else:
            messages.success(request, f"Alert rule '{rule.name}' saved.")
            return redirect(reverse("monitoring:deployment", args=[name]) + "#alert-rules")
    return _form_page(request, "monitoring/rule_form.html",
                      {"deployment": deployment, "form": form, "rule": rule},
                      invalid=request.method == "POST")


@login_required
@require_http_methods(["GET", "POST"])
def deployment_settings(request: HttpRequest, name: str) -> HttpResponse:
    """The deployment's sampling rate."""
    deployment = _deployment(request, name)
    form = SamplingForm(request.POST or None,
                        initial={"sampling_rate": ingest.sampling_rate_of(deployment)})
    if request.method == "POST" and form.is_valid():
        try:
            services.set_sampling_rate(actor=request.user, deployment=deployment,
                                       sampling_rate=form.cleaned_data["sampling_rate"])
        except DomainError as exc:
            _attach(form, exc)
        else:
            messages.success(request, "Sampling rate saved.")
            return redirect("monitoring:deployment", name=name)
    return _form_page(request, "monitoring/settings_form.html", {
        "form": form, "title": f"Monitoring settings · {deployment.name}",
        "heading": f"{deployment.name}: sampling", "back": reverse("monitoring:deployment",
                                                                   args=[name]),
        "can_edit": _can_edit(request, deployment)}, invalid=request.method == "POST")


@login_required
@require_http_methods(["GET", "POST"])
def model_settings(request: HttpRequest, name: str) -> HttpResponse:
    """The model's drift thresholds and ground-truth task."""
    model = (RegisteredModel.objects.visible_to(request.user).select_related("team")
             .filter(name=name).first())
    if model is None:
        raise Http404(f"No model '{name}'.")
    row = ModelMonitoring.objects.filter(model=model).first()
    form = DriftThresholdsForm(request.POST or None, initial={
        "psi_threshold": row.psi_threshold if row else 0.2,
        "p_value_threshold": row.p_value_threshold if row else 0.01,
        "task": row.task if row else TaskType.AUTO})
    if request.method == "POST" and form.is_valid():
        try:
            services.set_model_monitoring(actor=request.user, model=model, **form.cleaned_data)
        except DomainError as exc:
            _attach(form, exc)
        else:
            messages.success(request, "Drift thresholds saved.")
            return redirect("monitoring:model", name=name)
    can_edit = is_platform_admin(request.user) or at_least(model.team.role_of(request.user),
                                                           Role.MAINTAINER)
    return _form_page(request, "monitoring/settings_form.html", {
        "form": form, "title": f"Drift thresholds · {model.name}",
        "heading": f"{model.name}: drift thresholds",
        "back": reverse("monitoring:model", args=[name]), "can_edit": can_edit},
        invalid=request.method == "POST")


@login_required
@require_POST
def rule_delete(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    deployment = _deployment(request, name)
    rule = AlertRule.objects.filter(deployment=deployment, pk=pk).first()
    if rule is None:
        raise Http404("No such rule.")
    try:
        alerts.delete_alert_rule(actor=request.user, rule=rule)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Alert rule '{rule.name}' deleted.")
    return redirect("monitoring:deployment", name=name)


def _rule_of(request: HttpRequest, name: str, pk: int) -> tuple[Deployment, AlertRule]:
    deployment = _deployment(request, name)
    rule = AlertRule.objects.filter(deployment=deployment, pk=pk).first()
    if rule is None:
        raise Http404("No such rule.")
    return deployment, rule


def _back_to_rules(name: str) -> HttpResponse:
    return redirect(reverse("monitoring:deployment", args=[name]) + "#alert-rules")


@login_required
@require_POST
def rule_silence(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    """Silence a rule for the chosen hours, or lift its silence (``hours`` absent)."""
    _, rule = _rule_of(request, name, pk)
    until = None
    if "hours" in request.POST:
        form = SilenceForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Silence for: pick one of 1 hour, 4 hours, 1 day, 1 week.")
            return _back_to_rules(name)
        until = timezone.now() + timedelta(hours=form.cleaned_data["hours"])
    try:
        rule = alerts.silence_alert_rule(actor=request.user, rule=rule, until=until)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Alert rule '{rule.name}' silenced until "
                                  f"{until:%Y-%m-%d %H:%M} UTC." if until else
                                  f"Alert rule '{rule.name}' notifies again.")
    return _back_to_rules(name)


@login_required
@require_POST
def alert_acknowledge(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    deployment = _deployment(request, name)
    alert = Alert.objects.filter(rule__deployment=deployment, pk=pk).select_related(
        "rule", "rule__deployment__team").first()
    if alert is None:
        raise Http404("No such alert.")
    try:
        alerts.acknowledge_alert(actor=request.user, alert=alert)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Alert of '{alert.rule.name}' acknowledged: no more "
                                  "notifications until it resolves and fires again.")
    return redirect(reverse("monitoring:deployment", args=[name]) + "#recent-alerts")
