"""Canaries never hold a reconciler slot between their steps: a real reconciler worker (Celery,
Redis, PostgreSQL, started as the Procfile does but through tests/deployments/standin_worker.py)
and real beat, with the local runtime.

Replicas of the deployments named ``standin-*`` are stand-ins (tests/deployments/
standin_replica.py: they answer the probes and /invocations on their unix socket without loading
a model), because twenty canaries mean forty model servers, minutes of CPU on this 2-core
machine. Every other deployment runs the real model server, as a local process.

1. With one worker slot, a canary waits between its steps while another deployment's reconciles
   run and make it healthy; the canary then resumes on its own (beat or a countdown task).
2. Twenty deployments in canary at once, each with an hour between steps, and two worker slots:
   a new deployment still becomes healthy while every canary waits at its first step (a canary
   that held a slot while it waited would block it for the hour). The time it took is printed,
   not asserted (no timing assertions: the machine is shared).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments import services
from deployments.models import Deployment, Replica, Revision
from tests.workers.test_celery_worker import _environment, _stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True),
              pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")]
SMALL = {"cpu": 0.1, "memory_mb": 128}
WRAPPER = """#!/bin/sh
# The local runtime runs "<this> -m serving --model-dir D --unix-socket S --workers N".
case "$MODELPORT_DEPLOYMENT" in
  standin-*) exec "{python}" "{root}/tests/deployments/standin_replica.py" "$@" ;;
esac
exec "{python}" "$@"
"""


class Reconciler:
    """The reconciler worker and beat as subprocesses sharing the test's database, data dir
    and Redis; replicas started by the local runtime, removed at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, []

    def start(self, concurrency: int) -> None:
        worker = ["-m", "tests.deployments.standin_worker", "--loglevel", "INFO",
                  "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
                  "--hostname", "reconciler@%h", "-Q", "deployments"]
        beat = ["-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]
        for name, argv in (("reconciler", worker), ("beat", beat)):
            log = (self.logs / f"{name}.log").open("a")
            self.procs.append(subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def wait_for(self, what: str, check, timeout: float = 180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.05)
        states = list(Deployment.objects.values_list("name", "revision", "status",
                                                     "status_message"))
        pytest.fail(f"timed out waiting for {what}\n{states}\n{self.output()}")


@pytest.fixture
def reconciler(tmp_path, redis_url, settings, no_enqueue, team):
    import redis as redis_lib

    from quotas.models import TeamQuota
    from quotas.services import get_quota
    from workers.runtimes.local import LocalRuntime

    client = redis_lib.Redis.from_url(redis_url)
    client.delete("deployments", "celery")  # tasks left over from an interrupted run
    client.close()
    get_quota(team)
    TeamQuota.objects.filter(team=team).update(cpu=64, memory_mb=65536, deployments=40)
    settings.MODELPORT_RUNTIME = "local"
    wrapper = tmp_path / "replica-python"
    wrapper.write_text(WRAPPER.format(python=sys.executable, root=ROOT))
    wrapper.chmod(0o755)
    env = _environment(tmp_path, {"REDIS_URL": redis_url})
    env.update({
        "MODELPORT_DATA_DIR": str(settings.MODELPORT_DATA_DIR), "MODELPORT_RUNTIME": "local",
        "MODELPORT_TEST_REPLICA_PYTHON": str(wrapper), "MODELPORT_RECONCILE_SECONDS": "3",
        "MODELPORT_DRAIN_SECONDS": "0", "MODELPORT_READY_TIMEOUT_S": "60",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    logs = tmp_path / "logs"
    logs.mkdir()
    plane = Reconciler(env, logs)
    yield plane
    _stop(*plane.procs)
    runtime = LocalRuntime(Path(settings.MODELPORT_DATA_DIR) / "runtime")
    for replica in runtime.list_replicas():
        runtime.remove_replica(replica.id)


def send_reconcile(deployment_id: int) -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        app.send_task("deployments.tasks.reconcile", args=[deployment_id], connection=conn,
                      queue="deployments")


def deploy(engineer, team, name: str, strategy: dict | None = None) -> Deployment:
    d = services.create_deployment(actor=engineer, team=team, name=name, model="iris",
                                   version=1, replicas=1, resources=SMALL, strategy=strategy)
    send_reconcile(d.pk)
    return d


def healthy(name: str, revision: int = 1):
    return lambda: Deployment.objects.filter(name=name, revision=revision,
                                             status="healthy").exists()


def in_first_step(name: str):
    return lambda: Deployment.objects.filter(
        name=name, revision=2, status_message__startswith="Canary at 10%").exists()


def start_canary(engineer, name: str) -> None:
    d = services.update_deployment(actor=engineer, deployment=Deployment.objects.get(name=name),
                                   version=2)
    send_reconcile(d.pk)


def test_a_canary_waiting_between_steps_leaves_the_only_worker_slot_to_others(
        reconciler, engineer, team, v1, v2):
    reconciler.start(concurrency=1)
    deploy(engineer, team, "standin-canary",
           {"type": "canary", "steps": [10, 100], "interval_s": 20})
    reconciler.wait_for("the canary deployment healthy", healthy("standin-canary"))
    start_canary(engineer, "standin-canary")
    reconciler.wait_for("the canary's first step", in_first_step("standin-canary"))
    step = Revision.objects.get(deployment__name="standin-canary", number=2)

    deploy(engineer, team, "other")  # a real model server, on the same single slot
    reconciler.wait_for("the other deployment healthy", healthy("other"))
    other = Revision.objects.get(deployment__name="other", number=1)
    assert other.healthy_at < step.next_step_at  # healthy while the canary's step ran
    assert Deployment.objects.get(name="standin-canary").traffic == [
        {"revision": 2, "percent": 10}, {"revision": 1, "percent": 90}]

    # Nobody calls it: beat and the countdown task bring the passes that finish the canary.
    reconciler.wait_for("the canary finished", healthy("standin-canary", revision=2),
                        timeout=120)
    d = Deployment.objects.get(name="standin-canary")
    assert d.traffic == [{"revision": 2, "percent": 100}]
    assert d.events.filter(message__startswith="Canary at 10% looks fine").exists()
    assert list(Replica.objects.filter(deployment=d).values_list("revision", flat=True)) == [2]


def test_twenty_canaries_in_progress_do_not_delay_a_new_deployment(reconciler, engineer, team,
                                                                   v1, v2, capsys):
    reconciler.start(concurrency=2)  # as the Procfile's reconciler
    names = [f"standin-{n:02d}" for n in range(20)]
    for name in names:
        deploy(engineer, team, name, {"type": "canary", "steps": [10, 50, 100],
                                      "interval_s": 3600})
    reconciler.wait_for("twenty healthy deployments",
                        lambda: all(healthy(name)() for name in names), timeout=300)
    for name in names:
        start_canary(engineer, name)
    reconciler.wait_for("twenty canaries at their first step",
                        lambda: all(in_first_step(name)() for name in names), timeout=300)

    started = time.monotonic()
    fresh = deploy(engineer, team, "fresh")  # the real model server
    first_ready = reconciler.wait_for(
        "the new deployment's first ready replica",
        lambda: Replica.objects.filter(deployment=fresh, ready=True).exists()
        and time.monotonic() - started)
    healthy_after = reconciler.wait_for(
        "the new deployment healthy", lambda: healthy("fresh")() and time.monotonic() - started)
    events = {e.message.split(" ")[0] + " " + e.message.split(" ")[1]: e.created_at
              for e in fresh.events.all()}
    created, started = events["Revision 1"], events["Started replica"]
    with capsys.disabled():
        print(f"\n20 canaries in progress: a new deployment's first replica ready after "
              f"{first_ready:.2f} s, healthy after {healthy_after:.2f} s; its replica was "
              f"started {(started - created).total_seconds():.2f} s after it was created (the "
              f"rest is the model server starting) (load average {os.getloadavg()[0]:.2f})")
    assert all(in_first_step(name)() for name in names)  # they are still at their first step
