"""A real HTTP(S) listener on a loopback address, in a thread: the would-be victim (or the
legitimate receiver) of the platform's outbound calls. It records every request it gets."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Listener:
    """``Listener(status=302, headers={"Location": …})`` answers every request that way;
    ``tls`` (an ``ssl.SSLContext`` for the server side) makes it HTTPS."""

    host: str = "127.0.0.1"
    port: int = 0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    tls: ssl.SSLContext | None = None
    received: list[Seen] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # SNI of each TLS handshake

    def __post_init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                listener.received.append(Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length)))
                self.send_response(listener.status)
                for name, value in listener.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(listener.body)))
                self.end_headers()
                self.wfile.write(listener.body)

            do_GET = do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        self.server = Server((self.host, self.port), Handler)
        self.port = self.server.server_address[1]
        if self.tls is not None:
            def remember_sni(_sock, name: str | None, _ctx) -> None:
                self.server_names.append(name)
            self.tls.sni_callback = remember_sni
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        """``127.0.0.1:8123`` or ``[::1]:8123``: the form an allow-list entry takes."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.tls is not None else "http"
        where = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{where}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
