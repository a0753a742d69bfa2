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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import missing_service
from tests.lab_processes import LabProcesses, lab_environments, remove_managed_containers
from tests.netlab import LabHost, LabUnavailable, NetLab
from tests.procs import database_url
from tests.test_make_run import _free_port, _free_ports

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


class LabPlatform(LabProcesses):
    """The platform's processes for one test (``tests/lab_processes.py``), its lab and target;
    a wait that times out fails the test with the logs' tails."""

    def __init__(self, lab: Lab, env: dict[str, str], host_env: dict[str, str],
                 logs: Path, target: Any) -> None:
        super().__init__(lab.hosts, env, host_env, logs)
        self.lab, self.target = lab, target

    def wait(self, what: str, check: Any, timeout: float = 120) -> Any:
        try:
            return super().wait(what, check, timeout=timeout)
        except TimeoutError as exc:
            pytest.fail(str(exc))


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
    web_port, edge_port = _free_ports(2)
    address = lab.address
    env, host_env = lab_environments(
        address=address, web=f"http://{address}:{web_port}", secret_key=settings.SECRET_KEY,
        base_image=settings.MODELPORT_SERVING_BASE_IMAGE, database_url=database_url(),
        redis_url=redis_url, data_dir=str(settings.MODELPORT_DATA_DIR), target=target.name)
    logs = tmp_path / "logs"
    logs.mkdir()
    platform = LabPlatform(lab, env, host_env, logs, target)
    beat = tmp_path / "beat"
    beat.mkdir()
    try:
        platform.start_platform(address=address, web_port=web_port, edge_port=edge_port,
                                beat_dir=beat)
        yield platform
    finally:
        platform.stop()
        app.conf.task_always_eager, app.conf.task_eager_propagates = eager
        remove_managed_containers(lab.clients)
        routes.invalidate()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
