"""The edge: Modelport's front door on ``PORT``, an asyncio server in front of Django.

``POST /serve/<deployment>/invocations`` is answered here, on the event loop, without Django's
request cycle: the token and routing table come from the gateway's in-process caches
(``deployments.gateway``; a database query only on a cache miss, at most once a second per
deployment, in a worker thread), and the body goes to a replica over pooled keep-alive
connections (``deployments.upstream``). Everything else — portal, API, admin, static
files — is streamed to the Django web server (gunicorn) on a unix socket or an internal
address, unchanged.

Why a separate process: through Django (gunicorn's sync workers, WSGI, urllib3) the gateway cost
about 1.7 ms of CPU per request and kept 11 % of a replica's throughput at 16 connections; the
event loop proxies a request in a fraction of that. The Django path (``GatewayMiddleware``) stays
for installs that run gunicorn alone; both answer alike (same refusals, headers and counters).

Run it with ``python -m config.edge`` (the Procfile's ``edge`` process).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
import orjson
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from rest_framework import exceptions
from yarl import URL

from . import gateway, shadowing
from .upstream import Pool, UpstreamError, UpstreamTimeout

log = logging.getLogger("modelport.edge")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")

_SERVE_PATH = re.compile(r"^/serve/([^/]+)/invocations$")
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")
# Not passed on either way (RFC 9110 §7.6.1), plus Expect: the edge already answered it.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"expect", b"proxy-connection"})
SKIP_ANSWER = HOP_BY_HOP | {b"date"}  # uvicorn writes its own Date
FORWARD = {name.lower().encode(): name.encode() for name in gateway.FORWARD_HEADERS
           if name != "X-Request-ID"}
JSON = [(b"content-type", b"application/json")]


_ID_PREFIX = os.urandom(8).hex()  # per process: ids stay unique across edge workers
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    """A 32-hex-digit request id like Django's (uuid4().hex), without a getrandom() call per
    request: a random per-process prefix and a counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class Edge:
    """The ASGI application (served by uvicorn with uvloop and httptools)."""

    def __init__(self, web_upstream: str, *, max_body: int | None = None) -> None:
        self.web_upstream = web_upstream
        self.max_body = max_body or settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440
        self.replicas = Pool()
        self.web: aiohttp.ClientSession | None = None
        self.web_base = ""
        self.threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="modelport-edge")
        self.chores: list[asyncio.Task] = []

    # --- lifecycle ----------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.web_upstream.startswith("unix:"):
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
                path=self.web_upstream[len("unix:"):], limit=256)
            self.web_base = "http://modelport-web"
        else:
            connector = aiohttp.TCPConnector(limit=256)
            self.web_base = self.web_upstream.rstrip("/")
        self.web = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=600.0))
        self.chores = [asyncio.create_task(self._every(gateway.FLUSH_S, gateway.flush)),
                       asyncio.create_task(self._every(gateway.REVOKE_CHECK_S,
                                                       self._forget_revoked))]

    async def shutdown(self) -> None:
        for chore in self.chores:
            chore.cancel()
        await self._sync(gateway.flush)
        self.replicas.close()
        if self.web is not None:
            await self.web.close()
        await asyncio.get_running_loop().run_in_executor(self.threads, shadowing.drain)
        self.threads.shutdown(wait=True)

    async def _every(self, seconds: float, chore: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self._sync(chore)
            except Exception:  # a database hiccup must not end the chore
                log.exception("edge chore %s failed", getattr(chore, "__name__", chore))

    @staticmethod
    def _forget_revoked() -> None:
        gateway.forget_revoked(time.monotonic())

    async def _sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` (a database read or write) in a worker thread."""

        def call() -> T:
            close_old_connections()
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.threads, call)

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = _SERVE_PATH.match(scope["path"])
            if match is not None:
                await self.serve(scope, receive, send, match.group(1))
            else:
                await self.forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- the gateway --------------------------------------------------------------------------

    async def serve(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        headers: list[tuple[bytes, bytes]] = []
        authorization = route_key = incoming_id = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"x-request-id":
                incoming_id = value
            elif key in FORWARD:
                headers.append((FORWARD[key], value))
            elif key == b"x-modelport-route-key":
                route_key = value
        request_id = (incoming_id.decode() if incoming_id and _VALID_REQUEST_ID.match(incoming_id)
                      else _new_request_id())
        headers.append((b"X-Request-ID", request_id.encode()))
        if scope["method"] != "POST":
            await self._refuse(send, gateway.method_not_allowed(scope["method"]), request_id)
            return
        scheme, _, raw = authorization.decode("latin-1").partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw:
            await self._refuse(send, gateway.not_authenticated(), request_id)
            return
        try:
            caller = gateway.cached_caller(gateway.token_digest(raw))
            if caller is None:
                caller = await self._sync(gateway.caller, raw)
            route = gateway.cached_route(name) or await self._sync(gateway.route_for, name)
        except exceptions.AuthenticationFailed as exc:
            await self._refuse(send, gateway.token_refused(exc), request_id)
            return
        except DatabaseError:
            log.exception("database unavailable for a token or routing check")
            await self._refuse(send, gateway.Refusal(
                503, "Modelport cannot check this token or route right now (its database is "
                     "not answering); try again shortly.", "control_plane_unavailable",
                {"Retry-After": "5"}), request_id)
            return
        admin, teams = caller
        if route is None or not (admin or route.team_id in teams):
            await self._refuse(send, gateway.not_found(name), request_id)
            return
        body = await self._read_body(receive)
        if body is None:
            await self._refuse(send, gateway.Refusal(
                413, f"Request body over {self.max_body} bytes.", "payload_too_large", {}),
                request_id)
            return
        key = route_key.decode("latin-1") or None
        tried: set[str] = set()
        last_error = ""
        for _attempt in range(2):
            picked = route.pick(key, tried)
            if picked is None and last_error == "the replica closed the connection":
                picked = route.pick(key, set())  # a pooled connection went stale: same replica
            if picked is None:
                break
            revision, url = picked
            tried.add(url)
            started = time.monotonic()
            try:
                answer = await self.replicas.post(url, b"/invocations", body, headers,
                                                  settings.MODELPORT_GATEWAY_TIMEOUT_S)
            except UpstreamError as exc:
                last_error = str(exc)
                gateway.count(route.version[0], revision, 502,
                              (time.monotonic() - started) * 1000)
                continue  # the replica went away: once more on another one
            except UpstreamTimeout:
                gateway.count(route.version[0], revision, 504,
                              (time.monotonic() - started) * 1000)
                await self._refuse(send, gateway.timed_out(name), request_id)
                return
            gateway.count(route.version[0], revision, answer.status,
                          (time.monotonic() - started) * 1000)
            await send({"type": "http.response.start", "status": answer.status, "headers": [
                (b"content-type", answer.content_type),
                (b"content-length", b"%d" % len(answer.body)),
                (b"x-modelport-revision", b"%d" % revision),
                (b"x-request-id", request_id.encode())]})
            await send({"type": "http.response.body", "body": answer.body})
            if route.shadow is not None:
                shadowing.mirror(route.version[0], route.shadow, body,
                                 {k.decode(): v.decode("latin-1") for k, v in headers},
                                 answer.status, answer.body)
            return
        if not tried:
            await self._refuse(send, gateway.no_ready_replica(name), request_id)
        else:
            await self._refuse(send, gateway.unavailable(name, last_error), request_id)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole request body, or None once it passes ``max_body``."""
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            return body if len(body) <= self.max_body else None
        parts = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    async def _refuse(send: Send, refusal: gateway.Refusal, request_id: str) -> None:
        body = orjson.dumps({"detail": refusal.detail, "code": refusal.code})
        headers = [*JSON, (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", request_id.encode())]
        headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in refusal.headers.items()]
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- everything else: Django ----------------------------------------------------------------

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the request to Django and its answer back. The client's address goes along
        as the last ``X-Forwarded-For`` entry (``config.middleware`` trusts it only from a
        unix-socket peer, i.e. this process)."""
        headers: list[tuple[str, str]] = []
        forwarded_for = ""
        chunked = False
        for key, value in scope["headers"]:
            if key == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key not in HOP_BY_HOP:
                headers.append((key.decode("latin-1"), value.decode("latin-1")))
        client = scope.get("client")
        if client:
            forwarded_for = f"{forwarded_for}, {client[0]}" if forwarded_for else client[0]
        if forwarded_for:
            headers.append(("X-Forwarded-For", forwarded_for))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        data: Any
        if chunked:  # WSGI needs a length: read the body first
            parts = []
            while True:
                message = await receive()
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            data = b"".join(parts)
        else:
            data = _stream(receive) if scope["method"] not in ("GET", "HEAD") else None
        try:
            async with self.web.request(
                    scope["method"], URL(self.web_base + target.decode("latin-1"), encoded=True),
                    headers=headers, data=data, allow_redirects=False) as upstream:
                await send({"type": "http.response.start", "status": upstream.status,
                            "headers": [(k, v) for k, v in upstream.raw_headers
                                        if k.lower() not in SKIP_ANSWER]})
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                FileNotFoundError) as exc:
            log.warning("web server not answering: %s", exc)
            body = orjson.dumps({"detail": "Modelport's web server is not answering; try "
                                           "again in a few seconds.", "code": "web_unavailable"})
            await send({"type": "http.response.start", "status": 502, "headers": [
                *JSON, (b"content-length", str(len(body)).encode()), (b"retry-after", b"2")]})
            await send({"type": "http.response.body", "body": body})


async def _stream(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return
