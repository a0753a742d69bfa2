"""The scaler on real Docker with the platform's real processes: gunicorn and the edge
(``python -m config.edge``) as ``make run`` starts them, the reconciler as a real Celery worker
subprocess, replicas as real hardened containers without a network (served on socket files,
shipping their prediction logs to the edge's ingest socket), and wrk on loopback through the
edge. Beat's task is driven from the test: it calls ``autoscale.autoscale_all()`` once a second
while it watches, as beat would every ``MODELPORT_AUTOSCALE_SECONDS``.

- a burst scales an iris deployment from 1 to its max, and back to the minimum after the
  scale-down delay with no failed request (a second, light wrk run spans the scale-down) and
  every answered request's prediction log shipped, the removed replicas' last ones included;
- the quota caps a scale-up with one event, and nothing is over-admitted.

No timing assertions: every wait polls with a generous limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from deployments import autoscale, services
from deployments.models import Deployment, Replica, ScaleSample
from monitoring.models import PredictionRecord
from quotas.models import TeamQuota
from quotas.services import get_quota, usage
from tests.deployments.conftest import COLUMNS, ROWS, make_version
from tests.factories import make_token
from tests.procs import database_url, stop_processes
from tests.test_make_run import _free_ports

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
WRK = "/usr/bin/wrk"
# Replica ports are not used (no network), but keep the range away from other Docker tests'.
PORT_RANGE = "23500-23599"
BODY = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS}})
WAIT_S = 180  # generous: a shared 2-core machine






class Stack:
    """The running platform: the edge's base URL and the processes' log tails."""

    def __init__(self, base: str, logs: Path, processes: list[subprocess.Popen]) -> None:
        self.base, self.logs, self.processes = base, logs, processes
        self.names: list[str] = []  # the test's deployments, whose containers go at the end

    def tails(self) -> str:
        dead = [f"process {p.pid} exited with {p.returncode}" for p in self.processes
                if p.poll() is not None]
        return "\n".join(dead + [f"--- {p.name} ---\n{p.read_text()[-3000:]}"
                                 for p in sorted(self.logs.glob("*.log"))])


@pytest.fixture
def stack(settings, redis_url, docker_client, platform_serving_image, tmp_path
          ) -> Iterator[Stack]:
    """gunicorn on a unix socket, the edge in front of it (and serving the replicas' ingest
    socket), and a Celery worker for the reconciler's and the general queue, all on the test's
    database, Redis and data dir. The in-process Celery app stops running tasks eagerly, so
    what the scaler enqueues reaches the worker."""
    from config.celery import app

    data = Path(settings.MODELPORT_DATA_DIR)
    (data / "run").mkdir(parents=True, exist_ok=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    port, mlflow_port = _free_ports(2)
    base = f"http://127.0.0.1:{port}"
    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DOCKER_NETWORK = "none"
    settings.MODELPORT_BASE_URL = base
    settings.MODELPORT_AUTOSCALE_WINDOW_S = 4
    eager = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False
    with app.connection_for_write(redis_url) as conn:  # stale messages of an earlier run
        for queue in ("celery", "deployments"):
            with contextlib.suppress(Exception):
                conn.default_channel.queue_purge(queue)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "DJANGO_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(), "REDIS_URL": redis_url,
        "MODELPORT_DATA_DIR": str(data), "MODELPORT_BASE_URL": base,
        "MODELPORT_RUNTIME": "docker", "MODELPORT_DOCKER_NETWORK": "none",
        "MODELPORT_PORT_RANGE": PORT_RANGE,
        "MODELPORT_SERVING_BASE_IMAGE": settings.MODELPORT_SERVING_BASE_IMAGE,
        "MODELPORT_DRAIN_SECONDS": "2", "MODELPORT_READY_TIMEOUT_S": "120",
        "MODELPORT_RECONCILE_SECONDS": "300", "MLFLOW_PORT": str(mlflow_port),
        "MODELPORT_GATEWAY_TIMEOUT_S": "10",
    })
    socket = f"unix:{data / 'run' / 'web.sock'}"

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                                stdout=(logs / f"{name}.log").open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    processes = [
        start("web", ["-m", "gunicorn", "config.wsgi", "--bind", socket, "--workers", "1",
                      "--threads", "8"]),
        start("edge", ["-m", "config.edge", "--port", str(port), "--upstream", socket]),
        start("worker", ["-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                         "--concurrency", "2", "--without-gossip", "--without-mingle",
                         "--hostname", f"autoscale-{uuid.uuid4().hex[:6]}@%h",
                         "-Q", "deployments,celery"]),
    ]
    result = Stack(base, logs, processes)
    try:
        _until("the edge answers", lambda: _healthy(base), result, timeout=60)
        yield result
    finally:
        stop_processes(processes)
        app.conf.task_always_eager, app.conf.task_eager_propagates = eager
        for name in result.names:  # only the containers this test's deployments created
            for c in docker_client.containers.list(
                    all=True, filters={"label": f"modelport.deployment={name}"}):
                with contextlib.suppress(Exception):
                    c.remove(force=True, v=True)


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _until(what: str, check: Callable[[], object], stack: Stack, *, timeout: float = WAIT_S,
           tick: Callable[[], None] | None = None) -> None:
    """Poll ``check`` (running ``tick`` first each round) until it holds; fail with the
    processes' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        if check():
            return
        if any(p.poll() is not None for p in stack.processes):
            break
        time.sleep(1.0)
    pytest.fail(f"{what}: not within {timeout:.0f}s\n{stack.tails()}")


def beat() -> None:
    """What beat runs every MODELPORT_AUTOSCALE_SECONDS."""
    autoscale.autoscale_all()


def running(client, name: str) -> list:
    return client.containers.list(filters={"label": f"modelport.deployment={name}",
                                           "status": "running"})


def deploy(stack: Stack, engineer, team, iris_model, iris_dir: Path, **auto) -> Deployment:
    make_version(iris_model, 1, iris_dir)
    name = f"auto-{uuid.uuid4().hex[:6]}"
    stack.names.append(name)
    d = services.create_deployment(
        actor=engineer, team=team, name=name, model="iris", version=1,
        resources={"cpu": 0.5, "memory_mb": 512},
        autoscaling={"min_replicas": 1, "max_replicas": 3, "metric": "concurrency",
                     "target": 2, "scale_down_delay_s": 10, **auto})
    _until("the deployment is healthy", lambda: _status(d) == "healthy", stack)
    return d


def _status(d: Deployment) -> str:
    d.refresh_from_db()
    return d.status


def wrk(stack: Stack, name: str, token: str, *, conns: int, seconds: int,
        tmp: Path) -> dict[str, Any]:
    """One bounded wrk run through the edge: requests, non-2xx answers, socket errors (and
    wrk's output, for a failure message)."""
    script = tmp / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                      f"wrk.body = [==[{BODY}]==]\n")
    out = subprocess.run([WRK, f"-t{min(2, conns)}", f"-c{conns}", f"-d{seconds}s",
                          "--timeout=10s", "-s", str(script),
                          f"{stack.base}/serve/{name}/invocations"],
                         capture_output=True, text=True, timeout=seconds + 60, check=False).stdout
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": int(total.group(1)) if total else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(g) for g in errs.groups()) if errs else 0,
            "output": out}


class Burst(threading.Thread):
    """wrk in the background, so the test keeps ticking the scaler meanwhile."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(daemon=True)
        self.args, self.kwargs = args, kwargs
        self.result: dict = {}

    def run(self) -> None:
        self.result = wrk(*self.args, **self.kwargs)


class Tracer(threading.Thread):
    """A light client sending requests with known request ids until told to stop: every id
    answered 200 must reach monitoring as a prediction record."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.answered: list[str] = []
        self.failed: list[tuple[str, int | str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            rid = f"trace-{uuid.uuid4().hex[:12]}"
            try:
                r = session.post(self.url, data=BODY, timeout=15,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {self.token}",
                                          "X-Request-ID": rid})
            except requests.RequestException as exc:
                self.failed.append((rid, str(exc)))
                continue
            (self.answered.append(rid) if r.status_code == 200
             else self.failed.append((rid, r.status_code)))
            time.sleep(0.05)


def test_a_burst_scales_to_the_max_and_back_after_the_delay_with_nothing_lost(
        stack, docker_client, engineer, team, iris_model, iris_dir, tmp_path):
    get_quota(team)
    TeamQuota.objects.filter(team=team).update(cpu=4, memory_mb=8192)
    d = deploy(stack, engineer, team, iris_model, iris_dir)
    _, token = make_token(engineer, name="burst")
    assert len(running(docker_client, d.name)) == 1

    # A tracer with known request ids runs from before the burst until after the scale-down.
    tracer = Tracer(f"{stack.base}/serve/{d.name}/invocations", token)
    tracer.start()
    # The burst: 12 connections for 12 s against a target of 2 in flight per replica.
    burst = Burst(stack, d.name, token, conns=12, seconds=12, tmp=tmp_path)
    burst.start()
    seen: set[str] = set()

    def at_max() -> bool:
        now = {c.labels["modelport.replica"] for c in running(docker_client, d.name)}
        seen.update(now)
        d.refresh_from_db()
        return d.replicas == 3 and len(now) == 3

    _until("scaled up to 3 replicas under the burst", at_max, stack, tick=beat, timeout=120)
    burst.join(timeout=90)
    assert burst.result.get("requests", 0) > 0, burst.result
    assert (burst.result["non2xx"], burst.result["socket_errors"]) == (0, 0), burst.result
    events = list(d.events.values_list("message", flat=True))
    assert any(m.startswith("Scaling up 1 → ") for m in events), events
    _until("every replica ready", lambda: _ready(d) == 3, stack, tick=beat)
    assert ScaleSample.objects.filter(deployment=d, desired=3).exists()
    assert usage(team).used.cpu == Decimal("1.5")

    # A light run spanning the scale-down: wrk in 5 s slices until the count is back at 1.
    light: list[dict] = []

    def back_to_one() -> bool:
        light.append(wrk(stack, d.name, token, conns=2, seconds=5, tmp=tmp_path))
        beat()
        d.refresh_from_db()
        return d.replicas == 1 and len(running(docker_client, d.name)) == 1

    _until("scaled back to 1 replica after the delay", back_to_one, stack, tick=beat)
    light.append(wrk(stack, d.name, token, conns=2, seconds=3, tmp=tmp_path))
    tracer.stop.set()
    tracer.join(timeout=30)

    assert sum(r["requests"] for r in light) > 0
    assert [(r["non2xx"], r["socket_errors"]) for r in light] == [(0, 0)] * len(light), \
        [r["output"] for r in light if r["non2xx"] or r["socket_errors"]]
    assert tracer.failed == [] and tracer.answered
    events = list(d.events.values_list("message", flat=True))
    assert any(m.startswith("Scaling down") and "→ 1" in m for m in events), events
    assert ScaleSample.objects.filter(deployment=d, desired=1).exists()
    assert usage(team).used.cpu == Decimal("0.5")
    left = {c.labels["modelport.replica"] for c in running(docker_client, d.name)}
    removed = seen - left
    assert len(removed) == 2, (seen, left)

    # Graceful removal: every traced request that was answered is in monitoring, those the
    # removed replicas answered last included (they ship their buffer on SIGTERM). A record
    # names its replica by index (MODELPORT_REPLICA), as the containers' label does.
    def shipped() -> bool:
        return PredictionRecord.objects.filter(
            deployment_id=d.pk, request_id__in=tracer.answered).count() >= len(tracer.answered)

    _until("every traced prediction shipped", shipped, stack, timeout=60)
    by_replica = set(PredictionRecord.objects.filter(
        deployment_id=d.pk, request_id__in=tracer.answered).values_list("replica", flat=True))
    assert by_replica >= removed, (by_replica, removed)


def _ready(d: Deployment) -> int:
    return Replica.objects.filter(deployment=d, ready=True).count()


def test_the_quota_caps_a_scale_up_with_one_event(
        stack, docker_client, engineer, team, iris_model, iris_dir, tmp_path):
    get_quota(team)
    TeamQuota.objects.filter(team=team).update(cpu=1, memory_mb=8192)  # room for 2 x 0.5 cores
    d = deploy(stack, engineer, team, iris_model, iris_dir)
    _, token = make_token(engineer, name="capped")
    burst = Burst(stack, d.name, token, conns=12, seconds=10, tmp=tmp_path)
    burst.start()

    def capped() -> bool:
        d.refresh_from_db()
        return d.replicas == 2 and "capped" in (d.scale_state or {}) \
            and len(running(docker_client, d.name)) == 2

    _until("the scale-up capped at 2 by the quota", capped, stack, tick=beat, timeout=120)
    while burst.is_alive():  # the scaler keeps looking while the load lasts
        beat()
        assert len(running(docker_client, d.name)) <= 2
        assert usage(team).used.cpu <= Decimal("1")
        time.sleep(1)
    d.refresh_from_db()
    # "Scale-up capped at 2 of the 3 replicas wanted …" when one look wanted 3 at once, or
    # "Cannot scale up to 3 replicas …" when the load rose to 2 first: either way one event,
    # with the quota's numbers ("needs 0.5 CPU; team ml-search has 0 of 1 free").
    caps = [m for m in d.events.values_list("message", flat=True)
            if m.startswith(("Scale-up capped", "Cannot scale up"))]
    assert len(caps) == 1, caps
    assert "3 replicas" in caps[0] and "team ml-search has" in caps[0], caps
    assert d.replicas == 2 and len(running(docker_client, d.name)) == 2
    assert usage(team).used.cpu == Decimal("1")
