"""Django admin for the capacity inventory: execution targets, hosts and pools with their GPUs,
GPU allocations. Every change goes through ``compute.targets`` or ``compute.inventory``, so it
is validated the same way as in the portal and the API, and audited."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html

from core.admin import ServiceErrorsMixin
from core.errors import DomainError
from quotas.admin import ReadOnlyAdmin

from . import inventory, targets
from .models import ExecutionTarget, GpuAllocation, GpuDevice, Host


@admin.register(ExecutionTarget)
class ExecutionTargetAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    list_display = ["name", "kind", "endpoint", "namespace", "cpu", "memory_mb", "gpus",
                    "enabled", "is_default"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "endpoint"]
    fields = ["name", "kind", "endpoint", "kube_context", "in_cluster", "namespace", "settings",
              "cpu", "memory_mb", "gpus", "enabled", "is_default", "health"]
    readonly_fields = ["health"]

    def get_readonly_fields(self, request: HttpRequest,
                            obj: ExecutionTarget | None = None) -> list[str]:
        return ["name", "health"] if obj else ["health"]

    @admin.display(description="Health now")
    def health(self, target: ExecutionTarget) -> str:
        if not target.pk:
            return "—"
        h = targets.target_health(target)
        if not h["reachable"]:
            return format_html("unreachable: {}", h["message"] or "no answer")
        alloc = h["allocatable"]
        return format_html("reachable, {} node(s), {} CPU, {} MB, GPUs: {}", len(h["nodes"]),
                           alloc["cpu"], alloc["memory_mb"],
                           "not reported" if alloc["gpus"] is None else alloc["gpus"])

    def save_model(self, request: HttpRequest, obj: ExecutionTarget, form: Any,
                   change: bool) -> None:
        values = {name: getattr(obj, name) for name in targets.TARGET_FIELDS}
        if change:
            values.pop("name")
            saved = targets.update_target(actor=request.user, target=obj, **values)
        else:
            saved = targets.create_target(actor=request.user, **values)
        obj.pk, obj._state.adding, obj._state.db = saved.pk, False, saved._state.db

    def delete_view(self, request: HttpRequest, object_id: str,
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as exc:  # the default target, or one that still has deployments
            self.message_user(request, exc.message, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_model(self, request: HttpRequest, obj: ExecutionTarget) -> None:
        targets.delete_target(actor=request.user, target=obj)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, through the service
        return actions


class GpuDeviceInline(admin.TabularInline):
    model = GpuDevice
    extra = 1
    fields = ["device_id", "model", "active"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
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

    def get_readonly_fields(self, request: HttpRequest, obj: Host | None = None) -> list[str]:
        return ["name", *self.heartbeat_fields] if obj else self.heartbeat_fields

    def save_model(self, request: HttpRequest, obj: Host, form: Any, change: bool) -> None:
        values = {f: getattr(obj, f) for f in ("cpu", "memory_mb", "cpu_overcommit",
                                                "memory_overcommit", "kind")}
        if change:
            inventory.update_host(actor=request.user, host=obj, active=obj.active, **values)
        else:
            created = inventory.register_host(actor=request.user, name=obj.name, **values)
            if not obj.active:
                inventory.update_host(actor=request.user, host=created, active=False)
            obj.pk, obj._state.adding, obj._state.db = created.pk, False, created._state.db

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        host = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for deleted in formset.deleted_forms:
            if deleted.instance.pk:
                inventory.remove_gpu(actor=request.user, device=deleted.instance)
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
            device = inventory.add_gpu(actor=request.user, host=host,
                                      device_id=data["device_id"], model=data["model"])
            formset.new_objects.append(device)

    def has_delete_permission(self, request: HttpRequest, obj: Host | None = None) -> bool:
        return False  # deactivate instead, so allocations keep their history


@admin.register(GpuAllocation)
class GpuAllocationAdmin(ReadOnlyAdmin):
    list_display = ["device", "team", "owner", "allocated_at", "released_at"]
    list_select_related = ["device", "team"]
    list_filter = ["team", "device__model"]
    search_fields = ["owner", "device__device_id", "team__slug"]
