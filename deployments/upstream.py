"""Pooled keep-alive HTTP/1.1 connections from the edge to model replicas.

The edge's hot path is one small POST to a replica per prediction. aiohttp's client did that
in about 150 µs of CPU per request — half of the edge's cost — for features the path never
uses (cookies, redirects, auto headers, multidict bookkeeping, a task per timeout). This
client does only what the path needs: one request at a time per connection, a
``Content-Length`` body, the answer parsed by ``httptools`` (the parser uvicorn uses), idle
connections reused per replica and dropped before the replica's own keep-alive timeout (5 s).
The edge still uses aiohttp for the general proxy to Django (streaming, any method).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from urllib.parse import urlsplit

import httptools

IDLE_S = 4.0  # below uvicorn's keep-alive timeout on the replica side (5 s)
MAX_IDLE_PER_REPLICA = 256


class UpstreamError(Exception):
    """The replica could not be reached or dropped the connection (retry elsewhere)."""


class UpstreamTimeout(Exception):
    """The replica accepted the request but did not answer in time."""


class Answer:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, content_type: bytes, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` may be awaited by one caller at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._header = b""
        self._content_type = b"application/json"
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"bad answer from the replica: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamError("the replica closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._content_type = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self.parser.get_status_code(), self._content_type, b"".join(self._body))
        if not self.parser.should_keep_alive():
            self.close()
        self._body = []
        self._content_type = b"application/json"
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    # use
    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes, body: bytes, timeout: float) -> Answer:
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self.transport.write(head + body)
        timer = loop.call_later(timeout, self._time_out, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _time_out(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout())
            self.close()  # a late answer must not be read as the next request's


class Pool:
    """Idle connections per replica (``http://host:port``)."""

    def __init__(self, connect_timeout: float = 2.0) -> None:
        self.connect_timeout = connect_timeout
        self.idle: dict[tuple[str, int], deque[_Connection]] = {}

    async def post(self, url: str, path: bytes, body: bytes, headers: list[tuple[bytes, bytes]],
                   timeout: float) -> Answer:
        """POST ``body`` to ``url`` + ``path``; ``UpstreamError`` when the replica cannot be
        reached or drops the connection, ``UpstreamTimeout`` when it does not answer in time."""
        address, prefix = _address(url)
        head = b"".join([b"POST ", prefix, path, b" HTTP/1.1\r\nHost: ", b"%s:%d" % (
            address[0].encode(), address[1]), b"\r\nContent-Length: ", b"%d" % len(body),
            b"\r\n", *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"])
        connection = self._take(address)
        if connection is None:
            connection = await self._connect(address)
        try:
            answer = await connection.request(head, body, timeout)
        except BaseException:
            connection.close()
            raise
        if not connection.closed:
            self._give_back(address, connection)
        return answer

    def _take(self, address: tuple[str, int]) -> _Connection | None:
        idle = self.idle.get(address)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_S:
                return connection
            connection.close()
        return None

    def _give_back(self, address: tuple[str, int], connection: _Connection) -> None:
        idle = self.idle.setdefault(address, deque())
        if len(idle) >= MAX_IDLE_PER_REPLICA:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, *address), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {address[0]}:{address[1]} "
                                f"({exc.__class__.__name__})") from exc
        return connection

    def close(self) -> None:
        for idle in self.idle.values():
            for connection in idle:
                connection.close()
        self.idle.clear()


_addresses: dict[str, tuple[tuple[str, int], bytes]] = {}


def _address(url: str) -> tuple[tuple[str, int], bytes]:
    """((host, port), path prefix) of a replica URL such as ``http://127.0.0.1:20001``."""
    known = _addresses.get(url)
    if known is None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UpstreamError(f"replica URL {url!r} is not http://host:port")
        known = ((parts.hostname, parts.port or 80), parts.path.rstrip("/").encode())
        if len(_addresses) < 10000:
            _addresses[url] = known
    return known
