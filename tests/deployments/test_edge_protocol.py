"""The edge's own HTTP protocol (``gateway/edge_protocol.py``) on the wire: it answers
``POST /serve/<name>/invocations`` outside uvicorn's ASGI cycle, so the connection rules uvicorn
normally keeps are tested here with raw sockets — keep-alive, pipelining, ``Expect:
100-continue``, ``Connection: close``, a client that goes away mid-request, a replica that does
not answer in time, and a different token on the same connection. Real uvicorn + gunicorn
processes on the test PostgreSQL (the ``front`` fixture of test_edge.py); replicas are stand-in
HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httptools
import pytest

from tests.deployments.test_edge import SCORE, bearer, deployment, eventually, front, score
from tests.deployments.test_gateway import add_replica

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
__all__ = ["deployment", "front"]  # fixtures, imported for their side effect


class Answers:
    """Reads HTTP answers off a raw socket with httptools."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done: list[dict] = []
        self.current: dict = {}
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = {"headers": {}, "body": b""}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current["headers"][name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.current["status"] = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current["body"] += body

    def on_message_complete(self) -> None:
        self.done.append(self.current)

    def read(self, count: int, timeout: float = 10) -> list[dict]:
        """The next ``count`` answers (a 100 Continue counts as one)."""
        self.sock.settimeout(timeout)
        while len(self.done) < count:
            data = self.sock.recv(65536)
            if not data:
                break
            self.parser.feed_data(data)
        answers, self.done = self.done[:count], self.done[count:]
        return answers

    def closed(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def connect(front) -> tuple[socket.socket, Answers]:
    parts = urlsplit(front.base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock, Answers(sock)


def request(name: str, token: str, body: bytes = SCORE, extra: str = "") -> bytes:
    return (f"POST /serve/{name}/invocations HTTP/1.1\r\nHost: edge\r\n"
            f"Authorization: {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.fixture
def ready(front, deployment, engineer, upstreams):
    """A deployment with one ready stand-in replica, its token, and the edge's caches warm."""
    add_replica(deployment, upstreams("a"))
    auth = bearer(engineer)
    assert eventually(lambda: score(front, deployment.name, auth).status_code == 200), \
        front.output()
    return deployment.name, auth["Authorization"]


def test_keep_alive_connection_answers_many_requests_in_order(front, ready):
    name, token = ready
    sock, answers = connect(front)
    with sock:
        for i in range(50):
            sock.sendall(request(name, token, body=b'{"n": %d}' % i))
            (answer,) = answers.read(1)
            assert answer["status"] == 200
            assert json.loads(json.loads(answer["body"])["echo"]) == {"n": i}
            assert answer["headers"]["x-modelport-revision"] == "1"
            assert "connection" not in answer["headers"]
            assert answer["headers"]["date"]  # uvicorn's default headers still go out


def test_pipelined_requests_are_all_answered_in_order(front, ready):
    name, token = ready
    sock, answers = connect(front)
    with sock:
        sock.sendall(b"".join(request(name, token, body=b'{"n": %d}' % i) for i in range(5)))
        got = answers.read(5)
    assert [a["status"] for a in got] == [200] * 5
    assert [json.loads(json.loads(a["body"])["echo"])["n"] for a in got] == [0, 1, 2, 3, 4]


def test_expect_100_continue_gets_the_interim_answer_then_the_prediction(front, ready):
    name, token = ready
    sock, answers = connect(front)
    with sock:
        head, body = request(name, token, extra="Expect: 100-continue\r\n").split(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        (interim,) = answers.read(1)
        assert interim["status"] == 100
        sock.sendall(body)
        (answer,) = answers.read(1)
    assert answer["status"] == 200 and json.loads(answer["body"])["echo"] == SCORE.decode()


def test_connection_close_is_honoured(front, ready):
    name, token = ready
    sock, answers = connect(front)
    with sock:
        sock.sendall(request(name, token, extra="Connection: close\r\n"))
        (answer,) = answers.read(1)
        assert answer["status"] == 200 and answer["headers"]["connection"] == "close"
        assert answers.closed()


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(front, ready):
    """uvicorn's keep-alive timeout (5 s) with the edge's single lazily re-armed timer."""
    name, token = ready
    busy, busy_answers = connect(front)
    idle, idle_answers = connect(front)
    with busy, idle:
        idle.sendall(request(name, token))
        assert idle_answers.read(1)[0]["status"] == 200
        started = time.monotonic()
        for i in range(4):  # a request every 2 s for 8 s: never idle for 5 s
            busy.sendall(request(name, token))
            assert busy_answers.read(1)[0]["status"] == 200
            if i == 1:  # ~2 s idle: still open
                idle.settimeout(0.1)
                with pytest.raises(TimeoutError):
                    idle.recv(1)
            time.sleep(2)
        assert idle_answers.closed(timeout=5)  # closed after ~5 s idle
        assert time.monotonic() - started < 12
        busy.sendall(request(name, token))
        assert busy_answers.read(1)[0]["status"] == 200


def test_a_percent_encoded_name_takes_the_asgi_path_and_answers_alike(front, ready):
    name, token = ready
    encoded = "".join(f"%{ord(c):02x}" for c in name)
    sock, answers = connect(front)
    with sock:
        sock.sendall(request(encoded, token))
        (answer,) = answers.read(1)
    assert answer["status"] == 200 and answer["headers"]["x-modelport-revision"] == "1"


def test_another_token_on_the_same_connection_is_checked_afresh(front, ready, stranger):
    name, token = ready
    sock, answers = connect(front)
    with sock:
        sock.sendall(request(name, token))
        assert answers.read(1)[0]["status"] == 200
        sock.sendall(request(name, "Bearer mp_not-a-token"))
        refused = answers.read(1)[0]
        assert refused["status"] == 401 and json.loads(refused["body"])["code"] == "token_invalid"
        sock.sendall(request(name, bearer(stranger)["Authorization"]))
        assert answers.read(1)[0]["status"] == 404  # valid, but not their team's deployment
        sock.sendall(request(name, token))
        assert answers.read(1)[0]["status"] == 200


def test_a_client_leaving_mid_request_does_not_disturb_the_edge(front, ready):
    name, token = ready
    for cut in (30, 120):  # in the headers; in the body
        sock, _ = connect(front)
        with sock:
            sock.sendall(request(name, token, body=b"{" + b" " * 200 + b"}")[:cut])
    slow, _ = connect(front)  # and one that leaves while the replica is answering
    with slow:
        slow.sendall(request(name, token))
    sock, answers = connect(front)
    with sock:
        sock.sendall(request(name, token))
        assert answers.read(1)[0]["status"] == 200
    time.sleep(0.3)  # the replica's answer to the one that left has arrived by now
    assert "Traceback" not in (front.logs / "edge.log").read_text()


def test_the_edge_process_serves_its_app_with_the_fast_protocol(monkeypatch):
    """With the options ``python -m config.edge`` runs uvicorn with, the protocol is handed
    the Edge itself (no wrapping middleware), or every prediction would quietly take the
    slower ASGI path."""
    from uvicorn import Config

    from config.edge import UVICORN_OPTIONS
    from gateway.edge import Edge
    from gateway.edge_protocol import EdgeHttpProtocol

    monkeypatch.setenv("MODELPORT_WEB_UPSTREAM", "unix:/nonexistent/web.sock")
    config = Config("config.edge:application", **UVICORN_OPTIONS)
    config.load()
    assert config.http is EdgeHttpProtocol and isinstance(config.loaded_app, Edge)


class Silent(BaseHTTPRequestHandler):
    """A replica that accepts a request and never answers."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.stop.wait(30)

    def log_message(self, *args):
        pass


def test_a_replica_that_does_not_answer_in_time_gives_504(front, deployment, engineer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    server.stop = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        add_replica(deployment, f"http://127.0.0.1:{server.server_address[1]}")
        auth = bearer(engineer)
        started = time.monotonic()
        # the first call may still find no ready replica (the route is re-read within 1 s)
        response = eventually(lambda: (r := score(front, deployment.name, auth))
                              .status_code != 503 and [r], timeout=5)
        assert response, front.output()
        elapsed = time.monotonic() - started
        assert response[0].status_code == 504, response[0].text
        assert response[0].json()["code"] == "upstream_timeout"
        assert 1.5 < elapsed < 8  # MODELPORT_GATEWAY_TIMEOUT_S=2 in the front fixture
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()


def test_a_bug_after_the_replica_answered_still_gets_the_client_a_500_once():
    """If counting or mirroring a replica's answer raises, the client gets a JSON 500 with its
    request id — once — instead of a connection left hanging."""
    from gateway.edge import Edge, Exchange
    from gateway.upstream import Answer

    replies = []
    exchange = Exchange(Edge("unix:/nonexistent/web.sock"), "demo", [], None, b"req-1",
                        b"{}", replies.append)  # no route set: counting the answer raises
    exchange.answered(Answer(200, b"application/json", b"{}"), None)
    assert len(replies) == 1 and replies[0].status == 500
    assert json.loads(replies[0].body)["code"] == "edge_error"
    assert (b"x-request-id", b"req-1") in replies[0].headers
