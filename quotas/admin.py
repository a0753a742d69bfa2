"""Django admin for quotas and capacity. Every change goes through services, so it is audited."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from config.errors import DomainError
from core.admin import ServiceErrorsMixin
from teams.admin import TeamAdmin
from teams.models import Team

from . import services
from .models import (
    GpuAllocation,
    GpuDevice,
    Host,
    QuotaGrant,
    Reservation,
    ResourceRequest,
    TeamQuota,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(TeamQuota)
class TeamQuotaAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    list_display = ["team", "cpu", "memory_mb", "gpus", "deployments", "updated_at"]
    list_select_related = ["team"]
    search_fields = ["team__slug"]
    fields = ["team", "cpu", "memory_mb", "gpus", "deployments", "usage"]
    readonly_fields = ["usage"]

    def get_readonly_fields(self, request, obj=None):
        return ["team", "usage"] if obj else ["usage"]

    @admin.display(description="Usage now")
    def usage(self, quota: TeamQuota) -> str:
        if not quota.pk:
            return "—"
        gauges = services.usage(quota.team).gauges
        return format_html_join(", ", "{}: {} of {} used", (
            (g["label"], services.fmt(g["used"]), services.fmt(g["limit"])) for g in gauges))

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: TeamQuota, form, change: bool) -> None:
        saved = services.set_quota(actor=request.user, team=obj.team, cpu=obj.cpu,
                                   memory_mb=obj.memory_mb, gpus=obj.gpus,
                                   deployments=obj.deployments)
        obj.pk, obj._state.adding, obj._state.db = saved.pk, False, saved._state.db


class DenyForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}),
                              help_text="Why; the requester reads it.")


@admin.register(ResourceRequest)
class ResourceRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "status", "cpu", "memory_mb", "gpus", "gpu_model",
                    "expires_at", "requested_by", "created_at"]
    list_select_related = ["team", "requested_by"]
    list_per_page = 50
    list_filter = ["status", "team"]
    search_fields = ["team__slug", "justification", "requested_by__username"]
    actions = ["approve", "deny"]
    readonly_fields = ["team_usage", "team_history"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + ["team_usage", "team_history"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # teams file requests (portal/API), where the service checks everything

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # decide with the actions, which call the services

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="Team usage now")
    def team_usage(self, obj: ResourceRequest) -> str:
        gauges = services.usage(obj.team).gauges
        return format_html_join(", ", "{}: {} of {} used", (
            (g["label"], services.fmt(g["used"]), services.fmt(g["limit"])) for g in gauges))

    @admin.display(description="Team's earlier requests")
    def team_history(self, obj: ResourceRequest) -> str:
        earlier = ResourceRequest.objects.filter(team=obj.team).exclude(pk=obj.pk)[:10]
        if not earlier:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>#{} {} — {}: {}</li>", (
            (r.pk, r.created_at.strftime("%Y-%m-%d"), r.get_status_display(), r.comment or "")
            for r in earlier)))

    @admin.action(description="Approve selected requests in full")
    def approve(self, request: HttpRequest, queryset) -> None:
        done = 0
        for item in queryset.select_related("team"):
            try:
                services.approve_request(actor=request.user, request=item,
                                         comment="Approved in the console.")
                done += 1
            except DomainError as exc:
                self.message_user(request, f"#{item.pk}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"Approved {done} request(s).")

    @admin.action(description="Deny selected requests (asks for a comment)")
    def deny(self, request: HttpRequest, queryset):
        form = DenyForm(request.POST if "comment" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(request, "admin/quotas/deny_confirmation.html", {
                **self.admin_site.each_context(request), "title": "Deny resource requests",
                "queryset": queryset, "form": form, "opts": self.model._meta,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            })
        done = 0
        for item in queryset.select_related("team"):
            try:
                services.deny_request(actor=request.user, request=item,
                                      comment=form.cleaned_data["comment"])
                done += 1
            except DomainError as exc:
                self.message_user(request, f"#{item.pk}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"Denied {done} request(s).")
        return None


class GpuDeviceInline(admin.TabularInline):
    model = GpuDevice
    extra = 1
    fields = ["device_id", "model", "active"]

    def get_readonly_fields(self, request, obj=None):
        return ["active"]


@admin.register(Host)
class HostAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    list_display = ["name", "kind", "cpu", "memory_mb", "cpu_overcommit", "memory_overcommit",
                    "gpu_count", "active", "state", "last_heartbeat", "placed_replicas"]
    list_filter = ["kind", "active", "state"]
    # Written by the host worker's heartbeat (several plain Docker hosts), not by hand.
    heartbeat_fields = ["queue", "target", "address", "docker_version", "state",
                        "last_heartbeat", "lost_at"]

    @admin.display(description="Replicas placed")
    def placed_replicas(self, host: Host) -> int:
        return host.replicas.count()
    search_fields = ["name", "gpus__device_id", "gpus__model"]
    inlines = [GpuDeviceInline]

    @admin.display(description="GPUs")
    def gpu_count(self, host: Host) -> int:
        return host.gpus.filter(active=True).count()

    def get_readonly_fields(self, request, obj=None):
        return ["name", *self.heartbeat_fields] if obj else self.heartbeat_fields

    def save_model(self, request: HttpRequest, obj: Host, form, change: bool) -> None:
        values = {f: getattr(obj, f) for f in ("cpu", "memory_mb", "cpu_overcommit",
                                                "memory_overcommit", "kind")}
        if change:
            services.update_host(actor=request.user, host=obj, active=obj.active, **values)
        else:
            created = services.register_host(actor=request.user, name=obj.name, **values)
            if not obj.active:
                services.update_host(actor=request.user, host=created, active=False)
            obj.pk, obj._state.adding, obj._state.db = created.pk, False, created._state.db

    def save_formset(self, request, form, formset, change):
        host = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for deleted in formset.deleted_forms:
            if deleted.instance.pk:
                services.remove_gpu(actor=request.user, device=deleted.instance)
                formset.deleted_objects.append(deleted.instance)
        for gpu_form in formset.forms:
            if gpu_form in formset.deleted_forms or not gpu_form.has_changed():
                continue
            data = gpu_form.cleaned_data
            if not data or not data.get("device_id"):
                continue
            if gpu_form.instance.pk:
                self.message_user(request, "A registered GPU cannot be renamed; remove it and "
                                  "add the new one.", level=messages.WARNING)
                continue
            device = services.add_gpu(actor=request.user, host=host,
                                      device_id=data["device_id"], model=data["model"])
            formset.new_objects.append(device)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # deactivate instead, so allocations keep their history


@admin.register(GpuAllocation)
class GpuAllocationAdmin(ReadOnlyAdmin):
    list_display = ["device", "team", "owner", "allocated_at", "released_at"]
    list_select_related = ["device", "team"]
    list_filter = ["team", "device__model"]
    search_fields = ["owner", "device__device_id", "team__slug"]


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ["owner", "team", "state", "cpu", "memory_mb", "gpus", "deployments",
                    "over_limit_since"]
    list_select_related = ["team"]
    list_filter = ["state", "team"]
    search_fields = ["owner", "team__slug"]


@admin.register(QuotaGrant)
class QuotaGrantAdmin(ReadOnlyAdmin):
    list_display = ["team", "cpu", "memory_mb", "gpus", "expires_at", "expired_at", "request"]
    list_select_related = ["team", "request"]
    list_filter = ["team"]


class SetQuotaForm(forms.Form):
    cpu = forms.DecimalField(label="CPU (cores)", min_value=0, decimal_places=3)
    memory_mb = forms.IntegerField(label="Memory (MB)", min_value=0)
    gpus = forms.IntegerField(label="GPUs", min_value=0)
    deployments = forms.IntegerField(label="Deployments", min_value=0)


# The teams console page gains the quota action here, so teams never imports quotas.
admin.site.unregister(Team)


@admin.register(Team)
class TeamWithQuotaAdmin(TeamAdmin):
    actions = [*TeamAdmin.actions, "set_quota"]

    @admin.action(description="Set the quota of selected teams (asks for the limits)")
    def set_quota(self, request: HttpRequest, queryset):
        """Same limits for every selected team, each through ``quotas.services.set_quota``
        (audited; refused per team when capacity cannot hold it)."""
        form = SetQuotaForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(request, "admin/quotas/set_quota.html", {
                **self.admin_site.each_context(request), "title": "Set team quotas",
                "queryset": queryset, "form": form, "opts": self.model._meta,
                "usages": [services.usage(team) for team in queryset],
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            })
        done = 0
        for team in queryset:
            try:
                services.set_quota(actor=request.user, team=team, **form.cleaned_data)
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{team.slug}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"Quota set for {done} team(s).")
        return None
