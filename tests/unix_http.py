"""HTTP over a replica's unix socket file (serving/sockets.py), for tests."""

from __future__ import annotations

import json
import socket
from typing import Any

from serving.sockets import connect, request


def unix_request(path: str, method: str, target: str, payload: Any = None,
                 timeout: float = 10, headers: dict[str, str] | None = None
                 ) -> tuple[int, Any]:
    """(status, JSON answer) of one request to the socket file ``path``."""
    from serving.sockets import unix_url

    body = None if payload is None else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json"} if body is not None else {}
    status, answer = request(unix_url(path) + target, method, body, {**sent, **(headers or {})},
                             timeout)
    return status, json.loads(answer or b"null")


def listening(path: str) -> bool:
    """Whether something accepts connections on the socket file ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            connect(sock, path)
        except OSError:
            return False
    return True
