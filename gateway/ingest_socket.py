"""The edge's second door: prediction-log ingest for replicas that have no network.

A replica without a network (``workers/runtimes/docker.py``, ``network="none"``) cannot reach
``MODELPORT_BASE_URL``; its shipper posts to a unix socket instead, whose directory is mounted
read-only into it. The edge listens there and passes exactly one request on to Django:
``POST /api/v1/ingest/predictions/`` (the replica's ingest token still decides what it may
write). Anything else gets a 404 or 405, so the socket opens nothing of the portal or the API
to model code.

With several edge workers, one serves the socket (an flock beside it says which); another takes
over within ``TAKEOVER_S`` when that one exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import ClientError, web
from django.conf import settings

from serving.sockets import bind_unix
from workers import factory
from workers.runtimes.base import private_dirs

if TYPE_CHECKING:
    from .edge import Edge

log = logging.getLogger("modelport.edge")

INGEST_PATH = "/api/v1/ingest/predictions/"
TAKEOVER_S = 5.0
PASSED_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "X-Request-ID")


class IngestSocket:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.path = factory.ingest_socket(settings)
        # Django checks Host against ALLOWED_HOSTS: the platform's own public name passes.
        self.host = urlsplit(settings.MODELPORT_BASE_URL).netloc or "localhost"
        self.runner: web.AppRunner | None = None
        self.lock: int | None = None
        self.waiting: asyncio.Task | None = None

    async def start(self) -> None:
        if not await self._try_serve():
            self.waiting = asyncio.create_task(self._take_over())

    async def stop(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self.lock is not None:
            os.close(self.lock)  # releases the flock

    async def _take_over(self) -> None:
        while not await self._try_serve():
            await asyncio.sleep(TAKEOVER_S)

    async def _try_serve(self) -> bool:
        """Serve the socket if no other edge process does; True when this one does."""
        directory = self.path.parent
        private_dirs(directory.parent)
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)  # replicas (another uid) traverse it read-only
        fd = os.open(directory.parent / f".{self.path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:
            app = web.Application(client_max_size=settings.MODELPORT_INGEST_MAX_BYTES)
            app.router.add_post(INGEST_PATH, self.relay)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, bind_unix(str(self.path), mode=0o666)).start()
        except BaseException:
            os.close(fd)
            raise
        self.lock, self.runner = fd, runner
        log.info("ingest for replicas without a network on %s", self.path)
        return True

    async def relay(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name: request.headers[name] for name in PASSED_HEADERS
                   if name in request.headers}
        headers["Host"] = self.host
        web_session = self.edge.web
        if web_session is None:
            return _unavailable()
        try:
            async with web_session.post(self.edge.web_base + INGEST_PATH, data=body,
                                        headers=headers, allow_redirects=False) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    content_type=answer.content_type or "application/json")
        except (ClientError, OSError) as exc:
            log.warning("ingest relay: web server not answering: %s", exc)
            return _unavailable()


def _unavailable() -> web.Response:
    return web.json_response({"detail": "Modelport's web server is not answering; retry.",
                              "code": "web_unavailable"}, status=502,
                             headers={"Retry-After": "2"})
