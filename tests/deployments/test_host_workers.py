"""Several plain Docker hosts with real host workers: two Celery worker processes, each started
the documented way (``MODELPORT_HOST_NAME=<host>``, ``-Q host.<host>``), against the test's
PostgreSQL database, Redis and the Docker Engine. The reconciler runs in this process and sends
the container work through Redis to the chosen host's queue.

Only one Docker Engine runs here, so BOTH "hosts" SHARE ONE ENGINE: they differ by host name,
queue, container names (``<replica>.<host>``) and the ``modelport.host`` label. Losing a host
is simulated by SIGKILLing its worker (its heartbeat stops; its containers keep running, as on a
partitioned machine); bringing it back is starting the worker again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from compute.models import ExecutionTarget, Host
from deployments import host_tasks as tasks
from deployments.models import Deployment, Replica
from deployments.reconcile import reconcile_deployment
from teams.models import AuditEvent
from tests.deployments.test_docker import deploy, gateway_client, invoke
from tests.fixtures import bearer_client
from tests.workers.test_celery_worker import _environment, _stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True)]


class HostWorkers:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}
        logs.mkdir(exist_ok=True)

    def start(self, host: str) -> None:
        # Each host its own model cache, as on separate machines.
        env = {**self.env, "MODELPORT_HOST_NAME": host,
               "MODELPORT_HOST_CACHE_DIR": str(self.cache(host))}
        log = (self.logs / f"{host}.log").open("a")
        # The command docs/beyond-one-host.md gives for each Docker host.
        self.procs[host] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
             "--concurrency", "2", "--without-gossip", "--without-mingle",
             "--hostname", f"host@{host}", "-Q", f"host.{host}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def cache(self, host: str) -> Path:
        return self.logs.parent / "host-cache" / host

    def kill(self, host: str) -> None:
        import signal

        proc = self.procs.pop(host)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        _stop(*self.procs.values())

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
def workers(tmp_path, redis_url, docker_client, docker_env, settings, live_server):
    """Host workers share the test's database, data dir and Redis; tasks this process sends to
    a host queue go through Redis (not eagerly). They fetch their models from the live
    platform over HTTP (its host tokens derive from the same secret key)."""
    import redis as redis_lib

    from config.celery import app

    suffix = uuid.uuid4().hex[:6]
    names = [f"w-a-{suffix}", f"w-b-{suffix}"]
    settings.MODELPORT_HOST_LOST_SECONDS = 4
    settings.MODELPORT_HOST_START_TIMEOUT_S = 240
    target = ExecutionTarget.objects.create(name="hosts", kind="docker",
                                            settings={"placement": "hosts"})
    env = _environment(tmp_path, {"REDIS_URL": redis_url})
    env.update({"MODELPORT_DATA_DIR": str(settings.MODELPORT_DATA_DIR),
                "MODELPORT_RUNTIME": "docker", "MODELPORT_DOCKER_NETWORK": "host",
                "MODELPORT_PORT_RANGE": "23000-23499", "MODELPORT_HOST_HEARTBEAT_SECONDS": "1",
                "MODELPORT_HOST_TARGET": target.name, "MODELPORT_STOP_TIMEOUT_S": "2",
                "MODELPORT_HOST_MODEL_SOURCE": "fetch", "MODELPORT_PLATFORM_URL": live_server.url,
                "DJANGO_SECRET_KEY": settings.SECRET_KEY})
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    control = HostWorkers(env, tmp_path / "logs")
    control.names = names
    try:
        yield control
    finally:
        app.conf.task_always_eager = eager
        control.stop()
        client = redis_lib.Redis.from_url(redis_url)
        client.delete(*[f"host.{n}" for n in names], "deployments")
        client.close()
        for name in names:
            for c in docker_client.containers.list(all=True,
                                                   filters={"label": f"modelport.host={name}"}):
                c.remove(force=True, v=True)


def wait_for(what: str, check, workers: HostWorkers, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}\n{workers.output()}")


def placed(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in Replica.objects.filter(deployment__name=name).select_related("host"):
        out.setdefault(row.host.name, []).append(row.runtime_id)
    return out


def test_host_workers_place_lose_reschedule_and_clean_up(workers, docker_client, engineer, v1):
    a, b = workers.names
    workers.start(a)
    workers.start(b)
    # Each worker registers its host by itself (its heartbeat step, docker info).
    wait_for("both hosts to register", lambda: Host.objects.filter(
        name__in=[a, b], state="alive", queue__startswith="host.").count() == 2, workers)

    name = f"hw-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=2, target="hosts")
    d = Deployment.objects.get(name=name)
    assert reconcile_deployment(d.pk) == "healthy", list(
        d.events.values_list("message", flat=True)[:5])
    spread = placed(name)
    assert sorted(spread) == [a, b] and all(len(ids) == 1 for ids in spread.values())
    [on_b] = spread[b]
    assert invoke(gateway_client(engineer), name).status_code == 200
    for host in (a, b):  # each host fetched the model into its own cache
        assert (workers.cache(host) / v1.artifact_sha256 / "MLmodel").is_file()

    # Host b's worker dies: no heartbeat for MODELPORT_HOST_LOST_SECONDS → lost.
    workers.kill(b)
    wait_for("host b to be marked lost",
             lambda: tasks.check_hosts() == [b] or Host.objects.get(name=b).state == "lost",
             workers, timeout=60)
    assert Replica.objects.get(runtime_id=on_b).status == "lost"
    assert AuditEvent.objects.filter(action="host.lost", object_repr=b).exists()
    assert reconcile_deployment(d.pk) == "healthy", list(
        d.events.values_list("message", flat=True)[:5])
    assert list(placed(name)) == [a] and len(placed(name)[a]) == 2
    assert AuditEvent.objects.filter(action="deployment.replica_rescheduled",
                                     object_repr=name).exists()
    assert invoke(gateway_client(engineer), name).status_code == 200
    assert docker_client.containers.get(on_b).status == "running"  # nobody could remove it

    # b's worker starts again: the host is alive again and its worker removes the stale
    # container of the replica that now runs on a.
    workers.start(b)
    wait_for("b's stale container to be removed", lambda: not docker_client.containers.list(
        all=True, filters={"name": on_b}), workers)
    host_b = Host.objects.get(name=b)
    assert host_b.state == "alive" and host_b.lost_at is None
    assert AuditEvent.objects.filter(action="host.recovered", object_repr=b).exists()
    assert list(placed(name)) == [a]
    assert invoke(gateway_client(engineer), name).status_code == 200
