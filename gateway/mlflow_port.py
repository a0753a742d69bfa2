"""``MLFLOW_PORT``: a tracking-server address for stock MLflow clients that expect one of their
own (``MLFLOW_TRACKING_URI=http://127.0.0.1:5000``), behind the same sign-in as ``/mlflow``.

The MLflow server itself listens only on a unix socket in the data dir (``registry/
mlflow_route.py``): nothing reaches it but the platform. Scripts written for a tracking server on
a port of its own keep working against this port, with ``MLFLOW_TRACKING_TOKEN`` set: the edge
streams every request to Django's ``/mlflow`` route (``/api/2.0/mlflow/runs/create`` becomes
``/mlflow/api/2.0/mlflow/runs/create``), which authenticates the token and applies the route's
rules. Nothing else of the platform is reachable here: every path lands under ``/mlflow``.
A port that cannot be bound is logged and skipped; the edge keeps serving.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import ClientError, web
from yarl import URL

if TYPE_CHECKING:
    from .edge import Edge

log = logging.getLogger("modelport.edge")

PREFIX = "/mlflow"
# Not passed on either way (RFC 9110 §7.6.1), plus the answer's own framing.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "expect",
                        "proxy-connection", "content-length", "date", "server"})


class MlflowPort:
    def __init__(self, edge: Edge, host: str, port: int) -> None:
        self.edge, self.host, self.port = edge, host, port
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.relay)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:  # reuse_port: every edge worker may listen; the kernel spreads connections
            await web.TCPSite(runner, self.host, self.port, reuse_port=True).start()
        except OSError as exc:
            log.warning("MLflow clients' port %s:%s not served: %s (they can use %s on the "
                        "platform's port)", self.host, self.port, exc, PREFIX)
            await runner.cleanup()
            return
        self.runner = runner
        log.info("MLflow clients' port on http://%s:%s -> %s", self.host, self.port, PREFIX)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def relay(self, request: web.Request) -> web.StreamResponse:
        session = self.edge.web
        if session is None:
            return _unavailable()
        # The request's Content-Length is passed on: without it the body would go on chunked,
        # and Django (a WSGI app) reads a request without a length as empty.
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP or k.lower() == "content-length"}
        if request.body_exists and request.content_length is None:
            return _length_required()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            forwarded = request.headers.get("X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{forwarded}, {peer[0]}" if forwarded else peer[0]
        target = URL(self.edge.web_base + PREFIX + request.raw_path, encoded=True)
        data = request.content if request.body_exists else None
        try:
            async with session.request(request.method, target, headers=headers, data=data,
                                       allow_redirects=False) as upstream:
                answer = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
                if upstream.headers.get("Content-Length"):
                    answer.content_length = int(upstream.headers["Content-Length"])
                await answer.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await answer.write(chunk)
                await answer.write_eof()
                return answer
        except (ClientError, OSError) as exc:
            log.warning("MLflow clients' port: web server not answering: %s", exc)
            return _unavailable()


def _length_required() -> web.Response:
    return web.json_response({"error_code": "INVALID_PARAMETER_VALUE",
                              "message": "A request body needs a Content-Length on this port "
                                         "(chunked bodies are not passed on)."}, status=411)


def _unavailable() -> web.Response:
    # MLflow's error format: its client shows the message as it is.
    return web.json_response({"error_code": "TEMPORARILY_UNAVAILABLE",
                              "message": "Modelport's web server is not answering; retry."},
                             status=503, headers={"Retry-After": "2"})
