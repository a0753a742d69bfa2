"""Reliability of the control plane with real processes: the Procfile's web (gunicorn),
reconciler worker and beat run as subprocesses against the test's PostgreSQL database, Redis and
the Docker Engine.

1. SIGKILL the reconciler worker in the middle of a rollout, start it again (with beat): the
   deployment converges to the desired revision with exactly one container per replica.
2. Restart web, worker and beat while a deployment serves: the replicas keep answering
   directly throughout, the gateway answers again once web is back, and nothing was redeployed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from deployments.models import Deployment, Replica, Revision
from serving import sockets
from tests.deployments.conftest import COLUMNS, ROWS, key_of, remove_containers, unique_name
from tests.deployments.test_docker import containers, deploy
from tests.factories import make_token
from tests.fixtures import bearer_client
from tests.test_make_run import _free_port
from tests.workers.test_celery_worker import _environment, _stop

ROOT = Path(__file__).resolve().parents[2]
URL = "/api/v1/deployments/"
BODY = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True),
              # The test settings run tasks eagerly; send_task goes to the real worker anyway.
              pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")]


def procfile_command(name: str, env: dict[str, str]) -> list[str]:
    """The Procfile's command line for one process, with ${VARS} filled from ``env``."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], command.strip())
            return shlex.split(command)
    raise KeyError(name)


class ControlPlane:
    """web, reconciler and beat exactly as the Procfile starts them; each can be stopped,
    killed and started again."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}
        logs.mkdir(exist_ok=True)

    def start(self, name: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("a")
        proc = subprocess.Popen(procfile_command(name, self.env), cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, *names: str) -> None:
        _stop(*(self.procs[n] for n in names or list(self.procs)))

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
def plane(tmp_path, redis_url, docker_client, settings, no_enqueue):
    """Subprocesses share the test's database, data dir (artifacts, unpacked models) and Redis;
    reconciles are sent to the reconciler's queue, never run in the test process."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    client.delete("deployments", "celery")  # tasks left over from an earlier interrupted run
    client.close()
    settings.MODELPORT_RUNTIME = "docker"
    env = _environment(tmp_path, {"REDIS_URL": redis_url})
    env.update({
        "MODELPORT_DATA_DIR": str(settings.MODELPORT_DATA_DIR), "MODELPORT_RUNTIME": "docker",
        "MODELPORT_DOCKER_NETWORK": "none", "MODELPORT_PORT_RANGE": "22500-22999",
        "MODELPORT_DRAIN_SECONDS": "1", "MODELPORT_READY_TIMEOUT_S": "180",
        "MODELPORT_RECONCILE_SECONDS": "2", "MODELPORT_WEB_PORT": str(_free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    (Path(settings.MODELPORT_DATA_DIR) / "run").mkdir(parents=True, exist_ok=True)  # web.sock
    control = ControlPlane(env, tmp_path / "logs")
    names: list[str] = []
    control.names = names
    yield control
    control.stop()
    remove_containers(docker_client, names)


def send_reconcile(deployment_id: int) -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        app.send_task("deployments.tasks.reconcile", args=[deployment_id], connection=conn,
                      queue="deployments")


def wait_for(what: str, check, plane: ControlPlane, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    d = Deployment.objects.filter(name__in=plane.names).first()
    events = list(d.events.values_list("message", flat=True)[:10]) if d else []
    pytest.fail(f"timed out waiting for {what}; deployment: "
                f"{d and (d.revision, d.status, d.status_message)}\nevents: {events}\n"
                f"{plane.output()}")


def healthy_at(name: str, revision: int):
    def check() -> bool:
        d = Deployment.objects.get(name=name)
        return d.status == "healthy" and d.revision == revision \
            and d.traffic == [{"revision": revision, "percent": 100}]
    return check


def test_worker_sigkilled_mid_rollout_converges_without_duplicate_containers(
        plane, docker_client, engineer, v1, v2):
    name = unique_name("kill")
    plane.names.append(name)
    plane.start("reconciler")
    api = bearer_client(engineer)
    deploy(api, name, replicas=2, strategy={"type": "blue_green"})
    d = Deployment.objects.get(name=name)
    send_reconcile(d.pk)
    wait_for("revision 1 healthy", healthy_at(name, 1), plane)
    first = {c.id for c in containers(docker_client, name)}

    assert api.patch(f"{URL}{name}/", {"version": 2}, format="json").status_code == 202
    send_reconcile(d.pk)
    wait_for("the first container of revision 2",
             lambda: any(c.labels["modelport.revision"] == "2"
                         for c in containers(docker_client, name)), plane, timeout=120)
    plane.kill("reconciler")  # the whole process group: main process and pool child
    d.refresh_from_db()
    assert d.status != "healthy" or d.traffic != [{"revision": 2, "percent": 100}], \
        "the rollout finished before the kill; nothing was tested"

    plane.start("reconciler")
    plane.start("beat")  # the next tick re-runs the reconcile the killed worker held
    wait_for("revision 2 healthy after the restart", healthy_at(name, 2), plane)

    running = containers(docker_client, name)
    labels = sorted((c.labels["modelport.revision"], c.labels["modelport.replica"])
                    for c in running)
    assert labels == [("2", "0"), ("2", "1")], labels  # no duplicates, nothing of revision 1
    for c in running:
        c.reload()
        assert c.status == "running", (c.name, c.status)
    assert not ({c.id for c in running} & first)
    rows = set(Replica.objects.filter(deployment=d).values_list("runtime_id", "revision"))
    assert {rid for rid, _ in rows} == {c.name for c in running}
    assert {rev for _, rev in rows} == {2}
    assert Revision.objects.get(deployment=d, number=2).state == "active"
    assert Revision.objects.get(deployment=d, number=1).state == "superseded"


def test_restarting_web_worker_and_beat_keeps_replicas_serving(plane, docker_client, engineer,
                                                               v1):
    name = unique_name("restart")
    plane.names.append(name)
    for proc in ("edge", "web", "reconciler", "beat"):
        plane.start(proc)
    api = bearer_client(engineer)
    deploy(api, name, replicas=2)
    d = Deployment.objects.get(name=name)
    send_reconcile(d.pk)
    wait_for("healthy", healthy_at(name, 1), plane)
    web = f"http://127.0.0.1:{plane.env['MODELPORT_WEB_PORT']}"
    wait_for("web up", lambda: _up(web), plane, timeout=60)
    _, secret = make_token(engineer, name="restart-test")
    gateway_url = f"{web}/serve/{name}/invocations"
    auth = {"Authorization": f"Bearer {secret}"}
    assert requests.post(gateway_url, json=BODY, headers=auth, timeout=10).status_code == 200
    before_containers = sorted(c.id for c in containers(docker_client, name))
    before_rows = sorted(Replica.objects.filter(deployment=d).values_list("runtime_id", "url"))
    urls = [url for _, url in before_rows]

    direct: list[tuple[str, int]] = []
    stop = threading.Event()
    # Straight to the replicas' socket files, with their key, as only the platform can.
    headers = {"Content-Type": "application/json",
               "X-Modelport-Replica-Key": key_of(d, 1)}

    def call_replicas() -> None:
        while not stop.is_set():
            for url in urls:
                try:
                    status = sockets.request(f"{url}/invocations", "POST",
                                             json.dumps(BODY).encode(), headers, 10)[0]
                except OSError as exc:
                    status = f"{exc.__class__.__name__}"
                direct.append((url, status))
            time.sleep(0.05)

    caller = threading.Thread(target=call_replicas)
    caller.start()
    try:
        plane.stop("edge", "web", "reconciler", "beat")
        time.sleep(2)  # the control plane is down: replicas keep serving
        for proc in ("edge", "web", "reconciler", "beat"):
            plane.start(proc)
        wait_for("web back", lambda: _up(web), plane, timeout=90)
        gateway = [requests.post(gateway_url, json=BODY, headers=auth, timeout=10)
                   for _ in range(20)]
        time.sleep(6)  # a few beat ticks reconcile the healthy deployment: nothing changes
    finally:
        stop.set()
        caller.join(timeout=30)
    failures = [entry for entry in direct if entry[1] != 200]
    assert len(direct) > 20 and failures == [], (len(direct), failures[:5])
    assert [r.status_code for r in gateway] == [200] * 20, [r.text for r in gateway[:3]]
    assert all(r.json()["predictions"] == [0, 2] for r in gateway)

    d.refresh_from_db()
    assert d.status == "healthy" and d.revision == 1 and d.revisions.count() == 1
    assert sorted(c.id for c in containers(docker_client, name)) == before_containers
    assert sorted(Replica.objects.filter(deployment=d)
                  .values_list("runtime_id", "url")) == before_rows
    assert not d.events.filter(kind__in=["error", "warning"]).exists()
    assert api.get(f"{URL}{name}/").json()["status"] == "healthy"


def _up(web: str) -> bool:
    try:
        return requests.get(f"{web}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
