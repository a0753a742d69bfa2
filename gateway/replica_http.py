"""Pooled HTTP to replicas from Django-side code (the gateway middleware, shadowing), over
``http://host:port`` or a replica's unix socket file (``http+unix://…``, serving/sockets.py).

urllib3 has no unix-socket transport; its connection and pool classes take one small override
each (the connect), so keep-alive pooling, timeouts and errors stay urllib3's own.
"""

from __future__ import annotations

import queue
import socket
import threading

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import NewConnectionError

from serving.sockets import connect, is_unix_url, split_unix_url


class _UnixConnection(HTTPConnection):
    def __init__(self, *args: object, socket_path: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        sock.settimeout(timeout)
        try:
            connect(sock, self.socket_path)
        except OSError as exc:
            sock.close()
            raise NewConnectionError(self, f"cannot connect to {self.socket_path}: {exc}") \
                from exc
        return sock


class _UnixPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _UnixConnection


class ReplicaClient:
    """One pool per replica; ``post`` raises urllib3's errors like ``PoolManager.request``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.tcp = urllib3.PoolManager(num_pools=64, maxsize=maxsize, block=False,
                                       retries=False)
        self.unix: dict[str, _UnixPool] = {}
        self._lock = threading.Lock()

    def post(self, url: str, path: str, body: bytes | None, headers: dict[str, str],
             timeout: urllib3.Timeout, method: str = "POST") -> urllib3.BaseHTTPResponse:
        if not is_unix_url(url):
            return self.tcp.request(method, url.rstrip("/") + path, body=body, headers=headers,
                                    timeout=timeout, preload_content=True, redirect=False)
        pool = self.unix.get(url)
        if pool is None:
            socket_path, _ = split_unix_url(url)
            with self._lock:
                if len(self.unix) > 1000:
                    self.unix.clear()
                pool = self.unix.setdefault(url, _UnixPool(
                    "localhost", maxsize=self.maxsize, block=False, retries=False,
                    socket_path=socket_path))
        return pool.urlopen(method, path, body=body, headers=headers, timeout=timeout,
                            preload_content=True, redirect=False, retries=False)

    def drop_idle(self, url: str) -> None:
        """Close the idle pooled connections to ``url`` (its host stopped accepting new ones:
        a request sent on an old one would wait its whole read timeout)."""
        pool: urllib3.HTTPConnectionPool | None = (
            self.unix.get(url) if is_unix_url(url) else self.tcp.connection_from_url(url))
        if pool is None or pool.pool is None:
            return
        idle = []
        while True:
            try:
                idle.append(pool.pool.get(block=False))
            except queue.Empty:
                break
        for connection in idle:
            if connection is not None:
                connection.close()
            pool.pool.put(None)  # keep the slot: a new connection is opened when needed
