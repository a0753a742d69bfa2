"""The demo-traffic button on the demo deployment's page, and its htmx-polled progress."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import DomainError
from deployments.models import Deployment

from . import services
from .templatetags.demo import panel_context


def _deployment(request: HttpRequest, name: str) -> Deployment:
    d = (Deployment.objects.visible_to(request.user).select_related("team", "model")
         .filter(name=name).first())
    if d is None:
        raise Http404(f"No deployment '{name}'.")
    return d


@login_required
@require_POST
def start_traffic(request: HttpRequest, name: str) -> HttpResponse:
    d = _deployment(request, name)
    raw = request.POST.get("duration", "180")
    try:
        duration = int(raw) if raw.strip().isdigit() else raw
        run = services.start_traffic(actor=request.user, deployment=d, duration=duration)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Sending {run.duration_s} s of demo traffic to '{d.name}'.")
    return redirect("deployments:detail", name=d.name)


@login_required
def traffic_status(request: HttpRequest, name: str) -> HttpResponse:
    d = _deployment(request, name)
    if not services.is_demo_deployment(d):
        raise Http404(f"'{d.name}' is not the demo deployment.")
    return render(request, "demo/_traffic.html", panel_context(request, d))
