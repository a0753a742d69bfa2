"""Holding requests while a deployment scaled to zero wakes (``gateway.waking``), without Docker.

The edge runs as the Procfile runs it (``python -m config.edge`` in front of gunicorn, on the
test's PostgreSQL and Redis); the Django path in-process. What cannot run here is the replica
container: where a test says so, the test itself plays the reconciler by adding a ready
stand-in replica (an HTTP server on a unix socket) once the edge has woken the deployment. The
wake task the edge enqueues has no Celery worker here; tests/deployments/test_wake_docker.py
runs the whole path on real Docker.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection, transaction

from deployments import admission, autoscale, services
from deployments.models import Deployment, DeploymentStatus
from gateway import routes
from quotas.models import TeamQuota
from teams.models import AuditEvent
from tests.deployments.test_edge import (
    Front,
    _wait_up,
    bearer,
    eventually,
    score,
    start_web_and_edge,
)
from tests.deployments.test_gateway import add_replica, client_for, post
from tests.procs import database_url, stop_processes
from tests.test_make_run import _free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
AUTO = {"min_replicas": 1, "max_replicas": 2, "metric": "concurrency", "target": 1,
        "idle_to_zero_after_s": 60}
QUEUE, TIMEOUT_S = 3, 3


@pytest.fixture(scope="module")
def front(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    """gunicorn and the edge with a small wake queue and timeout."""
    tmp = tmp_path_factory.mktemp("edge-wake")
    logs = tmp / "logs"
    (tmp / "data" / "run").mkdir(parents=True)
    logs.mkdir()
    with django_db_blocker.unblock():
        db_url = database_url()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
                "MODELPORT_DATA_DIR": str(tmp / "data"), "DATABASE_URL": db_url,
                "REDIS_URL": redis_url, "MODELPORT_WAKE_QUEUE": str(QUEUE),
                "MODELPORT_WAKE_TIMEOUT_S": str(TIMEOUT_S), "MLFLOW_PORT": ""})
    socket = f"unix:{tmp / 'data' / 'run' / 'web.sock'}"
    port = _free_port()
    procs = start_web_and_edge(env, logs, socket, port)
    base = f"http://127.0.0.1:{port}"
    _wait_up(f"{base}/healthz", procs, logs)
    yield Front(base, procs, logs, tmp / "data")
    stop_processes(procs)


@pytest.fixture
def asleep(engineer, team, v1, no_enqueue, monkeypatch):
    """An autoscaled deployment scaled to zero, as the scaler leaves it: count 0, idle, its
    reservation given back. In this process the wake pass is recorded, not run (tests play the
    reconciler); the edge process enqueues it for a Celery worker that is not running here."""
    monkeypatch.setattr(autoscale, "task", lambda name: type(
        "T", (), {"delay": staticmethod(lambda pk: None)}))
    d = services.create_deployment(actor=engineer, team=team, name=f"wake-{os.urandom(3).hex()}",
                                   model="iris", version=1,
                                   resources={"cpu": 0.5, "memory_mb": 256}, autoscaling=AUTO)
    with transaction.atomic():
        admission.admit_spec(team=team, owner=d.owner, replicas=0, cpu=d.cpu,
                             memory_mb=d.memory_mb, gpus=d.gpus)
    Deployment.objects.filter(pk=d.pk).update(replicas=0, status=DeploymentStatus.IDLE)
    d.refresh_from_db()
    return d


def woken(d) -> int:
    return AuditEvent.objects.filter(action="deployment.woken", object_id=str(d.pk)).count()


def replicas(d) -> int:
    return Deployment.objects.get(pk=d.pk).replicas


def test_held_requests_are_answered_once_a_replica_is_ready(front, asleep, engineer, upstreams):
    """Concurrent first requests (invocations and a v2 inference) wait, one wake raises the
    count once, and all are answered by the replica that became ready."""
    headers = bearer(engineer)
    v2 = f"{front.base}/serve/{asleep.name}/v2/models/iris/infer"
    with ThreadPoolExecutor(QUEUE) as pool:
        calls = [pool.submit(score, front, asleep.name, headers) for _ in range(QUEUE - 1)]
        calls.append(pool.submit(requests.post, v2, json={"inputs": []}, timeout=10,
                                 headers=headers))
        assert eventually(lambda: replicas(asleep) == 1), front.output()
        assert not any(c.done() for c in calls)  # held, not refused
        add_replica(asleep, upstreams("woken"))  # what the reconciler does (no Docker here)
        answers = [c.result() for c in calls]
    assert [a.status_code for a in answers] == [200] * QUEUE, [a.text for a in answers]
    assert all(a.json()["predictions"] == ["woken"] for a in answers)
    assert woken(asleep) == 1 and replicas(asleep) == 1
    again = score(front, asleep.name, headers)  # awake now: straight through
    assert again.status_code == 200


def test_over_the_queue_bound_or_past_the_timeout_is_a_503_with_retry_after(front, asleep,
                                                                           engineer):
    """Nothing becomes ready: the requests over the bound are refused at once, the held ones
    when the timeout passes — each with Retry-After and a code saying which."""
    headers = bearer(engineer)
    with ThreadPoolExecutor(QUEUE + 2) as pool:
        first = [pool.submit(score, front, asleep.name, headers) for _ in range(QUEUE)]
        assert eventually(lambda: replicas(asleep) == 1), front.output()
        time.sleep(0.3)  # the held requests reached the edge before the extra ones
        extra = [pool.submit(score, front, asleep.name, headers) for _ in range(2)]
        over = [c.result() for c in extra]
        held = [c.result() for c in first]
    assert [r.json()["code"] for r in over] == ["waking_queue_full"] * 2
    assert [r.json()["code"] for r in held] == ["wake_timeout"] * QUEUE
    for r in over + held:
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert "MODELPORT_WAKE_TIMEOUT_S" in held[0].json()["detail"]
    assert woken(asleep) == 1


def test_strangers_and_bad_tokens_never_wake_it(front, asleep, stranger):
    assert score(front, asleep.name, bearer(stranger)).status_code == 404
    bad = score(front, asleep.name, {"Authorization": "Bearer mp_nope"})
    assert bad.status_code == 401
    assert score(front, asleep.name).status_code == 401
    time.sleep(0.3)
    assert replicas(asleep) == 0 and woken(asleep) == 0


def test_metadata_and_readiness_never_wake_it(front, asleep, engineer):
    headers = bearer(engineer)
    for path in ("/v2/health/ready", "/v2/models/iris"):
        r = requests.get(f"{front.base}/serve/{asleep.name}{path}", headers=headers, timeout=5)
        assert r.status_code == 503, (path, r.text)
    assert replicas(asleep) == 0 and woken(asleep) == 0


def test_no_room_in_the_quota_refuses_the_wake(front, asleep, team, engineer):
    TeamQuota.objects.filter(team=team).update(cpu=0.25)  # one replica needs 0.5
    r = score(front, asleep.name, bearer(engineer))
    assert r.status_code == 503 and r.json()["code"] == "wake_refused"
    assert int(r.headers["Retry-After"]) > 0 and "quota" in r.json()["detail"].lower()
    assert replicas(asleep) == 0
    assert "Cannot wake" in Deployment.objects.get(pk=asleep.pk).scale_state["capped"]


def test_the_django_path_holds_alike(asleep, engineer, upstreams, settings):
    """Installs without the edge: the request's thread waits for the wake the same way."""
    settings.MODELPORT_WAKE_TIMEOUT_S = 10
    routes.invalidate()
    url = upstreams("django")

    def play_reconciler() -> None:  # what the reconciler does (no Docker here)
        try:
            deadline = time.monotonic() + 10
            while replicas(asleep) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            add_replica(asleep, url)
        finally:
            connection.close()

    helper = threading.Thread(target=play_reconciler)
    helper.start()
    response = post(client_for(engineer), name=asleep.name)
    helper.join()
    assert response.status_code == 200, response.content
    assert response.json()["predictions"] == ["django"] and woken(asleep) == 1


def test_the_django_path_times_out_with_retry_after(asleep, engineer, settings):
    settings.MODELPORT_WAKE_TIMEOUT_S = 1
    routes.invalidate()
    response = post(client_for(engineer), name=asleep.name)
    assert response.status_code == 503 and response.json()["code"] == "wake_timeout"
    assert int(response["Retry-After"]) > 0 and woken(asleep) == 1
