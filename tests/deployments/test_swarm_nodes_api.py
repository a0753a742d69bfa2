"""The deployment path on the three-node lab swarm (``tests/swarm_lab.py``): an execution target
of kind swarm whose endpoint is the manager's own Docker socket, with the multi-node settings
(``bind_host`` 0.0.0.0, a ``registry``, ``constraints``), used through the REST API, the
reconciler and the gateway.

Deploy → the reconciler builds (this worker's engine), pushes the serving image and the baked
model to the lab registry, creates the services; they run on the workers and the gateway
reaches them at their nodes' addresses over the bridge. Drain a worker → Swarm moves the task;
reconcile passes meanwhile replace nothing (the same services, no warning), the replica's row
follows the new node's address and the gateway answers from there. Delete removes every service.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from compute import targets
from deployments.models import Deployment, Replica
from deployments.reconcile import reconcile_deployment
from gateway import routes
from tests.deployments.test_docker import deploy, gateway_client, invoke
from tests.deployments.test_swarm_target import converge_healthy, services_of
from tests.fixtures import bearer_client
from tests.swarm_lab import (
    FIGURES,
    SwarmLab,
    running_task,
    set_availability,
    swarm_lab,  # noqa: F401 - fixture
)
from tests.workers.test_runtime_docker import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(1200)]
URL = "/api/v1/deployments/"


@pytest.fixture
def lab_target(swarm_lab: SwarmLab, platform_serving_image: str, settings: Any,  # noqa: F811
               no_enqueue: Any, admin_user: Any) -> Any:
    settings.MODELPORT_DRAIN_SECONDS = 1.5
    settings.MODELPORT_READY_TIMEOUT_S = 240
    routes.invalidate()
    target = targets.create_target(
        actor=admin_user, name="swarm-lab", kind="swarm", endpoint=swarm_lab.manager_endpoint,
        settings={"network": "host", "bind_host": "0.0.0.0", "port_range": [24000, 24499],
                  "registry": f"{swarm_lab.registry}/mp", "constraints": ["node.role==worker"]})
    names: list[str] = []
    yield target, names
    for name in names:
        for service in services_of(swarm_lab.manager, name):
            service.remove()
    routes.invalidate()


def nodes_of(lab: SwarmLab, replica_ids: list[str]) -> dict[str, str]:
    """Replica (service) name -> the node id its running task is on. Swarm calls a task
    running once its health check passed, which can be a few seconds after /ready answers."""
    found = {}
    for rid in replica_ids:
        task = wait_for(lambda rid=rid: running_task(lab, rid), timeout=60)
        assert task, (rid, lab.manager.api.tasks(filters={"service": rid}))
        found[rid] = task["NodeID"]
    return found


def test_deploy_on_workers_drain_one_and_the_reconciler_follows_swarm(
        swarm_lab: SwarmLab, lab_target: Any, engineer: Any, v1: Any) -> None:  # noqa: F811
    lab = swarm_lab
    target, names = lab_target
    name = f"swn-{time.monotonic_ns() % 10**8}"
    names.append(name)
    api = bearer_client(engineer)
    started = time.monotonic()
    deploy(api, name, replicas=2, target=target.name)
    d = converge_healthy(name, attempts=120)
    FIGURES["API deploy → healthy (2 replicas, build cached, push, bake) s"] = \
        time.monotonic() - started
    data = api.get(f"{URL}{name}/").json()
    ids = [r["id"] for r in data["replicas"]]
    placed = nodes_of(lab, ids)
    assert set(placed.values()) <= set(lab.workers), placed  # the manager runs none
    for replica in data["replicas"]:
        assert replica["ready"]
        assert replica["url"].startswith(f"http://{lab.address(placed[replica['id']])}:")
    image = services_of(lab.manager, name)[0].attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert image["Image"].startswith(f"{lab.registry}/mp/model:")
    assert [m["Type"] for m in image.get("Mounts", [])] == ["tmpfs"]  # no bind mount
    client = gateway_client(engineer)
    response = invoke(client, name)
    assert response.status_code == 200 and response.json()["predictions"] == [0, 2]

    # Drain the node of the first replica: Swarm moves its task; the reconciler keeps
    # looking and replaces nothing; the row's url follows the new node.
    victim, node = ids[0], placed[ids[0]]
    services = {s.name: s.id for s in services_of(lab.manager, name)}
    started = time.monotonic()
    set_availability(lab, node, "drain")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            reconcile_deployment(d.pk)
            assert {s.name: s.id for s in services_of(lab.manager, name)} == services
            row = Replica.objects.get(runtime_id=victim)
            task = running_task(lab, victim)
            if task and task["NodeID"] != node and row.ready \
                    and row.url.startswith(f"http://{lab.address(task['NodeID'])}:"):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"{victim} never moved off its drained node: {row.url}")
        FIGURES["API: drain → the reconciler's row on the new node s"] = \
            time.monotonic() - started
    finally:
        set_availability(lab, node, "active")
    d = converge_healthy(name)
    assert not d.events.filter(kind="warning", message__contains=victim).exists()
    time.sleep(1.1)  # the gateway re-reads routing at most once a second
    response = invoke(client, name)
    assert response.status_code == 200 and response.json()["predictions"] == [0, 2]

    assert api.delete(f"{URL}{name}/").status_code == 204
    assert services_of(lab.manager, name) == []
    assert not Deployment.objects.filter(name=name, status="healthy").exists()
