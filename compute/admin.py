"""Django admin for execution targets. Every change goes through ``workers.services``, so it is
validated the same way as in the portal and the API, and audited."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.utils.html import format_html

from config.errors import DomainError
from core.admin import ServiceErrorsMixin

from . import services
from .models import ExecutionTarget
from .targets import target_health


@admin.register(ExecutionTarget)
class ExecutionTargetAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    list_display = ["name", "kind", "endpoint", "namespace", "cpu", "memory_mb", "gpus",
                    "enabled", "is_default"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "endpoint"]
    fields = ["name", "kind", "endpoint", "kube_context", "in_cluster", "namespace", "settings",
              "cpu", "memory_mb", "gpus", "enabled", "is_default", "health"]
    readonly_fields = ["health"]

    def get_readonly_fields(self, request, obj=None):
        return ["name", "health"] if obj else ["health"]

    @admin.display(description="Health now")
    def health(self, target: ExecutionTarget) -> str:
        if not target.pk:
            return "—"
        h = target_health(target)
        if not h["reachable"]:
            return format_html("unreachable: {}", h["message"] or "no answer")
        alloc = h["allocatable"]
        return format_html("reachable, {} node(s), {} CPU, {} MB, GPUs: {}", len(h["nodes"]),
                           alloc["cpu"], alloc["memory_mb"],
                           "not reported" if alloc["gpus"] is None else alloc["gpus"])

    def save_model(self, request: HttpRequest, obj: ExecutionTarget, form, change: bool) -> None:
        values = {name: getattr(obj, name) for name in services.TARGET_FIELDS}
        if change:
            values.pop("name")
            saved = services.update_target(actor=request.user, target=obj, **values)
        else:
            saved = services.create_target(actor=request.user, **values)
        obj.pk, obj._state.adding, obj._state.db = saved.pk, False, saved._state.db

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as exc:  # the default target, or one that still has deployments
            self.message_user(request, exc.message, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_model(self, request: HttpRequest, obj: ExecutionTarget) -> None:
        services.delete_target(actor=request.user, target=obj)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, through the service
        return actions
