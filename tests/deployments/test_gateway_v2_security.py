"""v2 paths of the gateway against a hostile caller, in both paths a request can take: the
Django view (``gateway/views.py``, Django's test client) and the edge (a real uvicorn + gunicorn,
tests/deployments/test_edge.py's ``front``).

Every v2 path — server metadata, health, model metadata and readiness, inference, a pinned
version — checks the token like ``/invocations``; a path that tries to leave the deployment's
own model (``..``, encoded slashes, another model's name, a version it does not serve) never
reaches a replica; very long or endlessly varied paths cannot grow the gateway's memos.
The replica is a stand-in HTTP server on a unix socket file that records what reached it.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from django.test import Client

from deployments.models import Deployment, Revision
from gateway import routes, v2
from serving.sockets import unix_url
from tests.deployments.conftest import UnixHTTPServer
from tests.deployments.test_edge import bearer, eventually, front  # noqa: F401 - fixture
from tests.deployments.test_gateway import add_replica
from tests.factories import make_token

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(300)]

# (method, path after /serve/<name>) — every kind of v2 path the gateway forwards
V2_PATHS = [("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
            ("GET", "/v2/models/iris"), ("GET", "/v2/models/iris/ready"),
            ("POST", "/v2/models/iris/infer"), ("GET", "/v2/models/iris/versions/1"),
            ("POST", "/v2/models/iris/versions/1/infer")]
# Paths that must never reach a replica (404 or 405 from the gateway itself)
ESCAPES = ["/v2/models/..%2F..%2Finvocations/infer", "/v2/models/iris%2F..%2F..%2Fx/infer",
           "/v2/models/other/infer", "/v2/models/iris/versions/..%2F..%2F..%2Finvocations/infer",
           "/v2/models/iris/versions/2/infer", "/v2/models/iris/versions/1%2F..%2F2/infer",
           "/v2/models/iris/infer/..", "/v2/health/live%0d%0aX-Injected:%201",
           "/v2/models/iris/infer%3Fx=1"]


class Recorder(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path,
                                 self.headers.get("X-Modelport-Replica-Key")))
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass

    def address_string(self):
        return "replica"


@pytest.fixture
def replica(tmp_path):
    server = UnixHTTPServer(str(tmp_path / "serve.sock"), Recorder)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def deployment(team, engineer, v1, replica):
    routes.invalidate()
    name = f"v2sec-{v1.pk}"
    d = Deployment.objects.create(name=name, team=team, model=v1.model, version=v1, revision=1)
    Revision.objects.create(deployment=d, number=1, model_version=v1)
    add_replica(d, unix_url(replica.server_address))
    yield d
    routes.invalidate()


def _django(method: str, url: str, token: str | None):
    client = Client(raise_request_exception=False)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "GET":
        return client.get(url, **headers)
    return client.post(url, data=b'{"inputs": []}', content_type="application/json", **headers)


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.content = status, body

    def json(self):
        return json.loads(self.content)


def _edge(base: str):
    """http.client, not requests: urllib3 would resolve ``..`` before sending."""
    host, port = base[len("http://"):].split(":")

    def send(method: str, url: str, token: str | None) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = b'{"inputs": []}' if method == "POST" else None
        if body:
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(host, int(port), timeout=20)
        try:
            connection.request(method, url, body=body, headers=headers)
            answer = connection.getresponse()
            return Answer(answer.status, answer.read())
        finally:
            connection.close()
    return send


def _check(send, deployment, replica, engineer, stranger) -> None:
    name = deployment.name
    token = make_token(engineer, name="v2")[1]
    outsider = make_token(stranger, name="v2")[1]
    for method, path in V2_PATHS:
        url = f"/serve/{name}{path}"
        for who in (None, "mp_not_a_token", outsider):
            answer = send(method, url, who)
            assert answer.status_code == (404 if who == outsider else 401), (path, who)
            assert "error" in answer.json(), answer.json()  # v2 clients read {"error"}
        assert not replica.seen, (path, replica.seen)
        answer = send(method, url, token)
        assert answer.status_code == 200, (path, answer.content)
        seen_method, seen_path, key = replica.seen.pop()
        assert seen_method == method and key, (path, seen_path)
        assert seen_path.startswith(("/v2/models/iris", "/v2/health/", "/v2")), seen_path
    for path in ESCAPES:
        answer = send("POST" if path.endswith("infer") else "GET", f"/serve/{name}{path}", token)
        assert answer.status_code in (404, 405), (path, answer.status_code)
        # a CR LF in the path is not a v2 path to Django's URL pattern: its own 404
        assert "error" in answer.json() or "%0d%0a" in path, (path, answer.json())
    assert not replica.seen, replica.seen
    long = send("GET", f"/serve/{name}/v2/models/{'a' * 20000}", token)
    assert long.status_code in (404, 414), long.status_code
    assert not replica.seen


def test_django_path_checks_every_v2_path_and_never_escapes(deployment, replica, engineer,
                                                           stranger):
    _check(_django, deployment, replica, engineer, stranger)


def test_edge_checks_every_v2_path_and_never_escapes(front, deployment, replica,  # noqa: F811
                                                     engineer, stranger):
    _check(_edge(front.base), deployment, replica, engineer, stranger)
    # still answering: nothing above broke the edge
    assert requests.get(f"{front.base}/healthz", timeout=10).status_code == 200


def test_the_v2_memos_are_bounded(deployment):
    """Each distinct path a caller sends — trailing slashes, percent-encoded names, unknown
    models — was remembered on the route for as long as the routing table lived."""
    route = routes.route_for(deployment.name)
    assert route is not None
    for i in range(v2.MEMO_SIZE + 500):
        for path in (f"/v2/models/iris/versions/{i + 2}", f"/v2/models/x{i}/ready"):
            found = v2.target(path, "GET")
            assert isinstance(found, v2.Target)
            v2.upstream(route, deployment.name, found)
    assert len(route.v2_paths) <= v2.MEMO_SIZE + 1
    assert len(v2._cache) <= v2.MEMO_SIZE + 1
    refused = v2.target("/v2/models/" + "a" * v2.MAX_PATH, "GET")
    assert isinstance(refused, routes.Refusal) and refused.status == 414
