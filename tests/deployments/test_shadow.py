"""Shadow strategy: a new revision receives a mirrored share of requests while the serving
revision keeps answering every caller; its errors, latency and prediction agreement are recorded;
promote rolls it out for real, discard removes it.

Validation and the gateway's mirroring run against stand-in replicas (tiny HTTP servers on
127.0.0.1); the end-to-end test runs real replicas on the Docker Engine."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from deployments.models import Deployment, Replica, Revision, ShadowSample
from deployments.reconcile import reconcile_deployment
from gateway import routes, shadowing
from tests.deployments.conftest import (
    COLUMNS,
    ROWS,
    key_of,
    make_version,
    remove_containers,
    unique_name,
)
from tests.deployments.test_docker import containers, converge, deploy, gateway_client, invoke
from tests.fixtures import bearer_client

URL = "/api/v1/deployments/"


# --- validation -------------------------------------------------------------------------------
def body(**extra):
    data = {"name": "iris-shadow", "team": "ml-search", "model": "iris", "version": 1,
            "replicas": 1, "resources": {"cpu": 0.5, "memory_mb": 512}}
    data.update(extra)
    return data


@pytest.mark.parametrize(("strategy", "needle"), [
    ({"type": "shadow", "percent": 0}, "greater than or equal to 1"),
    ({"type": "shadow", "percent": 101}, "less than or equal to 100"),
    ({"type": "shadow", "percent": "lots"}, "valid integer"),
    ({"type": "shadow", "tolerance": -1}, "tolerance"),
    ({"type": "shadow", "steps": [10, 100]}, "only to canary"),
    ({"type": "canary", "percent": 10}, "only to shadow"),
    ({"type": "mirror"}, "valid choice"),
])
def test_bad_shadow_specs_are_400_and_nothing_is_created(engineer, v1, no_enqueue, strategy,
                                                         needle):
    response = bearer_client(engineer).post(URL, body(strategy=strategy), format="json")
    assert response.status_code == 400, response.json()
    assert needle in str(response.json()["strategy"]), response.json()
    assert not Deployment.objects.exists() and no_enqueue == []


def test_shadow_strategy_is_stored_with_defaults(engineer, v1, no_enqueue):
    api = bearer_client(engineer)
    response = api.post(URL, body(strategy={"type": "shadow"}), format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["strategy"] == {"type": "shadow", "percent": 100, "tolerance": 1e-6}
    assert response.json()["shadow"] is None
    response = api.patch(f"{URL}iris-shadow/", {"strategy": {"type": "shadow", "percent": 10,
                                                             "tolerance": 0.5}}, format="json")
    assert response.status_code == 202
    assert response.json()["strategy"] == {"type": "shadow", "percent": 10, "tolerance": 0.5}


def test_promote_and_discard_without_a_shadow_are_409(engineer, viewer, v1, no_enqueue):
    api = bearer_client(engineer)
    api.post(URL, body(), format="json")
    for verb in ("promote", "discard"):
        response = api.post(f"{URL}iris-shadow/{verb}/", {}, format="json")
        assert response.status_code == 409, response.json()
        assert response.json()["code"] == "no_shadow"
        assert "no shadow" in response.json()["detail"]
    assert bearer_client(viewer).post(f"{URL}iris-shadow/promote/").status_code == 403


def test_portal_promote_without_a_shadow_says_why(engineer, v1, no_enqueue):
    bearer_client(engineer).post(URL, body(), format="json")
    page = Client()
    page.force_login(engineer)
    response = page.post("/deployments/iris-shadow/promote/", follow=True)
    assert response.status_code == 200
    assert "has no shadow to promote" in response.content.decode()
    assert Deployment.objects.get(name="iris-shadow").revision == 1


def test_predictions_agree_within_the_tolerance():
    assert shadowing.agree(b'{"predictions": [1, 2]}', b'{"predictions": [1, 2]}', 0)
    assert shadowing.agree(b'{"predictions": [1.0, 2.5]}', b'{"predictions":[1.0000001, 2.5]}',
                           1e-6)
    assert not shadowing.agree(b'{"predictions": [1.0]}', b'{"predictions": [1.1]}', 1e-6)
    assert shadowing.agree(b'{"predictions": [1.0]}', b'{"predictions": [1.1]}', 0.2)
    assert not shadowing.agree(b'{"predictions": ["a"]}', b'{"predictions": ["b"]}', 1)
    assert not shadowing.agree(b'{"predictions": [1, 2]}', b'{"predictions": [1]}', 1)
    assert not shadowing.agree(b'{"predictions": [true]}', b'{"predictions": [1]}', 1)
    assert shadowing.agree(b'{"predictions": [{"p": 0.5}]}', b'{"predictions": [{"p": 0.5}]}', 0)
    assert not shadowing.agree(b'{"predictions": [0]}', b"not json", 1)


# --- the gateway mirrors in the background ----------------------------------------------------
class Answer(BaseHTTPRequestHandler):
    """Answers ``{"predictions": [tag]}``; the shadow one waits for ``release`` first."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(self.headers.get("X-Modelport-Shadow"))
        self.server.keys.append(self.headers.get("X-Modelport-Replica-Key"))
        if self.server.release is not None:
            self.server.release.wait(30)
        answer = json.dumps({"predictions": self.server.tag}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_ins():
    servers = []

    def make(tag, release=None) -> tuple[str, ThreadingHTTPServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        server.tag, server.release, server.seen, server.keys = tag, release, [], []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield make
    for server in servers:
        if server.release is not None:
            server.release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.django_db(transaction=True)
def test_gateway_mirrors_in_the_background_and_records_agreement(team, engineer, v1,
                                                                 stand_ins):
    routes.invalidate()
    d = Deployment.objects.create(name="iris-mirror", team=team, model=v1.model, version=v1,
                                  revision=2, traffic=[{"revision": 1, "percent": 100}],
                                  shadow={"revision": 2, "percent": 100, "tolerance": 0.01},
                                  routing_version=1)
    Revision.objects.create(deployment=d, number=1, model_version=v1, state="active")
    Revision.objects.create(deployment=d, number=2, model_version=v1, state="shadow")
    stable_url, stable = stand_ins([0, 2])
    release = threading.Event()
    shadow_url, shadow = stand_ins([0.001, 1], release)
    Replica.objects.create(deployment=d, runtime_id="s1", revision=1, status="ready", ready=True,
                           url=stable_url)
    Replica.objects.create(deployment=d, runtime_id="s2", revision=2, status="ready", ready=True,
                           url=shadow_url)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_secret(engineer)}")
    try:
        for _ in range(5):
            response = client.post("/serve/iris-mirror/invocations", data="{}",
                                   content_type="application/json")
            # Answered by the serving revision while the shadow is still holding its copy.
            assert response.status_code == 200 and response.json() == {"predictions": [0, 2]}
            assert response["X-Modelport-Revision"] == "1"
        assert not release.is_set() and stable.seen == [None] * 5
    finally:
        release.set()
    assert shadowing.drain()
    assert shadow.seen == ["1"] * 5  # marked as a shadow copy for the replica's own logs
    # Each revision's replicas get their own key: the shadow's copy is not sent the stable's.
    assert stable.keys == [key_of(d, 1)] * 5
    assert shadow.keys == [key_of(d, 2)] * 5
    summary = ShadowSample.objects.summary(d.pk, 2)
    assert summary["requests"] == 5 and summary["errors"] == 0 and summary["compared"] == 5
    assert summary["agreed"] == 0 and summary["agreement"] == 0.0  # 2 vs 1 on the second row
    data = bearer_client(engineer).get(f"{URL}iris-mirror/").json()
    assert data["shadow"]["revision"] == 2 and data["shadow"]["requests"] == 5
    assert data["shadow"]["agreement"] == 0.0 and data["shadow"]["percent"] == 100
    assert data["traffic"] == [{"revision": 1, "percent": 100}]
    routes.invalidate()


def make_secret(user) -> str:
    from tests.factories import make_token

    return make_token(user, name="shadow-gw")[1]


# --- end to end on Docker ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def constant_dir(tmp_path_factory):
    """A model with the same signature that always predicts class 1 (disagrees with iris)."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier

    from registry.sandbox import platform_requirements

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    model = DummyClassifier(strategy="constant", constant=1).fit(frame, data.target)
    target = tmp_path_factory.mktemp("deploy-constant") / "constant"
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    mlflow.sklearn.save_model(
        model, str(target), signature=infer_signature(example, model.predict(example)),
        input_example=example, pip_requirements=platform_requirements(),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    return target


def revisions_running(docker_client, name: str) -> list[str]:
    return sorted(c.labels["modelport.revision"]
                  for c in containers(docker_client, name, all_=True))


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_shadow_mirrors_traffic_then_discard_and_promote(docker_client, docker_env, engineer,
                                                         v1, iris_model, constant_dir):
    make_version(iris_model, 2, constant_dir)
    name = unique_name("shadow")
    docker_env.append(name)
    api = bearer_client(engineer)
    deploy(api, name)
    converge(name)

    # A shadow of v2: it starts next to revision 1, which keeps all traffic.
    response = api.patch(f"{URL}{name}/", {"version": 2, "strategy": {"type": "shadow"}},
                         format="json")
    assert response.status_code == 202 and response.json()["revision"] == 2
    d = Deployment.objects.get(name=name)
    assert reconcile_deployment(d.pk) == "shadowing"
    d.refresh_from_db()
    assert d.status == "healthy", (d.status, d.status_message)
    assert d.traffic == [{"revision": 1, "percent": 100}]
    assert d.shadow == {"revision": 2, "percent": 100, "tolerance": 1e-6}
    assert Revision.objects.get(deployment=d, number=1).state == "active"
    assert Revision.objects.get(deployment=d, number=2).state == "shadow"
    assert revisions_running(docker_client, name) == ["1", "2"]
    assert reconcile_deployment(d.pk) == "shadowing"  # steady: nothing changes
    assert revisions_running(docker_client, name) == ["1", "2"]

    client = gateway_client(engineer)
    for _ in range(10):
        response = invoke(client, name)
        assert response.status_code == 200 and response.json()["predictions"] == [0, 2]
        assert response["X-Modelport-Revision"] == "1"
    assert shadowing.drain()
    shadow = api.get(f"{URL}{name}/").json()["shadow"]
    assert shadow["revision"] == 2 and shadow["requests"] == 10 and shadow["errors"] == 0
    assert shadow["compared"] == 10 and shadow["agreement"] == 0.0  # [1, 1] vs [0, 2]
    assert shadow["p95_ms"] > 0
    page = Client()
    page.force_login(engineer)
    html = page.get(f"/deployments/{name}/").content.decode()
    assert "Shadow: revision 2" in html and "Promote revision 2" in html

    # Discard: back to revision 1's spec (revision 3); the shadow's containers are removed.
    response = api.post(f"{URL}{name}/discard/")
    assert response.status_code == 202, response.json()
    assert response.json()["revision"] == 3 and response.json()["strategy"]["type"] == "rolling"
    converge(name)
    d.refresh_from_db()
    assert d.shadow == {} and d.traffic == [{"revision": 3, "percent": 100}]
    assert revisions_running(docker_client, name) == ["3"]
    assert Revision.objects.get(deployment=d, number=2).state == "superseded"
    ended = d.events.filter(revision=2, message__startswith="Shadow revision 2 ended").first()
    assert ended is not None and "10 mirrored request(s)" in ended.message
    assert api.get(f"{URL}{name}/").json()["shadow"] is None

    # Shadow again, then promote: v2 rolls out for real and takes the traffic.
    api.patch(f"{URL}{name}/", {"version": 2, "strategy": {"type": "shadow", "percent": 50}},
              format="json")
    assert reconcile_deployment(d.pk) == "shadowing"
    assert revisions_running(docker_client, name) == ["3", "4"]
    response = api.post(f"{URL}{name}/promote/", {"strategy": {"type": "blue_green"}},
                        format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["revision"] == 5
    converge(name)
    d.refresh_from_db()
    assert d.traffic == [{"revision": 5, "percent": 100}] and d.shadow == {}
    assert d.strategy == {"type": "blue_green"} and d.version.version == 2
    assert revisions_running(docker_client, name) == ["5"]
    routes.invalidate()
    response = invoke(client, name)
    assert response.status_code == 200 and response.json()["predictions"] == [1, 1]
    remove_containers(docker_client, [name])
