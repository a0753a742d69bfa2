"""The Swarm runtime on a real single-node swarm: hardened single-replica services of a tiny
MLflow sklearn model, found again by labels, answering only requests with their replica key; a
killed task is replaced by Swarm itself. Overlay mode (internal network, egress network) is
checked on its service spec and on real overlay networks that carry no traffic."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from serving.sockets import request
from tests.swarm_fixtures import remove_services, swarm  # noqa: F401 - fixture
from tests.workers.test_runtime_docker import IRIS_COLUMNS, ROWS, spec_for, wait_for
from workers.runtimes.base import ReplicaRuntimeError, ReplicaSpec, ReplicaStatus, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]

TEST_LABEL = "modelport.test"
SWARM_PORT_RANGE = (22000, 22499)
KEY_HEADER = "X-Modelport-Replica-Key"
REPLICA_KEY = "swarm-test-replica-key-" + "0" * 41
SHARES_NODE = "share the node's network"


def invoke(url: str, key: str | None) -> tuple[int, Any]:
    """POST /invocations, with the replica key when given: (status, parsed body)."""
    body = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}}).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[KEY_HEADER] = key
    status, answer = request(url + "/invocations", "POST", body, headers, timeout=10)
    return status, json.loads(answer)


def predict(url: str) -> list[Any]:
    status, answer = invoke(url, REPLICA_KEY)
    assert status == 200, answer
    return answer["predictions"]


@pytest.fixture
def swarm_runtime(swarm: Any, base_image: str, tmp_path: Path) -> Any:  # noqa: F811
    from workers.runtimes.swarm import SwarmRuntime

    return SwarmRuntime(swarm, network="host", port_range=SWARM_PORT_RANGE,
                        base_image=base_image, state_dir=tmp_path / "runtime",
                        extra_labels={TEST_LABEL: "1"})


@pytest.fixture
def swarm_deployment(swarm: Any, deployment_name: str) -> Any:  # noqa: F811
    yield deployment_name
    remove_services(swarm, f"modelport.deployment={deployment_name}")


def task_container(client: Any, service_name: str) -> Any:
    """The running container of the service's one task (single node: it is local)."""
    containers = client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={service_name}"})
    return containers[0] if containers else None


def test_hardened_services_serve_are_rediscovered_and_healed_by_swarm(
        swarm: Any, swarm_runtime: Any, swarm_deployment: str,  # noqa: F811
        serving_image: str, iris_model_dir: Path) -> None:
    runtime = swarm_runtime
    assert runtime.ping()
    health = runtime.describe()
    assert health.reachable and health.nodes and health.nodes[0].role == "manager"
    assert health.cpu > 0 and health.memory_mb > 0

    specs = [spec_for(swarm_deployment, serving_image, iris_model_dir, replica=i, cpu=0.5,
                      memory_mb=768, pids_limit=128, env={"MODELPORT_REPLICA_KEY": REPLICA_KEY})
             for i in range(2)]
    states = [runtime.start_replica(spec) for spec in specs]
    assert [s.id for s in states] == [spec.name for spec in specs]
    ports = {s.port for s in states}
    assert len(ports) == 2 and all(SWARM_PORT_RANGE[0] <= p <= SWARM_PORT_RANGE[1]
                                   for p in ports)
    for state in states:
        assert state.alive and state.url == f"http://127.0.0.1:{state.port}"
        ready = wait_ready(state.url, timeout=240,
                           alive=lambda s=state: runtime.get_replica(s.id).alive)
        assert ready, (runtime.get_replica(state.id).message, runtime.logs(state.id))
        assert predict(state.url) == [0, 2]

    # On the node's network anyone there can connect, so the replica answers only its key:
    # 403 without it or with another, 200 with it; the health checks stay open.
    url = states[0].url
    for key in (None, "", "not-the-key", REPLICA_KEY[:-1]):
        status, answer = invoke(url, key)
        assert status == 403 and answer["error_code"] == "PERMISSION_DENIED", (key, answer)
    assert invoke(url, REPLICA_KEY)[0] == 200
    assert request(url + "/ready", timeout=5)[0] == 200
    assert request(url + "/metrics", timeout=5)[0] == 403
    # The key reached the task's environment (the service spec), nothing else carries it.
    env = swarm.services.get(states[0].id).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert f"MODELPORT_REPLICA_KEY={REPLICA_KEY}" in env
    assert REPLICA_KEY not in json.dumps(swarm.services.get(states[0].id).attrs["Spec"]["Labels"])
    # And the target's health says what host mode gives.
    assert any(SHARES_NODE in w for w in health.warnings), health.warnings

    # One single-replica service per replica, labelled like containers, hardened.
    service = swarm.services.get(states[0].id)
    spec = service.attrs["Spec"]
    labels = spec["Labels"]
    assert labels["modelport.deployment"] == swarm_deployment
    assert labels["modelport.revision"] == "1" and labels["modelport.replica"] == "0"
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"
    network = spec["TaskTemplate"]["Networks"][0]["Target"]
    assert swarm.api.inspect_network(network)["Name"] == "host"
    resources = spec["TaskTemplate"]["Resources"]
    assert resources["Limits"]["NanoCPUs"] == resources["Reservations"]["NanoCPUs"] == 5 * 10**8
    assert resources["Limits"]["MemoryBytes"] == 768 * 1024 * 1024
    container = task_container(swarm, states[0].id)
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == "host"
    assert host["NanoCpus"] == 5 * 10**8 and host["Memory"] == 768 * 1024 * 1024
    assert host["PidsLimit"] == 128
    assert {m["Target"]: m["Type"] for m in host["Mounts"]} == {"/tmp": "tmpfs",
                                                                "/model": "bind"}
    assert container.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    out = container.exec_run(["sh", "-c", "touch /etc/x"])
    assert out.exit_code != 0 and b"Read-only file system" in out.output, out

    # Rediscovered by labels alone (a fresh runtime object), with status, logs and stats.
    from workers.runtimes.swarm import SwarmRuntime

    again = SwarmRuntime(swarm, port_range=SWARM_PORT_RANGE)
    # Swarm reports a task "running" only once its health check (the model server's /ready)
    # passed, which can be a few seconds after /ready first answers.
    def all_running() -> list[Any]:
        found = again.list_replicas(swarm_deployment)
        return found if all(s.status is ReplicaStatus.RUNNING for s in found) else []

    found = wait_for(all_running, timeout=60) or again.list_replicas(swarm_deployment)
    assert [(s.revision, s.replica, s.status) for s in found] == [
        (1, 0, ReplicaStatus.RUNNING), (1, 1, ReplicaStatus.RUNNING)]
    assert "ready" in again.logs(found[0].id, tail=50).lower() or again.logs(found[0].id)
    assert again.stats(found[0].id)["memory_bytes"] > 0

    # docker kill the task's container: Swarm starts a new task of the same service, on the
    # same port; the runtime reports the replica as coming back, never as lost.
    victim = task_container(swarm, states[0].id)
    victim.kill()
    seen = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = runtime.get_replica(states[0].id)
        seen.append(state.status)
        assert state.alive, (state.status, state.message, [
            (t["DesiredState"], t["Status"]["State"], t["Status"].get("Err"))
            for t in swarm.api.tasks(filters={"service": service.id})])
        current = task_container(swarm, states[0].id)
        if state.status is ReplicaStatus.RUNNING and current is not None \
                and current.id != victim.id:
            break
        time.sleep(0.3)
    assert state.status is ReplicaStatus.RUNNING and state.restart_count >= 1, seen
    assert swarm.services.get(states[0].id).id == service.id  # the same service
    assert wait_ready(state.url, timeout=240) and predict(state.url) == [0, 2]

    # Stop scales to 0 (the service stays, EXITED); remove forgets it.
    runtime.stop_replica(states[1].id)
    assert wait_for(lambda: runtime.get_replica(states[1].id).status is ReplicaStatus.EXITED)
    runtime.remove_replica(states[1].id)
    runtime.remove_replica(states[0].id)
    assert runtime.get_replica(states[0].id).status is ReplicaStatus.MISSING
    assert runtime.list_replicas(swarm_deployment) == []
    runtime.remove_replica("mp-not-there-r1-0")  # unknown ids are ignored


def test_a_crashing_task_is_retried_by_swarm_then_reported_dead(
        swarm_runtime: Any, swarm_deployment: str, serving_image: str,
        tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"  # the bind mount fails: every task is rejected
    state = swarm_runtime.start_replica(spec_for(swarm_deployment, serving_image, missing))
    final = wait_for(lambda: (s := swarm_runtime.get_replica(state.id)).status
                     is ReplicaStatus.DEAD and s, timeout=120)
    assert final, swarm_runtime.get_replica(state.id)
    assert final.restart_count > swarm_runtime.restart_attempts
    assert "no-such-model" in final.message or "not exist" in final.message
    # Starting it again replaces the dead service.
    again = swarm_runtime.start_replica(spec_for(swarm_deployment, serving_image, missing))
    assert again.id == state.id and again.status is ReplicaStatus.STARTING


def test_overlay_mode_joins_the_named_network_and_listens_on_8080(swarm_runtime: Any) -> None:
    """The spec only: overlay networks carry traffic on private addresses, which tests here
    never send to."""
    from workers.runtimes.base import ReplicaSpec
    from workers.runtimes.swarm import SwarmRuntime

    overlay = SwarmRuntime(swarm_runtime.client, network="overlay", overlay_network="models")
    spec = ReplicaSpec(deployment="fraud", revision=3, replica=1, image="img:1",
                       model_dir="/srv/models/x", cpu=2, memory_mb=2048,
                       gpu_device_ids=["0", "1"])
    kwargs = overlay.service_spec(spec, None)
    template = kwargs["task_template"]
    container = template["ContainerSpec"]
    assert template["Networks"] == [{"Target": "models"}]
    assert "MODELPORT_PORT=8080" in container["Env"] and "MODELPORT_HOST=0.0.0.0" in \
        container["Env"]
    assert container["Hostname"] == "mp-fraud-r3-1"
    assert kwargs["update_config"]["Order"] == "start-first"
    assert kwargs["endpoint_spec"]["Mode"] == "dnsrr"  # no IPVS needed, one task anyway
    assert template["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]
    # Swarm picks the devices (and the NVIDIA runtime names them): only the count is ours.
    assert {"CUDA_VISIBLE_DEVICES=0,1", "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            "MODELPORT_DEVICE=auto"} <= set(container["Env"])
    assert not any(e.startswith("NVIDIA_VISIBLE_DEVICES=") for e in container["Env"])
    plain = overlay.service_spec(ReplicaSpec(deployment="fraud", revision=3, replica=1,
                                             image="img:1"), None)
    assert "NVIDIA_VISIBLE_DEVICES=void" in plain["task_template"]["ContainerSpec"]["Env"]
    assert "modelport.port" not in kwargs["labels"]
    with pytest.raises(ValueError, match="overlay network"):
        SwarmRuntime(swarm_runtime.client, network="overlay")


def test_overlay_replicas_granted_egress_also_join_the_egress_network(swarm_runtime: Any) -> None:
    """The spec only (no service is created)."""
    from workers.runtimes.swarm import SwarmRuntime

    overlay = SwarmRuntime(swarm_runtime.client, network="overlay", overlay_network="models",
                           egress_network="outbound")
    fenced = ReplicaSpec(deployment="fraud", revision=3, replica=0, image="img:1",
                         env={"MODELPORT_REPLICA_KEY": REPLICA_KEY})
    granted = ReplicaSpec(deployment="fraud", revision=4, replica=0, image="img:1",
                          egress=True)
    assert overlay.service_spec(fenced, None)["task_template"]["Networks"] == [
        {"Target": "models"}]
    assert f"MODELPORT_REPLICA_KEY={REPLICA_KEY}" in \
        overlay.service_spec(fenced, None)["task_template"]["ContainerSpec"]["Env"]
    assert overlay.service_spec(granted, None)["task_template"]["Networks"] == [
        {"Target": "models"}, {"Target": "outbound"}]
    # Host mode: the node's network, egress or not (it reaches what the node reaches anyway).
    assert swarm_runtime.service_spec(granted, 22001)["task_template"]["Networks"] == [
        {"Target": "host"}]
    with pytest.raises(ValueError, match="overlay mode"):
        SwarmRuntime(swarm_runtime.client, network="host", egress_network="outbound")
    with pytest.raises(ValueError, match="differ"):
        SwarmRuntime(swarm_runtime.client, network="overlay", overlay_network="models",
                     egress_network="models")


@pytest.fixture
def overlay_networks(swarm: Any, deployment_name: str) -> Any:  # noqa: F811
    """An internal and an ordinary overlay network, on subnets from 198.19.0.0/16 (RFC 2544
    benchmarking): created in the swarm's store only — no service joins them, so no container,
    interface or packet exists on them."""
    from docker.types import IPAMConfig, IPAMPool

    third = int(deployment_name[2:], 16) % 50 + 100
    made = []
    try:
        for suffix, internal, octet in (("int", True, third), ("ext", False, third + 50)):
            made.append(swarm.networks.create(
                f"{deployment_name}-{suffix}", driver="overlay", internal=internal,
                attachable=True, labels={TEST_LABEL: "1"},
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=f"198.19.{octet}.0/24")])))
        yield tuple(n.name for n in made)
    finally:
        for network in made:
            with contextlib.suppress(Exception):
                network.remove()


def test_target_health_says_how_far_replicas_reach_in_each_network_mode(
        swarm: Any, overlay_networks: tuple[str, str]) -> None:  # noqa: F811
    from workers.runtimes.swarm import SwarmRuntime

    internal, ordinary = overlay_networks
    assert swarm.api.inspect_network(internal)["Internal"] is True

    def warnings(**kwargs: Any) -> list[str]:
        health = SwarmRuntime(swarm, network="overlay", **kwargs).describe()
        assert health.reachable and health.nodes, health.message
        return health.warnings

    assert warnings(overlay_network=internal) == []  # the recommended set-up
    assert warnings(overlay_network=internal, egress_network=ordinary) == []
    (leaky,) = warnings(overlay_network=ordinary)
    assert "is not internal" in leaky and "outside world" in leaky
    assert [w.split(":")[0] for w in warnings(overlay_network=ordinary,
                                              egress_network=internal)] == [
        f"The overlay network {ordinary!r} is not internal",
        f"The egress network {internal!r} is internal"]
    (missing,) = warnings(overlay_network=f"{internal}-missing")
    assert "does not exist" in missing and "--internal" in missing
    (host,) = SwarmRuntime(swarm, network="host").describe().warnings
    assert SHARES_NODE in host and "replica key" in host


def test_egress_on_an_internal_overlay_without_an_egress_network_is_refused(
        swarm: Any, overlay_networks: tuple[str, str], deployment_name: str) -> None:  # noqa: F811
    from workers.runtimes.swarm import SwarmRuntime

    internal, ordinary = overlay_networks
    granted = ReplicaSpec(deployment=deployment_name, revision=1, replica=0, image="img:1",
                          egress=True, labels={TEST_LABEL: "1"})
    runtime = SwarmRuntime(swarm, network="overlay", overlay_network=internal)
    with pytest.raises(ReplicaRuntimeError, match=r"granted egress.*egress_network"):
        runtime.start_replica(granted)
    assert swarm.services.list(filters={"label": f"modelport.deployment={deployment_name}"}) \
        == []
    # An overlay that leads out already needs no egress network (its health warns instead).
    SwarmRuntime(swarm, network="overlay",
                 overlay_network=ordinary)._check_egress_without_network(granted)


def test_node_addresses_come_from_one_listing_and_a_managers_wildcard_falls_back() -> None:
    """No engine: ``NodeAddresses`` over a stand-in API counting its ``nodes()`` calls."""
    from workers.runtimes.swarm_nodes import NodeAddresses, node_address

    class Api:
        calls = 0
        listing = [{"ID": "w1", "Status": {"Addr": "198.51.100.3"}},
                   {"ID": "m1", "Status": {"Addr": "0.0.0.0"},
                    "ManagerStatus": {"Addr": "198.51.100.2:2377"}}]

        def nodes(self) -> list[dict[str, Any]]:
            self.calls += 1
            return self.listing

    class Client:
        api = Api()

    nodes = NodeAddresses(Client(), ttl=60)
    assert nodes.address("w1") == "198.51.100.3"
    assert nodes.address("m1") == "198.51.100.2"  # advertised nothing: the manager address
    assert nodes.address("") == "" and Client.api.calls == 1  # cached
    Client.api.listing = [*Client.api.listing, {"ID": "w2", "Status": {"Addr": "198.51.100.4"}}]
    assert nodes.address("w2") == "198.51.100.4" and Client.api.calls == 2  # a new node: re-read
    assert nodes.address("gone") == "" and node_address({"Status": {}}) == ""
    from workers.runtimes.swarm import SwarmRuntime

    with pytest.raises(ValueError, match="bind_host"):
        SwarmRuntime(Client(), bind_host="198.51.100.3")
