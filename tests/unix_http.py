"""HTTP over a replica's abstract unix socket (serving/sockets.py), for tests."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from serving.sockets import unix_address


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, name: str, timeout: float) -> None:
        super().__init__("replica", timeout=timeout)
        self.name = name

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(unix_address(self.name))


def unix_request(name: str, method: str, path: str, payload: Any = None,
                 timeout: float = 10) -> tuple[int, Any]:
    """(status, JSON answer) of one request to the socket named ``@name``."""
    connection = _UnixConnection(name, timeout)
    try:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def listening(name: str) -> bool:
    """Whether something listens on the abstract socket ``@name``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(unix_address(name))
        except OSError:
            return False
    return True
