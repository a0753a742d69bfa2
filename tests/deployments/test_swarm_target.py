"""The deployment end-to-end path on a real single-node Docker Swarm (an execution target of
kind swarm, host networking): deploy → healthy → predict through the gateway; `docker kill` a
task's container → Swarm replaces it and the reconciler agrees (no replacement of its own);
canary rollout; rollback; delete removes every service."""

from __future__ import annotations

import time

import pytest

from compute import targets
from deployments.models import Deployment, Replica, Revision
from deployments.reconcile import reconcile_deployment
from gateway import routes
from serving.sockets import request
from tests.deployments.test_docker import deploy, gateway_client, invoke
from tests.fixtures import bearer_client
from tests.swarm_fixtures import remove_services, swarm  # noqa: F401 - fixture

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(1800)]
URL = "/api/v1/deployments/"


@pytest.fixture
def swarm_target(swarm, platform_serving_image, settings, no_enqueue, admin_user):  # noqa: F811
    settings.MODELPORT_DRAIN_SECONDS = 1.5
    settings.MODELPORT_READY_TIMEOUT_S = 240
    routes.invalidate()
    target = targets.create_target(actor=admin_user, name="swarm-ci", kind="swarm",
                                   settings={"network": "host", "port_range": [22500, 22999]})
    names: list[str] = []
    yield target, names
    for name in names:
        remove_services(swarm, f"modelport.deployment={name}")
    routes.invalidate()


def services_of(client, name: str) -> list:
    return client.services.list(filters={"label": f"modelport.deployment={name}"})


def converge_healthy(name: str, attempts: int = 60) -> Deployment:
    """Reconcile until healthy: a replica Swarm is restarting counts as alive but not ready,
    so a pass in between reports 'degraded' — the next one, 'healthy'."""
    d = Deployment.objects.get(name=name)
    for _ in range(attempts):
        outcome = reconcile_deployment(d.pk)
        d.refresh_from_db()
        if d.status == "healthy":
            return d
        assert d.status in ("starting", "degraded", "building", "pending"), (
            outcome, d.status, d.status_message,
            list(d.events.values_list("message", flat=True)[:5]))
        time.sleep(2)
    raise AssertionError(f"{name} never became healthy: {d.status} {d.status_message}")


def test_deploy_kill_canary_rollback_delete_on_swarm(swarm, swarm_target, engineer,  # noqa: F811
                                                     v1, v2):
    target, names = swarm_target
    name = f"sw-{time.monotonic_ns() % 10**8}"
    names.append(name)
    api = bearer_client(engineer)
    created = deploy(api, name, replicas=2, strategy={"type": "blue_green"},
                     target=target.name)
    assert created["target"] == "swarm-ci"
    d = converge_healthy(name)
    assert d.target_id == target.pk
    data = api.get(f"{URL}{name}/").json()
    assert len(data["replicas"]) == 2 and data["target"] == "swarm-ci"
    assert all(r["ready"] and r["url"].startswith("http://127.0.0.1:") for r in data["replicas"])
    first = {s.name: s.id for s in services_of(swarm, name)}
    assert sorted(first) == sorted(r["id"] for r in data["replicas"])  # one service a replica
    client = gateway_client(engineer)
    response = invoke(client, name)
    assert response.status_code == 200 and response.json()["predictions"] == [0, 2]
    # Straight to a replica on the node's network, without the key the gateway sends: refused.
    status, body = request(data["replicas"][0]["url"] + "/invocations", "POST",
                           b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}',
                           {"Content-Type": "application/json"}, timeout=10)
    assert status == 403 and b"PERMISSION_DENIED" in body
    logs = api.get(f"{URL}{name}/logs/", {"replica": data["replicas"][0]["id"]}).json()
    assert logs[0]["logs"]  # through the Swarm runtime

    # docker kill one task's container: Swarm starts a new task; the reconciler agrees.
    victim_service = data["replicas"][0]["id"]
    victim = swarm.containers.list(
        filters={"label": f"com.docker.swarm.service.name={victim_service}"})[0]
    victim.kill()
    d = converge_healthy(name)
    assert {s.name: s.id for s in services_of(swarm, name)} == first  # nothing recreated
    assert not d.events.filter(kind="warning", message__contains=victim_service).exists()
    replacement = swarm.containers.list(
        filters={"label": f"com.docker.swarm.service.name={victim_service}"})
    assert replacement and replacement[0].id != victim.id
    assert Replica.objects.get(runtime_id=victim_service).restart_count >= 1
    time.sleep(1.1)  # the gateway re-reads routing at most once a second
    assert invoke(client, name).status_code == 200

    # Canary to version 2: traffic in steps, then new services replace the old ones.
    response = api.patch(f"{URL}{name}/", {"version": 2, "strategy": {
        "type": "canary", "steps": [50, 100], "interval_s": 2}}, format="json")
    assert response.status_code == 202, response.json()
    d = converge_healthy(name)
    assert d.revision == 2 and d.traffic == [{"revision": 2, "percent": 100}]
    assert d.events.filter(kind="traffic", message__startswith="Canary: 50%").exists()
    now = {s.name for s in services_of(swarm, name)}
    assert len(now) == 2 and not (now & set(first))
    assert {s.attrs["Spec"]["Labels"]["modelport.revision"] for s in services_of(swarm, name)} \
        == {"2"}
    assert Revision.objects.get(deployment=d, number=1).state == "superseded"

    # Roll back to revision 1's spec (as revision 3).
    response = api.post(f"{URL}{name}/rollback/", {}, format="json")
    assert response.status_code == 202 and response.json()["revision"] == 3
    d = converge_healthy(name)
    assert d.version.version == 1 and d.traffic == [{"revision": 3, "percent": 100}]
    time.sleep(1.1)
    assert invoke(client, name).status_code == 200

    # Delete removes every service, on the target the deployment ran on.
    assert api.delete(f"{URL}{name}/").status_code == 204
    assert services_of(swarm, name) == []
