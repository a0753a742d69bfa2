"""Issue 24, finding 3, on the real Docker Engine: a deployed model's code reaches nothing it
was not granted, and only the platform reaches the model.

The hostile model is an MLflow "model from code" whose ``predict`` tries, for each row, to open
a connection to a target and answers what happened. The would-be victims are real: a TCP
listener on the host's loopback (where the portal, MLflow and older replicas listen), another
replica's socket file, the Docker socket, a documentation-range address (198.51.100.1, routed
nowhere: with no network the attempt fails inside the container and no packet leaves) and a DNS
name. The platform's side is played by stand-ins: an ingest endpoint on a unix socket (what the
edge serves) that records the prediction-log batches the replica ships.
"""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from serving.sockets import request, split_unix_url
from tests.deployments.conftest import UnixHTTPServer
from tests.workers.conftest import TEST_LABEL, remove_test_containers
from workers.runtimes.base import ReplicaSpec, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

HOSTILE_SOURCE = textwrap.dedent(
    """
    import socket

    import mlflow.pyfunc
    from mlflow.models import set_model


    def attempt(target):
        kind, _, where = target.partition(":")
        try:
            if kind == "tcp":
                host, _, port = where.rpartition(":")
                socket.create_connection((host, int(port)), timeout=3).close()
            elif kind == "unix":
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(3)
                sock.connect(where)
                sock.close()
            elif kind == "dns":
                socket.getaddrinfo(where, 443)
            return "reached"
        except OSError as exc:
            return f"failed: {type(exc).__name__}"


    class Reach(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [attempt(t) for t in model_input["target"]]


    set_model(Reach())
    """
)


@pytest.fixture(scope="module")
def hostile_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    from registry.sandbox import platform_requirements

    root = tmp_path_factory.mktemp("hostile")
    code = root / "reach.py"
    code.write_text(HOSTILE_SOURCE)
    example = pd.DataFrame({"target": ["tcp:127.0.0.1:1"]})
    mlflow.pyfunc.save_model(root / "model", python_model=str(code),
                             signature=infer_signature(example, ["failed: x"]),
                             pip_requirements=platform_requirements())
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root / "model"


class Victim:
    """A TCP listener on the host's loopback that counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()

    def connected(self, at_least: int = 1, within_s: float = 10.0) -> int:
        """Connections counted so far, waiting a little for the accept thread: the client's
        connect() returns before this side's accept() has run."""
        deadline = time.monotonic() + within_s
        while self.connections < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connections

    def close(self) -> None:
        self.sock.close()


class IngestStandIn(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.batches.append((self.path, self.headers.get("Authorization"),
                                    json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "replica"


@pytest.fixture
def platform(tmp_path: Path, docker_client: Any, base_image: str) -> Any:
    """A Docker runtime as ``make run`` configures it, and the edge's ingest socket."""
    from workers.runtimes.docker import DockerRuntime

    run = tmp_path / "data" / "run"
    (run / "ingest").mkdir(parents=True)
    run.chmod(0o700)
    (run / "ingest").chmod(0o755)
    ingest = UnixHTTPServer(str(run / "ingest" / "ingest.sock"), IngestStandIn)
    ingest.batches = []
    threading.Thread(target=ingest.serve_forever, daemon=True).start()
    runtime = DockerRuntime(docker_client, base_image=base_image,
                            state_dir=tmp_path / "runtime", socket_dir=run / "replicas",
                            ingest_socket=run / "ingest" / "ingest.sock",
                            extra_labels={TEST_LABEL: "1"})
    runtime.ingest = ingest
    yield runtime
    ingest.shutdown()
    ingest.server_close()


def _spec(deployment: str, image: str, model_dir: Path, **kw: Any) -> ReplicaSpec:
    spec = ReplicaSpec(deployment=deployment, revision=1, replica=0, image=image,
                       model_dir=str(model_dir), model_name="reach", model_version="1",
                       cpu=1.0, memory_mb=768, labels={TEST_LABEL: "1"}, **kw)
    spec.env.update({"MODELPORT_INGEST_URL": "http://127.0.0.1:8000/api/v1/ingest/predictions/",
                     "MODELPORT_INGEST_TOKEN": "mpi_test_token",
                     "MODELPORT_SHIP_INTERVAL_S": "0.2"})
    return spec


def _reach(url: str, targets: list[str]) -> list[str]:
    body = json.dumps({"dataframe_split": {"columns": ["target"],
                                           "data": [[t] for t in targets]}}).encode()
    status, answer = request(url + "/invocations", "POST", body,
                             {"Content-Type": "application/json"}, timeout=60)
    assert status == 200, answer
    return json.loads(answer)["predictions"]


def test_a_model_without_network_reaches_nothing_and_ships_its_log_over_the_socket(
        platform: Any, docker_client: Any, serving_image: str, hostile_model_dir: Path,
        iris_model_dir: Path, deployment_name: str) -> None:
    victim = Victim()
    try:
        neighbour = platform.start_replica(ReplicaSpec(
            deployment=f"{deployment_name}-other", revision=1, replica=0, image=serving_image,
            model_dir=str(iris_model_dir), labels={TEST_LABEL: "1"}))
        state = platform.start_replica(_spec(deployment_name, serving_image, hostile_model_dir))
        for replica in (neighbour, state):
            assert wait_ready(replica.url, timeout=180,
                              alive=lambda r=replica: platform.get_replica(r.id).alive), \
                platform.logs(replica.id, 50)
        assert state.url.startswith("http+unix://") and state.port is None
        neighbour_socket, _ = split_unix_url(neighbour.url)

        outcomes = _reach(state.url, [
            f"tcp:127.0.0.1:{victim.port}",  # the host's loopback services
            f"unix:{neighbour_socket}",  # another team's replica
            "unix:/var/run/docker.sock", "unix:/run/docker.sock",
            "tcp:198.51.100.1:80",  # the outside world (documentation range)
            "dns:example.com",
        ])
        assert all(o.startswith("failed") for o in outcomes), outcomes
        assert victim.connections == 0

        container = docker_client.containers.get(state.id)
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert set(mounts) == {"/model", "/run/modelport", "/run/modelport-ingest"}
        assert mounts["/model"]["RW"] is False and mounts["/run/modelport-ingest"]["RW"] is False
        assert mounts["/run/modelport"]["Source"] == str(Path(split_unix_url(state.url)[0])
                                                          .parent)
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["MODELPORT_PORT"] == "" and env["MODELPORT_UNIX_SOCKET"] == \
            "/run/modelport/serve.sock"
        # Docker's own health check probes the socket from inside.
        deadline = time.monotonic() + 60
        while platform.get_replica(state.id).health != "healthy" and time.monotonic() < deadline:
            time.sleep(1)
        assert platform.get_replica(state.id).health == "healthy"

        # The prediction log went to the platform's ingest socket, token and all.
        deadline = time.monotonic() + 30
        while not platform.ingest.batches and time.monotonic() < deadline:
            time.sleep(0.2)
        path, authorization, batch = platform.ingest.batches[0]
        assert path == "/api/v1/ingest/predictions/"
        assert authorization == "Bearer mpi_test_token"
        assert batch["deployment"] == deployment_name and len(batch["records"]) == 1

        platform.remove_replica(state.id)
        assert not Path(split_unix_url(state.url)[0]).parent.exists()
    finally:
        victim.close()
        # The neighbour is another deployment's: the fixture removes only this one's.
        remove_test_containers(docker_client, f"modelport.deployment={deployment_name}-other")


def test_egress_granted_by_an_admin_reaches_out_but_still_serves_only_on_its_socket(
        platform: Any, docker_client: Any, serving_image: str, hostile_model_dir: Path,
        deployment_name: str) -> None:
    """On this engine (no bridge network) egress means the host's network: the loopback
    listener stands for "the outside world" the admin allowed."""
    victim = Victim()
    try:
        state = platform.start_replica(_spec(deployment_name, serving_image, hostile_model_dir,
                                             egress=True))
        assert wait_ready(state.url, timeout=180,
                          alive=lambda: platform.get_replica(state.id).alive), \
            platform.logs(state.id, 50)
        assert _reach(state.url, [f"tcp:127.0.0.1:{victim.port}"]) == ["reached"]
        assert victim.connected(1) == 1
        container = docker_client.containers.get(state.id)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["MODELPORT_PORT"] == ""  # no TCP listener on the host's network
        platform.remove_replica(state.id)
    finally:
        victim.close()
