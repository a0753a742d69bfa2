"""Run the ASGI app on uvicorn (uvloop + httptools), one or several worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from serving.config import Settings
from serving.sockets import bind_unix


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol that always disables Nagle's algorithm on the connection.

    With ``--workers > 1`` uvicorn hands each worker an inherited listening socket, and the
    accepted connections then lack TCP_NODELAY: small responses wait for the peer's delayed ACK
    (~40 ms per keep-alive request; uvicorn issue #3149). Setting it here fixes every mode.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def limit_native_threads() -> None:
    """One BLAS/OpenMP thread per worker: the workers already fill the CPUs."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def run(settings: Settings, log_level: str = "warning") -> None:
    limit_native_threads()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    multiproc_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiproc_dir = tempfile.mkdtemp(prefix="modelport-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; exit 0 instead of dying
    # by the signal, so orchestrators see a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    config = uvicorn.Config(
        "serving.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=NoDelayHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        date_header=False,
        timeout_graceful_shutdown=5,
        # Workers load the model (GIL-heavy) right after start: give health pings slack.
        timeout_worker_healthcheck=30,
        backlog=2048,
    )
    try:
        sockets = listen(config, settings)
        # What uvicorn.run does, with our own list of listening sockets.
        if settings.workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            server = uvicorn.Server(config)
            server.run(sockets=sockets)
            if not server.started:
                sys.exit(STARTUP_FAILURE)
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def listen(config: uvicorn.Config, settings: Settings) -> list[socket.socket]:
    """The TCP socket on host:port (unless the port is 0) and the unix socket file when one is
    asked for. A socket that cannot be bound is fatal."""
    sockets = [config.bind_socket()] if settings.port else []
    if settings.unix_socket:
        try:
            sockets.append(bind_unix(settings.unix_socket))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            logging.getLogger("serving").error(
                "cannot listen on the unix socket %s: %s", settings.unix_socket, exc)
            sys.exit(STARTUP_FAILURE)
    if not sockets:
        logging.getLogger("serving").error("nothing to listen on: set MODELPORT_PORT or "
                                           "MODELPORT_UNIX_SOCKET")
        sys.exit(STARTUP_FAILURE)
    return sockets


def _exit_cleanly(signum: int, frame: object) -> None:
    sys.exit(0)
