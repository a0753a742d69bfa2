"""Which container runtime this installation uses, as shown to users (``/api/v1/info/``, portal)."""

from __future__ import annotations

import time

import docker
from django.conf import settings

_CACHE_SECONDS = 30.0
_cache: tuple[float, bool] | None = None


def docker_answers(*, fresh: bool = False) -> bool:
    """Whether the Docker daemon answers a ping (cached briefly unless ``fresh``; never
    raises)."""
    global _cache
    now = time.monotonic()
    if not fresh and _cache is not None and now - _cache[0] < _CACHE_SECONDS:
        return _cache[1]
    try:
        client = docker.from_env(timeout=2)
        try:
            alive = bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no socket, permission denied, daemon down: all "no"
        alive = False
    _cache = (now, alive)
    return alive


def resolved_runtime() -> str:
    """``docker`` or ``local``: the configured runtime, with ``auto`` resolved."""
    configured = settings.MODELPORT_RUNTIME
    if configured != "auto":
        return configured
    return "docker" if docker_answers() else "local"


def describe_runtime() -> str:
    name = resolved_runtime()
    return "local (unsandboxed)" if name == "local" else name
