"""Pooled keep-alive HTTP/1.1 connections from the edge to model replicas.

The edge's hot path is one small POST to a replica per prediction. aiohttp's client did that
in about 150 µs of CPU per request — half of the edge's cost — for features the path never
uses (cookies, redirects, auto headers, multidict bookkeeping, a task per timeout). This
client does only what the path needs: one request at a time per connection, a
``Content-Length`` body, the answer parsed by ``httptools`` (the parser uvicorn uses) and handed
to a callback, idle connections reused per replica and dropped before the replica's own
keep-alive timeout (5 s).

A replica on this machine has no network and is reached over its unix socket file
(``http+unix://…``, ``serving/sockets.py``): 20 to 25 µs of CPU less per request, edge and
replica together, than loopback TCP. A replica on a network (another Docker host, Swarm,
Kubernetes) is reached over TCP (``http://host:port``).
The edge still uses aiohttp for the general proxy to Django (streaming, any method).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httptools

from serving.sockets import connect_async, is_unix_url, split_unix_url

IDLE_S = 4.0  # below uvicorn's keep-alive timeout on the replica side (5 s)
MAX_IDLE_PER_REPLICA = 256
EXPIRE_EVERY_S = 0.25  # how late, at most, a request's timeout is noticed


class Address(NamedTuple):
    """Where a replica listens: a unix socket file (``port`` 0) or a TCP host and port."""

    host: str  # the socket path for a unix socket
    port: int

    @property
    def unix(self) -> bool:
        return self.port == 0

    def __str__(self) -> str:
        return self.host if self.unix else f"{self.host}:{self.port}"


class UpstreamError(Exception):
    """The replica could not be reached or dropped the connection (retry elsewhere)."""


class ConnectFailed(UpstreamError):
    """No connection could be opened: timed out, unreachable or refused (``reason``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UpstreamTimeout(Exception):
    """The replica accepted the request but did not answer in time."""


class Answer:
    __slots__ = ("body", "content_type", "header_length", "status")

    def __init__(self, status: int, content_type: bytes, body: bytes,
                 header_length: bytes | None = None) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body
        # Inference-Header-Content-Length: a v2 answer with binary outputs (serving/v2.py)
        self.header_length = header_length


OnAnswer = Callable[[Answer | None, Exception | None], None]


# Connect errors that say something about the replica's address. Anything else (EMFILE,
# EADDRNOTAVAIL, ENOBUFS, …) is this process's own trouble: ejecting healthy replicas for it,
# and failing what they are serving, would only spread it.
LOCAL = "local"
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
                errno.ETIMEDOUT}


def reason_of(exc: BaseException) -> str:
    """A connect failure's kind: timeout, refused, unreachable — or local (not the replica's)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "unreachable"
    return LOCAL


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time. ``send`` takes a callback,
    not a future: the edge answers a cached request without a task or an await, and the
    callback runs straight from the parser when the replica's answer is complete."""

    def __init__(self, pool: Pool, address: Address, url: str) -> None:
        self.pool = pool
        self.address = address
        self.url = url
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.on_answer: OnAnswer | None = None
        self.deadline = 0.0
        self.sent_at = 0.0
        self.closed = False
        self.idle_since = 0.0
        self._content_type = b"application/json"
        self._header_length: bytes | None = None
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            self._fail(UpstreamError(f"bad answer from the replica: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamError("the replica closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-type":
            self._content_type = value
        elif lower == b"inference-header-content-length":
            self._header_length = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self.parser.get_status_code(), self._content_type, b"".join(self._body),
                        self._header_length)
        self._body = []
        self._content_type = b"application/json"
        self._header_length = None
        on_answer, self.on_answer = self.on_answer, None
        self.pool.busy.discard(self)
        if not self.parser.should_keep_alive():
            self.close()
        elif on_answer is not None:
            self.pool.give_back(self)
        if on_answer is not None:
            on_answer(answer, None)

    # use
    def send(self, data: bytes, timeout: float, on_answer: OnAnswer) -> None:
        self.on_answer = on_answer
        self.sent_at = now = time.monotonic()
        self.deadline = now + timeout
        self.pool.busy.add(self)
        self.transport.write(data)  # type: ignore[union-attr]  # pooled only once connected

    def _fail(self, exc: Exception) -> None:
        on_answer, self.on_answer = self.on_answer, None
        self.pool.busy.discard(self)
        if on_answer is not None:
            on_answer(None, exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def time_out(self) -> None:
        self.close()  # a late answer must not be read as the next request's
        self._fail(UpstreamTimeout())


class Pool:
    """Idle connections per replica (``http+unix://…`` or ``http://host:port``).

    A replica on another host can vanish without a word — its link cut, its machine off: a
    connect then times out, and a request already written gets no answer, ever. The pool
    notices in two ways: a connect that fails, and a request on a TCP connection silent for
    ``connect_timeout``, which makes it probe the address with a new connection (at most one
    probe per address per ``connect_timeout``; a slow but alive replica accepts it and is left
    be). Either failure (``lost``) reports a TCP address's URL to ``on_lost`` (the edge ejects
    it, ``gateway.ejection``), closes the address's idle connections, and — unless the connect was
    refused (the host answered, so the replica's own connections got their reset) or the
    address is a local socket file — fails the requests sent there before, as dropped
    connections the edge retries elsewhere: a black hole answers none of them, and the gateway
    timeout is far longer."""

    def __init__(self, connect_timeout: float = 2.0) -> None:
        self.connect_timeout = connect_timeout
        self.idle: dict[Address, deque[_Connection]] = {}
        self._connecting: set[asyncio.Task] = set()
        self.busy: set[_Connection] = set()  # waiting for an answer; see ``expire``
        self.opened = {"unix": 0, "tcp": 0}  # connections opened, by transport
        self.on_lost: Callable[[str, str], object] | None = None  # (url, reason)
        self._probed: dict[Address, float] = {}  # when each address was last probed

    def send(self, url: str, path: bytes, body: bytes, headers: list[tuple[bytes, bytes]],
             timeout: float, on_answer: OnAnswer, method: bytes = b"POST") -> None:
        """POST ``body`` to ``url`` + ``path`` (or GET it, with ``method``);
        ``on_answer(answer, None)`` when the replica answers, ``on_answer(None, UpstreamError)``
        when it cannot be reached or drops the connection, ``on_answer(None, UpstreamTimeout)``
        when it does not answer in time — exactly once, and never before ``send`` returns when
        a connection must be opened."""
        try:
            address, start = _address(url, path, method)
        except UpstreamError as exc:
            on_answer(None, exc)
            return
        parts = [start, b"%d\r\n" % len(body)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", body)
        data = b"".join(parts)
        connection = self._take(address)
        if connection is not None:
            connection.send(data, timeout, on_answer)
            return
        self._spawn(self._connect_and_send(address, url, data, timeout, on_answer))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(self, address: Address, url: str, data: bytes, timeout: float,
                                on_answer: OnAnswer) -> None:
        began = time.monotonic()
        try:
            connection = await asyncio.wait_for(self._open(address, url), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            reason = reason_of(exc)
            self.lost(address, url, began, reason)
            on_answer(None, ConnectFailed(f"cannot connect to {address} "
                                          f"({exc.__class__.__name__})", reason))
            return
        connection.send(data, timeout, on_answer)

    async def _probe(self, address: Address, url: str) -> None:
        """A new connection to an address whose requests went silent: kept in the idle pool
        when it opens, ``lost`` when it does not."""
        began = time.monotonic()
        try:
            connection = await asyncio.wait_for(self._open(address, url), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.lost(address, url, began, reason_of(exc))
            return
        self.give_back(connection)

    def lost(self, address: Address, url: str, since: float, reason: str) -> None:
        """A connect to ``address`` begun at ``since`` failed (see the class docstring). A
        local socket file is not reported: its connect fails at once, so a retry costs
        nothing, and a replica restarting there would only skew the split for a while."""
        if reason == LOCAL:
            return  # this process's own failure: nothing learned about the replica
        if self.on_lost is not None and not address.unix:
            self.on_lost(url, reason)
        for connection in self.idle.pop(address, None) or ():
            connection.close()
        if reason == "refused" or address.unix:  # the peer answered, or is a local process
            return  # (whose death closes its connections): its requests get their own reset
        # Only requests already silent for a connect timeout: a request sent a moment ago to an
        # address one connect failed for (a Service fronting several pods, a full accept
        # queue) still has its chance; the silence check comes back for it.
        silent = min(since, time.monotonic() - self.connect_timeout)
        for connection in [c for c in self.busy if c.address == address and c.sent_at < silent]:
            connection.close()
            connection._fail(UpstreamError(f"{address} stopped answering (a new connection "
                                           "to it failed)"))

    async def _open(self, address: Address, url: str) -> _Connection:
        loop = asyncio.get_running_loop()
        if address.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await connect_async(sock, address.host)
                _, connection = await loop.create_unix_connection(
                    lambda: _Connection(self, address, url), sock=sock)
            except BaseException:
                sock.close()
                raise
            self.opened["unix"] += 1
            return connection
        _, connection = await loop.create_connection(lambda: _Connection(self, address, url),
                                                     address.host, address.port)
        self.opened["tcp"] += 1
        return connection

    def expire(self) -> None:
        """Fail the requests past their timeout with ``UpstreamTimeout`` (and close their
        connections), and probe the TCP addresses with a request silent for
        ``connect_timeout``. The edge calls this every ``EXPIRE_EVERY_S``: one check for all
        requests instead of a timer armed and cancelled per request."""
        now = time.monotonic()
        silent_since = now - self.connect_timeout
        suspects: dict[Address, str] = {}
        for connection in list(self.busy):
            if connection.deadline <= now:
                connection.time_out()
            elif connection.sent_at < silent_since and not connection.address.unix:
                suspects[connection.address] = connection.url
        for address, url in suspects.items():
            if self._probed.get(address, 0.0) < silent_since:
                if len(self._probed) > 4096:
                    self._probed.clear()
                self._probed[address] = now
                self._spawn(self._probe(address, url))

    def _take(self, address: Address) -> _Connection | None:
        idle = self.idle.get(address)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_S:
                return connection
            connection.close()
        return None

    def give_back(self, connection: _Connection) -> None:
        idle = self.idle.get(connection.address)
        if idle is None:
            idle = self.idle[connection.address] = deque()
        if len(idle) >= MAX_IDLE_PER_REPLICA:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for idle in self.idle.values():
            for connection in idle:
                connection.close()
        self.idle.clear()


_addresses: dict[tuple[str, bytes, bytes], tuple[Address, bytes]] = {}


def _address(url: str, path: bytes, method: bytes = b"POST") -> tuple[Address, bytes]:
    """(where the replica listens, the request's first bytes up to the Content-Length value)
    for a replica URL — ``http+unix://<socket path>`` or ``http://127.0.0.1:20001`` — and a
    path, computed once per replica."""
    known = _addresses.get((url, path, method))
    if known is None:
        if is_unix_url(url):
            try:
                socket_path, prefix = split_unix_url(url)
            except ValueError as exc:
                raise UpstreamError(str(exc)) from None
            address, host = Address(socket_path, 0), b"localhost"
        else:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamError(f"replica URL {url!r} is neither http+unix:// nor "
                                    "http://host:port")
            address, prefix = Address(parts.hostname, parts.port or 80), parts.path
            host = b"%s:%d" % (address.host.encode(), address.port)
        known = (address, b"%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: " % (
            method, prefix.rstrip("/").encode(), path, host))
        if len(_addresses) < 10000:
            _addresses[(url, path, method)] = known
    return known
