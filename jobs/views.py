"""Batch job pages of the portal: the list with the "Run a batch job" form, the job page with
its htmx-polled status (progress bar, chunks, events), logs, cancel/retry and the download.
Thin: scoped querysets to read, services to change."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render

from core.errors import DomainError
from teams.models import Team
from teams.roles import Role, at_least, is_platform_admin

from . import schedules, services
from .filtersets import JobFilterSet
from .forms import JobRunForm
from .models import BatchJob, JobStatus, Trigger

PAGE_SIZE = 100


def _writable_teams(request: HttpRequest):
    teams = Team.objects.visible_to(request.user)
    if is_platform_admin(request.user):
        return teams
    return teams.filter(memberships__user=request.user,
                        memberships__role__in=[Role.ENGINEER, Role.MAINTAINER])


def _visible(request: HttpRequest, job_id: int) -> BatchJob:
    try:
        return services.get_visible(request.user, job_id)
    except DomainError as exc:
        raise Http404(exc.message) from exc


def _can_change(request: HttpRequest, job: BatchJob) -> bool:
    return is_platform_admin(request.user) or at_least(job.team.role_of(request.user),
                                                       Role.ENGINEER)


def _progress(job: BatchJob) -> dict:
    try:
        found = dict(services.progress(job))
    except Exception:  # noqa: BLE001 - the page shows even when progress cannot be read
        found = {"rows_done": job.rows_done, "rows_total": job.rows_total,
                 "rows_per_s": job.rows_per_s, "eta_s": None}
    total = found.get("rows_total") or 0
    found["percent"] = round(100 * (found.get("rows_done") or 0) / total, 1) if total else 0
    return found


def _context(request: HttpRequest, job: BatchJob) -> dict:
    return {"job": job, "progress": _progress(job),
            "chunks": job.chunks.order_by("index")[:500],
            "events": job.events.order_by("-created_at", "-id")[:50],
            "can_change": _can_change(request, job),
            "busy": job.status in (JobStatus.QUEUED, JobStatus.RUNNING)}


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    queryset = (BatchJob.objects.visible_to(request.user)
                .select_related("team", "model", "version", "created_by")
                .order_by("-created_at", "-id"))
    jobs = JobFilterSet(request.GET, queryset=queryset).qs[:PAGE_SIZE]
    writable = _writable_teams(request)
    initial = {}
    model_name = request.GET.get("model", "")
    if model_name:
        initial["model"] = model_name
    form = JobRunForm(request.POST or None, request.FILES or None, teams=writable,
                      initial=initial)
    if request.method == "POST" and form.is_valid():
        args = form.job_args()
        try:
            job = schedules.run_job(actor=request.user, team=form.cleaned_data["team"],
                                    trigger=Trigger.PORTAL, **args)
        except DomainError as exc:
            form.add_service_error(exc.field, exc.message)
        else:
            messages.success(request, f"Job {job.pk} is queued: {job.rows_total} rows of "
                                      f"{job.model.name} v{job.version.version}."
                             + (f" It repeats on '{args['cron']}'." if args["cron"] else ""))
            return redirect("jobs:detail", job_id=job.pk)
    return render(request, "jobs/list.html",
                  {"jobs": jobs, "teams": Team.objects.visible_to(request.user),
                   "statuses": JobStatus.choices, "form": form,
                   "can_create": writable.exists()})


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    return render(request, "jobs/detail.html", _context(request, _visible(request, job_id)))


@login_required
def job_status(request: HttpRequest, job_id: int) -> HttpResponse:
    """The htmx-polled fragment: status, progress bar, chunks, events."""
    return render(request, "jobs/_status.html", _context(request, _visible(request, job_id)))


@login_required
def job_logs(request: HttpRequest, job_id: int) -> HttpResponse:
    """The chunk containers' last lines: a panel htmx fills, or a page without JavaScript."""
    job = _visible(request, job_id)
    raw = request.GET.get("chunk", "")
    chunk = int(raw) if raw.isdigit() else None
    try:
        text = services.job_logs(actor=request.user, job=job, chunk=chunk, tail=200)
        error = ""
    except DomainError as exc:
        text, error = "", exc.message
    fragment = bool(request.headers.get("HX-Request"))
    return render(request, "jobs/_logs.html" if fragment else "jobs/logs.html",
                  {"job": job, "logs": text, "error": error, "chunk": chunk})


@login_required
def job_output(request: HttpRequest, job_id: int) -> HttpResponseBase:
    job = _visible(request, job_id)
    try:
        handle, filename, content_type = services.open_output(actor=request.user, job=job)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("jobs:detail", job_id=job.pk)
    return FileResponse(handle, content_type=content_type, as_attachment=True,
                        filename=filename)


@login_required
def job_action(request: HttpRequest, job_id: int, verb: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    job = _visible(request, job_id)
    try:
        if verb == "cancel":
            services.cancel_job(actor=request.user, job=job)
            messages.success(request, f"Job {job.pk} is cancelled: its containers are removed "
                                      "and its quota released.")
        elif verb == "retry":
            services.retry_job(actor=request.user, job=job)
            messages.success(request, f"Job {job.pk} resumes: only its chunks not done run "
                                      "again.")
        else:
            raise Http404(f"Unknown action '{verb}'.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("jobs:detail", job_id=job.pk)
