"""The first-run demo: seed two models and a healthy deployment, hand out a token, send traffic.

Everything goes through the apps' own services (registry, deployments, monitoring, teams), so
the demo leaves the same audit trail a person would. Seeding is idempotent: what exists is kept,
only what is missing is created; a second run creates nothing but a fresh demo token (the
previous one is revoked: only its digest is stored, so it cannot be shown again).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import docker
import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.utils import timezone
from docker.errors import DockerException, ImageNotFound

from core import queue
from core.errors import Conflict, InvalidInput
from deployments import services as deployment_services
from deployments.models import Deployment, DeploymentStatus
from monitoring import alerts as monitoring_alerts
from monitoring import services as monitoring_services
from monitoring.models import AlertRule, ModelMonitoring
from registry import services as registry_services
from registry.models import ModelAlias, ModelVersion, RegisteredModel, VersionStatus
from teams import audit
from teams import services as team_services
from teams.access import require_team_role
from teams.models import ApiToken, Membership, Team
from teams.roles import Role
from workers.runtime_status import describe_runtime, resolved_runtime

from . import training
from .models import TrafficRun, TrafficStatus
from .traffic import TrafficFailed, TrafficPlan, send

log = logging.getLogger(__name__)

DEMO_TEAM = "demo"
PRODUCTION = "production"
TOKEN_NAME = "demo (make run)"
TOKEN_DAYS = 30


class _AlertRule(TypedDict):
    """The keyword arguments of ``create_alert_rule`` the demo sets."""

    name: str
    metric: str
    comparison: str
    threshold: float
    window_minutes: int


ALERT_RULES: tuple[_AlertRule, ...] = (
    {"name": "Input drift: PSI above 0.2", "metric": "psi_max", "comparison": ">",
     "threshold": 0.2, "window_minutes": 5},
    {"name": "Error rate above 5 %", "metric": "error_rate", "comparison": ">",
     "threshold": 5.0, "window_minutes": 5},
)
MIN_TRAFFIC_S, MAX_TRAFFIC_S = 10, 540  # the Celery task's time limit is 600 s

Report = Callable[[str], None]


class DemoError(Exception):
    """Seeding cannot go on; the message says why and what to do."""


@dataclass
class SeedResult:
    deployment: Deployment
    versions: dict[str, ModelVersion]
    runtime: str
    created: list[str] = field(default_factory=list)


def deployment_name() -> str:
    return settings.MODELPORT_DEMO_DEPLOYMENT


def is_demo_deployment(d: Deployment) -> bool:
    return d.name == deployment_name() and d.team.slug == DEMO_TEAM


def admin_user():
    user = get_user_model().objects.filter(username=settings.MODELPORT_ADMIN_USERNAME).first()
    if user is None:
        raise DemoError(f"No user '{settings.MODELPORT_ADMIN_USERNAME}': run "
                        "`python manage.py bootstrap` first (make run does).")
    return user


# --- Seeding ----------------------------------------------------------------------------------
def ensure_team(actor) -> Team:
    team = Team.objects.filter(slug=DEMO_TEAM).first()
    if team is None:
        team = team_services.create_team(actor=actor, slug=DEMO_TEAM, name="Demo team",
                                         description="Created at first start to try Modelport.")
    if not Membership.objects.filter(team=team, user=actor).exists():
        team_services.add_member(actor=actor, team=team, username=actor.get_username(),
                                 role=Role.MAINTAINER)
    return team


def _wait(what: str, check: Callable[[], tuple[bool, str]], report: Report,
          timeout: float, every: float = 1.0) -> None:
    """Poll ``check`` (done, progress message) until done; report each new message."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        done, message = check()
        if message and message != last:
            report(f"  {what}: {message}")
            last = message
        if done:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not finish within {timeout:.0f} s (last: {last}).")
        time.sleep(every)


def _ensure_version(actor, team: Team, spec: training.Spec, report: Report,
                    created: list[str]) -> ModelVersion:
    """The newest ready or in-validation version, or a newly registered one (the worker
    validates it; ``_wait_ready`` waits)."""
    trained: training.TrainedModel | None = None
    model = RegisteredModel.objects.filter(name=spec.name).first()
    if model is None:
        trained = spec.train()
        model = registry_services.create_model(actor=actor, team=team, name=trained.name,
                                               description=trained.description,
                                               card=trained.card, tags=trained.tags)
        created.append(f"model {model.name}")
    elif model.team_id != team.pk:
        raise DemoError(f"A model named '{spec.name}' already exists in team "
                        f"'{model.team.slug}'; the demo needs that name.")
    version = (model.versions.filter(status__in=[VersionStatus.READY, VersionStatus.PENDING,
                                                 VersionStatus.VALIDATING])
               .order_by("-version").first())
    if version is None:
        trained = trained or spec.train()
        filename, content = trained.upload_bytes()
        version = registry_services.register_upload(
            actor=actor, model=model, fmt=trained.fmt,
            upload=SimpleUploadedFile(filename, content),
            input_example=trained.input_example(),
            reference_data=SimpleUploadedFile(f"{trained.name}-train.csv",
                                              trained.reference_csv(), "text/csv"),
            description=f"Trained at first start on {trained.dataset_name}.",
            lineage={"dataset_name": trained.dataset_name,
                     "dataset_hash": trained.dataset_hash(), "training_job": "seed_demo"},
            params=trained.params, metrics=trained.metrics)
        created.append(f"{model.name} v{version.version}")
        report(f"Registered {model.name} v{version.version}; a worker validates it now.")
    if _task_differs(model, spec.task):
        monitoring_services.set_model_monitoring(actor=actor, model=model, task=spec.task)
    return version


def _wait_ready(version: ModelVersion, report: Report, timeout: float) -> None:
    name = f"{version.model.name} v{version.version}"

    def ready() -> tuple[bool, str]:
        version.refresh_from_db()
        if version.status == VersionStatus.FAILED:
            raise DemoError(f"{name} failed validation: {version.status_message}")
        return version.status == VersionStatus.READY, \
            f"{version.status} {version.progress}% — {version.status_message}"

    _wait(name, ready, report, timeout)


def _task_differs(model: RegisteredModel, task: str) -> bool:
    row = ModelMonitoring.objects.filter(model=model).first()
    return row is None or row.task != task


def _ensure_deployment(actor, team: Team, version: ModelVersion, report: Report,
                       created: list[str], timeout: float) -> Deployment:
    model = version.model
    if not ModelAlias.objects.filter(model=model, name=PRODUCTION).exists():
        registry_services.set_alias(actor=actor, model=model, alias=PRODUCTION,
                                    version_number=version.version)
        created.append(f"alias {model.name}@{PRODUCTION}")
    name = deployment_name()
    d = Deployment.objects.filter(name=name).select_related("team").first()
    if d is None:
        d = deployment_services.create_deployment(
            actor=actor, team=team, name=name, model=model.name, alias=PRODUCTION, replicas=1,
            resources={"cpu": 0.5, "memory_mb": 512})
        created.append(f"deployment {name}")
        report(f"Deploying {model.name}@{PRODUCTION} as '{name}'.")
    elif d.team_id != team.pk:
        raise DemoError(f"A deployment named '{name}' already exists in team "
                        f"'{d.team.slug}'; set MODELPORT_DEMO_DEPLOYMENT to another name.")
    elif d.stopped:
        report(f"Deployment '{name}' is stopped; leaving it so (start it on its page).")
        return d
    for rule in ALERT_RULES:
        if not AlertRule.objects.filter(deployment=d, name=rule["name"]).exists():
            monitoring_alerts.create_alert_rule(actor=actor, deployment=d, **rule)
            created.append(f"alert rule '{rule['name']}'")

    def healthy() -> tuple[bool, str]:
        d.refresh_from_db()
        if d.status == DeploymentStatus.FAILED:
            last = d.events.order_by("-created_at", "-id").first()
            raise DemoError(f"Deployment '{name}' failed: {d.status_message}"
                            + (f"\n{last.message}" if last else ""))
        return d.status == DeploymentStatus.HEALTHY, \
            f"{d.status} {d.progress}% — {d.status_message}"

    _wait(f"deployment {name}", healthy, report, timeout)
    return d


def seed(*, report: Report = log.info, timeout: float = 900) -> SeedResult:
    """Create what is missing of the demo and wait until its deployment is healthy."""
    actor = admin_user()
    created: list[str] = []
    with transaction.atomic():
        team = ensure_team(actor)
    runtime = describe_runtime()
    report(f"Demo: team '{team.slug}', runtime {runtime}.")
    _check_base_image()
    try:
        specs = training.SPECS + training.flavor_specs(settings.MODELPORT_DEMO_FLAVORS)
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    versions: dict[str, ModelVersion] = {}
    for spec in specs:  # register all first: the worker validates them in parallel
        versions[spec.name] = _ensure_version(actor, team, spec, report, created)
    for version in versions.values():
        _wait_ready(version, report, timeout)
    d = _ensure_deployment(actor, team, versions[training.CLASSIFIER], report, created, timeout)
    # What the deployment runs on: fixed when it was created, whatever answers now.
    runtime = "local (unsandboxed)" if d.runtime == "local" else (d.runtime or runtime)
    return SeedResult(deployment=d, versions=versions, runtime=runtime, created=created)


def _check_base_image() -> None:
    """With Docker, validation and serving build on the base image: say how to get it."""
    if resolved_runtime() != "docker":
        return
    base = settings.MODELPORT_SERVING_BASE_IMAGE
    try:
        client = docker.from_env(timeout=10)
        try:
            client.images.get(base)
        finally:
            client.close()
    except ImageNotFound:
        raise DemoError(f"Docker answers but the base image {base} is missing: build it with "
                        f"`bash platform/images/build-base.sh --tag {base}`, set "
                        "MODELPORT_SERVING_BASE_IMAGE to an image you have (e.g. "
                        "python:3.11-slim), or run without Docker: MODELPORT_RUNTIME=local.") \
            from None
    except DockerException as exc:
        log.warning("could not check the base image %s: %s", base, exc)


# --- The token and the curl line ----------------------------------------------------------------
def issue_token(actor) -> tuple[ApiToken, str]:
    """A fresh token for the printed curl line; the previous demo token is revoked (its secret
    was never stored, so it cannot be printed again)."""
    with transaction.atomic():
        for old in ApiToken.objects.active().filter(user=actor, name=TOKEN_NAME):
            team_services.revoke_token(actor=actor, token=old)
        return team_services.create_token(actor=actor, name=TOKEN_NAME,
                                          expires_in_days=TOKEN_DAYS)


def example_body(d: Deployment) -> dict[str, Any]:
    version = d.revisions.get(number=d.revision).model_version
    body = version.input_example or {}
    split = body.get("dataframe_split")
    if split and split.get("data"):  # one row reads best in a terminal
        return {"dataframe_split": {"columns": split["columns"], "data": split["data"][:1]}}
    return body


def gateway_url(d: Deployment) -> str:
    return deployment_services.endpoint(d)


def curl_line(d: Deployment, secret: str) -> str:
    """One line, so it survives copying out of honcho's prefixed output."""
    body = json.dumps(example_body(d), separators=(",", ":"))
    return (f"curl -sS -X POST {gateway_url(d)} -H {shlex.quote('Authorization: Bearer ' + secret)}"
            f" -H 'Content-Type: application/json' -d {shlex.quote(body)}")


def first_prediction(d: Deployment, secret: str, timeout: float = 60) -> str:
    """Call the gateway like the printed curl does, until it answers (the web process may still
    be starting); returns the answer's body."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.post(gateway_url(d), json=example_body(d), timeout=10,
                                  headers={"Authorization": f"Bearer {secret}"})
        except httpx.HTTPError as exc:
            last = str(exc)
        else:
            if response.status_code == 200:
                return response.text
            last = f"HTTP {response.status_code}: {response.text[:300]}"
        time.sleep(1)
    raise DemoError(f"The gateway did not answer a prediction within {timeout:.0f} s: {last}")


# --- Demo traffic -----------------------------------------------------------------------------
def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not MIN_TRAFFIC_S <= value <= MAX_TRAFFIC_S:
        raise InvalidInput(f"duration must be {MIN_TRAFFIC_S}-{MAX_TRAFFIC_S} seconds "
                           f"(got {value!r}).", field="duration")
    return value


def active_run(d: Deployment) -> TrafficRun | None:
    """The queued or running traffic run of ``d``; runs older than their duration plus two
    minutes are marked failed (their worker died)."""
    for run in TrafficRun.objects.filter(deployment=d, status__in=[TrafficStatus.QUEUED,
                                                                  TrafficStatus.RUNNING]):
        age = (timezone.now() - run.created_at).total_seconds()
        if age > run.duration_s + 120:
            TrafficRun.objects.filter(pk=run.pk).update(
                status=TrafficStatus.FAILED, finished_at=timezone.now(),
                message="Stopped reporting (the worker was restarted?).")
            continue
        return run
    return None


@transaction.atomic
def start_traffic(*, actor, deployment: Deployment, duration: Any = 180,
                  enqueue: bool = True) -> TrafficRun:
    """Record a traffic run for the demo deployment and (by default) hand it to a worker."""
    require_team_role(actor, deployment.team, Role.ENGINEER, "sending demo traffic")
    if not is_demo_deployment(deployment):
        raise InvalidInput(f"Demo traffic goes to the demo deployment "
                           f"'{deployment_name()}' only.", field="deployment")
    duration = _duration(duration)
    Deployment.objects.select_for_update().filter(pk=deployment.pk).first()
    running = active_run(deployment)
    if running is not None:
        raise Conflict(f"Demo traffic #{running.pk} is already {running.status} for "
                       f"'{deployment.name}' ({running.progress}%).", code="already_running")
    run = TrafficRun.objects.create(deployment=deployment, requested_by=actor,
                                    duration_s=duration)
    audit.record(actor=actor, action="demo.traffic_started", obj=run, team=deployment.team,
                 after={"deployment": deployment.name, "duration_s": duration})
    if enqueue:
        pk = run.pk
        transaction.on_commit(lambda: _enqueue_traffic(pk))
    return run


def _enqueue_traffic(run_id: int) -> None:
    queue.task("demo.tasks.send_traffic").delay(run_id)


def run_traffic(run_id: int, *, on_progress: Callable[[TrafficRun], None] | None = None
                ) -> TrafficRun:
    """Send the run's traffic through the gateway (in a worker, or in ``demo_traffic``)."""
    claimed = TrafficRun.objects.filter(pk=run_id, status=TrafficStatus.QUEUED).update(
        status=TrafficStatus.RUNNING, started_at=timezone.now(), message="Starting.")
    run = TrafficRun.objects.select_related("deployment__team", "requested_by").get(pk=run_id)
    if not claimed:
        return run  # already taken (a redelivered task)
    actor = run.requested_by or admin_user()
    token, secret = team_services.create_token(
        actor=actor, name=f"demo traffic #{run.pk}", expires_in_days=1)
    trained = training.spec_of(run.deployment.model.name).train()

    def progress(stats: dict[str, int], fraction: float, message: str) -> None:
        TrafficRun.objects.filter(pk=run.pk).update(
            progress=min(99, int(fraction * 100)), message=message[:500], **stats)
        if on_progress is not None:
            run.refresh_from_db()
            on_progress(run)

    try:
        stats = send(TrafficPlan(deployment=run.deployment.name, duration_s=run.duration_s,
                                 model=trained, base_url=settings.MODELPORT_BASE_URL,
                                 token=secret), progress)
    except TrafficFailed as exc:  # the requests failed, not this code: no traceback
        log.warning("demo traffic #%s failed: %s", run.pk, exc)
        TrafficRun.objects.filter(pk=run.pk).update(
            status=TrafficStatus.FAILED, finished_at=timezone.now(), message=str(exc)[:500],
            **exc.stats)
    except Exception as exc:
        log.exception("demo traffic #%s failed", run.pk)
        TrafficRun.objects.filter(pk=run.pk).update(
            status=TrafficStatus.FAILED, finished_at=timezone.now(), message=str(exc)[:500])
    else:
        TrafficRun.objects.filter(pk=run.pk).update(
            status=TrafficStatus.DONE, progress=100, finished_at=timezone.now(),
            message=(f"Sent {stats['sent']} requests ({stats['drifted']} drifted, "
                     f"{stats['errors']} errors), {stats['labelled']} labelled."), **stats)
    finally:
        team_services.revoke_token(actor=actor, token=token)
    run.refresh_from_db()
    return run
