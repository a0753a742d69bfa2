"""The edge (``config/edge.py``) as the Procfile runs it: a real uvicorn process on a TCP port in
front of a real gunicorn on a unix socket, both on the test's PostgreSQL database.

Serving requests are answered by the edge itself (same refusals, headers and counters as the
Django gateway, tested in test_gateway.py); everything else is streamed to Django unchanged —
forms with CSRF and session cookies, the API, multipart uploads, chunked bodies — and the client
address reaches the audit log. Replicas are stand-in HTTP servers on unix socket files (and,
where a test says so, on 127.0.0.1).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from deployments.models import Deployment, Revision, TrafficSample
from teams.models import AuditEvent
from tests.deployments.conftest import dead_url, key_of
from tests.deployments.test_gateway import add_replica
from tests.factories import make_token
from tests.test_make_run import _free_port, _free_ports
from tests.workers.test_celery_worker import _database_url, _stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
SCORE = b'{"inputs": [[1, 2]]}'


class Front:
    def __init__(self, base: str, procs: list[subprocess.Popen], logs: Path,
                 data: Path, mlflow: str = "") -> None:
        self.base, self.procs, self.logs, self.data = base, procs, logs, data
        self.mlflow = mlflow

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                            stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_web_and_edge(env: dict[str, str], logs: Path, socket: str,
                       port: int) -> list[subprocess.Popen]:
    """gunicorn (1 worker, 4 threads) on ``socket`` and the edge on ``port`` in front of it,
    as the Procfile runs them."""
    return [
        _start("web", ["-m", "gunicorn", "config.wsgi", "--bind", socket, "--workers", "1",
                       "--threads", "4"], env, logs),
        _start("edge", ["-m", "config.edge", "--port", str(port), "--upstream", socket],
               env, logs),
    ]


def _wait_up(url: str, procs: list[subprocess.Popen], logs: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    _stop(*procs)
    pytest.fail(f"{url} did not answer:\n" + "\n".join(
        p.read_text()[-3000:] for p in logs.glob("*.log")))


@pytest.fixture(scope="module")
def front(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    """gunicorn on a unix socket and the edge on a free port, as `make run` starts them."""
    tmp = tmp_path_factory.mktemp("edge")
    logs = tmp / "logs"
    (tmp / "data" / "run").mkdir(parents=True)
    logs.mkdir()
    with django_db_blocker.unblock():
        database_url = _database_url()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
                "MODELPORT_DATA_DIR": str(tmp / "data"), "DATABASE_URL": database_url,
                "REDIS_URL": redis_url, "MODELPORT_GATEWAY_AUTH_TTL_S": "30",
                "MODELPORT_GATEWAY_TIMEOUT_S": "2"})
    socket = f"unix:{tmp / 'data' / 'run' / 'web.sock'}"
    port, mlflow_port = _free_ports(2)
    env["MLFLOW_PORT"] = str(mlflow_port)
    procs = start_web_and_edge(env, logs, socket, port)
    base = f"http://127.0.0.1:{port}"
    _wait_up(f"{base}/healthz", procs, logs)
    yield Front(base, procs, logs, tmp / "data", f"http://127.0.0.1:{mlflow_port}")
    _stop(*procs)


@pytest.fixture
def deployment(team, engineer, v1):
    name = f"edge-{os.urandom(3).hex()}"
    d = Deployment.objects.create(name=name, team=team, model=v1.model, version=v1, revision=1)
    Revision.objects.create(deployment=d, number=1, model_version=v1)
    return d


def bearer(user) -> dict[str, str]:
    _, secret = make_token(user, name="edge")
    return {"Authorization": f"Bearer {secret}"}


def score(front: Front, name: str, headers: dict[str, str] | None = None,
          data: bytes = SCORE, **kw) -> requests.Response:
    return requests.post(f"{front.base}/serve/{name}/invocations", data=data,
                         headers={"Content-Type": "application/json", **(headers or {})},
                         timeout=10, **kw)


def eventually(check, timeout: float = 5.0):
    """The edge re-reads a routing table at most once a second: poll until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


# --- the gateway, answered by the edge -------------------------------------------------------


def test_edge_refuses_like_the_gateway(front, deployment, engineer, viewer, stranger):
    name = deployment.name
    missing = score(front, name)
    assert missing.status_code == 401 and missing.json()["code"] == "not_authenticated"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    bad = score(front, name, {"Authorization": "Bearer mp_nope"})
    assert bad.status_code == 401 and bad.json()["code"] == "token_invalid"
    assert score(front, name, bearer(stranger)).status_code == 404
    assert score(front, "no-such-deployment", bearer(engineer)).status_code == 404
    empty = score(front, name, bearer(viewer))
    assert empty.status_code == 503 and empty.json()["code"] == "no_ready_replica"
    assert empty.headers["Retry-After"] == "5"
    get = requests.get(f"{front.base}/serve/{name}/invocations", headers=bearer(engineer),
                       timeout=10)
    assert get.status_code == 405 and get.headers["Allow"] == "POST"


def test_edge_proxies_body_content_type_and_request_id(front, deployment, engineer, upstreams):
    add_replica(deployment, upstreams("a"))
    auth = bearer(engineer)
    response = eventually(lambda: (r := score(front, deployment.name, {
        **auth, "Content-Type": "text/csv", "X-Request-ID": "abc-1"}, data=b"a,b\n1,2\n"))
        .status_code == 200 and r)
    assert response, front.output()
    data = response.json()
    assert data["echo"] == "a,b\n1,2\n" and data["content_type"] == "text/csv"
    assert data["request_id"] == "abc-1" and response.headers["X-Request-ID"] == "abc-1"
    assert response.headers["X-Modelport-Revision"] == "1"
    generated = score(front, deployment.name, auth)
    assert len(generated.headers["X-Request-ID"]) == 32
    assert generated.json()["request_id"] == generated.headers["X-Request-ID"]


def test_edge_sends_each_revision_its_own_replica_key_over_socket_and_tcp(
        front, deployment, engineer, upstreams):
    """Replicas without a network are reached over their socket file, replicas on a network
    over TCP; both get the key of their own revision, which only the platform knows."""
    add_replica(deployment, upstreams("unix"))
    add_replica(deployment, upstreams("tcp", unix=False), index=1)
    auth = bearer(engineer)
    response = eventually(lambda: (r := score(front, deployment.name, auth)).status_code == 200
                          and r)
    assert response, front.output()
    answers = [score(front, deployment.name, auth).json() for _ in range(12)]
    assert {a["predictions"][0] for a in answers} == {"unix", "tcp"}
    assert {a["replica_key"] for a in answers} == {
        key_of(deployment, 1)}


def test_edge_retries_once_on_another_replica_then_gives_502(front, deployment, engineer,
                                                             upstreams):
    add_replica(deployment, dead_url(), index=0)
    add_replica(deployment, upstreams("alive"), index=1)
    auth = bearer(engineer)
    assert eventually(lambda: score(front, deployment.name, auth).status_code == 200)
    for _ in range(10):
        response = score(front, deployment.name, auth)
        assert response.status_code == 200 and response.json()["predictions"] == ["alive"]

    dead = Deployment.objects.create(name=f"{deployment.name}-dead", team=deployment.team,
                                     model=deployment.model, version=deployment.version,
                                     revision=1)
    add_replica(dead, dead_url())
    response = score(front, dead.name, auth)
    assert response.status_code == 502 and response.json()["code"] == "upstream_unavailable"


def test_edge_splits_traffic_and_sticks_by_route_key(front, deployment, engineer, upstreams,
                                                     v1):
    Revision.objects.create(deployment=deployment, number=2, model_version=v1)
    add_replica(deployment, upstreams("old"), revision=1)
    add_replica(deployment, upstreams("new"), revision=2)
    Deployment.objects.filter(pk=deployment.pk).update(
        traffic=[{"revision": 2, "percent": 20}, {"revision": 1, "percent": 80}],
        routing_version=99)
    auth = bearer(engineer)
    time.sleep(1.2)  # the edge re-reads the table within a second
    with requests.Session() as session:
        seen = [session.post(f"{front.base}/serve/{deployment.name}/invocations", data=SCORE,
                             headers=auth, timeout=10).json()["predictions"][0]
                for _ in range(200)]
        share = seen.count("new") / len(seen)
        assert 0.08 < share < 0.35, share
        sticky = {session.post(f"{front.base}/serve/{deployment.name}/invocations",
                               data=SCORE, headers={**auth, "X-Modelport-Route-Key": "user-7"},
                               timeout=10).json()["predictions"][0] for _ in range(20)}
    assert len(sticky) == 1


def test_edge_counts_requests_per_revision(front, deployment, engineer, upstreams):
    add_replica(deployment, upstreams("a"))
    auth = bearer(engineer)
    assert eventually(lambda: score(front, deployment.name, auth).status_code == 200)
    for _ in range(9):
        assert score(front, deployment.name, auth).status_code == 200

    def counted() -> bool:
        rows = TrafficSample.objects.filter(deployment=deployment, revision=1)
        return sum(r.requests for r in rows) >= 10
    assert eventually(counted, timeout=15), front.output()  # a flush a second; slack for load


def test_edge_counts_its_own_failures_by_code(front, deployment, engineer, settings):
    """503 (nothing ready) and 502 (the replica does not answer) are stored per deployment,
    revision and code; a 413 (the caller's mistake) is not a gateway failure."""
    auth = bearer(engineer)
    statuses: list[int] = []

    def send() -> int:
        statuses.append(score(front, deployment.name, auth).status_code)
        return statuses[-1]

    for _ in range(4):
        assert send() == 503
    add_replica(deployment, dead_url())
    assert eventually(lambda: send() == 502)
    for _ in range(3):
        assert send() == 502
    too_big = score(front, deployment.name, auth,
                    data=b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    assert too_big.status_code == 413

    def rows():
        return TrafficSample.objects.filter(deployment=deployment, revision=1)

    assert eventually(lambda: sum(r.gateway_requests for r in rows()) == len(statuses),
                      timeout=5), front.output()
    assert sum(r.gateway_503 for r in rows()) == statuses.count(503)
    assert sum(r.gateway_502 for r in rows()) == statuses.count(502) >= 4
    assert sum(r.gateway_500 + r.gateway_504 for r in rows()) == 0


def test_edge_refuses_a_body_over_the_limit_with_413(front, deployment, engineer, upstreams,
                                                     settings):
    add_replica(deployment, upstreams("a"))
    auth = bearer(engineer)
    assert eventually(lambda: score(front, deployment.name, auth).status_code == 200)
    big = b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = score(front, deployment.name, auth, data=big)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_edge_stops_a_revoked_token_within_seconds(front, deployment, engineer, upstreams):
    from teams.services import revoke_token

    add_replica(deployment, upstreams("a"))
    token, secret = make_token(engineer, name="edge-revoke")
    auth = {"Authorization": f"Bearer {secret}"}
    assert eventually(lambda: score(front, deployment.name, auth).status_code == 200)
    revoke_token(actor=engineer, token=token)  # the cache would trust it for 30 s
    refused = eventually(lambda: (r := score(front, deployment.name, auth)).status_code == 401
                         and [r], timeout=4)  # a 401 Response is falsy
    assert refused and "revoked" in refused[0].json()["detail"]


# --- everything else, streamed to Django ----------------------------------------------------


def with_password(user, password: str, settings) -> None:
    """Hashed as the web process (dev settings) checks it; the test settings' MD5 is not
    there."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    user.set_password(password)
    user.save()


def test_edge_forwards_the_portal_with_csrf_and_session_cookies(front, engineer, settings):
    with_password(engineer, "edge-pass-1", settings)
    with requests.Session() as browser:
        login = browser.get(f"{front.base}/login/", timeout=10)
        assert login.status_code == 200 and "csrftoken" in browser.cookies
        answer = browser.post(f"{front.base}/login/", timeout=10, allow_redirects=False, data={
            "username": engineer.username, "password": "edge-pass-1",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
            headers={"Referer": f"{front.base}/login/"})
        assert answer.status_code == 302, answer.text[:500]
        assert "sessionid" in browser.cookies
        home = browser.get(f"{front.base}/", timeout=10)
        assert home.status_code == 200 and engineer.username in home.text
    assert requests.get(f"{front.base}/static/frontend/vendor/htmx.min.js",
                        timeout=10).status_code == 200


def test_edge_forwards_the_api_and_the_client_address_reaches_the_audit_log(front, engineer,
                                                                           settings):
    with_password(engineer, "edge-pass-2", settings)
    basic = base64.b64encode(f"{engineer.username}:edge-pass-2".encode()).decode()

    def body():  # no Content-Length: sent chunked, which the edge buffers for WSGI
        yield b'{"name": "from-edge", '
        yield b'"expires_in_days": 3}'

    created = requests.post(f"{front.base}/api/v1/tokens/", data=body(), timeout=10,
                            headers={"Authorization": f"Basic {basic}",
                                     "Content-Type": "application/json",
                                     "X-Request-ID": "edge-audit-1"})
    assert created.status_code == 201, created.text
    assert created.headers["X-Request-ID"] == "edge-audit-1"
    entry = AuditEvent.objects.get(request_id="edge-audit-1")
    assert entry.ip == "127.0.0.1"
    listed = requests.get(f"{front.base}/api/v1/tokens/?page_size=50", timeout=10,
                          headers={"Authorization": f"Bearer {created.json()['token']}"})
    assert listed.status_code == 200
    assert "from-edge" in [t["name"] for t in listed.json()["results"]]


def test_edge_streams_a_multipart_upload_to_django(front, engineer, team):
    from registry.models import RegisteredModel

    RegisteredModel.objects.create(name="edge-upload", team=team, created_by=engineer)
    auth = bearer(engineer)
    junk = os.urandom(3 * 1024 * 1024)  # over the in-memory limit: streamed, spooled to disk
    response = requests.post(f"{front.base}/api/v1/models/edge-upload/versions/", timeout=30,
                             headers=auth, files={"file": ("model.zip", junk)},
                             data={"format": "mlflow", "team": team.slug})
    assert 400 <= response.status_code < 500, response.text[:500]
    assert "zip" in response.text.lower() or "archive" in response.text.lower(), response.text


def test_edge_answers_502_when_the_web_server_is_down(tmp_path, redis_url):
    """A second edge whose web server never started: a clear 502, never a hang."""
    port = _free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev",
           "MODELPORT_DATA_DIR": str(tmp_path), "DATABASE_URL": _database_url(),
           "REDIS_URL": redis_url}
    proc = _start("edge-alone", ["-m", "config.edge", "--port", str(port), "--upstream",
                                 f"unix:{tmp_path / 'missing.sock'}"], env, tmp_path)
    try:
        deadline = time.monotonic() + 60
        response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert response is not None, (tmp_path / "edge-alone.log").read_text()
        assert response.status_code == 502 and response.json()["code"] == "web_unavailable"
        assert response.headers["Retry-After"] == "2"
    finally:
        _stop(proc)


# --- the ingest socket for replicas without a network -----------------------------------------


def test_ingest_socket_passes_only_prediction_logs_to_django(front, deployment):
    """What a replica without a network can reach of the platform: one path, with its own
    ingest token; not the portal, not the API, not another method."""
    from monitoring import ingest
    from monitoring.models import PredictionRecord
    from serving import sockets
    from serving.shipping import Shipper

    socket_url = sockets.unix_url(str(front.data / "run" / "ingest" / "ingest.sock"))
    assert oct((front.data / "run" / "ingest" / "ingest.sock").stat().st_mode & 0o777) == "0o666"
    token = ingest.issue_ingest_token(deployment=deployment)
    shipper = Shipper(buffer=None, url=f"{socket_url}/api/v1/ingest/predictions/", token=token,
                      envelope={"deployment": deployment.name, "revision": "1",
                                "replica": f"mp-{deployment.name}-r1-0"})
    body = shipper.encode([("via-socket-1", time.time(), 1.0, 200, "invocations",
                            {"inputs": [[1, 2]]}, [0], None)])
    assert b"sampling_rate" in shipper._post(body)  # through the edge to Django and back
    assert PredictionRecord.objects.filter(deployment=deployment,
                                           request_id="via-socket-1").exists()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    for method, path in [("GET", "/api/v1/ingest/predictions/"), ("GET", "/"),
                         ("GET", "/login/"), ("GET", "/api/v1/deployments/"),
                         ("POST", "/api/v1/tokens/"), ("GET", "/admin/"),
                         ("POST", f"/serve/{deployment.name}/invocations")]:
        status, _ = sockets.request(socket_url + path, method, b"{}", headers, timeout=10)
        assert status in (404, 405), (method, path, status)
    wrong_token = sockets.request(socket_url + "/api/v1/ingest/predictions/", "POST", body,
                                  {**headers, "Authorization": "Bearer mpi_nope"}, timeout=10)
    assert wrong_token[0] == 401


# --- MLFLOW_PORT: the /mlflow route for clients that want a tracking server of their own ------


def test_mlflow_port_is_the_authenticated_mlflow_route_and_nothing_else(front, engineer):
    """Every path lands under /mlflow (registry/mlflow_route.py): the token is checked there,
    and neither the API nor the gateway is reachable through this port. No MLflow server runs
    in this fixture, so an authenticated call gets the route's 503 for it."""
    anonymous = requests.get(f"{front.mlflow}/api/2.0/mlflow/experiments/search", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    auth = bearer(engineer)
    down = requests.get(f"{front.mlflow}/api/2.0/mlflow/experiments/search", headers=auth,
                        params={"max_results": 1}, timeout=10)
    assert down.status_code == 503 and "error_code" in down.json()
    for path in ("/api/v1/deployments/", "/serve/x/invocations", "/admin/", "/login/"):
        other = requests.get(f"{front.mlflow}{path}", headers=auth, timeout=10)
        assert other.status_code in (403, 404), (path, other.status_code)
        assert "error_code" in other.json(), path  # MLflow's format: the route refused it
