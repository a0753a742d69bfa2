"""How the platform reaches a replica on its own machine: a unix socket file.

A replica started by the Docker runtime has no network at all (``network_mode=none``): model
code can reach nothing, and nothing can reach the model server except through the one socket
file it listens on. That file lives in a directory of its own under the platform's data dir
(mode 0700 on the host), bind-mounted into the container, so only the platform — the edge, the
reconciler's probes, shadowing — can connect. The same holds for local processes. The socket
costs 20 to 25 µs of CPU less per request, edge and replica together, than loopback TCP.

A replica's address is a URL of the form ``http+unix://<percent-encoded socket path>``
(the convention of requests-unixsocket); ``split_unix_url`` takes it apart. Socket paths
longer than the kernel's limit (107 bytes; test data dirs get long) are reached through
``/proc/self/fd/<directory fd>/<name>``.

Django-free: the model server, the runtimes and the platform all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import stat
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit

UNIX_SCHEME = "http+unix"
SOCKET_NAME = "serve.sock"  # a replica's socket in its own directory
MAX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


def unix_url(path: str) -> str:
    """``http+unix://…`` for a socket file (an absolute path)."""
    return f"{UNIX_SCHEME}://{quote(path, safe='')}"


def is_unix_url(url: str) -> bool:
    return url.startswith(UNIX_SCHEME + "://")


def split_unix_url(url: str) -> tuple[str, str]:
    """(socket path, request path) of ``http+unix://<encoded path>[/request/path]``."""
    parts = urlsplit(url)
    if parts.scheme != UNIX_SCHEME or not parts.netloc:
        raise ValueError(f"{url!r} is not an http+unix:// URL")
    path = unquote(parts.netloc)
    if not path.startswith("/"):
        raise ValueError(f"{url!r}: the socket path must be absolute")
    return path, parts.path or ""


@contextlib.contextmanager
def reachable_path(path: str) -> Iterator[str]:
    """``path``, or an equivalent under ``/proc/self/fd`` when it is too long for a socket
    address; the directory stays open while the caller binds or connects."""
    if len(os.fsencode(path)) <= MAX_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def connect(sock: socket.socket, path: str) -> None:
    with reachable_path(path) as address:
        sock.connect(address)


async def connect_async(sock: socket.socket, path: str) -> None:
    """``connect`` for a non-blocking socket on the running event loop."""
    with reachable_path(path) as address:
        await asyncio.get_running_loop().sock_connect(sock, address)


def bind_unix(path: str, mode: int = 0o666) -> socket.socket:
    """A stream socket bound to the file ``path``, inheritable by uvicorn's workers.

    A socket file left by an earlier process (a restarted container) is replaced; any other
    kind of file there is an error. The file is made connectable by ``mode``: the directory it
    lives in is what keeps others out, and the platform may run as another user than the
    replica."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable_path(path) as address:
            sock.bind(address)
        os.chmod(path, mode)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket file (for probes and the prediction-log shipper)."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            connect(sock, self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def http_connection(url: str, timeout: float | None) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the server of ``url`` (``http://``, ``https://`` or ``http+unix://``)
    and the request target (path and query) to send it."""
    if is_unix_url(url):
        path, target = split_unix_url(url)
        query = urlsplit(url).query
        return UnixHTTPConnection(path, timeout), (target or "/") + (f"?{query}" if query else "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s):// or http+unix:// URL")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return cls(parts.hostname, parts.port, timeout=timeout), target


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None,
            timeout: float | None = 5.0) -> tuple[int, bytes]:
    """(status, body) of one request; OSError (or http.client's errors) when nothing answers."""
    connection, target = http_connection(url, timeout)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
