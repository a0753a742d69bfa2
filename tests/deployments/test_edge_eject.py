"""Passive ejection in the edge (gateway/ejection.py): a replica whose host is cut is not picked
again until its ejection ends, and under steady traffic only requests in flight at the cut can
fail.

The lost host is real: a network namespace of this test's own with a veth pair from
198.51.100.240/28 (a documentation range that never leaves the machine) and a replica process
inside it; ``ip link set <peer> down`` in the namespace cuts it. The root side keeps its route,
so packets to the replica vanish: connects time out, requests on pooled connections get no
answer — a black hole, like a pulled cable. The other replica and the edge (the ``Edge`` class
on uvloop, its real pool and sockets) run in this process on loopback. Routes are built by
hand: nothing here needs the database."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvloop

from gateway import routes, views
from gateway.edge import Edge, Exchange, Reply
from gateway.upstream import Address
from monitoring.gateway_errors import GATEWAY_EJECTIONS
from monitoring.prom import exposition
from tests.conftest import missing_service
from tests.deployments.conftest import dead_url
from tests.deployments.test_gateway import add_replica, client_for, deployment, post  # noqa: F401

EJECT_S = 2.0

# A replica inside the namespace: answers POSTs after 0.3 s, so some are in flight at the cut.
REPLICA = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(0.3)
        body = b'{"via": "hole"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


@dataclass
class Hole:
    namespace: str
    peer: str
    url: str

    def cut(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.peer, "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout
    subnets = list(ipaddress.ip_network("198.51.100.240/28").subnets(new_prefix=30))
    for net in secrets.SystemRandom().sample(subnets, len(subnets)):
        if not any(str(h) in used for h in net.hosts()):
            return net
    pytest.fail("no free /30 in 198.51.100.240/28 for the test's namespace")


@pytest.fixture
def hole() -> Iterator[Hole]:
    """A replica in a namespace of its own, reached over a veth pair (cut with ``Hole.cut``)."""
    name = f"mpe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        missing_service(f"cannot create a network namespace here: {exc}")
    server = None
    try:
        net = _free_subnet()
        ours, theirs = (str(h) for h in net.hosts())
        _ip("link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
        _ip("link", "set", f"{name}b", "netns", name)
        _ip("addr", "add", f"{ours}/30", "dev", f"{name}a")
        _ip("link", "set", f"{name}a", "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{theirs}/30", "dev", f"{name}b")
        _ip("netns", "exec", name, "ip", "link", "set", f"{name}b", "up")
        port = 18000 + secrets.randbelow(1000)
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", REPLICA,
                                   theirs, str(port)])
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection((theirs, port), 0.5):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("the replica in the namespace did not start")
            time.sleep(0.1)
        yield Hole(name, f"{name}b", f"http://{theirs}:{port}")
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "link", "del", f"{name}a"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


class _Replica(asyncio.Protocol):
    """The healthy replica on loopback: answers every request at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\r\n\r\n{}"):
            body = b'{"via": "good"}'
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"  # type: ignore[attr-defined]
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def _route(urls: list[str]) -> routes.Route:
    return routes.Route(version=(10**9, 1), team_id=1, checked=time.monotonic(),
                        revisions=[(1, 1, urls)], name="eject-demo")


class _Driver:
    """The edge with each attempt recorded: (when, url, ejected until then)."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.attempts: list[tuple[float, str, float]] = []
        send = edge.replicas.send

        def recorded(url: str, *args, **kwargs) -> None:
            self.attempts.append((time.monotonic(), url, edge.ejected.until.get(url, 0.0)))
            send(url, *args, **kwargs)

        edge.replicas.send = recorded  # type: ignore[method-assign]

    async def request(self, route: routes.Route) -> Reply:
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        Exchange(self.edge, route.name, [], None, b"r%d" % len(self.attempts), b"{}",
                 answered.set_result).proceed(route)
        return await answered

    async def expire(self) -> None:  # the edge's own chore (not started without startup())
        while True:
            await asyncio.sleep(0.25)
            self.edge.replicas.expire()


def _ejections(reason: str) -> float:
    return GATEWAY_EJECTIONS.labels(reason)._value.get()


def test_a_cut_host_is_ejected_and_only_requests_in_flight_at_the_cut_can_fail(hole, settings):
    settings.MODELPORT_GATEWAY_EJECT_S = EJECT_S
    settings.MODELPORT_GATEWAY_TIMEOUT_S = 30  # a request left waiting would show as a 504
    silent_before = _ejections("timeout") + _ejections("unreachable")
    outcomes: list[tuple[float, int, float]] = []  # (answered at, status, seconds taken)
    at_cut: dict[str, float] = {}

    async def scenario() -> None:
        server = await asyncio.get_running_loop().create_server(_Replica, "127.0.0.1", 0)
        good = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        edge = Edge("unix:/nonexistent/web.sock")
        driver = _Driver(edge)
        expiring = asyncio.create_task(driver.expire())
        route = _route([good, hole.url])
        stop = asyncio.Event()

        async def client() -> None:  # steady traffic: one request after another
            while not stop.is_set():
                began = time.monotonic()
                reply = await driver.request(route)
                outcomes.append((time.monotonic(), reply.status, time.monotonic() - began))
                await asyncio.sleep(0.02)

        clients = [asyncio.create_task(client()) for _ in range(4)]
        while sum(1 for _, url, _ in driver.attempts if url == hole.url) < 10:
            await asyncio.sleep(0.05)  # both replicas serve, connections to the hole pooled
        hole_address = Address(hole.url.split("//")[1].split(":")[0],
                               int(hole.url.rsplit(":", 1)[1]))
        at_cut["in_flight"] = sum(1 for c in edge.replicas.busy if c.address == hole_address)
        at_cut["t"] = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, hole.cut)
        # Long enough for an ejection, its end, a new try at the hole and a second ejection.
        await asyncio.sleep(3 * EJECT_S + 4)
        stop.set()
        await asyncio.gather(*clients)
        expiring.cancel()
        edge.replicas.close()
        server.close()
        edge.threads.shutdown(wait=False)
        driver_attempts.extend(driver.attempts)

    driver_attempts: list[tuple[float, str, float]] = []
    uvloop.run(scenario())

    after_cut = [(t, url, until) for t, url, until in driver_attempts if t > at_cut["t"]]
    to_hole = [(t, until) for t, url, until in after_cut if url == hole.url]
    # Never picked while ejected (the good replica was there to pick instead).
    assert all(until <= t for t, until in to_hole), to_hole
    # Ejected, then tried again when the ejection ended, and ejected again.
    # (timed out, or "no route to host" once the kernel's neighbour entry failed: both are
    # what a pulled cable looks like from here)
    ejections = _ejections("timeout") + _ejections("unreachable") - silent_before
    assert ejections >= 2
    failed = [status for t, status, _ in outcomes if t > at_cut["t"] and status != 200]
    slowest = max(took for t, _, took in outcomes if t > at_cut["t"])
    print(f"\nrequests after the cut: {sum(1 for t, _, _ in outcomes if t > at_cut['t'])}, "
          f"slowest {slowest:.2f} s, "
          f"failed: {len(failed)} {failed}, in flight to the hole at the cut: "
          f"{at_cut['in_flight']}, attempts at the hole after the cut: {len(to_hole)}, "
          f"ejections: {ejections:.0f}")
    assert 504 not in failed  # nothing waited for the gateway timeout
    assert len(failed) <= at_cut["in_flight"]


def test_when_every_replica_is_ejected_the_edge_tries_one_anyway(settings):
    """A refused connect ejects the address; with nothing else to pick, the next request still
    tries it (a try beats a 503) — and gets the 502 of an unreachable replica, not a 503."""
    settings.MODELPORT_GATEWAY_EJECT_S = 60
    refused_before = _ejections("refused")
    with socket.socket() as probe:  # a port nothing listens on: connects are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"

    async def scenario() -> tuple[list, list[int]]:
        edge = Edge("unix:/nonexistent/web.sock")
        driver = _Driver(edge)
        route = _route([dead])
        statuses = [(await driver.request(route)).status for _ in range(2)]
        edge.replicas.close()
        edge.threads.shutdown(wait=False)
        return driver.attempts, statuses

    attempts, statuses = uvloop.run(scenario())
    assert statuses == [502, 502]
    assert len(attempts) == 2 and attempts[1][2] > attempts[1][0]  # the 2nd while ejected
    assert _ejections("refused") - refused_before == 1  # ejected once, extended after


def test_ejection_can_be_turned_off(settings):
    settings.MODELPORT_GATEWAY_EJECT_S = 0
    edge = Edge("unix:/nonexistent/web.sock")
    assert edge.ejected.eject("http://127.0.0.1:1", "refused") is False
    assert not edge.ejected.until
    edge.threads.shutdown(wait=False)



class _SlowReplica(asyncio.Protocol):
    """Alive but slow: answers 3 s after the request (longer than the connect timeout)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\r\n\r\n{}"):
            asyncio.get_running_loop().call_later(3.0, self.transport.write,  # type: ignore[attr-defined]
                                                  b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                                  b"Content-Type: application/json\r\n\r\n{}")


def test_a_slow_replica_that_accepts_the_probe_is_neither_ejected_nor_cut_off(settings):
    """A request silent past the connect timeout makes the pool probe the address; a replica
    that is only slow accepts the probe, so its requests are answered and it stays picked."""
    settings.MODELPORT_GATEWAY_EJECT_S = 60
    settings.MODELPORT_GATEWAY_TIMEOUT_S = 30

    async def scenario() -> tuple[list[int], dict, int]:
        server = await asyncio.get_running_loop().create_server(_SlowReplica, "127.0.0.1", 0)
        slow = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        edge = Edge("unix:/nonexistent/web.sock")
        driver = _Driver(edge)
        expiring = asyncio.create_task(driver.expire())
        route = _route([slow])
        replies = await asyncio.gather(*(driver.request(route) for _ in range(3)))
        expiring.cancel()
        opened = edge.replicas.opened["tcp"]
        edge.replicas.close()
        server.close()
        edge.threads.shutdown(wait=False)
        return [r.status for r in replies], dict(edge.ejected.until), opened

    statuses, ejected, opened = uvloop.run(scenario())
    assert statuses == [200, 200, 200]
    assert ejected == {}
    assert opened > 3  # the three requests and a probe (one per connect timeout per address)


@pytest.mark.django_db
def test_the_django_path_ejects_too(deployment, engineer, upstreams, monkeypatch):  # noqa: F811
    """gunicorn alone (no edge): a replica whose connect failed is not picked again while
    ejected; every caller still gets the live replica's answer."""
    monkeypatch.setattr(views, "_ejected", views.Ejections(60))
    dead = dead_url()
    add_replica(deployment, dead, index=0)
    add_replica(deployment, upstreams("alive"), index=1)
    tried: list[str] = []
    post_to = views._pool.post

    def recorded(url: str, *args, **kwargs):
        tried.append(url)
        return post_to(url, *args, **kwargs)

    monkeypatch.setattr(views._pool, "post", recorded)
    refused_before = _ejections("refused")
    client = client_for(engineer)
    for _ in range(12):
        response = post(client)
        assert response.status_code == 200 and response.json()["predictions"] == ["alive"]
    assert tried.count(dead) == 1  # the first pick of it; then ejected
    assert _ejections("refused") - refused_before == 1
    assert b'modelport_gateway_ejections_total{reason="refused"}' in exposition()
