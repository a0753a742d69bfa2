"""The platform's processes against the test hosts of ``tests/netlab.py``, without pytest: what
``tests/hosts_lab.py`` (the fixtures) and ``bench/hosts.py`` (the benchmark) both run.

Web (gunicorn) and the edge bind the lab address; reconciler, worker and beat run in the root
namespace; one host worker per host runs inside its namespace with its own data dir and
``DOCKER_HOST``, reaching PostgreSQL and Redis through the lab's relays. ``LabProcesses.wait``
raises ``TimeoutError`` with the logs' tails; the fixtures turn that into ``pytest.fail``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.netlab import LabHost
from tests.procs import stop_processes

ROOT = Path(__file__).resolve().parents[1]


def lab_environments(*, address: str, web: str, secret_key: str, base_image: str,
                     database_url: str, redis_url: str, data_dir: str, target: str,
                     extra: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(the platform processes' environment, the host workers' one): short heartbeats and
    timeouts so a lost host shows within seconds; the host workers reach the database and the
    broker at the lab address."""
    common = {k: v for k, v in os.environ.items()
              if not k.startswith(("MODELPORT_", "DJANGO_", "DOCKER_"))}
    common.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_ALLOWED_HOSTS": f"127.0.0.1,localhost,{address}",
        "MODELPORT_BASE_URL": web, "MODELPORT_RUNTIME": "docker",
        "MODELPORT_SERVING_BASE_IMAGE": base_image,
        "MODELPORT_HOST_HEARTBEAT_SECONDS": "1", "MODELPORT_HOST_LOST_SECONDS": "5",
        "MODELPORT_HOST_START_TIMEOUT_S": "300", "MODELPORT_STOP_TIMEOUT_S": "2",
        "MODELPORT_DRAIN_SECONDS": "1", "MODELPORT_READY_TIMEOUT_S": "180",
        "MODELPORT_RECONCILE_SECONDS": "2", "MLFLOW_PORT": "", **(extra or {})})
    redis, db = urlsplit(redis_url), urlsplit(database_url)
    env = {**common, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "MODELPORT_DATA_DIR": data_dir}
    host_env = {**common, "MODELPORT_HOST_TARGET": target,
                "MODELPORT_PORT_RANGE": "24000-24499",
                "DATABASE_URL": db._replace(netloc=f"{db.username}@{address}:{db.port}").geturl(),
                "REDIS_URL": redis._replace(netloc=f"{address}:{redis.port}").geturl()}
    return env, host_env


class LabProcesses:
    """The platform's processes for one test or bench run, and its host workers."""

    def __init__(self, hosts: dict[str, LabHost], env: dict[str, str], host_env: dict[str, str],
                 logs: Path) -> None:
        self.hosts, self.env, self.host_env, self.logs = hosts, env, host_env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.workers: dict[str, subprocess.Popen] = {}
        self.web = self.edge = ""

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([sys.executable, *argv], cwd=ROOT,
                                            env=env or self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start_platform(self, *, address: str, web_port: int, edge_port: int,
                       beat_dir: Path) -> None:
        """Web and edge on the lab address, reconciler, worker and beat; returns once the web
        and the edge answer ``/healthz``."""
        web = f"http://{address}:{web_port}"
        self.start("web", ["-m", "gunicorn", "config.wsgi", "--config",
                           "platform/gunicorn.conf.py", "--bind", f"{address}:{web_port}",
                           "--workers", "2", "--threads", "4"])
        self.start_edge(address, edge_port, web)
        self.start("reconciler", ["-m", "celery", "-A", "config", "worker", "--loglevel",
                                  "INFO", "--concurrency", "2", "--without-gossip",
                                  "--without-mingle", "--hostname", "lab-rec@%h",
                                  "-Q", "deployments"])
        self.start("worker", ["-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                              "--concurrency", "1", "--without-gossip", "--without-mingle",
                              "--hostname", "lab-worker@%h", "-Q", "celery"])
        self.start("beat", ["-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                            "--schedule", str(beat_dir / "schedule")])
        self.web = web
        self.wait_http(f"{web}/healthz")

    def start_edge(self, address: str, port: int, web: str,
                   env: dict[str, str] | None = None) -> None:
        self.start("edge", ["-m", "config.edge", "--host", address, "--port", str(port),
                            "--upstream", web], env=env)
        self.edge = f"http://{address}:{port}"
        self.wait_http(f"{self.edge}/healthz")

    def stop_process(self, name: str) -> None:
        process = self.procs.pop(name, None)
        if process is not None:
            stop_processes([process])

    def start_host_worker(self, host: str) -> None:
        """The documented host worker command, inside the host's namespace."""
        lab_host = self.hosts[host]
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

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}\n{self.tails()}")

    def wait_http(self, url: str, timeout: float = 60) -> None:
        def answers() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(url, timeout=2).status_code < 500
            return False
        self.wait(f"{url} to answer", answers, timeout=timeout)

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


def remove_managed_containers(clients: dict[str, Any]) -> None:
    """Every replica container the platform left on the lab's engines."""
    for client in clients.values():
        with contextlib.suppress(Exception):
            for container in client.containers.list(all=True,
                                                    filters={"label": "modelport.managed=1"}):
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)


class Traffic:
    """Steady requests from ``clients`` threads, each one request at a time (``send`` makes one
    with the thread's session and returns its status); every answer or error recorded with its
    send and answer time."""

    def __init__(self, send: Callable[[requests.Session], int], headers: dict[str, str],
                 clients: int = 4) -> None:
        self.send, self.headers = send, headers
        self.results: list[tuple[float, float, int | str]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                status: int | str = self.send(session)
            except requests.RequestException as exc:
                status = exc.__class__.__name__
            self.results.append((sent, time.monotonic(), status))
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def failed(self, since: float = 0) -> list[tuple[float, float, int | str]]:
        return [r for r in self.results if r[0] >= since - 60 and r[2] != 200]

    def in_flight_at(self, moment: float) -> int:
        return sum(1 for sent, done, _ in self.results if sent <= moment <= done)
