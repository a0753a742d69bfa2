"""A Celery worker's own ``/metrics``, for workers that share no folder with the web server.

Under ``make run`` and compose, Celery workers count into the same multiprocess folder as the
web server (``PROMETHEUS_MULTIPROC_DIR``, docs/monitoring.md), and the platform's ``/metrics``
serves their counters. On Kubernetes a worker runs in a pod of its own: with
``MODELPORT_WORKER_METRICS_PORT`` set, its main process serves its pool's counters (rollups,
alert notifications) on that port for Prometheus to scrape pod by pod. The same rule as the
platform's ``/metrics``: only ``Authorization: Bearer <MODELPORT_METRICS_TOKEN>``; without a
token set the endpoint is not started at all (it is never anonymous). No database gauges here:
the web pods serve those.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from core.prom_files import FilesCollector

log = logging.getLogger("modelport.worker_metrics")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def application(directory: Path, token: str) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    """The WSGI app: ``GET /metrics`` with the bearer token, the counters of ``directory``."""
    expected = f"Bearer {token}".encode()

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") != "GET":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: GET /metrics\n"]
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b"send 'Authorization: Bearer <MODELPORT_METRICS_TOKEN>'\n"]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FilesCollector(directory))
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry)]

    return app


def start(environ: os._Environ[str] | dict[str, str] | None = None) -> _Server | None:
    """Serve the worker's metrics in a daemon thread when ``MODELPORT_WORKER_METRICS_PORT``
    is set (and a token and a multiprocess folder are); the server, or None."""
    env = os.environ if environ is None else environ
    port = env.get("MODELPORT_WORKER_METRICS_PORT", "")
    if not port:
        return None
    token, directory = env.get("MODELPORT_METRICS_TOKEN", ""), env.get(
        "PROMETHEUS_MULTIPROC_DIR", "")
    if not token or not directory:
        log.error("MODELPORT_WORKER_METRICS_PORT is set but MODELPORT_METRICS_TOKEN or "
                  "PROMETHEUS_MULTIPROC_DIR is not: the worker's metrics are not served")
        return None
    host = env.get("MODELPORT_WORKER_METRICS_HOST", "0.0.0.0")  # noqa: S104 - a pod's port
    server = make_server(host, int(port), application(Path(directory), token),
                         server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    log.info("worker metrics on http://%s:%s/metrics", host, server.server_port)
    return server
