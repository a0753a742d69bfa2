"""Fixtures for deployments: a ready iris version with a stored artifact, made directly (no
validation sandbox), whose requirements are the platform's own — so every Docker test shares
the one serving image that already exists on the machine."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from registry.models import ModelVersion, RegisteredModel, VersionStatus
from serving.sockets import bind_unix, unix_url
from teams.roles import Role
from tests.deployments.keys_fixtures import churn, foreign, search  # noqa: F401 - fixtures
from tests.factories import MembershipFactory, TeamFactory, UserFactory

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory) -> Path:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from registry.sandbox import platform_requirements

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    model = LogisticRegression(max_iter=300).fit(frame, data.target)
    target = tmp_path_factory.mktemp("deploy-iris") / "iris"
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    mlflow.sklearn.save_model(
        model, str(target), signature=infer_signature(example, model.predict(example)),
        input_example=example, pip_requirements=platform_requirements(),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    return target


def make_version(model: RegisteredModel, number: int, model_dir: Path,
                 status: str = VersionStatus.READY) -> ModelVersion:
    from registry import storage
    from registry.sandbox import platform_requirements

    stored = storage.store_model_dir(model_dir)
    return ModelVersion.objects.create(
        model=model, version=number, status=status, source_format="mlflow", flavor="sklearn",
        requirements=platform_requirements(), artifact_name=stored.name,
        artifact_sha256=stored.sha256, artifact_size=stored.size,
        input_example={"dataframe_split": {"columns": COLUMNS, "data": ROWS}})


@pytest.fixture
def other_team(db):
    return TeamFactory(slug="other-team")


@pytest.fixture
def stranger(other_team):
    user = UserFactory(username="stan")
    MembershipFactory(team=other_team, user=user, role=Role.MAINTAINER)
    return user


@pytest.fixture
def iris_model(team, engineer):
    return RegisteredModel.objects.create(name="iris", team=team, created_by=engineer)


@pytest.fixture
def v1(iris_model, iris_dir):
    return make_version(iris_model, 1, iris_dir)


@pytest.fixture
def v2(iris_model, iris_dir):
    return make_version(iris_model, 2, iris_dir)


@pytest.fixture
def no_enqueue(monkeypatch):
    """Record reconcile requests instead of running them (tests drive the reconciler)."""
    calls: list[int] = []
    monkeypatch.setattr("deployments.passes.enqueue_reconcile", calls.append)
    return calls


def key_of(deployment, revision: int) -> str:
    """The replica key of a deployment's revision (what its replicas demand)."""
    from deployments.models import Revision

    return Revision.objects.get(deployment=deployment, number=revision).replica_key


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_containers(client, names: list[str]) -> None:
    for name in names:
        for c in client.containers.list(all=True,
                                        filters={"label": f"modelport.deployment={name}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True, v=True)


@pytest.fixture
def docker_env(docker_client, settings, no_enqueue):
    """The Docker runtime as ``make run`` has it: replicas without a network, reached over
    their socket files under the test's data dir. Yields a list the test appends its
    deployment names to, whose containers are removed afterwards."""
    from gateway import routes

    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DOCKER_NETWORK = "none"
    settings.MODELPORT_PORT_RANGE = (21500, 21999)
    settings.MODELPORT_DRAIN_SECONDS = 1.5
    settings.MODELPORT_READY_TIMEOUT_S = 120
    routes.invalidate()
    names: list[str] = []
    yield names
    remove_containers(docker_client, names)
    routes.invalidate()


# --- stand-in replicas for the gateway and edge tests -------------------------------------


class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        answer = json.dumps({"predictions": [self.server.tag], "echo": body.decode(),
                             "content_type": self.headers.get("Content-Type"),
                             "request_id": self.headers.get("X-Request-ID"),
                             "replica_key": self.headers.get("X-Modelport-Replica-Key")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass

    def address_string(self):  # a unix socket peer has no host/port
        return "replica"


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handler) -> None:
        super().__init__(path, handler, bind_and_activate=False)
        self.socket.close()
        self.socket = bind_unix(path)
        self.server_address = path
        self.server_activate()

    def get_request(self):
        request, _ = self.socket.accept()
        return request, ("replica", 0)


@pytest.fixture
def upstreams(tmp_path_factory):
    """``make(tag)``: a stand-in replica answering ``{"predictions": [tag]}`` (and echoing what
    it got) — on its own unix socket file, like a replica without a network (``unix=True``,
    the default), or on 127.0.0.1 over TCP, like a replica on a network."""
    servers = []

    def make(tag: str, *, unix: bool = True) -> str:
        if unix:
            path = str(tmp_path_factory.mktemp("replica") / "serve.sock")
            serve(UnixHTTPServer(path, Echo), tag)
            return unix_url(path)
        server = serve(ThreadingHTTPServer(("127.0.0.1", 0), Echo), tag)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def serve(server: socketserver.BaseServer, tag: str) -> socketserver.BaseServer:
        server.tag = tag
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
