"""The platform's one connection to the real MLflow tracking server.

The server listens where only the platform reaches it (``MODELPORT_MLFLOW_UPSTREAM``: a unix
socket in a 0700 directory under ``make run``, an internal address in compose and Kubernetes).
Two callers use this module: the authenticated route that stock clients log through
(``mlflow_route``) and the platform's own reads — the sync and ``runs:/``/``models:/`` imports
(``mlflow_import``). Neither goes through MLflow's Python client, which would resolve its model
registry from the process's environment (the stray ``./mlflow.db`` of issue 24) and could be
pointed at local files by a run's artifact location.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from django.conf import settings

# Reading an artifact or a search may take a while; connecting to a local socket may not.
TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=300.0, pool=30.0)
HEALTH_TIMEOUT = httpx.Timeout(2.0)

_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()


class Unavailable(RuntimeError):
    """The tracking server does not answer (not started, socket gone, network)."""


class MlflowError(RuntimeError):
    """The tracking server answered with an error: MLflow's ``error_code`` and ``message``."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status, self.error_code, self.message = status, error_code, message


def client() -> httpx.Client:
    """A pooled, thread-safe client for the configured upstream (one per address)."""
    target = settings.MODELPORT_MLFLOW_UPSTREAM
    with _lock:
        found = _clients.get(target)
        if found is None:
            if target.startswith("unix:"):
                # MLflow's host check accepts "localhost"; the socket path is what matters.
                found = httpx.Client(transport=httpx.HTTPTransport(uds=target[len("unix:"):]),
                                     base_url="http://localhost", timeout=TIMEOUT)
            else:
                found = httpx.Client(base_url=target.rstrip("/"), timeout=TIMEOUT)
            _clients[target] = found
    return found


def describe() -> str:
    """Where the server is, for messages (never a credential: the address has none)."""
    return settings.MODELPORT_MLFLOW_UPSTREAM


def answers() -> bool:
    """A quick health check, so the periodic sync never waits when no server runs."""
    try:
        return client().get("/health", timeout=HEALTH_TIMEOUT).status_code == 200
    except httpx.HTTPError:
        return False


def _error(response: httpx.Response) -> MlflowError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return MlflowError(response.status_code, str(body.get("error_code") or "ERROR"),
                       str(body.get("message") or response.text[:500] or response.reason_phrase))


def call(method: str, path: str, *, params: dict[str, Any] | None = None,
         json: dict[str, Any] | None = None) -> dict[str, Any]:
    """One REST call (``/api/2.0/mlflow/...``); MLflow's error as ``MlflowError``."""
    try:
        response = client().request(method, path, params=params, json=json)
    except httpx.HTTPError as exc:
        raise Unavailable(f"MLflow at {describe()} is unreachable: {exc}") from None
    if response.status_code != 200:
        raise _error(response)
    try:
        body = response.json()
    except ValueError:
        raise MlflowError(response.status_code, "BAD_RESPONSE",
                          f"not JSON: {response.text[:200]!r}") from None
    return body if isinstance(body, dict) else {}


@contextmanager
def stream(method: str, path: str, *, params: dict[str, Any] | None = None
           ) -> Iterator[httpx.Response]:
    """A response whose body is read in chunks (``iter_bytes``); errors as ``call`` raises."""
    try:
        with client().stream(method, path, params=params) as response:
            if response.status_code != 200:
                response.read()
                raise _error(response)
            yield response
    except httpx.HTTPError as exc:
        raise Unavailable(f"MLflow at {describe()} is unreachable: {exc}") from None
