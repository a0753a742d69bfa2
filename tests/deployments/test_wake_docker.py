"""Scale to zero and the wake, on the real platform: real Docker replicas (no network, reached
over their socket files), the edge (``python -m config.edge``), both Celery workers and beat as
subprocesses on the test's PostgreSQL and Redis, the iris model. Nothing is mocked.

An autoscaled deployment idle past its period goes to zero replicas (containers gone, the
team's quota usage back); the next request — and 20 concurrent first requests — are held by
the edge while one replica starts, then all answered with the right prediction; a stranger's
request or a bad token never wakes it. (The queue bound, the timeout and a wake the quota
refuses are tested on the edge without Docker: test_edge_wake.py.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from deployments import services
from deployments.models import Deployment, DeploymentStatus
from quotas.models import Reservation
from teams.models import AuditEvent
from tests.deployments.conftest import COLUMNS, ROWS, remove_containers
from tests.deployments.test_edge import bearer
from tests.procs import database_url, stop_processes
from tests.test_make_run import _free_port

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 10  # the shortest idle_to_zero_after_s the spec allows
CONCURRENT = 20


class Platform:
    def __init__(self, base: str, logs: dict[str, Path], procs: list[subprocess.Popen],
                 docker_client) -> None:
        self.base, self.logs, self.procs, self.docker = base, logs, procs, docker_client

    def tails(self) -> str:
        dead = [f"{name} exited with {p.returncode}"
                for name, p in zip(self.logs, self.procs, strict=True) if p.poll() is not None]
        return "\n".join(dead + [f"--- {name} ---\n{path.read_text()[-3000:]}"
                                 for name, path in self.logs.items()])

    def containers(self, name: str) -> list:
        return self.docker.containers.list(
            all=True, filters={"label": f"modelport.deployment={name}"})


@pytest.fixture
def platform(live_server, redis_url, docker_client, platform_serving_image, settings,
             tmp_path) -> Iterator[Platform]:
    """The Procfile's edge, worker, reconciler and beat on the test's database, Redis and data
    dir (the in-process Celery app stops running tasks eagerly for the test)."""
    from config.celery import app
    from gateway import routes

    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DOCKER_NETWORK = "none"
    routes.invalidate()
    eager = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False
    with app.connection_for_write(redis_url) as conn:  # stale messages of an earlier run
        for queue in ("celery", "deployments"):
            with contextlib.suppress(Exception):
                conn.default_channel.queue_purge(queue)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "DJANGO_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(), "REDIS_URL": redis_url,
        "MODELPORT_DATA_DIR": str(settings.MODELPORT_DATA_DIR),
        "MODELPORT_BASE_URL": live_server.url, "MODELPORT_RUNTIME": "docker",
        "MODELPORT_DOCKER_NETWORK": "none",
        "MODELPORT_SERVING_BASE_IMAGE": settings.MODELPORT_SERVING_BASE_IMAGE,
        "MODELPORT_DRAIN_SECONDS": "1", "MODELPORT_READY_TIMEOUT_S": "180",
        "MODELPORT_AUTOSCALE_SECONDS": "1", "MODELPORT_WAKE_TIMEOUT_S": "120",
        "MLFLOW_PORT": ""})
    beat_dir = tmp_path / "beat"
    beat_dir.mkdir()
    argv = {
        "edge": ["-m", "config.edge", "--port", str(port), "--upstream", live_server.url],
        "worker": ["-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                   "--concurrency", "1", "--without-gossip", "--without-mingle",
                   "--hostname", "wake-worker@%h", "-Q", "celery"],
        "reconciler": ["-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                       "--concurrency", "2", "--without-gossip", "--without-mingle",
                       "--hostname", "wake-reconciler@%h", "-Q", "deployments"],
        "beat": ["-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                 "--schedule", str(beat_dir / "schedule")],
    }
    logs = {name: tmp_path / f"{name}.log" for name in argv}
    procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                              stdout=logs[name].open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True) for name, args in argv.items()]
    platform = Platform(f"http://127.0.0.1:{port}", logs, procs, docker_client)
    names: list[str] = []
    platform.names = names  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{platform.base}/healthz", timeout=2).ok:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the edge did not start:\n" + platform.tails())
        yield platform
    finally:
        stop_processes(procs)
        app.conf.task_always_eager, app.conf.task_eager_propagates = eager
        remove_containers(docker_client, names)
        routes.invalidate()


def wait(check, timeout: float, what: str, platform: Platform):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"{what} did not happen within {timeout} s:\n{platform.tails()}")


def predict(platform: Platform, name: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{platform.base}/serve/{name}/invocations", timeout=150,
                         json={"dataframe_split": {"columns": COLUMNS, "data": ROWS}},
                         headers=headers)


def test_idle_to_zero_then_concurrent_first_requests_wake_one_replica(
        platform, engineer, team, stranger, v1):
    d = services.create_deployment(
        actor=engineer, team=team, name=f"wake-{os.urandom(3).hex()}", model="iris", version=1,
        resources={"cpu": 0.5, "memory_mb": 512},
        autoscaling={"min_replicas": 1, "max_replicas": 2, "metric": "concurrency",
                     "target": 8, "scale_down_delay_s": 30, "idle_to_zero_after_s": IDLE_S})
    platform.names.append(d.name)
    headers = bearer(engineer)
    wait(lambda: Deployment.objects.get(pk=d.pk).status == DeploymentStatus.HEALTHY, 240,
         "the first replica", platform)
    first = predict(platform, d.name, headers)
    assert first.status_code == 200, first.text
    expected = first.json()["predictions"]
    assert len(expected) == len(ROWS)
    assert Reservation.objects.get(owner=d.owner).cpu == 0.5

    # idle past its period: zero replicas, no container, the quota given back
    wait(lambda: Deployment.objects.get(pk=d.pk).status == DeploymentStatus.IDLE, IDLE_S + 60,
         "scaling to zero", platform)
    wait(lambda: not platform.containers(d.name), 30, "the replica's removal", platform)
    assert Deployment.objects.get(pk=d.pk).replicas == 0
    assert Reservation.objects.get(owner=d.owner).cpu == 0

    # a stranger or a bad token never wakes it
    assert predict(platform, d.name, bearer(stranger)).status_code == 404
    assert predict(platform, d.name, {"Authorization": "Bearer mp_nope"}).status_code == 401
    time.sleep(1.5)  # beat ran at least once meanwhile: still asleep
    assert Deployment.objects.get(pk=d.pk).replicas == 0 and not platform.containers(d.name)

    # 20 concurrent first requests: held while one replica starts, all answered right
    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda _: predict(platform, d.name, headers),
                                range(CONCURRENT)))
    assert [a.status_code for a in answers] == [200] * CONCURRENT, \
        [a.text for a in answers if a.status_code != 200][:3]
    assert all(a.json()["predictions"] == expected for a in answers)
    assert AuditEvent.objects.filter(action="deployment.woken",
                                     object_id=str(d.pk)).count() == 1
    assert len(platform.containers(d.name)) == 1
    woke = Deployment.objects.get(pk=d.pk)
    assert woke.replicas == 1 and Reservation.objects.get(owner=d.owner).cpu == 0.5
    assert woke.events.filter(message__startswith="Waking from zero").count() == 1
