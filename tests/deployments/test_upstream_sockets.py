"""The edge's replica pool reaches a replica where its URL says: its unix socket file
(``http+unix://…``, a replica without a network) or its TCP port (a replica on a network).
Real sockets on uvloop; each stand-in replica answers with the transport it was reached on
and echoes the request head it received."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import uvloop

from gateway import upstream
from gateway.upstream import Answer, Pool
from serving.sockets import MAX_PATH, bind_unix, unix_url


class _Replica(asyncio.Protocol):
    def __init__(self, tag: bytes, heads: list[bytes]) -> None:
        self.tag = tag
        self.heads = heads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\r\n\r\n" + b"{}"):
            self.heads.append(data)
            body = b'{"via": "%s"}' % self.tag
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def _replica(path: Path | None, heads: list[bytes]) -> tuple[str, asyncio.Server]:
    """A stand-in replica on the socket file ``path``, or on a free TCP port without one."""
    loop = asyncio.get_running_loop()
    if path is None:
        tcp = await loop.create_server(lambda: _Replica(b"tcp", heads), "127.0.0.1", 0)
        return f"http://127.0.0.1:{tcp.sockets[0].getsockname()[1]}", tcp
    server = await loop.create_server(lambda: _Replica(b"unix", heads),
                                      sock=bind_unix(str(path)))
    return unix_url(str(path)), server


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


def test_a_replica_without_a_network_is_reached_over_its_socket_file_and_reused(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        heads: list[bytes] = []
        url, server = await _replica(tmp_path / "serve.sock", heads)
        pool = Pool()
        for _ in range(3):
            answer = await _send(pool, url)
            assert (answer.status, answer.body) == (200, b'{"via": "unix"}')
        assert pool.opened == {"unix": 1, "tcp": 0}
        assert heads[0].startswith(b"POST /invocations HTTP/1.1\r\nHost: localhost\r\n")
        pool.close()
        server.close()

    _run(scenario)


def test_a_socket_path_longer_than_the_kernel_allows_is_still_reached(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "serve.sock"
    assert len(str(path)) > MAX_PATH

    async def scenario() -> None:
        url, server = await _replica(path, [])
        pool = Pool()
        assert (await _send(pool, url)).body == b'{"via": "unix"}'
        pool.close()
        server.close()

    _run(scenario)


def test_a_replica_on_a_network_is_reached_over_tcp() -> None:
    async def scenario() -> None:
        heads: list[bytes] = []
        url, server = await _replica(None, heads)
        pool = Pool()
        assert (await _send(pool, url)).body == b'{"via": "tcp"}'
        assert pool.opened == {"unix": 0, "tcp": 1}
        port = url.rsplit(":", 1)[1]
        assert f"Host: 127.0.0.1:{port}\r\n".encode() in heads[0]
        pool.close()
        server.close()

    _run(scenario)


def test_a_dead_replica_is_an_upstream_error_on_both_transports(tmp_path: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        pool = Pool()
        with pytest.raises(upstream.UpstreamError, match=f"cannot connect to 127.0.0.1:{port}"):
            await _send(pool, f"http://127.0.0.1:{port}")
        gone = tmp_path / "gone.sock"
        with pytest.raises(upstream.UpstreamError, match=f"cannot connect to {gone}"):
            await _send(pool, unix_url(str(gone)))
        assert pool.opened == {"unix": 0, "tcp": 0}

    _run(scenario)


def test_a_url_of_another_scheme_is_refused_not_fetched() -> None:
    async def scenario() -> None:
        with pytest.raises(upstream.UpstreamError, match="neither http\\+unix"):
            await _send(Pool(), "https://example.invalid/")

    _run(scenario)
