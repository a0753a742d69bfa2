"""Console for batch jobs: read jobs, their chunks and events; cancel jobs; pause or resume
schedules. Every change goes through the services (roles, audit)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.http import HttpRequest

from core.admin import ReadOnlyInline
from core.errors import DomainError

from . import schedules, services
from .models import BatchJob, JobChunk, JobEvent, JobSchedule


class ChunkInline(ReadOnlyInline):
    model = JobChunk
    fields = ("index", "row_start", "rows", "status", "attempts", "rows_done", "host", "error",
              "started_at", "finished_at")
    readonly_fields = fields


class EventInline(ReadOnlyInline):
    model = JobEvent
    fields = ("created_at", "kind", "chunk", "message")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    max_num = 0


def _each(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset,
          call: Callable[..., object], verb: str, noun: str) -> None:
    done = 0
    for obj in queryset:
        try:
            call(obj)
            done += 1
        except DomainError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb} {done} {noun}(s).", messages.SUCCESS)


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "model", "version", "status", "rows_done", "rows_total",
                    "parallelism", "trigger", "created_by", "created_at"]
    list_filter = ["status", "trigger", "output_format", "team"]
    search_fields = ["=id", "model__name", "input_filename", "input_uri", "input_sha256"]
    readonly_fields = [f.name for f in BatchJob._meta.fields]
    inlines = [ChunkInline, EventInline]
    actions = ["cancel_jobs"]
    list_select_related = ["team", "model", "version", "created_by"]
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Cancel selected jobs (remove their containers, release quota)")
    def cancel_jobs(self, request: HttpRequest, queryset) -> None:
        _each(self, request, queryset.select_related("team"),
              lambda job: services.cancel_job(actor=request.user, job=job), "Cancelled", "job")


@admin.register(JobSchedule)
class JobScheduleAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "model", "version", "alias", "cron", "enabled",
                    "next_run_at", "last_run_at", "created_by"]
    list_filter = ["enabled", "team"]
    search_fields = ["name", "model__name", "input_uri"]
    readonly_fields = [f.name for f in JobSchedule._meta.fields]
    actions = ["pause", "resume"]
    list_select_related = ["team", "model", "version", "created_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Pause selected schedules")
    def pause(self, request: HttpRequest, queryset) -> None:
        _each(self, request, queryset.select_related("team"),
              lambda s: schedules.set_enabled(actor=request.user, schedule=s, enabled=False),
              "Paused", "schedule")

    @admin.action(description="Resume selected schedules")
    def resume(self, request: HttpRequest, queryset) -> None:
        _each(self, request, queryset.select_related("team"),
              lambda s: schedules.set_enabled(actor=request.user, schedule=s, enabled=True),
              "Resumed", "schedule")

    def delete_model(self, request: HttpRequest, obj: JobSchedule) -> None:
        schedules.delete_schedule(actor=request.user, schedule=obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for schedule in queryset.select_related("team"):
            schedules.delete_schedule(actor=request.user, schedule=schedule)
