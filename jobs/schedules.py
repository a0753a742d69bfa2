"""Job schedules: a job repeated on a cron expression (beat's ``jobs-run-schedules`` starts the
due ones each minute) or started by an alert rule's retraining hook.

A schedule's input is an object in artifact storage (``input_uri``), read afresh at each run:
the nightly ETL overwrites it, the schedule scores what is there. Each run is an ordinary job
(``services.create_job`` with ``trigger="schedule"`` or ``"alert"``), admitted, run and
audited like any other; a run that is refused (quota, a version no longer ready) is recorded on
the schedule and the next run is still planned. Cron is parsed by Celery's own ``crontab``
(five fields, UTC) so no extra dependency is needed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from celery.schedules import crontab
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import Conflict, DomainError, InvalidInput, NotFound
from registry.models import ModelAlias, ModelVersion, RegisteredModel
from teams import audit
from teams.access import require_team_role
from teams.models import Team
from teams.roles import Role

from . import services
from .models import BatchJob, JobSchedule, OutputFormat, Trigger

log = logging.getLogger(__name__)

FIELDS = ["name", "model_id", "version_id", "alias", "input_uri", "cron", "parallelism", "cpu",
          "memory_mb", "gpus", "output_format", "output_columns", "enabled", "next_run_at"]
MAX_PARALLELISM = services.MAX_PARALLELISM


# --- Cron --------------------------------------------------------------------------------------
def parse_cron(expr: str) -> crontab:
    """Five fields (minute hour day-of-month month day-of-week), UTC; InvalidInput naming the
    problem otherwise."""
    fields = str(expr or "").split()
    if len(fields) != 5:
        raise InvalidInput(f"cron must have 5 fields (minute hour day month weekday), got "
                           f"{len(fields)}: '{expr}'.", field="cron")
    minute, hour, dom, month, dow = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month,
                       day_of_week=dow)
    except (ValueError, KeyError, IndexError) as exc:
        raise InvalidInput(f"cron '{expr}' is not valid: {exc}", field="cron") from None


def next_run(expr: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expr`` matches."""
    last, ffwd, _ = parse_cron(expr).remaining_delta(after.astimezone(UTC), tz=UTC)
    return last + ffwd


# --- Verbs -------------------------------------------------------------------------------------
def _model(team: Team, name: Any) -> RegisteredModel:
    model = RegisteredModel.objects.filter(name=str(name or "")).first()
    if model is None or model.team_id != team.pk:
        raise NotFound(f"Team '{team.slug}' has no model '{name}'.", field="model")
    return model


def _version(model: RegisteredModel, version: Any, alias: Any) -> tuple[ModelVersion | None, str]:
    if version not in (None, "") and alias not in (None, ""):
        raise InvalidInput("Give either version or alias, not both.", field="version")
    if alias not in (None, ""):
        if not ModelAlias.objects.filter(model=model, name=str(alias)).exists():
            raise NotFound(f"Model '{model.name}' has no alias '{alias}'.", field="alias")
        return None, str(alias)
    if version in (None, ""):
        raise InvalidInput("Give a version or an alias (e.g. production).", field="version")
    found = ModelVersion.objects.filter(model=model, version=version).first()
    if found is None:
        raise NotFound(f"Model '{model.name}' has no version {version}.", field="version")
    return found, ""


def _check(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("output_format") not in OutputFormat.values:
        raise InvalidInput("output_format must be csv or parquet.", field="output_format")
    parallelism = data.get("parallelism")
    if not isinstance(parallelism, int) or not 1 <= parallelism <= MAX_PARALLELISM:
        raise InvalidInput(f"parallelism must be 1-{MAX_PARALLELISM}.", field="parallelism")
    uri = str(data.get("input_uri") or "")
    if not uri.startswith(("artifacts:/", "jobs:/")):
        raise InvalidInput("input_uri must be an object in the platform's artifact storage "
                           "('artifacts:/<name>' or 'jobs:/<id>/input|output').",
                           field="input_uri")
    columns = data.get("output_columns") or []
    if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
        raise InvalidInput("output_columns must be a list of column names.",
                           field="output_columns")
    if data.get("cron"):
        parse_cron(data["cron"])
    return data


def _resources(resources: dict | None) -> dict[str, Any]:
    resources = resources or {}
    return {"cpu": Decimal(str(resources.get("cpu", 1))),
            "memory_mb": int(resources.get("memory_mb", 1024)),
            "gpus": int(resources.get("gpus", 0))}


@transaction.atomic
def create_schedule(*, actor, team: Team, name: str, model: str, input_uri: str,
                    cron: str = "", version: int | None = None, alias: str | None = None,
                    parallelism: int = 1, resources: dict | None = None,
                    output_format: str = "parquet", output_columns: list[str] | None = None,
                    enabled: bool = True, now: datetime | None = None) -> JobSchedule:
    """A schedule; without ``cron`` it only runs when started (an alert rule's hook, or
    ``run_schedule``)."""
    require_team_role(actor, team, Role.ENGINEER, "scheduling jobs")
    name = str(name or "").strip()
    if not name:
        raise InvalidInput("A schedule needs a name.", field="name")
    if JobSchedule.objects.filter(team=team, name=name).exists():
        raise Conflict(f"Team '{team.slug}' already has a schedule named '{name}'.",
                       code="name_taken", field="name")
    registered = _model(team, model)
    pinned, alias = _version(registered, version, alias)
    data = _check({"input_uri": input_uri, "cron": cron.strip() if cron else "",
                   "parallelism": parallelism, "output_format": output_format,
                   "output_columns": list(output_columns or [])})
    now = now or timezone.now()
    schedule = JobSchedule.objects.create(
        team=team, name=name, model=registered, version=pinned, alias=alias, enabled=enabled,
        next_run_at=next_run(data["cron"], now) if data["cron"] and enabled else None,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        **data, **_resources(resources))
    audit.record(actor=actor, action="job_schedule.created", obj=schedule, team=team,
                 after=audit.snapshot(schedule, FIELDS))
    return schedule


@transaction.atomic
def update_schedule(*, actor, schedule: JobSchedule, now: datetime | None = None,
                    **changes: Any) -> JobSchedule:
    """Change any of name, version/alias, input_uri, cron, parallelism, resources,
    output_format, output_columns, enabled; the next run is planned again from now."""
    require_team_role(actor, schedule.team, Role.ENGINEER, "editing schedules")
    schedule = JobSchedule.objects.select_for_update().get(pk=schedule.pk)
    before = audit.snapshot(schedule, FIELDS)
    if "name" in changes and changes["name"] != schedule.name:
        name = str(changes["name"] or "").strip()
        if not name:
            raise InvalidInput("A schedule needs a name.", field="name")
        if JobSchedule.objects.filter(team=schedule.team, name=name).exclude(
                pk=schedule.pk).exists():
            raise Conflict(f"Team '{schedule.team.slug}' already has a schedule named "
                           f"'{name}'.", code="name_taken", field="name")
        schedule.name = name
    if "version" in changes or "alias" in changes:
        schedule.version, schedule.alias = _version(schedule.model, changes.get("version"),
                                                    changes.get("alias"))
    data = {"input_uri": schedule.input_uri, "cron": schedule.cron,
            "parallelism": schedule.parallelism, "output_format": schedule.output_format,
            "output_columns": schedule.output_columns}
    data |= {k: v for k, v in changes.items() if k in data and v is not None}
    data["cron"] = (data["cron"] or "").strip()
    for field, value in _check(data).items():
        setattr(schedule, field, value)
    if changes.get("resources") is not None:
        current = {"cpu": schedule.cpu, "memory_mb": schedule.memory_mb, "gpus": schedule.gpus}
        for field, value in _resources({**current, **changes["resources"]}).items():
            setattr(schedule, field, value)
    if changes.get("enabled") is not None:
        schedule.enabled = bool(changes["enabled"])
    _plan(schedule, now or timezone.now())
    schedule.save()
    after = audit.snapshot(schedule, FIELDS)
    if after != before:
        audit.record(actor=actor, action="job_schedule.updated", obj=schedule,
                     team=schedule.team, before=before, after=after)
    return schedule


def set_enabled(*, actor, schedule: JobSchedule, enabled: bool) -> JobSchedule:
    """Pause or resume a schedule (a paused one neither fires on cron nor on an alert)."""
    return update_schedule(actor=actor, schedule=schedule, enabled=enabled)


@transaction.atomic
def delete_schedule(*, actor, schedule: JobSchedule) -> None:
    """Its jobs stay (their ``schedule`` becomes empty)."""
    require_team_role(actor, schedule.team, Role.ENGINEER, "deleting schedules")
    audit.record(actor=actor, action="job_schedule.deleted", obj=schedule, team=schedule.team,
                 before=audit.snapshot(schedule, FIELDS))
    schedule.delete()


def get_visible(user, schedule_id: int) -> JobSchedule:
    found = (JobSchedule.objects.visible_to(user).select_related("team", "model", "version")
             .filter(pk=schedule_id).first())
    if found is None:
        raise NotFound(f"No schedule {schedule_id}.")
    return found


def _plan(schedule: JobSchedule, now: datetime) -> None:
    schedule.next_run_at = (next_run(schedule.cron, now)
                            if schedule.cron and schedule.enabled else None)


def run_job(*, actor, team: Team, cron: str = "", schedule_name: str = "",
            **job_args: Any) -> BatchJob:
    """``services.create_job`` and, with ``cron``, a schedule repeating it (POST /jobs/ with
    ``schedule``, the portal's form): the repeats read ``input_uri`` afresh, or this job's
    staged input (``jobs:/<id>/input``). The cron and the name are checked before the job is
    created, so a refusal writes nothing."""
    cron = (cron or "").strip()
    if cron:
        parse_cron(cron)
        if schedule_name and JobSchedule.objects.filter(team=team, name=schedule_name).exists():
            raise Conflict(f"Team '{team.slug}' already has a schedule named "
                           f"'{schedule_name}'.", code="name_taken", field="schedule_name")
    job = services.create_job(actor=actor, team=team, **job_args)
    if not cron:
        return job
    schedule = create_schedule(
        actor=actor, team=team, name=schedule_name or f"{job.model.name}-job-{job.pk}",
        model=job.model.name, version=None if job.alias else job.version.version,
        alias=job.alias or None, input_uri=job_args.get("input_uri") or f"jobs:/{job.pk}/input",
        cron=cron, parallelism=job.parallelism,
        resources={"cpu": job.cpu, "memory_mb": job.memory_mb, "gpus": job.gpus},
        output_format=job.output_format, output_columns=list(job.output_columns or []))
    BatchJob.objects.filter(pk=job.pk).update(schedule=schedule)
    job.schedule = schedule
    return job


# --- Running -----------------------------------------------------------------------------------
def run_schedule(*, actor, schedule: JobSchedule, trigger: str = Trigger.SCHEDULE) -> BatchJob:
    """Start one run of ``schedule`` now, as ``actor`` (the schedule's creator when beat or an
    alert starts it: their role in the team is checked again, so a schedule of someone who
    left the team no longer runs)."""
    return services.create_job(
        actor=actor, team=schedule.team, model=schedule.model.name,
        version=schedule.version.version if schedule.version is not None else None,
        alias=schedule.alias or None, input_uri=schedule.input_uri,
        output_format=schedule.output_format,
        resources={"cpu": float(schedule.cpu), "memory_mb": schedule.memory_mb,
                   "gpus": schedule.gpus},
        parallelism=schedule.parallelism, output_columns=list(schedule.output_columns or []),
        trigger=trigger, schedule=schedule)


def run_due_schedules(now: datetime | None = None) -> dict[int, str]:
    """Beat: start every enabled schedule whose ``next_run_at`` has come, and plan its next
    run. Each schedule is claimed under a row lock and planned forward before its job is
    created, so two beats (or a slow one) never start the same run twice; a missed window
    (beat down for a night) runs once, not once per missed slot. Returns {schedule id:
    "job <id>" or the refusal}."""
    now = now or timezone.now()
    outcome: dict[int, str] = {}
    due = (JobSchedule.objects.filter(enabled=True, next_run_at__lte=now)
           .exclude(Q(cron="")).values_list("pk", flat=True))
    for pk in list(due):
        with transaction.atomic():
            schedule = (JobSchedule.objects.select_for_update(skip_locked=True, of=("self",))
                        .select_related("team", "model", "version", "created_by")
                        .filter(pk=pk, enabled=True, next_run_at__lte=now).first())
            if schedule is None:
                continue
            schedule.last_run_at = now
            _plan(schedule, now)
            schedule.save(update_fields=["last_run_at", "next_run_at"])
        outcome[pk] = start(schedule, trigger=Trigger.SCHEDULE)
    return outcome


def start(schedule: JobSchedule, *, trigger: str) -> str:
    """One run by the platform (beat or an alert hook) on behalf of the schedule's creator;
    a refusal is logged and returned, never raised: the other schedules still run."""
    try:
        job = run_schedule(actor=schedule.created_by, schedule=schedule, trigger=trigger)
    except DomainError as exc:
        log.warning("schedule %s (%s) not started: %s", schedule.pk, trigger, exc)
        audit.record(actor=None, action="job_schedule.refused", obj=schedule,
                     team=schedule.team, after={"trigger": trigger, "reason": str(exc)[:500]})
        return f"refused: {exc}"
    return f"job {job.pk}"
