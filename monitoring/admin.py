"""Console for monitoring: read-only views of rules, alerts and ingest tokens (changes go
through the API and the portal, which call the services)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from . import ingest
from .models import Alert, AlertRule, IngestToken


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AlertRule)
class AlertRuleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["name", "deployment", "metric", "comparison", "threshold", "window_minutes",
                    "enabled", "last_value", "last_evaluated_at"]
    list_select_related = ["deployment"]
    list_per_page = 50
    list_filter = ["metric", "enabled"]
    search_fields = ["name", "deployment__name"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["rule", "state", "value", "started_at", "resolved_at"]
    list_select_related = ["rule__deployment"]
    list_per_page = 50
    list_filter = ["state"]
    search_fields = ["rule__name", "rule__deployment__name", "message"]


@admin.register(IngestToken)
class IngestTokenAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["deployment", "prefix", "created_at", "last_used_at", "revoked"]
    list_select_related = ["deployment"]
    list_filter = ["revoked"]
    exclude = ["digest"]
    actions = ["revoke_all_of_deployment"]

    @admin.action(description="Revoke every ingest token of the selected tokens' deployments")
    def revoke_all_of_deployment(self, request: HttpRequest, queryset) -> None:
        n = 0
        for deployment in {t.deployment for t in queryset.select_related("deployment")}:
            n += ingest.revoke_ingest_tokens(deployment=deployment)
        messages.success(request, f"Revoked {n} token(s).")
