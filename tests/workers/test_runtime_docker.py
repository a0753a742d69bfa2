"""End-to-end on the real Docker Engine: hardened replicas of a tiny MLflow sklearn model."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError

from serving.sockets import request, split_unix_url
from workers.runtimes.base import ReplicaSpec, ReplicaStatus, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]

TEST_LABEL = "modelport.test"
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                "petal width (cm)"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def predict(url: str, rows: list[list[float]] = ROWS) -> list[Any]:
    """Over the replica's socket file (http+unix://) or its TCP port (http://)."""
    body = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}).encode()
    status, answer = request(url + "/invocations", "POST", body,
                             {"Content-Type": "application/json"}, timeout=10)
    assert status == 200, answer
    return json.loads(answer)["predictions"]


def spec_for(deployment: str, image: str, model_dir: Path | None, replica: int = 0,
             **kw: Any) -> ReplicaSpec:
    return ReplicaSpec(deployment=deployment, revision=1, replica=replica, image=image,
                       model_dir=str(model_dir) if model_dir else None, model_name="iris",
                       model_version="1", cpu=kw.pop("cpu", 1.0),
                       memory_mb=kw.pop("memory_mb", 768), pids_limit=kw.pop("pids_limit", 128),
                       labels={TEST_LABEL: "1"}, **kw)


def assert_hardened(container: Any, cpu: float, memory_mb: int, pids: int) -> None:
    attrs = container.attrs
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Tmpfs"] == {"/tmp": "size=64m"}
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["NanoCpus"] == int(cpu * 1e9)
    assert host["Memory"] == memory_mb * 1024 * 1024
    assert host["PidsLimit"] == pids
    assert host["Privileged"] is False
    assert not host.get("DeviceRequests")
    for mount in attrs["Mounts"]:
        assert "docker.sock" not in mount.get("Source", "")
        assert "docker.sock" not in mount.get("Destination", "")
    binds = [m for m in attrs["Mounts"] if m.get("Destination") == "/model"]
    assert all(m["RW"] is False for m in binds)
    assert container.labels["modelport.managed"] == "1"


def test_hardened_replicas_serve_and_are_rediscovered(
        docker_runtime: Any, docker_client: Any, serving_image: str, iris_model_dir: Path,
        deployment_name: str) -> None:
    rt = docker_runtime
    assert rt.ping() and rt.sandboxed
    states = [rt.start_replica(spec_for(deployment_name, serving_image, iris_model_dir, i))
              for i in range(2)]
    sockets = [split_unix_url(s.url)[0] for s in states]
    assert len(set(sockets)) == 2, "two replicas must never share a socket"
    assert all(s.port is None for s in states)  # no network, no port

    for state in states:
        def alive(sid: str = state.id) -> bool:
            return rt.get_replica(sid).alive

        assert wait_ready(state.url, timeout=120, alive=alive), rt.logs(state.id, 50)
        assert predict(state.url) == [0, 2]

    # Idempotent start: the running replica is returned, not a second container.
    again = rt.start_replica(spec_for(deployment_name, serving_image, iris_model_dir, 0))
    assert again.id == states[0].id and again.url == states[0].url

    listed = rt.list_replicas(deployment_name)
    assert [s.replica for s in listed] == [0, 1]
    # RUNNING, or STARTING until Docker's healthcheck (GET /ready every 5 s) first passes.
    assert all(s.alive and s.url and s.started_at for s in listed)
    assert wait_for(lambda: all(s.status == ReplicaStatus.RUNNING and s.health == "healthy"
                                for s in rt.list_replicas(deployment_name)), timeout=30)

    container = docker_client.containers.get(states[0].id)
    assert_hardened(container, cpu=1.0, memory_mb=768, pids=128)
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["MODELPORT_PORT"] == "" and env["MODELPORT_HOST"] == ""
    assert env["MODELPORT_UNIX_SOCKET"] == "/run/modelport/serve.sock"

    stats = rt.stats(states[0].id)
    assert stats["memory_bytes"] > 10 * 1024 * 1024
    assert "cpu_percent" in stats

    # Kill one: it is reported exited/dead (a manual kill is not restarted), never lost.
    container.kill()
    killed = wait_for(lambda: next(s for s in rt.list_replicas(deployment_name)
                                   if s.id == states[0].id).status in (
        ReplicaStatus.EXITED, ReplicaStatus.DEAD))
    assert killed
    gone = rt.get_replica(states[0].id)
    assert gone.status in (ReplicaStatus.EXITED, ReplicaStatus.DEAD)
    assert gone.exit_code == 137
    assert rt.get_replica(states[1].id).status == ReplicaStatus.RUNNING
    assert predict(states[1].url) == [0, 2]

    # Starting a replica whose container exited replaces it.
    restarted = rt.start_replica(spec_for(deployment_name, serving_image, iris_model_dir, 0))
    assert restarted.alive

    for state in states:
        rt.stop_replica(state.id, timeout=5)
        rt.remove_replica(state.id)
    assert rt.list_replicas(deployment_name) == []
    assert rt.get_replica(states[0].id).status == ReplicaStatus.MISSING
    rt.remove_replica(states[0].id)  # unknown ids are ignored


def test_crashing_replica_is_restarted_then_reported(
        docker_runtime: Any, serving_image: str, iris_model_dir: Path,
        deployment_name: str) -> None:
    """A server that exits non-zero at once: on-failure restarts it (at most 3 times), then
    the replica is reported `exited` with its exit code and its logs stay readable."""
    spec = spec_for(deployment_name, serving_image, iris_model_dir,
                    env={"MODELPORT_WORKERS": "not-a-number"})
    state = docker_runtime.start_replica(spec)
    final = wait_for(lambda: docker_runtime.get_replica(state.id).status == ReplicaStatus.EXITED,
                     timeout=90, interval=0.5)
    assert final, docker_runtime.get_replica(state.id)
    st = docker_runtime.get_replica(state.id)
    assert st.exit_code not in (None, 0)
    assert st.restart_count == 3
    assert docker_runtime.logs(state.id, tail=20)


def test_baked_model_image_serves_without_a_mount(
        docker_runtime: Any, docker_client: Any, image_builder: Any, serving_image: str,
        iris_model_dir: Path, deployment_name: str) -> None:
    tag = f"modelport/model-test:{deployment_name}"
    lines: list[str] = []
    image_builder.bake_model(serving_image, iris_model_dir, tag, lines.append)
    try:
        spec = spec_for(deployment_name, tag, None)
        state = docker_runtime.start_replica(spec)
        assert wait_ready(state.url, timeout=120,
                          alive=lambda: docker_runtime.get_replica(state.id).alive)
        assert predict(state.url, ROWS[:1]) == [0]
        container = docker_client.containers.get(state.id)
        # No model mount: only the replica's own socket directory.
        assert [m["Destination"] for m in container.attrs["Mounts"]] == ["/run/modelport"]
        assert_hardened(container, cpu=1.0, memory_mb=768, pids=128)
        docker_runtime.remove_replica(state.id)
    finally:
        docker_client.images.remove(tag, force=True)


def test_gpu_request_only_when_ids_given(docker_runtime: Any, deployment_name: str,
                                         monkeypatch: Any) -> None:
    """device_requests and the GPU environment follow the allocated ids (checked on the call:
    there is no GPU on this machine)."""
    calls: list[dict[str, Any]] = []

    def fake_run(self: Any, image: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise RuntimeError("stop here")

    from docker.models.containers import ContainerCollection

    monkeypatch.setattr(ContainerCollection, "run", fake_run)
    for ids in ([], ["0", "GPU-abc"]):
        spec = spec_for(deployment_name, "modelport/serving:unused", None, gpu_device_ids=ids)
        with pytest.raises(RuntimeError):
            docker_runtime.start_replica(spec)
    assert "device_requests" not in calls[0]
    (req,) = calls[1]["device_requests"]
    assert req["DeviceIDs"] == ["0", "GPU-abc"] and req["Capabilities"] == [["gpu"]]
    # The framework's view: no GPU at all without a grant; with one, the granted devices
    # (numbered 0..n-1 inside the container, as the NVIDIA toolkit mounts them) and the device
    # setting the serving code reads (MODELPORT_DEVICE).
    none, two = calls[0]["environment"], calls[1]["environment"]
    assert (none["NVIDIA_VISIBLE_DEVICES"], none["CUDA_VISIBLE_DEVICES"],
            none["MODELPORT_DEVICE"]) == ("void", "", "cpu")
    assert (two["NVIDIA_VISIBLE_DEVICES"], two["CUDA_VISIBLE_DEVICES"],
            two["NVIDIA_DRIVER_CAPABILITIES"], two["MODELPORT_DEVICE"]) == (
        "0,GPU-abc", "0,1", "compute,utility", "auto")


def test_named_network_mode_uses_container_name_and_fixed_port(
        docker_client: Any, deployment_name: str, monkeypatch: Any, tmp_path: Path) -> None:
    """Compose/production: replicas join a named network, bind 0.0.0.0:8080 in their own
    namespace, publish nothing, and are reached by container name (checked on the call: this
    test process is not on that network; the next test runs one for real)."""
    from docker.models.containers import ContainerCollection

    from workers.runtimes.docker import DockerRuntime

    calls: list[dict[str, Any]] = []

    def fake_run(self: Any, image: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ContainerCollection, "run", fake_run)
    rt = DockerRuntime(docker_client, network="modelport", state_dir=tmp_path)
    with pytest.raises(RuntimeError):
        rt.start_replica(spec_for(deployment_name, "modelport/serving:unused", None))
    (kwargs,) = calls
    assert kwargs["network"] == "modelport" and "network_mode" not in kwargs
    assert "ports" not in kwargs
    assert kwargs["environment"]["MODELPORT_HOST"] == "0.0.0.0"
    assert kwargs["environment"]["MODELPORT_PORT"] == "8080"
    assert "modelport.port" not in kwargs["labels"]
    assert kwargs["user"] == "10001:10001" and kwargs["read_only"] is True


def removed(network: Any) -> bool:
    try:
        network.remove()
    except APIError as exc:  # still has an endpoint while its container is being removed
        return getattr(exc, "status_code", None) == 404
    return True


def test_bridge_network_replica_is_reached_through_a_port_published_on_loopback(
        docker_client: Any, serving_image: str, iris_model_dir: Path, deployment_name: str,
        tmp_path: Path) -> None:
    """A replica on a bridge network this test creates, hardened as always, published on
    127.0.0.1 only. All test traffic goes to 127.0.0.1 (Docker's proxy forwards it); the
    network's subnet is taken from 198.18.0.0/15 (RFC 2544, benchmarking), away from the
    10/8, 172.16/12 and 192.168/16 ranges this machine must not be sent traffic on."""
    from docker.types import IPAMConfig, IPAMPool

    from workers.runtimes.docker import DockerRuntime
    from workers.runtimes.docker_spec import CONTAINER_PORT

    subnet = f"198.18.{int(deployment_name[2:], 16) % 250 + 1}.0/24"
    network = docker_client.networks.create(
        f"{deployment_name}-net", driver="bridge", labels={TEST_LABEL: "1"},
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]))
    try:
        rt = DockerRuntime(docker_client, network=network.name, publish_host="127.0.0.1",
                           port_range=(21450, 21499), state_dir=tmp_path / "runtime",
                           extra_labels={TEST_LABEL: "1"})
        state = rt.start_replica(spec_for(deployment_name, serving_image, iris_model_dir))
        assert state.port is not None and 21450 <= state.port <= 21499
        assert state.url == f"http://127.0.0.1:{state.port}"
        assert wait_ready(state.url, timeout=180, alive=lambda: rt.get_replica(state.id).alive)
        assert predict(state.url, ROWS) == [0, 2]

        container = docker_client.containers.get(state.id)
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [network.name]
        assert container.attrs["HostConfig"]["NetworkMode"] == network.name
        assert container.attrs["HostConfig"]["PortBindings"] == {
            f"{CONTAINER_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(state.port)}]}
        assert_hardened(container, cpu=1.0, memory_mb=768, pids=128)
        # The healthcheck probes the container's own port 8080, not the published one.
        assert wait_for(lambda: rt.get_replica(state.id).health == "healthy", timeout=120)
        assert rt.list_replicas(deployment_name)[0].url == state.url  # rediscovered by labels

        rt.remove_replica(state.id)
        assert rt.get_replica(state.id).status is ReplicaStatus.MISSING
    finally:
        for c in docker_client.api.containers(
                all=True, filters={"label": f"modelport.deployment={deployment_name}"}):
            with contextlib.suppress(APIError):  # already gone or being removed
                docker_client.api.remove_container(c["Id"], force=True, v=True)
        wait_for(lambda: removed(network))


def test_host_paths_are_translated_for_the_daemon(docker_client: Any, tmp_path: Path) -> None:
    from workers.runtimes.docker import DockerRuntime

    rt = DockerRuntime(docker_client, host_path_map={str(tmp_path): "/srv/modelport/data"},
                       state_dir=tmp_path)
    assert rt._host_path(str(tmp_path / "models" / "m1")) == "/srv/modelport/data/models/m1"
    assert rt._host_path("/elsewhere/m") == "/elsewhere/m"


def test_target_health_warns_when_replicas_share_a_network(docker_client: Any,
                                                           tmp_path: Path) -> None:
    from workers.runtimes.docker import DockerRuntime

    isolated = DockerRuntime(docker_client, state_dir=tmp_path).describe()
    assert isolated.reachable and isolated.warnings == []
    for network in ("host", "modelport"):
        health = DockerRuntime(docker_client, network=network, state_dir=tmp_path).describe()
        (warning,) = health.warnings
        assert "their code reaches what is on it" in warning
        assert "MODELPORT_DOCKER_NETWORK=none" in warning
