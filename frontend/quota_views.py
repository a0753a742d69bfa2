"""Portal pages for quotas, resource requests, capacity and notifications. Thin: read with
querysets scoped to the user, change state through ``quotas.services`` and ``quotas.requests``."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from compute import inventory
from compute.models import ExecutionTarget
from compute.targets import target_summary
from core.portal import apply_service
from notifications.models import Notification
from notifications.services import mark_read
from quotas import requests as quota_requests
from quotas import services
from quotas.models import Reservation, ResourceRequest
from quotas.platform import platform_numbers
from teams import services as team_services
from teams.access import get_visible_team
from teams.roles import is_platform_admin
from workers.runtimes.images import host_pip_index

from .forms import DecisionForm, HostForm, PlatformSettingsForm, QuotaSetForm, ResourceRequestForm
from .requests import AuthenticatedRequest


@login_required
def team_quota(request: HttpRequest, slug: str) -> HttpResponse:
    team = get_visible_team(request.user, slug)
    intent = request.POST.get("intent") if request.method == "POST" else None
    # Two forms on one page: prefixes keep their field names and ids apart.
    request_form = ResourceRequestForm(request.POST if intent == "request" else None,
                                       gpu_models=inventory.gpu_models(), prefix="request")
    usage = services.usage(team)
    quota_form = QuotaSetForm(request.POST if intent == "set" else None,
                              initial=usage.base.as_dict(), prefix="quota")
    if intent == "request" and request_form.is_valid():
        data = {k: v for k, v in request_form.cleaned_data.items() if v not in (None, "")}
        filed: list[ResourceRequest] = []
        if apply_service(request, request_form, lambda: filed.append(
                quota_requests.file_request(actor=request.user, team=team, **data))):
            messages.success(request, "Request sent; platform admins are notified.")
            for flag in quota_requests.capacity_flags(filed[0]):
                messages.warning(request, f"{flag} The approver sees this too and may grant "
                                          "part of it until the platform has more.")
            return redirect("frontend:team-quota", slug=slug)
    elif intent == "set" and quota_form.is_valid() and apply_service(
            request, quota_form, lambda: services.set_quota(actor=request.user, team=team,
                                                            **quota_form.cleaned_data)):
        messages.success(request, f"Quota of {slug} updated.")
        return redirect("frontend:team-quota", slug=slug)
    return render(request, "frontend/team_quota.html", {
        "team": team, "usage": usage, "request_form": request_form, "quota_form": quota_form,
        "reservations": Reservation.objects.filter(team=team).order_by("owner"),
        "requests": ResourceRequest.objects.filter(team=team)
        .select_related("requested_by", "decided_by")[:20],
        "can_set": is_platform_admin(request.user), "platform": platform_numbers(),
    })


@login_required
def resource_requests(request: HttpRequest) -> HttpResponse:
    """Platform admins: the queue of pending requests with each team's usage and history.
    Everyone else: the requests of their teams."""
    admin = is_platform_admin(request.user)
    status = request.GET.get("status", "pending" if admin else "")
    queryset = (ResourceRequest.objects.visible_to(request.user)
                .select_related("team", "requested_by", "decided_by"))
    if status in ResourceRequest.Status.values:
        queryset = queryset.filter(status=status)
    page = Paginator(queryset, 25).get_page(request.GET.get("page"))
    pending = [item for item in page if admin and item.is_pending]
    # Usage and history for every team on the page in a fixed number of queries.
    usages = services.usages({item.team_id: item.team for item in pending}.values())
    history: dict[int, list[ResourceRequest]] = {}
    if pending:
        earlier = (ResourceRequest.objects.filter(team_id__in=list(usages))
                   .annotate(rank=Window(RowNumber(), partition_by=F("team_id"),
                                         order_by=[F("created_at").desc(), F("id").desc()]))
                   .filter(rank__lte=6))  # five besides the request itself
        for row in earlier:
            history.setdefault(row.team_id, []).append(row)
    numbers = platform_numbers() if pending else None
    items = []
    for item in page:
        entry = {"request": item}
        if item in pending:
            entry["usage"] = usages[item.team_id]
            entry["history"] = [r for r in history.get(item.team_id, [])
                                if r.pk != item.pk][:5]
            entry["capacity_flags"] = quota_requests.capacity_flags(
                item, limits=usages[item.team_id].limits, numbers=numbers) if numbers else []
            entry["form"] = DecisionForm(prefix=f"r{item.pk}", initial={
                "cpu": item.cpu.normalize(), "memory_mb": item.memory_mb, "gpus": item.gpus})
        items.append(entry)
    return render(request, "frontend/resource_requests.html", {
        "items": items, "page": page, "status": status, "statuses": ResourceRequest.Status.choices,
        "is_queue": admin,
    })


@login_required
@require_POST
def decide_request(request: HttpRequest, request_id: int) -> HttpResponse:
    item = ResourceRequest.objects.visible_to(request.user).filter(pk=request_id).first()
    if item is None:
        messages.error(request, "No such request.")
        return redirect("frontend:quota-requests")
    form = DecisionForm(request.POST, prefix=f"r{item.pk}")
    decision = request.POST.get("decision")
    if not form.is_valid():
        messages.error(request, "Amounts must be numbers.")
    elif decision == "approve":
        data = form.cleaned_data
        if apply_service(request, None, lambda: quota_requests.approve_request(
                actor=request.user, request=item, comment=data["comment"], cpu=data["cpu"],
                memory_mb=data["memory_mb"], gpus=data["gpus"])):
            messages.success(request, f"Request #{item.pk} approved.")
    elif decision == "deny":
        if apply_service(request, None, lambda: quota_requests.deny_request(
                actor=request.user, request=item, comment=form.cleaned_data["comment"])):
            messages.success(request, f"Request #{item.pk} denied.")
    else:
        messages.error(request, "Choose approve or deny.")
    return redirect("frontend:quota-requests")


@login_required
def capacity(request: HttpRequest) -> HttpResponse:
    admin = is_platform_admin(request.user)
    form = HostForm(request.POST or None) if admin else None
    if form is not None and request.method == "POST" and form.is_valid() and apply_service(
            request, form, lambda: inventory.register_host(actor=request.user,
                                                           **form.cleaned_data)):
        messages.success(request, f"Registered {form.cleaned_data['name']}.")
        return redirect("frontend:capacity")
    platform = team_services.platform_settings()
    host_index, host_extra = host_pip_index()
    return render(request, "frontend/capacity.html", {
        "capacity": inventory.capacity(request.user), "form": form,
        "targets": [target_summary(t) for t in ExecutionTarget.objects.order_by("name")],
        "platform": platform, "host_index": host_index, "host_extra_indexes": host_extra,
        "settings_form": PlatformSettingsForm(initial={
            "package_index_url": platform.package_index_url,
            "package_wheel_folder": platform.package_wheel_folder,
            **{key: "\n".join(getattr(platform, key)) for key in (
                "package_extra_index_urls", "allowed_packages", "outbound_allowlist")},
        }) if admin else None,
    })


@login_required
@require_POST
def platform_settings(request: HttpRequest) -> HttpResponse:
    form = PlatformSettingsForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the platform settings: " + "; ".join(
            f"{field}: {' '.join(map(str, errors))}" for field, errors in form.errors.items()))
    elif apply_service(request, None, lambda: team_services.update_platform_settings(
            actor=request.user, **form.cleaned_lists())):
        messages.success(request, "Platform settings saved.")
    return redirect("frontend:capacity")


@login_required
def notifications(request: AuthenticatedRequest) -> HttpResponse:
    if request.method == "POST":
        mark_read(user=request.user)
        return redirect("frontend:notifications")
    page = Paginator(Notification.objects.filter(user=request.user), 50) \
        .get_page(request.GET.get("page"))
    return render(request, "frontend/notifications.html", {"page": page})
