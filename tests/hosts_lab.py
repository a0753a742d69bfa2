"""Fixtures for tests on real test hosts (``tests/netlab.py``): the lab with its registry and
hosts (once per session), and the platform — web, edge, reconciler, worker, beat in the root
namespace on the lab address; one host worker per host inside its namespace, on its own Docker
Engine and its own data dir — per test.

A host reaches the platform only over the bridge: the web and the edge bind the lab address,
PostgreSQL and Redis are relayed there, the registry listens there. Host workers get their own
``MODELPORT_DATA_DIR`` (never the platform's disk) and ``DOCKER_HOST`` (their engine).
``tests/conftest.py`` loads this module as a plugin: tests ask for ``lab`` / ``lab_platform``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import missing_service
from tests.netlab import LabHost, LabUnavailable, NetLab
from tests.procs import database_url, stop_processes
from tests.test_make_run import _free_port

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ("lab-a", "lab-b", "lab-c")


class Lab:
    """The session's test network: ``net`` (NetLab), the registry address, the hosts and their
    Docker clients."""

    def __init__(self, net: NetLab, registry: str, hosts: dict[str, LabHost],
                 clients: dict[str, Any]) -> None:
        self.net, self.registry, self.hosts, self.clients = net, registry, hosts, clients

    @property
    def address(self) -> str:
        return self.net.platform_address


@pytest.fixture(scope="session")
def lab(redis_url: str) -> Iterator[Lab]:
    """Three test hosts, each a namespace with its own dockerd; a TLS registry, PostgreSQL and
    Redis on the platform's lab address. Skips (fails under MODELPORT_REQUIRE_SERVICES=1) where
    namespaces cannot be made."""
    from django.conf import settings

    try:
        net = NetLab()
    except LabUnavailable as exc:
        missing_service(f"needs network namespaces for test hosts: {exc}")
    try:
        db = settings.DATABASES["default"]
        if db["ENGINE"].endswith("postgresql"):
            net.relay(int(db.get("PORT") or 5432), db.get("HOST") or "127.0.0.1")
        redis = urlsplit(redis_url)
        net.relay(redis.port or 6379, redis.hostname or "127.0.0.1")
        registry = net.start_registry(_free_port())
        hosts, clients = {}, {}
        for name in HOSTS:
            host = net.add_host(name)
            hosts[name], clients[name] = host, host.start_docker()
    except LabUnavailable as exc:
        net.close()
        missing_service(f"cannot build the test hosts: {exc}")
    except BaseException:
        net.close()
        raise
    try:
        yield Lab(net, registry, hosts, clients)
    finally:
        _untag_registry_images(registry)
        net.close()


def _untag_registry_images(registry: str) -> None:
    """The platform's worker pushed from this machine's engine: its tags of the lab registry
    go with the lab (the image layers stay: other tags share them)."""
    import docker

    client = docker.from_env()
    try:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{registry}/"):
                    with contextlib.suppress(Exception):
                        client.images.remove(tag, noprune=True)
    finally:
        client.close()


class LabPlatform:
    """The platform's processes for one test, and its host workers."""

    def __init__(self, lab: Lab, env: dict[str, str], host_env: dict[str, str],
                 logs: Path, target: Any) -> None:
        self.lab, self.env, self.host_env, self.logs, self.target = lab, env, host_env, logs, target
        self.procs: dict[str, subprocess.Popen] = {}
        self.workers: dict[str, subprocess.Popen] = {}
        self.web = self.edge = ""

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([sys.executable, *argv], cwd=ROOT,
                                            env=env or self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start_host_worker(self, host: str) -> None:
        """The documented host worker command, inside the host's namespace."""
        lab_host = self.lab.hosts[host]
        data = lab_host.dir / "modelport-data"
        data.mkdir(exist_ok=True)
        env = {**self.host_env, "MODELPORT_HOST_NAME": host,
               "MODELPORT_HOST_ADDRESS": lab_host.address, "DOCKER_HOST": lab_host.docker_host,
               "MODELPORT_DATA_DIR": str(data)}
        self.workers[host] = lab_host.popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
             "--concurrency", "2", "--without-gossip", "--without-mingle",
             "--hostname", f"host@{host}", "-Q", f"host.{host}"],
            env=env, cwd=ROOT, log=self.logs / f"host-{host}.log")

    def stop_host_worker(self, host: str) -> None:
        process = self.workers.pop(host, None)
        if process is not None:
            stop_processes([process])

    def wait(self, what: str, check: Any, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{self.tails()}")

    def tails(self) -> str:
        from deployments.models import DeploymentEvent, Replica

        out = ["--- events", *(f"{e.deployment.name}: {e.message}" for e in
                               DeploymentEvent.objects.select_related("deployment")
                               .order_by("-pk")[:15]),
               "--- replicas", *(f"{r.runtime_id} {r.host_status} {r.url} {r.message[:300]}"
                                 for r in Replica.objects.all())]
        for path in sorted(self.logs.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2500:]}")
        return "\n".join(out)

    def stop(self) -> None:
        stop_processes([*self.workers.values(), *self.procs.values()])
        self.workers.clear()
        self.procs.clear()


def _wait_http(url: str, platform: LabPlatform, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer\n{platform.tails()}")


@pytest.fixture
def lab_platform(lab: Lab, redis_url: str, settings: Any, tmp_path: Path,
                 platform_serving_image: str) -> Iterator[LabPlatform]:
    """Web and edge on the lab address, reconciler, worker and beat (root namespace); host
    workers started by the test (``start_host_worker``). A docker target ``lab-hosts`` with
    ``"placement": "hosts"`` and the lab's registry."""
    from compute.models import ExecutionTarget
    from config.celery import app
    from gateway import routes

    routes.invalidate()
    eager = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False
    with app.connection_for_write(redis_url) as conn:  # stale messages of an earlier test
        for queue in ("celery", "deployments", *(f"host.{h}" for h in HOSTS)):
            with contextlib.suppress(Exception):
                conn.default_channel.queue_purge(queue)
    target = ExecutionTarget.objects.create(
        name="lab-hosts", kind="docker",
        settings={"placement": "hosts", "registry": f"{lab.registry}/mp"})
    web_port, edge_port = _free_port(), _free_port()
    address = lab.address
    web = f"http://{address}:{web_port}"
    common = {k: v for k, v in os.environ.items()
              if not k.startswith(("MODELPORT_", "DJANGO_", "DOCKER_"))}
    common.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": f"127.0.0.1,localhost,{address}",
        "MODELPORT_BASE_URL": web, "MODELPORT_RUNTIME": "docker",
        "MODELPORT_SERVING_BASE_IMAGE": settings.MODELPORT_SERVING_BASE_IMAGE,
        "MODELPORT_HOST_HEARTBEAT_SECONDS": "1", "MODELPORT_HOST_LOST_SECONDS": "5",
        "MODELPORT_HOST_START_TIMEOUT_S": "300", "MODELPORT_STOP_TIMEOUT_S": "2",
        "MODELPORT_DRAIN_SECONDS": "1", "MODELPORT_READY_TIMEOUT_S": "180",
        "MODELPORT_RECONCILE_SECONDS": "2", "MLFLOW_PORT": ""})
    redis = urlsplit(redis_url)
    env = {**common, "DATABASE_URL": database_url(), "REDIS_URL": redis_url,
           "MODELPORT_DATA_DIR": str(settings.MODELPORT_DATA_DIR)}
    db_url = urlsplit(database_url())
    host_env = {**common, "MODELPORT_HOST_TARGET": target.name,
                "MODELPORT_PORT_RANGE": "24000-24499",
                "DATABASE_URL": db_url._replace(
                    netloc=f"{db_url.username}@{address}:{db_url.port}").geturl(),
                "REDIS_URL": redis._replace(netloc=f"{address}:{redis.port}").geturl()}
    logs = tmp_path / "logs"
    logs.mkdir()
    platform = LabPlatform(lab, env, host_env, logs, target)
    beat = tmp_path / "beat"
    beat.mkdir()
    try:
        platform.start("web", ["-m", "gunicorn", "config.wsgi", "--config",
                               "platform/gunicorn.conf.py", "--bind", f"{address}:{web_port}",
                               "--workers", "2", "--threads", "4"])
        platform.start("edge", ["-m", "config.edge", "--host", address, "--port",
                                str(edge_port), "--upstream", web])
        platform.start("reconciler", ["-m", "celery", "-A", "config", "worker", "--loglevel",
                                      "INFO", "--concurrency", "2", "--without-gossip",
                                      "--without-mingle", "--hostname", "lab-rec@%h",
                                      "-Q", "deployments"])
        platform.start("worker", ["-m", "celery", "-A", "config", "worker", "--loglevel",
                                  "INFO", "--concurrency", "1", "--without-gossip",
                                  "--without-mingle", "--hostname", "lab-worker@%h",
                                  "-Q", "celery"])
        platform.start("beat", ["-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                                "--schedule", str(beat / "schedule")])
        platform.web, platform.edge = web, f"http://{address}:{edge_port}"
        _wait_http(f"{web}/healthz", platform)
        _wait_http(f"{platform.edge}/healthz", platform)
        yield platform
    finally:
        platform.stop()
        app.conf.task_always_eager, app.conf.task_eager_propagates = eager
        for client in lab.clients.values():
            for container in client.containers.list(all=True,
                                                    filters={"label": "modelport.managed=1"}):
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)
        routes.invalidate()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
