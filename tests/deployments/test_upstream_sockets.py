"""The edge's replica pool picks the transport: a replica's abstract unix socket when it
listens on one (serving/sockets.py), else its TCP port. Real sockets on uvloop; each stand-in
replica answers with the transport it was reached on."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from deployments import upstream
from deployments.upstream import Answer, Pool
from serving.sockets import bind_unix, replica_socket


class _Replica(asyncio.Protocol):
    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\r\n\r\n" + b"{}"):
            body = b'{"via": "%s"}' % self.tag
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def _replica(*, unix: bool) -> tuple[str, list[asyncio.base_events.Server]]:
    """A stand-in replica on a free TCP port, and on its unix socket when ``unix``."""
    loop = asyncio.get_running_loop()
    tcp = await loop.create_server(lambda: _Replica(b"tcp"), "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    servers = [tcp]
    if unix:
        servers.append(await loop.create_server(
            lambda: _Replica(b"unix"), sock=bind_unix(replica_socket("127.0.0.1", port))))
    return f"http://127.0.0.1:{port}", servers


async def _send(pool: Pool, url: str) -> Answer:
    done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def on_answer(answer: Answer | None, error: Exception | None) -> None:
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(answer)

    pool.send(url, b"/invocations", b"{}", [(b"Content-Type", b"application/json")], 5,
              on_answer)
    return await asyncio.wait_for(done, 5)


def _run(scenario) -> None:
    uvloop.run(scenario())


def test_a_replica_with_a_unix_socket_is_reached_over_it_and_the_connection_is_reused() -> None:
    async def scenario() -> None:
        url, servers = await _replica(unix=True)
        pool = Pool(unix_sockets=True)
        for _ in range(3):
            answer = await _send(pool, url)
            assert (answer.status, answer.body) == (200, b'{"via": "unix"}')
        assert pool.opened == {"unix": 1, "tcp": 0}
        pool.close()
        for server in servers:
            server.close()

    _run(scenario)


def test_a_replica_without_one_is_reached_over_tcp_and_not_asked_again_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        url, servers = await _replica(unix=False)
        pool = Pool(unix_sockets=True)
        assert (await _send(pool, url)).body == b'{"via": "tcp"}'
        pool.close()  # the next request opens a new connection
        tries = []
        real = upstream.unix_address
        monkeypatch.setattr(upstream, "unix_address",
                            lambda name: tries.append(name) or real(name))
        assert (await _send(pool, url)).body == b'{"via": "tcp"}'
        assert tries == [] and pool.opened == {"unix": 0, "tcp": 2}
        # Once the retry time has passed, a socket that appeared meanwhile is used.
        port = int(url.rsplit(":", 1)[1])
        servers.append(await asyncio.get_running_loop().create_server(
            lambda: _Replica(b"unix"), sock=bind_unix(replica_socket("127.0.0.1", port))))
        pool.close()
        pool._no_socket = {key: 0.0 for key in pool._no_socket}
        assert (await _send(pool, url)).body == b'{"via": "unix"}'
        assert pool.opened == {"unix": 1, "tcp": 2}
        pool.close()
        for server in servers:
            server.close()

    _run(scenario)


def test_with_sockets_off_the_pool_uses_tcp_even_when_the_replica_has_one() -> None:
    async def scenario() -> None:
        url, servers = await _replica(unix=True)
        pool = Pool(unix_sockets=False)
        assert (await _send(pool, url)).body == b'{"via": "tcp"}'
        assert pool.opened == {"unix": 0, "tcp": 1}
        pool.close()
        for server in servers:
            server.close()

    _run(scenario)


def test_a_dead_replica_is_an_upstream_error_on_both_transports() -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        pool = Pool(unix_sockets=True)
        with pytest.raises(upstream.UpstreamError, match=f"cannot connect to 127.0.0.1:{port}"):
            await _send(pool, f"http://127.0.0.1:{port}")
        assert pool.opened == {"unix": 0, "tcp": 0}

    _run(scenario)
