"""The Swarm runtime on a real three-node swarm: one manager and two workers, each a network
namespace with its own Docker Engine (``tests/netlab.py``), joined over the lab's bridge.

What runs where, and why it proves the point:

* the platform's side (this process, the machine's engine) builds the serving image — the
  suite's shared one — and pushes it, and the model baked into a thin layer on top of it, to
  the lab's TLS registry; the nodes pull from there, never from this engine;
* replicas are placed on workers only (``constraints: node.role==worker``), listen on 0.0.0.0 of
  their node in host mode and are reached at the address their node advertised, over the
  bridge, with their replica key;
* the task specs hold no bind mount (only the private /tmp tmpfs): the lab's namespaces share
  this machine's filesystem, so a bind mount *would* work here and the test has to show there
  is none;
* a drained worker's replica moves to the other worker, and so does a cut-off worker's (link
  down on the bridge) — the runtime reports the replica alive throughout (so the reconciler
  never replaces it itself) and its URL follows the new node;
* an internal attachable overlay network carries a request from a client container on one
  node to a replica on another, by the service's DNS name (endpoint mode dnsrr: this kernel
  has no IPVS, so Swarm's virtual IPs and routing mesh cannot work here).

Times (image push and pulls, rescheduling after a drain or a cut) are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from serving.sockets import request
from tests.swarm_lab import (
    FIGURES,
    HEARTBEAT_S,
    SwarmLab,
    running_task,
    set_availability,
    swarm_lab,  # noqa: F401 - fixture
)
from tests.workers.conftest import TEST_LABEL
from tests.workers.test_runtime_docker import IRIS_COLUMNS, ROWS, spec_for, wait_for
from workers.runtimes.base import ReplicaStatus, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

PORT_RANGE = (23500, 23999)
OVERLAY_SUBNET = "198.18.10.0/24"
KEY_HEADER = "X-Modelport-Replica-Key"
REPLICA_KEY = "swarm-nodes-replica-key-" + "0" * 40


@pytest.fixture(scope="module")
def lab_runtime(swarm_lab: SwarmLab, docker_client: Any, base_image: str,  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Host mode on several nodes, as the factory makes it for a target with settings
    {"network": "host", "bind_host": "0.0.0.0", "registry": <lab registry>/mp,
    "constraints": ["node.role==worker"]}: images built on this worker's own engine (the
    suite's shared serving image) and pushed from there; the manager builds nothing."""
    from workers.runtimes.images import ImageBuilder
    from workers.runtimes.registry_push import RegistryPublisher
    from workers.runtimes.swarm import SwarmRuntime

    return SwarmRuntime(
        swarm_lab.manager, network="host", bind_host="0.0.0.0",
        port_range=PORT_RANGE, state_dir=tmp_path_factory.mktemp("swarm-lab"),
        image_builder=ImageBuilder(docker_client, base_image),
        publisher=RegistryPublisher(docker_client, f"{swarm_lab.registry}/mp"),
        constraints=["node.role==worker"], extra_labels={TEST_LABEL: "1"})


@pytest.fixture(scope="module")
def lab_image(lab_runtime: Any) -> str:
    from registry.sandbox import platform_requirements

    started = time.monotonic()
    image = lab_runtime.ensure_image(platform_requirements())
    FIGURES["push of the serving image to the lab registry s"] = time.monotonic() - started
    return image


def invoke(url: str, key: str | None) -> tuple[int, Any]:
    body = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}}).encode()
    headers = {"Content-Type": "application/json", **({KEY_HEADER: key} if key else {})}
    status, answer = request(url + "/invocations", "POST", body, headers, timeout=10)
    return status, json.loads(answer)


def serve(runtime: Any, lab: SwarmLab, deployment: str, image: str, model_dir: Path,
          replica: int = 0) -> tuple[Any, str]:
    """Start one replica, wait until it answers at its node's address: (state, node id)."""
    spec = spec_for(deployment, image, model_dir, replica=replica, cpu=0.5, memory_mb=512,
                    env={"MODELPORT_REPLICA_KEY": REPLICA_KEY})
    started = time.monotonic()
    state = runtime.start_replica(spec)
    task = wait_for(lambda: running_task(lab, state.id), timeout=300, interval=0.5)
    assert task, (runtime.get_replica(state.id).message,
                  lab.manager.api.tasks(filters={"service": state.id}))
    state = runtime.get_replica(state.id)
    node = task["NodeID"]
    assert state.url == f"http://{lab.address(node)}:{state.port}", (state.url, node)
    assert wait_ready(state.url, timeout=120), runtime.logs(state.id)
    FIGURES.setdefault(f"replica start → ready (first on its node: pull) s #{replica}",
                       time.monotonic() - started)
    return state, node


def follow_move(runtime: Any, lab: SwarmLab, replica_id: str, away_from: str,
                timeout: float = 180) -> tuple[Any, str]:
    """Poll the runtime until the replica runs on another node and answers there; the replica
    is alive (RUNNING or STARTING) at every look, so a reconciler would not replace it."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        state = runtime.get_replica(replica_id)
        seen.append((state.status.value, state.url))
        assert state.alive, seen[-5:]
        task = running_task(lab, replica_id)
        if task and task["NodeID"] != away_from and state.url \
                and lab.address(task["NodeID"]) in state.url and wait_ready(state.url, 2):
            return state, task["NodeID"]
        time.sleep(0.5)
    raise AssertionError(f"replica {replica_id} never moved off {away_from}: {seen[-10:]}")


def test_replicas_land_on_workers_with_the_model_baked_and_answer_at_their_node(
        swarm_lab: SwarmLab, lab_runtime: Any, lab_image: str,  # noqa: F811
        iris_model_dir: Path) -> None:
    lab, runtime = swarm_lab, lab_runtime
    assert lab_image.startswith(f"{lab.registry}/mp/serving:")
    health = runtime.describe()
    assert health.reachable and len(health.nodes) == 3, health
    assert not any("unreachable" in w or "no registry" in w for w in health.warnings)
    assert sorted(n.role for n in health.nodes) == ["manager", "worker", "worker"]

    states, nodes = zip(*(serve(runtime, lab, "sw-place", lab_image, iris_model_dir, i)
                          for i in range(2)), strict=True)
    assert set(nodes) <= set(lab.workers)  # never the manager
    assert len({s.port for s in states}) == 2  # unique across the swarm
    for state in states:
        assert invoke(state.url, REPLICA_KEY)[1]["predictions"] == [0, 2]
        status, answer = invoke(state.url, None)  # on the node's network: the key is needed
        assert status == 403 and answer["error_code"] == "PERMISSION_DENIED"

    # Its logs come through the manager from the worker that runs it.
    assert wait_for(lambda: "model loaded" in runtime.logs(states[0].id, tail=50), timeout=30), \
        runtime.logs(states[0].id, tail=50)

    # The model travels in the image: the task spec holds the baked image and no bind mount,
    # so the replica never reads this machine's disk (which the lab's namespaces share).
    spec = lab.manager.services.get(states[0].id).attrs["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"].split("@")[0].startswith(f"{lab.registry}/mp/model:")
    assert [m["Type"] for m in container.get("Mounts", [])] == ["tmpfs"]
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==worker"]
    assert "MODELPORT_HOST=0.0.0.0" in container["Env"]
    task = running_task(lab, states[0].id)
    local = lab.clients[task["NodeID"]].containers.get(
        task["Status"]["ContainerStatus"]["ContainerID"])
    assert [m["Type"] for m in local.attrs["Mounts"]] == ["tmpfs"]
    assert local.attrs["HostConfig"]["NetworkMode"] == "host"
    # And the model's files are in the image's /model, not on this machine.
    listing = local.exec_run(["ls", "/model"], user="10001").output.decode()
    assert "MLmodel" in listing, listing
    for state in states:
        runtime.remove_replica(state.id)


def test_a_drained_workers_replica_moves_and_answers_on_the_other(
        swarm_lab: SwarmLab, lab_runtime: Any, lab_image: str,  # noqa: F811
        iris_model_dir: Path) -> None:
    lab, runtime = swarm_lab, lab_runtime
    state, node = serve(runtime, lab, "sw-drain", lab_image, iris_model_dir)
    service_id = lab.manager.services.get(state.id).id
    try:
        started = time.monotonic()
        set_availability(lab, node, "drain")
        moved, new_node = follow_move(runtime, lab, state.id, away_from=node)
        FIGURES["drain → answering on the other worker s"] = time.monotonic() - started
    finally:
        set_availability(lab, node, "active")
    assert new_node in lab.workers and new_node != node
    assert moved.id == state.id and moved.port == state.port  # the same service, same port
    assert lab.manager.services.get(state.id).id == service_id  # nothing recreated
    assert moved.url == f"http://{lab.address(new_node)}:{state.port}" != state.url
    assert invoke(moved.url, REPLICA_KEY)[1]["predictions"] == [0, 2]
    (listed,) = runtime.list_replicas("sw-drain")
    assert listed.url == moved.url and listed.status is ReplicaStatus.RUNNING
    # The drained node's container is gone (Swarm stopped it; nothing answers there now).
    assert wait_for(lambda: not lab.clients[node].containers.list(
        filters={"label": f"com.docker.swarm.service.name={state.id}"}), timeout=60)
    runtime.remove_replica(state.id)


def test_a_cut_off_workers_replica_is_rescheduled_and_the_stale_one_removed_on_return(
        swarm_lab: SwarmLab, lab_runtime: Any, lab_image: str,  # noqa: F811
        iris_model_dir: Path) -> None:
    lab, runtime = swarm_lab, lab_runtime
    state, node = serve(runtime, lab, "sw-lost", lab_image, iris_model_dir)
    host = lab.hosts[node]
    stale = running_task(lab, state.id)["Status"]["ContainerStatus"]["ContainerID"]
    started = time.monotonic()
    host.link(False)
    try:
        down = wait_for(lambda: lab.manager.nodes.get(node).attrs["Status"]["State"] == "down",
                        timeout=120, interval=0.2)
        FIGURES[f"link cut → node down (heartbeat {HEARTBEAT_S}s) s"] = \
            time.monotonic() - started
        assert down
        moved, new_node = follow_move(runtime, lab, state.id, away_from=node)
        FIGURES["link cut → answering on the other worker s"] = time.monotonic() - started
        assert new_node != node and new_node in lab.workers
        assert invoke(moved.url, REPLICA_KEY)[1]["predictions"] == [0, 2]
        # Meanwhile the cut-off node's container still runs: it has not heard from the manager.
        assert lab.clients[node].containers.get(stale).status == "running"
    finally:
        host.link(True)
    returned = time.monotonic()
    assert wait_for(lambda: lab.manager.nodes.get(node).attrs["Status"]["State"] == "ready",
                    timeout=120)
    # Back in touch, the node learns its task is no longer wanted and stops it.
    assert wait_for(lambda: lab.clients[node].containers.get(stale).status != "running",
                    timeout=120, interval=0.5)
    FIGURES["link back → stale container stopped s"] = time.monotonic() - returned
    (listed,) = runtime.list_replicas("sw-lost")
    assert listed.url == moved.url and listed.alive
    runtime.remove_replica(state.id)


def test_the_overlay_carries_a_request_from_another_node_by_service_name(
        swarm_lab: SwarmLab, lab_image: str, docker_client: Any,  # noqa: F811
        base_image: str,
        iris_model_dir: Path, tmp_path: Path) -> None:
    from docker.types import IPAMConfig, IPAMPool

    from workers.runtimes.images import ImageBuilder
    from workers.runtimes.registry_push import RegistryPublisher, pull_image
    from workers.runtimes.swarm import SwarmRuntime

    lab = swarm_lab
    network = lab.manager.networks.create(
        "mp-lab-models", driver="overlay", internal=True, attachable=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=OVERLAY_SUBNET)]))
    runtime = SwarmRuntime(
        lab.manager, network="overlay", overlay_network=network.name,
        state_dir=tmp_path / "runtime", image_builder=ImageBuilder(docker_client, base_image),
        publisher=RegistryPublisher(docker_client, f"{lab.registry}/mp"),
        constraints=["node.role==worker"], extra_labels={TEST_LABEL: "1"})
    assert runtime.describe().warnings == []  # internal overlay, a registry: nothing to say
    spec = spec_for("sw-overlay", lab_image, iris_model_dir, cpu=0.5, memory_mb=512,
                    env={"MODELPORT_REPLICA_KEY": REPLICA_KEY})
    state = runtime.start_replica(spec)
    assert state.url == f"http://{state.id}:8080"
    task = wait_for(lambda: running_task(lab, state.id), timeout=300, interval=0.5)
    assert task, runtime.get_replica(state.id).message
    assert lab.manager.services.get(state.id).attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    # The client: a container on the *other* worker's engine, joined to the overlay only.
    other = next(n for n in lab.workers if n != task["NodeID"])
    client_engine = lab.clients[other]
    pull_image(client_engine, lab_image)  # the pinned reference (…:tag@sha256:…)
    script = (
        "import json, sys, time, urllib.request as u\n"
        "url, key = sys.argv[1], sys.argv[2]\n"
        f"body = json.dumps({{'dataframe_split': {{'columns': {IRIS_COLUMNS!r}, "
        f"'data': {ROWS!r}}}}}).encode()\n"
        "for attempt in range(120):\n"
        "    try:\n"
        "        u.urlopen(url + '/ready', timeout=2); break\n"
        "    except Exception:\n"
        "        time.sleep(0.5)\n"
        "for k in (key, ''):\n"
        "    req = u.Request(url + '/invocations', body, {'Content-Type': 'application/json',"
        f" '{KEY_HEADER}': k}})\n"
        "    try:\n"
        "        r = u.urlopen(req, timeout=10); print(r.status, r.read().decode())\n"
        "    except u.HTTPError as e:\n"
        "        print(e.code, e.read().decode())\n")
    started = time.monotonic()
    container = client_engine.containers.run(
        lab_image, ["python", "-c", script, state.url, REPLICA_KEY], network=network.name,
        user="10001:10001", read_only=True, cap_drop=["ALL"], detach=True,
        labels={TEST_LABEL: "1"}, entrypoint=[])
    try:
        assert container.wait(timeout=180)["StatusCode"] == 0, container.logs()
        output = container.logs(stdout=True, stderr=False).decode().splitlines()
    finally:
        container.remove(force=True)
        runtime.remove_replica(state.id)
    FIGURES["overlay: client on the other worker → answered s"] = time.monotonic() - started
    assert len(output) == 2, output
    status, body = output[0].split(" ", 1)
    assert status == "200" and json.loads(body)["predictions"] == [0, 2], output
    assert output[1].startswith("403 "), output  # on the overlay too, the key is needed
    assert task["NodeID"] != other and other != lab.manager_id
    wait_for(lambda: not lab.manager.services.list(filters={"name": state.id}), timeout=30)
    with contextlib.suppress(Exception):
        network.remove()
