"""The edge: Modelport's front door on ``PORT``, an asyncio server in front of Django.

``POST /serve/<deployment>/invocations`` is answered here, on the event loop, without Django's
request cycle: the token and routing table come from the gateway's in-process caches
(``gateway.routes``; a database query only on a cache miss, at most once a second per
deployment, in a worker thread), and the body goes to a replica over pooled keep-alive
connections (``gateway.upstream``). Everything else — portal, API, admin, static
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
import gc
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import aiohttp
import orjson
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from rest_framework import exceptions

from core import replica_keys

from . import consumers, edge_web, ingest_socket, mlflow_port, routes, shadowing, v2, waking
from .ejection import Ejections
from .upstream import EXPIRE_EVERY_S, Answer, Pool, UpstreamTimeout

log = logging.getLogger("modelport.edge")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")

_SERVE_PATH = re.compile(r"^/serve/([^/]+)(/invocations|/v2(?:/.*)?)$")
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")
FORWARD = {name.lower().encode(): name.encode() for name in routes.FORWARD_HEADERS
           if name != "X-Request-ID"}
JSON = [(b"content-type", b"application/json")]
KEY_HEADER = replica_keys.HEADER.encode()
INVOCATIONS = "/invocations"


_ID_PREFIX = os.urandom(8).hex().encode()  # per process: ids stay unique across edge workers
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> bytes:
    """A 32-hex-digit request id like Django's (uuid4().hex), without a getrandom() call per
    request: a random per-process prefix and a counter."""
    return b"%s%016x" % (_ID_PREFIX, next(_ID_COUNTER))


class Reply(NamedTuple):
    """An answer to write: status, headers (lower-case names), body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def edge_error(request_id: bytes | None = None, v2_form: bool = False) -> Reply:
    """The 500 for a bug in the edge itself (logged where it happened)."""
    return _refusal(routes.Refusal(500, "The edge failed to answer this request.",
                                    "edge_error", {}), request_id, v2_form)


def _refusal(refusal: routes.Refusal, request_id: bytes | None, v2_form: bool = False) -> Reply:
    """A refusal as an answer: ``{"detail", "code"}``, or ``{"error"}`` on a v2 path."""
    body = orjson.dumps(v2.refusal_body(refusal) if v2_form
                        else {"detail": refusal.detail, "code": refusal.code})
    headers = [*JSON, (b"content-length", b"%d" % len(body))]
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in refusal.headers.items()]
    return Reply(refusal.status, headers, body)


class Exchange:
    """One gateway request on its way to a replica and back: the retry state of
    ``Edge.handle`` between callbacks."""

    __slots__ = ("attempts", "body", "done", "edge", "forward", "held", "key", "keyed",
                 "last_error", "method", "name", "path", "pinned", "request_id", "revision",
                 "route", "started", "target", "traffic", "tried")

    def __init__(self, edge: Edge, name: str, forward: list[tuple[bytes, bytes]],
                 key: str | None, request_id: bytes, body: bytes | None,
                 done: Callable[[Reply], None], target: v2.Target | None = None) -> None:
        self.edge = edge
        self.name = name
        self.forward = forward
        self.key = key
        self.request_id = request_id
        self.body = body
        self.done = done
        self.route: routes.Route | None = None
        self.tried: set[str] = set()
        self.last_error = ""
        self.attempts = 0
        self.revision = 0
        self.started = 0.0
        # What goes to the replica: /invocations, or a v2 path (gateway/v2.py) — only
        # inference is traffic (counted, mirrored); a version pins the request to a revision.
        self.target = target
        self.traffic = target is None or target.traffic
        self.method = b"POST" if self.traffic else b"GET"
        self.path = b"/invocations"
        self.pinned = 0
        self.held = False  # waited once for the deployment to wake (gateway/waking.py)
        self.keyed: consumers.Keyed | None = None  # admitted by a rate-limited consumer key

    def refuse(self, refusal: routes.Refusal) -> None:
        """Answer with the gateway's own refusal; once the caller was admitted (a route is
        set), a 5xx is the platform's failure and counted as such (``routes.refused``)."""
        if self.route is not None and refusal.status >= 500 and self.traffic:
            routes.refused(self.route, self.revision, refusal.status)
        self.done(_refusal(refusal, self.request_id, self.target is not None))

    def admit(self, caller: routes.Caller, route: routes.Route | None) -> None:
        admin, teams = caller
        if route is None or not (admin or route.team_id in teams):
            self.refuse(routes.not_found(self.name))
        else:
            self.enter(route)

    def admit_key(self, keyed: consumers.Keyed, route: routes.Route | None) -> None:
        """A consumer key (never a user): 404 off its deployments, 429 over its rate limit."""
        refusal = routes.key_refusal(keyed, route, self.name)
        if refusal is not None:
            self.refuse(refusal)
        else:
            self.keyed = keyed if keyed.bucket is not None else None
            self.enter(route)  # type: ignore[arg-type]  # key_refusal refused a None route

    def enter(self, route: routes.Route) -> None:
        if self.body is None:
            self.refuse(routes.Refusal(413, f"Request body over {self.edge.max_body} bytes.",
                                        "payload_too_large", {}))
        else:
            self.proceed(route)

    def proceed(self, route: routes.Route) -> None:
        """On to a replica for an admitted caller — or, when the deployment is scaled to zero
        or waking with none ready, held until one is (``gateway.waking``)."""
        if not self.held and waking.holds(route, self.traffic):
            self.held, self.route = True, route
            self.edge.wakes.hold(self, route)
        elif self.target is None:
            self.route = route
            self.relay()
        else:
            where = v2.upstream(route, self.name, self.target)
            if isinstance(where, routes.Refusal):
                self.refuse(where)
                return
            self.route = route
            self.path, self.pinned = where
            self.relay()

    def resume(self, route: routes.Route) -> None:
        """The deployment woke: relay the held request on the fresh route."""
        self.tried.clear()
        self.attempts, self.last_error = 0, ""
        self.proceed(route)

    def relay(self) -> None:
        """Send the body to a replica picked by the traffic split: at most two attempts, the
        second on another replica (or the same one when a pooled connection had gone stale).
        Replicas ejected after a failed connect (``gateway.ejection``) are skipped unless
        nothing else is left."""
        route: routes.Route = self.route  # type: ignore[assignment]  # set by admit(); no check on the hot path
        tried = self.tried
        ejected = self.edge.ejected
        exclude = ejected.exclude(tried) if ejected.until else tried
        picked = (route.pick_in(self.pinned, exclude) if self.pinned
                  else route.pick(self.key, exclude))
        if picked is None and exclude is not tried:  # all left are ejected: a try beats a 503
            picked = (route.pick_in(self.pinned, tried) if self.pinned
                      else route.pick(self.key, tried))
        if picked is None and self.last_error == "the replica closed the connection":
            picked = (route.pick_in(self.pinned, set()) if self.pinned
                      else route.pick(self.key, set()))
        if picked is None and not self.held and not self.tried and self.traffic and route.wakes:
            # its replicas went away since the route was read (scaled to zero a moment ago):
            # wait for the wake like a request that found none
            self.held = True
            self.edge.wakes.hold(self, route)
            return
        if picked is None:
            self.refuse(routes.no_ready_replica(self.name) if not self.tried
                        else routes.unavailable(self.name, self.last_error))
            return
        self.revision, url = picked
        self.tried.add(url)
        self.attempts += 1
        self.started = time.monotonic()
        key = route.keys.get(self.revision)
        self.edge.replicas.send(url, self.path, self.body,  # type: ignore[arg-type]  # admit() refused a None body
                                [*self.forward, (KEY_HEADER, key)] if key else self.forward,
                                self.edge.timeout, self.answered, self.method)

    def answered(self, answer: Answer | None, error: Exception | None) -> None:
        try:
            self._answered(answer, error)
        except Exception:  # the client must get an answer, whatever broke
            log.exception("the edge failed to answer /serve/%s%s", self.name,
                          self.path.decode())
            if self.route is not None and self.traffic:
                routes.refused(self.route, self.revision, 500)
            self.done(edge_error(self.request_id, self.target is not None))

    def _answered(self, answer: Answer | None, error: Exception | None) -> None:
        route: routes.Route = self.route  # type: ignore[assignment]  # set by admit(); no check on the hot path
        deployment_id = route.version[0]
        elapsed_ms = (time.monotonic() - self.started) * 1000
        if answer is None:
            if isinstance(error, UpstreamTimeout):
                if self.traffic:
                    routes.count(deployment_id, self.revision, 504, elapsed_ms, False)
                self.refuse(routes.timed_out(self.name))
                return
            if self.traffic:
                routes.count(deployment_id, self.revision, 502, elapsed_ms, False)
            self.last_error = str(error)
            if self.attempts < 2:
                self.relay()  # the replica went away: once more on another one
            else:
                self.refuse(routes.unavailable(self.name, self.last_error))
            return
        if self.traffic:
            routes.count(deployment_id, self.revision, answer.status, elapsed_ms)
            if route.shadow is not None and not self.pinned:
                shadowing.mirror(deployment_id, route.shadow, self.body,  # type: ignore[arg-type]  # admit() refused a None body
                                 {k.decode(): v.decode("latin-1") for k, v in self.forward},
                                 answer.status, answer.body,
                                 INVOCATIONS if self.target is None else v2.shadow_path(route))
        headers = [
            (b"content-type", answer.content_type),
            (b"content-length", b"%d" % len(answer.body)),
            (b"x-modelport-revision", b"%d" % self.revision),
            (b"x-request-id", self.request_id)]
        if answer.header_length is not None:
            headers.append((b"inference-header-content-length", answer.header_length))
        if self.keyed is not None:
            headers += [(b"x-ratelimit-limit", self.keyed.limit),
                        (b"x-ratelimit-remaining", consumers.remaining(self.keyed))]
        self.done(Reply(answer.status, headers, answer.body))


class Edge:
    """The ASGI application (served by uvicorn with uvloop and httptools)."""

    def __init__(self, web_upstream: str, *, max_body: int | None = None) -> None:
        self.web_upstream = web_upstream
        self.max_body = max_body or settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440
        self.timeout = float(settings.MODELPORT_GATEWAY_TIMEOUT_S)
        self.replicas = Pool()
        # a replica address whose connect failed is not picked for a while (its host is
        # likely gone): the pool reports it (gateway/upstream.py, gateway/ejection.py)
        self.ejected = Ejections(float(settings.MODELPORT_GATEWAY_EJECT_S))
        self.replicas.on_lost = self.ejected.eject
        self.ingest: ingest_socket.IngestSocket | None = None
        self.mlflow: mlflow_port.MlflowPort | None = None
        self.web: aiohttp.ClientSession | None = None
        self.web_base = ""
        self.threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="modelport-edge")
        self.chores: list[asyncio.Task] = []
        self.wakes = waking.Wakes(self._sync)
        self.lookups: set[asyncio.Task] = set()
        consumers.set_shares(settings.MODELPORT_EDGE_WORKERS)

    # --- lifecycle ----------------------------------------------------------------------------

    async def startup(self) -> None:
        # Django, DRF and the gateway's imports are hundreds of thousands of long-lived objects:
        # out of the collector's sight, a full collection no longer walks them all.
        gc.collect()
        gc.freeze()
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
        self.ingest = ingest_socket.IngestSocket(self)
        await self.ingest.start()
        if settings.MLFLOW_PORT:
            self.mlflow = mlflow_port.MlflowPort(self, settings.MODELPORT_EDGE_HOST,
                                                 settings.MLFLOW_PORT)
            await self.mlflow.start()
        self.chores = [asyncio.create_task(self._every(routes.FLUSH_S, routes.flush)),
                       asyncio.create_task(self._expire_replica_requests()),
                       asyncio.create_task(self._every(routes.REVOKE_CHECK_S,
                                                       self._forget_revoked))]

    async def shutdown(self) -> None:
        for chore in self.chores:
            chore.cancel()
        self.wakes.close()
        if self.ingest is not None:
            await self.ingest.stop()
        if self.mlflow is not None:
            await self.mlflow.stop()
        await self._sync(routes.flush)
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

    async def _expire_replica_requests(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            self.replicas.expire()

    @staticmethod
    def _forget_revoked() -> None:
        routes.forget_revoked(time.monotonic())

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
                await self.serve(scope, receive, send, match.group(1), match.group(2))
            else:
                await edge_web.forward(self, scope, receive, send)
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

    async def serve(self, scope: Scope, receive: Receive, send: Send, name: str,
                    path: str = INVOCATIONS) -> None:
        """The gateway through the ASGI interface, for the requests the edge's own protocol
        (``gateway.edge_protocol``) leaves to uvicorn: a percent-encoded name, a request
        pipelined behind another, a method other than POST (v2 metadata, readiness)."""
        body = await self._read_body(receive)
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def done(reply: Reply) -> None:
            if not answered.done():
                answered.set_result(reply)

        self.handle(method=scope["method"], headers=scope["headers"], name=name, body=body,
                    done=done, path=path)
        reply = await answered
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": reply.headers})
        await send({"type": "http.response.body", "body": reply.body})

    def handle(self, *, method: str, headers: Iterable[tuple[bytes, bytes]], name: str,
               body: bytes | None, done: Callable[[Reply], None],
               tokens: dict[bytes, tuple[str, str]] | None = None,
               path: str = INVOCATIONS) -> None:
        """Answer one request for deployment ``name``: ``done(reply)`` is called once, with a
        refusal or the replica's answer. ``headers`` are the request's (lower-case names);
        ``body`` is None when it was over ``max_body``.

        With the token and the route in the gateway's caches — nearly every request — nothing
        here awaits: the body goes to a pooled replica connection and ``done`` runs from that
        connection's parser. A cache miss looks the token or route up in a worker thread.

        ``tokens``: the connection's last ``Authorization`` header and its (token, SHA-256
        digest), so a client sending the same token on a keep-alive connection is not hashed
        again on every request. It lives as long as the connection.

        ``path``: what the request asks of the deployment after ``/serve/<name>`` —
        ``/invocations`` or an Open Inference Protocol path (``/v2…``, gateway/v2.py)."""
        forward: list[tuple[bytes, bytes]] = []
        authorization = route_key = incoming_id = b""
        for key, value in headers:
            if key == b"authorization":
                authorization = value
            elif key == b"x-request-id":
                incoming_id = value
            elif key in FORWARD:
                forward.append((FORWARD[key], value))
            elif key == b"x-modelport-route-key":
                route_key = value
        request_id = (incoming_id if incoming_id and _VALID_REQUEST_ID.match(incoming_id)
                      else _new_request_id())
        forward.append((b"X-Request-ID", request_id))
        target = None
        if path != INVOCATIONS:
            found = v2.target(path, method)
            if isinstance(found, routes.Refusal):
                done(_refusal(found, request_id, True))
                return
            target = found
        elif method != "POST":
            done(_refusal(routes.method_not_allowed(method), request_id))
            return
        known = tokens.get(authorization) if tokens is not None else None
        if known is None:
            scheme, _, raw = authorization.decode("latin-1").partition(" ")
            raw = raw.strip()
            if scheme.lower() != "bearer" or not raw:
                done(_refusal(routes.not_authenticated(), request_id, target is not None))
                return
            known = (raw, routes.token_digest(raw))
            if tokens is not None:
                tokens.clear()
                tokens[authorization] = known
        raw, digest = known
        exchange = Exchange(self, name, forward, route_key.decode("latin-1") or None,
                            request_id, body, done, target)
        route = routes.cached_route(name)
        keyed = caller = None
        if raw.startswith(consumers.PREFIX):  # a consumer key: /serve/ of its deployments only
            keyed = consumers.cached(digest)
            if keyed is not None and route is not None:
                exchange.admit_key(keyed, route)
                return
        else:
            caller = routes.cached_caller(digest)
            if caller is not None and route is not None:
                exchange.admit(caller, route)
                return
        task = asyncio.get_running_loop().create_task(
            self._look_up(exchange, raw, digest, caller, keyed, route))
        self.lookups.add(task)
        task.add_done_callback(self.lookups.discard)

    async def _look_up(self, exchange: Exchange, raw: str, digest: str,
                       caller: routes.Caller | None, keyed: consumers.Keyed | None,
                       route: routes.Route | None) -> None:
        try:
            if raw.startswith(consumers.PREFIX):
                keyed = keyed or await self._sync(consumers.look_up, raw, digest)
            elif caller is None:
                caller = await self._sync(routes.caller, raw)
            if route is None:
                route = await self._sync(routes.route_for, exchange.name)
        except exceptions.AuthenticationFailed as exc:
            exchange.refuse(routes.token_refused(exc))
            return
        except DatabaseError:
            log.exception("database unavailable for a token or routing check")
            exchange.route = route  # a cached route: the refusal counts against it
            exchange.refuse(routes.Refusal(
                503, "Modelport cannot check this token or route right now (its database is "
                     "not answering); try again shortly.", "control_plane_unavailable",
                {"Retry-After": "5"}))
            return
        if keyed is not None:
            exchange.admit_key(keyed, route)
        else:
            exchange.admit(caller, route)  # type: ignore[arg-type]  # set above when no digest

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
