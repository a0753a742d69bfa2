"""The edge's HTTP protocol: uvicorn's httptools protocol, with the gateway's hot path taken
out of the ASGI cycle.

Through ASGI, every prediction paid for a scope dict, a ``RequestResponseCycle`` with its
``asyncio.Event``, a task, ``receive`` and ``send`` message dicts and a regular-expression check
of every response header: a canned answer cost ~100 µs of CPU that way and 43 µs here. On two
cores, where the load generator, the replica and the edge share the CPU, that is throughput
taken from the replica (bench/gateway.py: the edge went from 243 to 106 to 140 µs per request).

This protocol answers ``POST /serve/<name>/invocations`` and the Open Inference Protocol's
``POST /serve/<name>/v2/models/<model>[/versions/<v>]/infer`` itself: the parser's callbacks collect
the headers and body, ``Edge.handle`` (the same code the ASGI path uses) decides — without a
task or an await when token and route are cached — and the answer is written to the transport
in one call from the replica connection's callback. Anything unusual keeps the ASGI path, which
answers the same way: another method, a percent-encoded name, a request pipelined behind one
still being answered, a concurrency limit, a WebSocket upgrade. So do the portal, the API and
everything else the edge streams to Django.

The protocol plays by uvicorn's connection rules: keep-alive and its timeout, pipelining (a
request queued behind a fast one starts when it completes), ``Expect: 100-continue``,
``Connection: close``, graceful shutdown (``shutdown`` ends the connection after the answer,
and uvicorn waits for open connections), and a client that disconnects mid-request
(tests/deployments/test_edge_protocol.py).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from serving.server import NoDelayHttpToolsProtocol

from .edge import Edge, Reply, edge_error

log = logging.getLogger("modelport.edge")

_SERVE_URL = re.compile(rb"^/serve/([A-Za-z0-9._~\-]+)(/invocations|/v2/models/[A-Za-z0-9._~\-]+"
                        rb"(?:/versions/[A-Za-z0-9._~\-]+)?/infer)(?:\?|$)")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Message:
    """uvicorn's ``message_event`` stand-in: nothing waits on a fast request's body."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_WAITER = _Message()


class FastCycle:
    """One ``/serve/`` request answered by the protocol. Has the attributes uvicorn's protocol
    reads from its current ``RequestResponseCycle`` (``response_complete``, ``disconnected``,
    ``keep_alive``, ``message_event``), so the inherited connection handling works unchanged."""

    __slots__ = ("body", "disconnected", "headers", "keep_alive", "message_event", "name",
                 "path", "protocol", "response_complete")

    def __init__(self, protocol: EdgeHttpProtocol, name: str, path: str,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.protocol = protocol
        self.name = name
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.body: bytes | bytearray | None = b""  # None once over the edge's max_body
        self.disconnected = False
        self.response_complete = False
        self.message_event = _NO_WAITER

    def answer(self, reply: Reply) -> None:
        self.protocol.write_answer(self, reply)


class EdgeHttpProtocol(NoDelayHttpToolsProtocol):
    """``uvicorn.run(..., http=EdgeHttpProtocol)`` with the app an ``Edge``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge: Edge | None = self.app if isinstance(self.app, Edge) else None
        self.tokens: dict[bytes, tuple[str, str]] = {}  # see Edge.handle
        self.idle_until: float | None = None  # see on_response_complete
        # this connection's /serve/ URLs: (deployment name, path after it)
        self.names: dict[bytes, tuple[str, str]] = {}

    def on_headers_complete(self) -> None:
        match = None
        if (self.url.startswith(b"/serve/") and self.edge is not None
                and self.limit_concurrency is None
                and (self.cycle is None or self.cycle.response_complete)
                and self.parser.get_method() == b"POST"
                and not self.parser.should_upgrade()):
            match = _SERVE_URL.match(self.url)
        if match is None:
            super().on_headers_complete()
            return
        self.scope["method"] = "POST"  # read by handle_websocket_upgrade and logging, if ever
        known = self.names.get(self.url)
        if known is None:
            if len(self.names) > 16:
                self.names.clear()
            known = self.names[self.url] = (match.group(1).decode("ascii"),
                                            match.group(2).decode("ascii"))
        self.cycle = FastCycle(  # type: ignore[assignment]  # stands in for uvicorn's cycle
            self, known[0], known[1], self.headers, self.parser.should_keep_alive())
        if self.expect_100_continue:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is not FastCycle:
            super().on_body(body)
            return
        if cycle.body is not None:
            if len(cycle.body) + len(body) > self.edge.max_body:
                cycle.body = None  # read on, keep nothing: the answer is 413
            elif not cycle.body:
                cycle.body = body  # the usual case: the whole body in one piece, not copied
            elif type(cycle.body) is bytes:
                cycle.body = bytearray(cycle.body) + body
            else:
                cycle.body += body

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is not FastCycle:
            super().on_message_complete()
            return
        try:
            self.edge.handle(method="POST", headers=cycle.headers, name=cycle.name,
                             body=(cycle.body if type(cycle.body) is not bytearray
                                   else bytes(cycle.body)),
                             done=cycle.answer, tokens=self.tokens, path=cycle.path)
        except Exception:
            log.exception("the edge failed to answer POST /serve/%s%s", cycle.name, cycle.path)
            cycle.keep_alive = False
            cycle.answer(edge_error())

    def write_answer(self, cycle: FastCycle, reply: Reply) -> None:
        if cycle.response_complete:
            return  # answered already (an error after the answer was written)
        cycle.response_complete = True
        if cycle.disconnected:
            return
        parts = [STATUS_LINE[reply.status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in reply.headers:
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", reply.body)
        self.transport.write(b"".join(parts))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    # Keep-alive timeout. uvicorn arms a timer after every answer and cancels it when the next
    # request's first bytes arrive: on a busy keep-alive connection, a timer made and dropped
    # per request. Here one timer stays armed and checks, when it fires, whether the
    # connection has really been idle for ``timeout_keep_alive`` — the same rule, for both
    # the fast path and the ASGI path.

    def on_response_complete(self) -> None:
        """uvicorn's ``on_response_complete`` with the timer armed lazily."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_until = self.loop.time() + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self._keep_alive_due)

    def _unset_keepalive_if_required(self) -> None:
        self.idle_until = None  # busy: the timer, if it fires, lets the connection be

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self.idle_until is None:
            return  # a request is under way; its answer arms the timer again
        remaining = self.idle_until - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()
