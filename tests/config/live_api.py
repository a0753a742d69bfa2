"""A live Modelport for API fuzzing: a seeded database and gunicorn serving it on loopback.

Used by ``test_api_schemathesis.py``. The seed gives every operation something real to act on
(a team with a member of each role, models with ready versions and aliases, a pending alias
transition, deployments with revisions, replicas and events, alert rules and a firing alert,
a quota, pending resource requests, execution targets), so generated requests reach the code
behind the 404s. Rows are made through the services where a service exists (audit records,
reservations and admission included) and directly only where the service needs a worker
(validated versions, replicas, events).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.db import connection
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[2]
# Loopback ports nothing listens on: the targets and MLflow the seeded platform points at, so
# no operation reaches a real Docker Engine, cluster or tracking server.
UNREACHABLE_DOCKER = "tcp://127.0.0.1:9"
UNREACHABLE_MLFLOW = "http://127.0.0.1:9"
HOST_ARTIFACT = "/api/v1/hosts/{host}/artifacts/{sha256}/"
EXAMPLE = {"dataframe_split": {"columns": ["x1", "x2"], "data": [[1.5, 2.0], [0.5, 1.0]]}}


@dataclass
class Seed:
    """What the seed made: values for the fuzzer's path and body parameters."""

    admin_token: str
    viewer_token: str
    ingest_token: str
    # The platform's secret key (gunicorn gets it) and the seeded host's token derived from it.
    secret_key: str = ""
    host_token: str = ""
    hosts: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    usernames: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    token_ids: list[str] = field(default_factory=list)
    audit_ids: list[int] = field(default_factory=list)
    alert_rule_ids: list[int] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)
    resource_request_ids: list[int] = field(default_factory=list)
    transition_ids: list[int] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    job_schedule_ids: list[int] = field(default_factory=list)
    consumer_key_ids: list[str] = field(default_factory=list)
    # What the deleting operations draw from, so the rows the rest draw from stay.
    disposable: dict[str, list] = field(default_factory=dict)


def _model_dir(root: Path) -> Path:
    """A minimal MLflow model directory: enough to be stored and served as an artifact."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    (root / "requirements.txt").write_text("scikit-learn\n")
    return root


def seed(tmp: Path) -> Seed:
    """Make the rows; enqueued work (reconciles) is dropped by the caller's monkeypatch."""
    from compute.models import ExecutionTarget, Host
    from core import host_tokens
    from deployments import services as deployments
    from deployments.models import (
        ConsumerTraffic,
        Deployment,
        DeploymentEvent,
        Replica,
        Revision,
        RevisionState,
    )
    from monitoring import alerts, ingest
    from monitoring.models import Alert
    from quotas import requests as quota_requests
    from quotas import services as quotas
    from registry import services as registry
    from registry import storage
    from registry.models import ModelVersion
    from teams import services as teams
    from teams.models import AuditEvent
    from tests.factories import AdminFactory, UserFactory, make_consumer_key, make_token

    admin = AdminFactory(username="fuzz-admin")
    team = teams.create_team(actor=admin, slug="fuzz-team", name="Fuzz team")
    other = teams.create_team(actor=admin, slug="other-team", name="Other team")
    users = {}
    for role, name in (("maintainer", "mia"), ("engineer", "eve"), ("viewer", "vic"),
                       ("viewer", "dan")):
        users[role] = UserFactory(username=name)
        teams.add_member(actor=admin, team=team, username=name, role=role)
    teams.add_member(actor=admin, team=other, username="eve", role="viewer")
    quotas.set_quota(actor=admin, team=team, cpu=Decimal(64), memory_mb=262144, gpus=0,
                     deployments=50)

    ExecutionTarget.objects.update_or_create(
        name="default", defaults={"kind": "docker", "endpoint": UNREACHABLE_DOCKER,
                                  "is_default": True, "enabled": True})
    ExecutionTarget.objects.update_or_create(
        name="spare", defaults={"kind": "docker", "endpoint": UNREACHABLE_DOCKER,
                                "is_default": False, "enabled": True})

    stored = storage.store_model_dir(_model_dir(tmp / "model"))
    for name in ("iris", "churn", "scratch"):
        model = registry.create_model(actor=users["engineer"], team=team, name=name,
                                      description=f"The {name} model.", tags=["demo"])
        for number, status in ((1, "ready"), (2, "ready"), (3, "failed")):
            ModelVersion.objects.create(
                model=model, version=number, status=status, source_format="mlflow",
                flavor="sklearn", input_example=EXAMPLE, artifact_name=stored.name,
                artifact_sha256=stored.sha256, artifact_size=stored.size,
                created_by=users["engineer"], validated_at=timezone.now(),
                status_message="" if status == "ready" else "Validation failed: no model.")
        registry.set_alias(actor=users["maintainer"], model=model, alias="staging",
                           version_number=1)
        registry.set_alias(actor=users["maintainer"], model=model, alias="production",
                           version_number=1)
        registry.set_alias(actor=users["engineer"], model=model, alias="production",
                           version_number=2, comment="v2 is better")
        registry.set_alias(actor=users["maintainer"], model=model, alias="scratch",
                           version_number=2)

    for name, model, alias in (("iris-prod", "iris", "production"), ("iris-canary", "iris", None),
                               ("churn-prod", "churn", None), ("scratch-1", "churn", None),
                               ("scratch-2", "churn", None)):
        d = deployments.create_deployment(
            actor=users["engineer"], team=team, name=name, model=model,
            version=None if alias else 1, alias=alias, replicas=1,
            resources={"cpu": 0.5, "memory_mb": 256, "gpus": 0})
        d.status = "healthy"
        d.traffic = [{"revision": 1, "percent": 100}]
        d.save(update_fields=["status", "traffic"])
        Replica.objects.create(deployment=d, runtime_id=f"{name}-r1-0", revision=1, index=0,
                               status="running", ready=True, url="http://127.0.0.1:9")
        DeploymentEvent.objects.create(deployment=d, revision=1, message="Replica 0 is ready.")
    # A host worker's host with iris-prod's replica placed on it: the artifact endpoint serves
    # it the stored artifact (with the host's token).
    host = Host.objects.create(name="fuzz-host", queue="host.fuzz-host", cpu=8, memory_mb=8192,
                               last_heartbeat=timezone.now())
    Replica.objects.create(deployment=deployments.get_visible(admin, "iris-prod"),
                           runtime_id="iris-prod-r1-0.fuzz-host", revision=1, index=1,
                           status="running", ready=False, host=host, host_status="running")
    secret_key = secrets.token_urlsafe(50)
    # iris-canary shadows v2 behind v1: promote and discard have a shadow to act on.
    shadowed = deployments.update_deployment(
        actor=users["engineer"], deployment=deployments.get_visible(admin, "iris-canary"),
        version=2, strategy={"type": "shadow", "percent": 50})
    Revision.objects.filter(deployment=shadowed, number=shadowed.revision).update(
        state=RevisionState.SHADOW)
    Deployment.objects.filter(pk=shadowed.pk).update(
        shadow={"revision": shadowed.revision, "percent": 50})
    deployments.stop(actor=users["engineer"],
                     deployment=deployments.get_visible(admin, "churn-prod"))
    # scratch-1 autoscales and sleeps (scaled to zero): reads show the object and status idle.
    scaled = deployments.update_deployment(
        actor=users["engineer"], deployment=deployments.get_visible(admin, "scratch-1"),
        autoscaling={"max_replicas": 3, "idle_to_zero_after_s": 600})
    Deployment.objects.filter(pk=scaled.pk).update(replicas=0, status="idle",
                                                   scaled_at=timezone.now())

    rules = []
    # Several rules: the fuzzer deletes some early, the rest keep GET and PATCH reaching code.
    for name, metric in (("errors high", "error_rate"), ("slow", "latency_p95"),
                         ("errors higher", "error_rate"), ("slower", "latency_p95"),
                         ("busy", "requests_per_min"), ("drift", "drifted_features")):
        rule = alerts.create_alert_rule(
            actor=users["engineer"], deployment=deployments.get_visible(admin, "iris-prod"),
            name=name, metric=metric, threshold=5)
        rules.append(rule.pk)
    alert_ids = [Alert.objects.create(rule_id=rules[i], state="firing", value=12.5,
                                      message="error rate 12.5 > 5",
                                      started_at=timezone.now()).pk for i in range(2)]

    requests = [quota_requests.file_request(actor=users["viewer"], team=team, cpu=Decimal(2),
                                          memory_mb=1024, justification=f"load test {i}",
                                          expires_at=timezone.now() + timedelta(days=7)).pk
                for i in range(4)]

    job_ids, schedule_ids = _seed_jobs(team, users["engineer"])

    _, admin_secret = make_token(admin, name="fuzz")
    # Tokens the fuzzer may read and revoke; never the one it authenticates with.
    spare_tokens = [str(make_token(admin, name=f"spare-{i}")[0].pk) for i in range(3)]
    _, viewer_secret = make_token(users["viewer"], name="fuzz-viewer")
    # Consumer keys the fuzzer may read, change and revoke (one rate-limited, one with traffic).
    consumer_keys = [make_consumer_key(team, [deployments.get_visible(admin, name)],
                                       name=f"caller-{i}", rate_per_s=5 if i else None)[0]
                     for i, name in enumerate(("iris-prod", "iris-canary", "churn-prod"))]
    ConsumerTraffic.objects.create(key=consumer_keys[0], deployment=consumer_keys[0]
                                   .deployments.get(), at=timezone.now(), requests=3, limited=1)
    transitions = list(registry.AliasTransitionRequest.objects.values_list("pk", flat=True))
    ingest_token = ingest.issue_ingest_token(
        deployment=deployments.get_visible(admin, "iris-prod"))
    return Seed(
        admin_token=admin_secret, viewer_token=viewer_secret, ingest_token=ingest_token,
        secret_key=secret_key, host_token=host_tokens.host_token(host.name, secret=secret_key),
        hosts=[host.name], artifacts=[stored.sha256],
        teams=["fuzz-team", "other-team"], usernames=["mia", "eve", "vic"],
        models=["iris", "churn"], aliases=["staging", "production"],
        deployments=["iris-prod", "iris-canary", "churn-prod"], targets=["default", "spare"],
        token_ids=spare_tokens,
        audit_ids=list(AuditEvent.objects.order_by("pk").values_list("pk", flat=True)[:5]),
        alert_rule_ids=rules[:3], alert_ids=alert_ids, resource_request_ids=requests,
        transition_ids=transitions, job_ids=job_ids, job_schedule_ids=schedule_ids[:2],
        consumer_key_ids=[str(key.pk) for key in consumer_keys],
        disposable={"DELETE /api/v1/job-schedules/{id}/": schedule_ids[2:],
                    "DELETE /api/v1/deployments/{name}/": ["scratch-1", "scratch-2"],
                    "DELETE /api/v1/models/{name}/": ["scratch"],
                    "DELETE /api/v1/models/{model_name}/aliases/{alias}/": ["scratch"],
                    "DELETE /api/v1/alert-rules/{id}/": rules[3:],
                    "DELETE /api/v1/teams/{team_slug}/members/{username}/": ["dan"],
                    "DELETE /api/v1/targets/{name}/": ["spare"]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database pytest-django created, as gunicorn's DATABASE_URL."""
    s = connection.settings_dict
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return (f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
            f"/{s['NAME']}")


@contextlib.contextmanager
def gunicorn(data_dir: Path, *, log: Path, secret_key: str | None = None) -> Iterator[str]:
    """gunicorn serving ``config.wsgi`` with production settings on a free loopback port.

    No REDIS_URL: Celery uses the embedded broker (a Redis server on a socket under
    ``data_dir``, started here as `make run` starts it), and no worker consumes it, so the work
    operations enqueue (validation, image builds, reconciles) is recorded and never carried
    out — nothing starts a container.
    """
    from config import embedded_broker

    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE", "MODELPORT_DEFAULT_TARGET"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secret_key or secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": database_url(),
        "MODELPORT_DATA_DIR": str(data_dir),
        "MLFLOW_TRACKING_URI": UNREACHABLE_MLFLOW,
        "MODELPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "DJANGO_LOG_LEVEL": "WARNING",
    })
    with log.open("wb") as out, contextlib.ExitStack() as stack:
        broker = embedded_broker.start(data_dir, stdout=subprocess.DEVNULL)
        stack.callback(lambda: (broker.terminate(), broker.wait(timeout=30)))
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--threads", "2", "--timeout", "60", "--graceful-timeout", "5",
             # The app under test, not gunicorn's request-line limit: an over-long URL is
             # refused by the HTTP server in front (the edge, gunicorn) with its own
             # plain-text 400 before Django sees it.
             "--limit-request-line", "0", *_no_control_socket()],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, process, log)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _no_control_socket() -> list[str]:
    """gunicorn 25+ opens a control socket in $HOME, shared with any other gunicorn on the
    machine (a `make run`); the test's own needs none."""
    from gunicorn import config

    return ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({process.returncode}):\n"
                               f"{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz",
                                                                  timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer /healthz:\n{log.read_text()[-3000:]}")


def _seed_jobs(team, engineer) -> tuple[list[int], list[int]]:
    """Jobs in each state (rows only: the runner never runs here) and schedules."""
    from jobs.models import BatchJob, JobChunk, JobEvent, JobSchedule
    from registry.models import ModelVersion

    version = ModelVersion.objects.get(model__name="iris", version=1)
    jobs = []
    for status in ("queued", "running", "failed", "succeeded", "cancelled"):
        job = BatchJob.objects.create(
            team=team, model=version.model, version=version, status=status,
            input_filename="customers.csv", input_format="csv", rows_total=20, chunk_rows=10,
            chunks_total=2, columns=["x1", "x2"], created_by=engineer, runtime="docker")
        for index in range(2):
            JobChunk.objects.create(job=job, index=index, row_start=index * 10, rows=10,
                                    status="failed" if status == "failed" else "pending")
        JobEvent.objects.create(job=job, message=f"Created ({status}).")
        jobs.append(job.pk)
    schedules = [JobSchedule.objects.create(
        team=team, name=f"nightly-{i}", model=version.model, version=version,
        input_uri="artifacts:/datasets/fuzz-team/customers.csv", cron="0 2 * * *",
        created_by=engineer).pk for i in range(4)]
    return jobs, schedules


def _toml_list(values: list) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values) + "]"


# Which seeded values a path parameter draws from: by its name, or by name and collection.
_BY_NAME = {"slug": "teams", "team_slug": "teams", "username": "usernames",
            "model_name": "models", "version": "versions", "alias": "aliases"}
_BY_COLLECTION = {("name", "models"): "models", ("name", "deployments"): "deployments",
                  ("name", "targets"): "targets", ("id", "tokens"): "token_ids",
                  ("id", "audit"): "audit_ids", ("id", "transition-requests"): "transition_ids",
                  ("id", "alert-rules"): "alert_rule_ids", ("id", "alerts"): "alert_ids",
                  ("id", "resource-requests"): "resource_request_ids",
                  ("id", "jobs"): "job_ids", ("id", "job-schedules"): "job_schedule_ids",
                  ("id", "consumer-keys"): "consumer_key_ids",
                  ("host", "hosts"): "hosts", ("sha256", "artifacts"): "artifacts"}


def _dictionary_for(path: str, parameter: str) -> str:
    if parameter in _BY_NAME:
        return _BY_NAME[parameter]
    collection = path.split("{" + parameter + "}")[0].rstrip("/").rsplit("/", 1)[-1]
    try:
        return _BY_COLLECTION[(parameter, collection)]
    except KeyError:
        raise LookupError(f"No seeded values for {{{parameter}}} in {path}: add them to the "
                          "seed so the fuzzer reaches the operation's code") from None


def schemathesis_config(seed: Seed, paths: list[str], *, probability: float = 0.8,
                        checks_off: dict[tuple[str, str], list[str]] | None = None) -> str:
    """schemathesis.toml: the admin's token on every request (the ingest endpoint gets the
    deployment's ingest token, the host artifact endpoint the seeded host's token), and each
    path parameter a seeded value most of the time, a generated one otherwise (unknown names
    and malformed values are tried too).
    ``checks_off``: (method, path) → checks not run there."""
    values = {**{k: v for k, v in vars(seed).items() if isinstance(v, list)},
              "versions": [1, 2, 3]}
    values.update({f"disposable-{i}": names
                   for i, names in enumerate(seed.disposable.values())})
    lines = [
        f'headers = {{ Authorization = "Bearer {seed.admin_token}" }}', "",
        # Strings the API refuses by rule, whatever the field (config/parsers.py): NUL, which
        # PostgreSQL cannot store, and lone surrogates, which UTF-8 cannot encode. JSON Schema
        # could only say so with a pattern on every string; the refusal is tested on its own
        # (tests/config/test_api_input.py).
        "[generation]", "allow-x00 = false", 'codec = "utf-8"', "",
        "[dictionaries]"]
    lines += [f"{name} = {{ values = {_toml_list(v)} }}" for name, v in values.items() if v]
    lines += ["", "[[operations]]", "include-path = '/api/v1/ingest/predictions/'",
              f'headers = {{ Authorization = "Bearer {seed.ingest_token}" }}']
    # An operation takes its parameters from the first entry that names it: the deleting
    # operations' entries come first, so they delete disposable rows.
    for i, operation in enumerate(seed.disposable):
        method, path = operation.split(" ", 1)
        parameters = re.findall(r"\{(\w+)\}", path)
        bindings = ", ".join(
            f'"path.{p}" = {{ dictionary = "'
            f'{f"disposable-{i}" if p == parameters[-1] else _dictionary_for(path, p)}", '
            f"probability = {probability} }}" for p in parameters)
        lines += ["", "[[operations]]", f"include-path = '{path}'",
                  f"include-method = '{method}'", f"parameters = {{ {bindings} }}"]
    for path in paths:
        parameters = re.findall(r"\{(\w+)\}", path)
        if not parameters:
            continue
        bindings = ", ".join(f'"path.{p}" = {{ dictionary = "{_dictionary_for(path, p)}", '
                             f"probability = {probability} }}" for p in parameters)
        lines += ["", "[[operations]]", f"include-path = '{path}'",
                  f"parameters = {{ {bindings} }}"]
        if path == HOST_ARTIFACT and seed.host_token:  # the seeded host's token, not a user's
            lines.append(f'headers = {{ Authorization = "Bearer {seed.host_token}" }}')
    for (method, path), checks in (checks_off or {}).items():
        lines += ["", "[[operations]]", f"include-path = '{path}'",
                  f"include-method = '{method}'"]
        lines += [f"checks.{check}.enabled = false" for check in checks]
    return "\n".join(lines) + "\n"
