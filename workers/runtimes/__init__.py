"""Container runtimes that carry out desired state: Docker (one host), local processes (no
Docker), later Kubernetes/Swarm. `get_runtime()` picks one from Django settings, read lazily;
the runtime classes themselves take explicit arguments and never import Django."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import (
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    wait_ready,
)

if TYPE_CHECKING:
    from .docker import DockerRuntime
    from .local import LocalRuntime

__all__ = [
    "ReplicaRuntimeError",
    "ReplicaSpec",
    "ReplicaState",
    "ReplicaStatus",
    "Runtime",
    "get_runtime",
    "wait_ready",
]

RUNTIME_NAMES = ("auto", "docker", "local")


def get_runtime(name: str | None = None) -> Runtime:
    """The runtime named `name`, or ``settings.MODELPORT_RUNTIME``: "docker", "local", or
    "auto" (Docker when its daemon answers, else local processes)."""
    from django.conf import settings

    choice = (name or getattr(settings, "MODELPORT_RUNTIME", "auto") or "auto").lower()
    if choice not in RUNTIME_NAMES:
        raise ValueError(f"unknown runtime {choice!r}; expected one of {RUNTIME_NAMES}")
    if choice == "local":
        return _local(settings)
    if choice == "docker":
        return _docker(settings)
    try:
        runtime: Runtime = _docker(settings)
    except Exception:  # noqa: BLE001 - no SDK, no socket, permission denied: fall back
        return _local(settings)
    return runtime if runtime.ping() else _local(settings)


def _data_dir(settings: object) -> Path:
    return Path(getattr(settings, "MODELPORT_DATA_DIR"))  # noqa: B009 - required setting


def _docker(settings: object) -> DockerRuntime:
    import docker

    from .docker import DockerRuntime
    from .images import ImageBuilder

    client = docker.from_env(timeout=int(getattr(settings, "MODELPORT_DOCKER_TIMEOUT", 120)))
    state_dir = _data_dir(settings) / "runtime"
    base_image = getattr(settings, "MODELPORT_SERVING_BASE_IMAGE", "modelport/base:bookworm")
    builder = ImageBuilder(client, base_image, lock_dir=state_dir / "locks")
    # Optional: where the data dir is on the Docker host, when this process sees it elsewhere.
    # Without it, a worker running in a container discovers its own mounts.
    host_map: dict[str, str] | None = None
    host_data_dir = getattr(settings, "MODELPORT_DOCKER_HOST_DATA_DIR", None)
    if host_data_dir:
        host_map = {str(_data_dir(settings).resolve()): str(host_data_dir)}
    return DockerRuntime(
        client,
        network=getattr(settings, "MODELPORT_DOCKER_NETWORK", "host"),
        port_range=tuple(getattr(settings, "MODELPORT_PORT_RANGE", (20000, 20999))),
        base_image=base_image,
        image_builder=builder,
        state_dir=state_dir,
        host_path_map=host_map,
    )


def _local(settings: object) -> LocalRuntime:
    from .local import LocalRuntime

    return LocalRuntime(
        _data_dir(settings) / "runtime",
        port_range=tuple(getattr(settings, "MODELPORT_PORT_RANGE", (20000, 20999))),
    )
