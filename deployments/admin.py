"""Console for deployments: read the desired state, revisions and events; stop deployments."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from core.admin import ReadOnlyInline
from core.errors import DomainError

from . import consumer_keys, services
from .models import (
    ConsumerKey,
    Deployment,
    DeploymentEvent,
    Replica,
    Revision,
    ScaleSample,
    ShadowSample,
)


class RevisionInline(ReadOnlyInline):
    model = Revision
    fields = ("number", "model_version", "state", "reason", "image", "healthy_at", "created_at")
    readonly_fields = fields


class ReplicaInline(ReadOnlyInline):
    model = Replica
    fields = ("runtime_id", "revision", "status", "ready", "url", "host", "host_status",
              "restart_count", "last_probe")
    readonly_fields = fields


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "model", "status", "runtime", "revision", "replicas",
                    "stopped", "updated_at"]
    list_filter = ["status", "runtime", "stopped", "team"]
    search_fields = ["name", "model__name"]
    readonly_fields = [f.name for f in Deployment._meta.fields]
    inlines = [ReplicaInline, RevisionInline]
    actions = ["stop_deployments", "start_deployments"]
    list_select_related = ["team", "model"]
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def _apply(self, request: HttpRequest, queryset, call, verb: str) -> None:
        done = 0
        for d in queryset.select_related("team"):
            try:
                call(actor=request.user, deployment=d)
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{d.name}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} deployment(s).", messages.SUCCESS)

    @admin.action(description="Stop selected deployments (remove their containers)")
    def stop_deployments(self, request: HttpRequest, queryset) -> None:
        self._apply(request, queryset, services.stop, "Stopping")

    @admin.action(description="Start selected stopped deployments (admits their quota again)")
    def start_deployments(self, request: HttpRequest, queryset) -> None:
        self._apply(request, queryset, services.start, "Starting")


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "deployment", "revision", "kind", "message"]
    list_select_related = ["deployment"]
    list_per_page = 50
    list_filter = ["kind"]
    search_fields = ["deployment__name", "message"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ScaleSample)
class ScaleSampleAdmin(admin.ModelAdmin):
    """Autoscaled deployments' replica counts over time (written by the scaler only; drawn on
    the monitoring page)."""

    list_display = ["at", "deployment", "desired", "ready", "metric"]
    list_select_related = ["deployment"]
    list_per_page = 50
    list_filter = [("deployment", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["deployment__name"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ShadowSample)
class ShadowSampleAdmin(admin.ModelAdmin):
    """What the gateways recorded of the requests they mirrored to shadow revisions (written by
    the gateway only; the totals are on the deployment's page and in its API detail)."""

    list_display = ["at", "deployment", "revision", "requests", "errors", "dropped", "compared",
                    "agreed", "p50_ms", "p95_ms"]
    list_select_related = ["deployment"]
    list_per_page = 50
    list_filter = ["at", ("deployment", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["deployment__name"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ConsumerKey)
class ConsumerKeyAdmin(admin.ModelAdmin):
    """Keys of calling services across teams: read, and revoke through the service (audited).
    Teams create and change their own keys (portal, API, CLI); the secret is shown to them
    only."""

    list_display = ["name", "team", "prefix", "rate_per_s", "burst", "status", "expires_at",
                    "last_used_at"]
    list_select_related = ["team"]
    list_filter = ["revoked_at", "team"]
    search_fields = ["name", "prefix", "team__slug"]
    readonly_fields = ["id", "team", "name", "prefix", "deployments", "rate_per_s", "burst",
                       "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]
    exclude = ["digest"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoke instead, so the audit trail keeps the key

    @admin.action(description="Revoke selected consumer keys")
    def revoke(self, request: HttpRequest, queryset) -> None:
        count = 0
        for key in queryset.select_related("team"):
            if key.revoked_at is None:
                consumer_keys.revoke_consumer_key(actor=request.user, key=key)
                count += 1
        self.message_user(request, f"Revoked {count} consumer key(s).", messages.SUCCESS)
