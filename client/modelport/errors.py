"""Exceptions mapping the API's error statuses; each carries the server's message and code."""

from __future__ import annotations

from typing import Any


class ModelportError(Exception):
    """Any error answer from the API (or a transport failure, with ``status`` 0)."""

    exit_code = 1

    def __init__(self, message: str, *, status: int = 0, code: str = "",
                 body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body


class BadRequest(ModelportError):
    exit_code = 6


class AuthenticationError(ModelportError):
    exit_code = 3


class PermissionDenied(ModelportError):
    exit_code = 3


class NotFound(ModelportError):
    exit_code = 4


class Conflict(ModelportError):
    exit_code = 5


class TooLarge(BadRequest):
    pass


class RateLimited(ModelportError):
    exit_code = 7


class ServerError(ModelportError):
    exit_code = 8


class TimeoutExpired(ModelportError):
    """A wait (for a version or a deployment) did not reach its goal in time."""

    exit_code = 9


class OperationFailed(ModelportError):
    """What we waited for ended badly: a version ``failed``, a deployment ``failed``."""

    exit_code = 10


BY_STATUS: dict[int, type[ModelportError]] = {
    400: BadRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound,
    409: Conflict, 413: TooLarge, 415: BadRequest, 422: BadRequest, 429: RateLimited,
}


def _text(problems: Any) -> str:
    return " ".join(map(str, problems)) if isinstance(problems, list) else str(problems)


def from_response(status: int, body: Any) -> ModelportError:
    if isinstance(body, dict) and "detail" in body:
        message, code = str(body["detail"]), str(body.get("code", ""))
    elif isinstance(body, dict):
        message = "; ".join(f"{field}: {_text(problems)}" for field, problems in body.items())
        code = "invalid"
    else:
        message, code = (str(body)[:500] or f"HTTP {status}"), ""
    kind = BY_STATUS.get(status, ServerError if status >= 500 else ModelportError)
    return kind(message, status=status, code=code, body=body)
