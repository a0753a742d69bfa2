"""Portal page of execution targets (under Capacity): health for everyone signed in;
registering, enabling/disabling and choosing the default for platform admins."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.portal import apply_service
from teams.roles import is_platform_admin

from .forms import TargetForm
from .models import ExecutionTarget
from .targets import create_target, default_target, target_summary, update_target


@login_required
def targets(request: HttpRequest) -> HttpResponse:
    admin = is_platform_admin(request.user)
    form = TargetForm(request.POST or None) if admin else None
    if form is not None and request.method == "POST" and form.is_valid() and apply_service(
            request, form, lambda: create_target(actor=request.user,
                                                          **form.service_values())):
        messages.success(request, f"Registered execution target {form.cleaned_data['name']}.")
        return redirect("targets:list")
    summaries = [target_summary(t) for t in ExecutionTarget.objects.order_by("name")]
    return render(request, "compute/targets.html", {
        "summaries": summaries, "form": form, "admin": admin,
        "default": default_target(),
    })


@login_required
@require_POST
def change_target(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(ExecutionTarget, name=name)
    intent = request.POST.get("intent")
    changes = {"enable": {"enabled": True}, "disable": {"enabled": False},
               "default": {"is_default": True}}.get(intent or "")
    if changes is None:
        messages.error(request, "Unknown action.")
    elif apply_service(request, None, lambda: update_target(
            actor=request.user, target=target, **changes)):
        messages.success(request, f"Execution target {name} updated.")
    return redirect("targets:list")
