"""Console for the registry. Versions are immutable here too; alias moves go through services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from core.errors import DomainError

from . import services
from .models import (
    AliasTransitionRequest,
    MlflowObject,
    MlflowVersion,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# Tuples: both options accept one, and a tuple of names fits both options' types.
_VERSION_COLUMNS = ("version", "status", "flavor", "source_format", "sandboxed",
                    "artifact_sha256", "created_by", "created_at")
_ALIAS_COLUMNS = ("name", "version", "updated_by", "updated_at")


class VersionInline(ReadOnlyMixin, admin.TabularInline):
    model = ModelVersion
    fields = _VERSION_COLUMNS
    readonly_fields = _VERSION_COLUMNS
    extra = 0
    show_change_link = True
    can_delete = False


class AliasInline(ReadOnlyMixin, admin.TabularInline):
    model = ModelAlias
    fields = _ALIAS_COLUMNS
    readonly_fields = _ALIAS_COLUMNS
    extra = 0
    can_delete = False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "created_by", "created_at"]
    list_select_related = ["team", "created_by"]
    list_per_page = 50
    list_filter = ["team"]
    search_fields = ["name", "description"]
    inlines = [AliasInline, VersionInline]
    readonly_fields = ["name", "team", "created_by", "created_at", "updated_at"]
    fields = ["name", "team", "description", "card", "tags", "created_by", "created_at",
              "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # models are registered through the API or the portal

    def save_model(self, request, obj, form, change):
        try:
            services.update_model(actor=request.user, model=obj,
                                  description=form.cleaned_data["description"],
                                  card=form.cleaned_data["card"], tags=form.cleaned_data["tags"])
        except DomainError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)

    def delete_model(self, request, obj):
        services.delete_model(actor=request.user, model=obj)

    def delete_queryset(self, request, queryset):
        for model in queryset:
            services.delete_model(actor=request.user, model=model)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["model", "version", "status", "flavor", "sandboxed", "created_by",
                    "created_at"]
    list_select_related = ["model", "created_by"]
    list_per_page = 50
    list_filter = ["status", "flavor", "sandboxed"]
    search_fields = ["model__name", "artifact_sha256"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AliasTransitionRequest)
class AliasTransitionRequestAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["model", "alias", "version", "status", "requested_by", "decided_by",
                    "created_at"]
    list_select_related = ["model", "version", "requested_by", "decided_by"]
    list_filter = ["status", "alias"]
    actions = ["approve", "reject"]

    def _decide(self, request: HttpRequest, queryset, approve: bool) -> None:
        done = 0
        for transition in queryset.select_related("model__team", "version"):
            try:
                services.decide_transition(actor=request.user, request=transition,
                                           approve=approve)
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{transition}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"{'Approved' if approve else 'Rejected'} {done} request(s).")

    @admin.action(description="Approve selected alias moves")
    def approve(self, request: HttpRequest, queryset) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description="Reject selected alias moves")
    def reject(self, request: HttpRequest, queryset) -> None:
        self._decide(request, queryset, approve=False)


@admin.register(MlflowVersion)
class MlflowVersionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """MLflow versions the route recorded and what the sync did with each (why not, if not)."""

    list_display = ["name", "version", "created_by", "status", "reason", "created_at"]
    list_select_related = ["created_by"]
    list_filter = ["status"]
    search_fields = ["name", "created_by__username"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(MlflowObject)
class MlflowObjectAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Who created which MLflow experiment, run, logged model or registered model."""

    list_display = ["kind", "key", "created_by", "created_at"]
    list_select_related = ["created_by"]
    list_filter = ["kind"]
    search_fields = ["key", "created_by__username"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
