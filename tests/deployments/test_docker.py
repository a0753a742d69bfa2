"""End to end on a real Docker Engine: deploy → healthy → predict through the gateway, a killed
replica is replaced, a PATCH rolls out with zero failed requests under traffic, rollback,
stop/start, delete removes every container."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.test import Client

from deployments.models import Deployment, Replica, Revision
from deployments.reconcile import reconcile_deployment
from gateway import routes
from tests.deployments.conftest import COLUMNS, ROWS, unique_name
from tests.factories import make_token
from tests.fixtures import bearer_client

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
URL = "/api/v1/deployments/"


def containers(client, name: str, *, all_: bool = True) -> list:
    return client.containers.list(all=all_, filters={"label": f"modelport.deployment={name}"})


def deploy(api, name: str, **extra) -> dict:
    data = {"name": name, "team": "ml-search", "model": "iris", "version": 1, "replicas": 1,
            "resources": {"cpu": 0.5, "memory_mb": 768}}
    data.update(extra)
    response = api.post(URL, data, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def converge(name: str) -> str:
    d = Deployment.objects.get(name=name)
    outcome = reconcile_deployment(d.pk)
    d.refresh_from_db()
    assert d.status == "healthy", (outcome, d.status, d.status_message,
                                   list(d.events.values_list("message", flat=True)[:5]))
    return outcome


def gateway_client(user) -> Client:
    _, secret = make_token(user, name=f"gw-{user.username}-{time.monotonic_ns()}")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def invoke(client: Client, name: str, payload=None, **kwargs):
    import json

    payload = payload if payload is not None else {
        "dataframe_split": {"columns": COLUMNS, "data": ROWS}}
    data = payload if isinstance(payload, str) else json.dumps(payload)
    kwargs.setdefault("content_type", "application/json")
    return client.post(f"/serve/{name}/invocations", data=data, **kwargs)


def test_deploy_predict_and_heal(docker_client, docker_env, engineer, stranger, v1):
    name = unique_name("e2e")
    docker_env.append(name)
    api = bearer_client(engineer)
    deploy(api, name, replicas=2, strategy={"type": "blue_green"})
    converge(name)
    data = api.get(f"{URL}{name}/").json()
    assert data["status"] == "healthy" and data["progress"] == 100
    assert data["traffic"] == [{"revision": 1, "percent": 100}]
    assert len(data["replicas"]) == 2
    # No network: each replica is reached over its own socket file under the data dir.
    assert all(r["ready"] and r["url"].startswith("http+unix://") for r in data["replicas"])
    assert len(containers(docker_client, name, all_=False)) == 2

    client = gateway_client(engineer)
    records = [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]
    csv = ",".join(COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
    for payload, ctype in [
        ({"dataframe_split": {"columns": COLUMNS, "data": ROWS}}, "application/json"),
        ({"dataframe_records": records}, "application/json"),
        ({"instances": records}, "application/json"),
        ({"inputs": records}, "application/json"),
        (csv, "text/csv"),
    ]:
        response = invoke(client, name, payload, content_type=ctype,
                          HTTP_X_REQUEST_ID="req-123")
        assert response.status_code == 200, (ctype, payload, response.content)
        predictions = response.json()["predictions"]
        assert predictions == [0, 2], predictions
        assert response["X-Request-ID"] == "req-123"
    bad = invoke(client, name, {"dataframe_split": {"columns": ["x"], "data": [[1]]}})
    assert bad.status_code == 400, bad.content  # the replica's own answer passes through

    # Other teams: 404; no token: 401.
    assert invoke(gateway_client(stranger), name).status_code == 404
    assert Client().post(f"/serve/{name}/invocations", data="{}",
                         content_type="application/json").status_code == 401

    # Sticky routing: one route key always lands on one replica.
    urls = set()
    for _ in range(5):
        route = routes.route_for(name)
        urls.add(route.pick("customer-42", set()))
    assert len(urls) == 1

    # Logs through the runtime.
    replica_id = data["replicas"][0]["id"]
    logs = api.get(f"{URL}{name}/logs/", {"replica": replica_id, "tail": 50}).json()
    assert logs[0]["replica"] == replica_id and logs[0]["logs"]

    # docker kill one replica: the next reconcile replaces it.
    victim = docker_client.containers.get(replica_id)
    victim.kill()
    for _ in range(50):
        victim.reload()
        if victim.status != "running":
            break
        time.sleep(0.1)
    converge(name)
    assert len(containers(docker_client, name, all_=False)) == 2
    d = Deployment.objects.get(name=name)
    assert d.events.filter(kind="warning", message__contains=replica_id).exists()
    assert invoke(client, name).status_code == 200


def test_rollout_under_traffic_rollback_stop_start_delete(docker_client, docker_env, engineer,
                                                           v1, v2):
    name = unique_name("roll")
    docker_env.append(name)
    api = bearer_client(engineer)
    deploy(api, name, replicas=2)
    converge(name)
    first = {c.name for c in containers(docker_client, name)}

    client = gateway_client(engineer)
    results: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        try:
            while not stop.is_set():
                results.append(invoke(client, name).status_code)
                time.sleep(0.01)
        finally:
            connection.close()

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        response = api.patch(f"{URL}{name}/", {"version": 2}, format="json")
        assert response.status_code == 202 and response.json()["status"] == "pending"
        converge(name)
        time.sleep(1.5)
    finally:
        stop.set()
        worker.join(timeout=30)
    failures = [code for code in results if code != 200]
    assert len(results) > 50 and failures == [], (len(results), failures[:10])

    d = Deployment.objects.get(name=name)
    assert d.revision == 2 and d.traffic == [{"revision": 2, "percent": 100}]
    now = {c.name for c in containers(docker_client, name)}
    assert len(now) == 2 and not (now & first)
    assert set(Replica.objects.filter(deployment=d).values_list("revision", flat=True)) == {2}
    assert Revision.objects.get(deployment=d, number=1).state == "superseded"
    assert Revision.objects.get(deployment=d, number=2).state == "active"
    kinds = list(d.events.values_list("kind", flat=True))
    assert "traffic" in kinds

    # Roll back (to revision 1's spec, as revision 3).
    response = api.post(f"{URL}{name}/rollback/", {}, format="json")
    assert response.status_code == 202 and response.json()["revision"] == 3
    converge(name)
    d.refresh_from_db()
    assert d.version.version == 1 and d.traffic == [{"revision": 3, "percent": 100}]
    assert invoke(client, name).status_code == 200

    # Stop: no containers, 503 at the gateway with a clear message. Start: healthy again.
    api.post(f"{URL}{name}/stop/")
    reconcile_deployment(d.pk)
    d.refresh_from_db()
    assert d.status == "stopped" and containers(docker_client, name) == []
    time.sleep(1.1)  # the gateway re-checks routing at most once a second
    response = invoke(client, name)
    assert response.status_code == 503 and "no ready replica" in response.json()["detail"]
    api.post(f"{URL}{name}/start/")
    converge(name)
    assert len(containers(docker_client, name, all_=False)) == 2

    # Delete removes every container (the removal task runs after commit, eagerly here).
    assert api.delete(f"{URL}{name}/").status_code == 204
    assert containers(docker_client, name) == []
    assert not Deployment.objects.filter(name=name).exists()


def test_a_model_that_does_not_load_fails_its_revision_and_the_old_one_keeps_serving(
        docker_client, docker_env, engineer, v1, iris_model, iris_dir, tmp_path):
    import shutil

    from tests.deployments.conftest import make_version

    broken = tmp_path / "broken"
    shutil.copytree(iris_dir, broken)
    (broken / "model.pkl").unlink()
    for path in [broken, *broken.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    make_version(iris_model, 3, broken)
    name = unique_name("bad")
    docker_env.append(name)
    api = bearer_client(engineer)
    deploy(api, name, strategy={"type": "blue_green"})
    converge(name)
    api.patch(f"{URL}{name}/", {"version": 3}, format="json")
    d = Deployment.objects.get(name=name)
    started = time.monotonic()
    assert reconcile_deployment(d.pk) == "failed"
    assert time.monotonic() - started < 60  # the load error is seen, no waiting for a timeout
    d.refresh_from_db()
    assert d.status == "failed" and "revision 1 keeps serving" in d.status_message
    error = d.events.filter(kind="error").first().message
    assert "could not load the model" in error and "model.pkl" in error, error
    assert [c.labels["modelport.revision"] for c in containers(docker_client, name)] == ["1"]
    time.sleep(1.1)
    assert invoke(gateway_client(engineer), name).status_code == 200
