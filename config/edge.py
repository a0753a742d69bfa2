"""Start the edge (``gateway.edge``): Modelport's front door, under uvicorn.

    python -m config.edge --port 8000 --upstream unix:var/run/web.sock

Everything but ``/serve/<name>/invocations`` goes on to the Django web server at ``--upstream``
(``MODELPORT_WEB_UPSTREAM``): ``unix:/path/web.sock`` (gunicorn ``--bind unix:...``, the default
setup) or ``http://host:port`` (a sidecar or a compose service).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
django.setup()

from django.conf import settings  # noqa: E402  (after django.setup())

from gateway.edge import Edge  # noqa: E402
from gateway.edge_protocol import EdgeHttpProtocol  # noqa: E402

log = logging.getLogger("modelport.edge")

# EdgeHttpProtocol answers /serve/ itself only when uvicorn hands it the Edge unwrapped: no
# proxy-headers or message-logging middleware (tests/deployments/test_edge_protocol.py).
UVICORN_OPTIONS: dict[str, Any] = dict(
    factory=True, loop="uvloop", http=EdgeHttpProtocol, lifespan="on", access_log=False,
    proxy_headers=False, server_header=False, timeout_graceful_shutdown=10, log_level="warning")


def upstream(value: str) -> str:
    """``unix:/path`` or ``http://host:port``; anything else is refused loudly."""
    if value.startswith("unix:/") or value.startswith("unix:."):
        return value
    if value.startswith("http://") and len(value) > len("http://"):
        return value.rstrip("/")
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a web server address: use unix:/path/web.sock or http://host:port")


def application() -> Edge:
    """The ASGI app, for ``uvicorn --factory config.edge:application``."""
    return Edge(upstream(os.environ.get("MODELPORT_WEB_UPSTREAM")
                         or settings.MODELPORT_WEB_UPSTREAM))


def main(argv: list[str] | None = None) -> None:
    import uvicorn  # noqa: PLC0415 - only the command line serves with uvicorn; the ASGI factory does not

    parser = argparse.ArgumentParser(prog="python -m config.edge",
                                     description="Modelport's edge: the gateway and a proxy "
                                                 "to the Django web server.")
    parser.add_argument("--host", default=settings.MODELPORT_EDGE_HOST)
    parser.add_argument("--port", type=int, default=settings.MODELPORT_EDGE_PORT)
    parser.add_argument("--upstream", type=upstream, default=settings.MODELPORT_WEB_UPSTREAM
                        or None, help="the Django web server: unix:/path or http://host:port")
    parser.add_argument("--workers", type=int, default=settings.MODELPORT_EDGE_WORKERS)
    args = parser.parse_args(argv)
    if not args.upstream:
        parser.error("--upstream (or MODELPORT_WEB_UPSTREAM) is required")
    os.environ["MODELPORT_WEB_UPSTREAM"] = args.upstream  # for the factory, in every worker
    # every worker splits consumer keys' rate limits by the worker count (gateway/consumers.py)
    os.environ["MODELPORT_EDGE_WORKERS"] = str(args.workers)
    settings.MODELPORT_EDGE_WORKERS = args.workers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s edge %(levelname)s %(message)s")
    log.info("edge on http://%s:%s -> web %s (%d worker%s)", args.host, args.port,
             args.upstream, args.workers, "" if args.workers == 1 else "s")
    uvicorn.run("config.edge:application", host=args.host, port=args.port,
                workers=args.workers, **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
