"""Django admin for quotas. Every change goes through services, so it is audited."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from core.admin import ServiceErrorsMixin
from core.errors import DomainError
from teams.admin import TeamAdmin
from teams.models import Team

from . import requests, services
from .models import QuotaGrant, Reservation, ResourceRequest, TeamQuota


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
                requests.approve_request(actor=request.user, request=item,
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
                requests.deny_request(actor=request.user, request=item,
                                      comment=form.cleaned_data["comment"])
                done += 1
            except DomainError as exc:
                self.message_user(request, f"#{item.pk}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"Denied {done} request(s).")
        return None


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
