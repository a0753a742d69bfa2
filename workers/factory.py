"""The runtime factory, the Django side of ``workers/runtimes/``: it reads Django settings and
the platform settings and builds the runtime that carries out desired state. `get_runtime()`
picks Docker (one host) or local processes from ``settings.MODELPORT_RUNTIME``;
`runtime_for_target(target)` builds the one an execution target names (Docker, several Docker
hosts, Docker Swarm, Kubernetes); `host_worker_runtime()` is a host worker's own Docker.

Several Docker hosts are driven through the database by the reconciler's side
(``deployments.hosts_runtime.HostsRuntime``), which sits above this app: it registers itself
with ``register_target_runtime("hosts", ...)`` from ``DeploymentsConfig.ready()``.

The runtime classes live in ``workers/runtimes/`` and take explicit arguments; that package never
imports Django (an import-linter contract in ``make lint`` keeps it so), which is why this
wiring sits beside it rather than in it."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from django.conf import settings

from teams.services import platform_settings

from .installation import installation_id, runtime_scope
from .runtimes.base import LABEL_INSTALLATION, LogFn, ReplicaRuntimeError, Runtime
from .runtimes.docker import DockerRuntime
from .runtimes.images import REPO_ROOT, ImageBuilder
from .runtimes.local import LocalRuntime
from .runtimes.registry_push import RegistryPublisher, registry_of
from .runtimes.swarm import DEFAULT_GPU_RESOURCE, SwarmRuntime
from .runtimes.wheelhouse import PackagePolicy

__all__ = [
    "get_runtime",
    "host_worker_runtime",
    "image_registry",
    "ingest_socket",
    "package_policy",
    "push_serving_image",
    "register_target_runtime",
    "registry_auth",
    "registry_publisher",
    "replica_network",
    "runtime_for_target",
    "worker_image_builder",
]

RUNTIME_NAMES = ("auto", "docker", "local")
MIN_DOCKER_API = "1.41"  # Swarm services with CapabilityDrop and a pids limit
# Runtimes of a docker target's "placement" (e.g. "hosts"), registered by the apps that own them.
_PLACEMENT_RUNTIMES: dict[str, Callable[[Any], Runtime]] = {}


def register_target_runtime(placement: str, build: Callable[[Any], Runtime]) -> None:
    """Docker targets with ``"placement": placement`` get the runtime ``build(target)``."""
    _PLACEMENT_RUNTIMES[placement] = build


def get_runtime(name: str | None = None) -> Runtime:
    """The runtime named `name`, or ``settings.MODELPORT_RUNTIME``: "docker", "local", or
    "auto" (Docker when its daemon answers, else local processes)."""
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


def replica_network(settings: object, endpoint: str | None) -> str:
    """MODELPORT_DOCKER_NETWORK ("none" by default) for this machine's engine; "host" for an
    engine elsewhere: a replica without a network is served on a socket file, which only the
    machine it runs on can reach."""
    if endpoint and not str(endpoint).startswith("unix://"):
        return "host"
    return str(getattr(settings, "MODELPORT_DOCKER_NETWORK", "none") or "none")


def ingest_socket(settings: object) -> Path:
    """Where the edge serves prediction-log ingest for replicas without a network."""
    configured = getattr(settings, "MODELPORT_INGEST_SOCKET", "")
    return Path(configured) if configured else _data_dir(settings) / "run" / "ingest" / \
        "ingest.sock"


def _image_builder(settings: object, client: Any, base_image: str) -> ImageBuilder:
    """An ImageBuilder that fetches wheels as the platform settings say (read at build time)
    into a wheelhouse under the data dir; its helper containers carry the installation id."""
    data_dir = _data_dir(settings)
    return ImageBuilder(client, base_image, packages=package_policy,
                        wheel_cache=data_dir / "wheelhouses",
                        lock_dir=data_dir / "runtime" / "locks",
                        container_labels={LABEL_INSTALLATION: installation_id()})


def image_registry(options: dict[str, Any] | None) -> str:
    """Where a multi-engine target's serving images go: its ``registry`` setting, else
    MODELPORT_IMAGE_REGISTRY; "" for none (each engine builds or has its own)."""
    value = (options or {}).get("registry") or getattr(settings, "MODELPORT_IMAGE_REGISTRY", "")
    return str(value or "").strip().rstrip("/")


def registry_auth() -> dict[str, str] | None:
    """MODELPORT_IMAGE_REGISTRY_USERNAME/_PASSWORD as the Docker SDK's ``auth_config``; None:
    the Docker config of the process (``docker login``) supplies credentials, if any."""
    user = getattr(settings, "MODELPORT_IMAGE_REGISTRY_USERNAME", "")
    password = getattr(settings, "MODELPORT_IMAGE_REGISTRY_PASSWORD", "")
    return {"username": user, "password": password} if user and password else None


def registry_publisher(client: Any, registry: str) -> RegistryPublisher:
    return RegistryPublisher(client, registry, auth_config=registry_auth())


def push_serving_image(registry: str, requirements: list[str], on_log: LogFn | None = None, *,
                       builder: ImageBuilder | None = None) -> str:
    """The serving image for ``requirements``, built on this worker's engine (cached there) and
    pushed to ``registry``: the reference engines elsewhere pull (several plain Docker hosts'
    replicas and batch chunks). A push of what the registry holds costs a request per layer."""
    builder = builder or worker_image_builder()
    local = builder.ensure_image(requirements, on_log)
    ref = registry_publisher(builder.client, registry).publish(local, on_log)
    if on_log:
        on_log(f"image {ref}: the hosts pull it from {registry}")
    return ref


def worker_image_builder() -> ImageBuilder:
    """An ImageBuilder on this worker's own Docker Engine (what the default runtime uses):
    where images for engines elsewhere are built before they are pushed to a registry."""
    base_image = getattr(settings, "MODELPORT_SERVING_BASE_IMAGE", "modelport/base:bookworm")
    return _image_builder(settings, _client(settings, None), base_image)


def _scope() -> dict[str, Any]:
    """``installation`` and ``legacy_owner`` for a runtime of this installation."""
    return runtime_scope()


def package_policy() -> PackagePolicy:
    """This host's pip configuration with the platform settings' index, extra indexes and
    allowed packages applied (``teams.models.PlatformSettings``)."""
    row = platform_settings()
    wheelhouse = REPO_ROOT / "platform" / "wheelhouse"
    return PackagePolicy.from_host(platform_wheelhouse=wheelhouse).configured(
        index_url=row.package_index_url, extra_index_urls=row.package_extra_index_urls,
        wheel_folder=row.package_wheel_folder,
        allowed=row.allowed_packages, platform_wheelhouse=wheelhouse)


def _port_range(settings: object, value: Any) -> tuple[int, int]:
    """The target's port range (a list from its JSON settings), else MODELPORT_PORT_RANGE."""
    return tuple(value or getattr(settings, "MODELPORT_PORT_RANGE", (20000, 20999)))


def _docker(settings: object, *, endpoint: str | None = None, network: str | None = None,
            port_range: list[int] | tuple[int, int] | None = None,
            timeout: int | None = None, host_name: str = "",
            bind_host: str = "127.0.0.1",
            registry_auth: dict[str, str] | None = None) -> DockerRuntime:
    client = _client(settings, endpoint, timeout)
    state_dir = _data_dir(settings) / "runtime"
    base_image = getattr(settings, "MODELPORT_SERVING_BASE_IMAGE", "modelport/base:bookworm")
    builder = _image_builder(settings, client, base_image)
    # Optional: where the data dir is on the Docker host, when this process sees it elsewhere.
    # Without it, a worker running in a container discovers its own mounts.
    host_map: dict[str, str] | None = None
    host_data_dir = getattr(settings, "MODELPORT_DOCKER_HOST_DATA_DIR", None)
    if host_data_dir:
        host_map = {str(_data_dir(settings).resolve()): str(host_data_dir)}
    return DockerRuntime(
        client,
        network=network or replica_network(settings, endpoint),
        port_range=_port_range(settings, port_range),
        base_image=base_image,
        image_builder=builder,
        state_dir=state_dir,
        host_path_map=host_map,
        publish_host=getattr(settings, "MODELPORT_DOCKER_PUBLISH_HOST", "") or None,
        host_name=host_name,
        bind_host=bind_host,
        socket_dir=_data_dir(settings) / "run" / "replicas",
        ingest_socket=ingest_socket(settings),
        egress_network=getattr(settings, "MODELPORT_DOCKER_EGRESS_NETWORK", "host"),
        registry_auth=registry_auth,
        **_scope(),
    )


def host_worker_runtime(host_name: str) -> DockerRuntime:
    """The runtime a host worker (several plain Docker hosts) uses for its own replicas: this
    machine's Docker Engine, replicas bound to MODELPORT_HOST_ADDRESS, named and labelled
    with ``host_name``. It pulls the images the platform pushed to a registry (credentials:
    this machine's ``docker login``, or MODELPORT_IMAGE_REGISTRY_USERNAME/_PASSWORD)."""
    return _docker(settings, host_name=host_name, network="host",
                   bind_host=getattr(settings, "MODELPORT_HOST_ADDRESS", "") or "127.0.0.1",
                   registry_auth=registry_auth())


def _local(settings: object) -> LocalRuntime:
    return LocalRuntime(_data_dir(settings) / "runtime", **_scope())


def runtime_for_target(target: Any, *, timeout: int | None = None) -> Runtime:
    """The runtime that carries out deployments on an execution target (a
    ``compute.models.ExecutionTarget``, or None for the settings' runtime).

    A ``docker`` target with an empty endpoint is this machine's Docker exactly as
    ``get_runtime()`` configures it (MODELPORT_RUNTIME, so "auto"/"local" keep working).
    ``timeout``: seconds per Docker API call (health checks want a short one)."""
    if target is None:
        return get_runtime()
    options = dict(target.settings or {})
    if target.kind == "docker":
        placement = options.get("placement")
        if placement:  # "hosts": several plain Docker hosts, one worker each
            build = _PLACEMENT_RUNTIMES.get(placement)
            if build is None:
                raise ReplicaRuntimeError(f"execution target {target.name}: no runtime for "
                                          f"placement {placement!r}")
            return build(target)
        if not target.endpoint and not options:
            return get_runtime()
        return _docker(settings, endpoint=target.endpoint or None, timeout=timeout,
                       network=options.get("network"), port_range=options.get("port_range"))
    if target.kind == "swarm":
        return _swarm(settings, target.endpoint or None, options, timeout=timeout)
    if target.kind == "kubernetes":
        return _kubernetes(settings, target, options)
    raise ReplicaRuntimeError(f"execution target {target.name} has unknown kind {target.kind!r}")


def _client(settings: object, endpoint: str | None, timeout: int | None = None) -> Any:
    timeout = timeout or int(getattr(settings, "MODELPORT_DOCKER_TIMEOUT", 120))
    if endpoint:
        try:  # asks the engine for its API version
            return docker.DockerClient(base_url=endpoint, timeout=timeout)
        except docker.errors.DockerException:
            # Not answering now: a client all the same, whose calls fail with the reason (a
            # health check reports it; a reconcile retries on the next beat).
            return docker.DockerClient(base_url=endpoint, timeout=timeout,
                                       version=MIN_DOCKER_API)
    try:
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException:
        # This machine's engine is not answering now: a client whose calls (ping first) fail
        # with the reason, so a deployment fixed on Docker reads degraded instead of erroring.
        return docker.from_env(timeout=timeout, version=MIN_DOCKER_API)


def _swarm(settings: object, endpoint: str | None, options: dict[str, Any], *,
           timeout: int | None = None) -> SwarmRuntime:
    client = _client(settings, endpoint, timeout)
    state_dir = _data_dir(settings) / "runtime"
    base_image = getattr(settings, "MODELPORT_SERVING_BASE_IMAGE", "modelport/base:bookworm")
    registry = image_registry(options)
    # Without a registry (one node) the image is built on the manager's engine, where the task
    # runs. With one, it is built on this worker's own engine and pushed from there, like the
    # Kubernetes runtime's: the manager needs no base image and no build, nodes only pull.
    builder = (worker_image_builder() if registry
               else _image_builder(settings, client, base_image))
    auth = registry_auth() if registry else None
    if auth:  # create_service sends it to the manager, which hands it to the nodes that pull
        with contextlib.suppress(AttributeError, TypeError):
            client.api._auth_configs.add_auth(registry_of(f"{registry}/x"), auth)
    return SwarmRuntime(
        client,
        network=options.get("network") or "host",
        overlay_network=options.get("overlay_network") or "",
        egress_network=options.get("egress_network") or "",
        port_range=_port_range(settings, options.get("port_range")),
        base_image=base_image,
        image_builder=builder,
        state_dir=state_dir,
        gpu_resource=options.get("gpu_resource") or DEFAULT_GPU_RESOURCE,
        # Pushed there, pulled by whichever node runs a task (the model baked in, too).
        publisher=registry_publisher(builder.client, registry) if registry else None,
        bind_host=options.get("bind_host") or "127.0.0.1",
        constraints=list(options.get("constraints") or []),
        **_scope(),
    )


def _kubernetes(settings: object, target: Any, options: dict[str, Any]) -> Runtime:
    try:  # lazy: a missing piece of the Kubernetes runtime fails this target only, and says so
        from .runtimes.kubernetes import KubernetesRuntime  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise ReplicaRuntimeError(f"the kubernetes runtime is not available: {exc}") from exc
    kwargs: dict[str, Any] = {"namespace": target.namespace or "default",
                              "context": target.kube_context or None,
                              "in_cluster": bool(target.in_cluster), **options}
    # Images are built by this worker's Docker engine (and pushed to settings "registry").
    # docker.from_env() does not connect yet: without an engine, building fails and says so.
    base_image = getattr(settings, "MODELPORT_SERVING_BASE_IMAGE", "modelport/base:bookworm")
    kwargs["image_builder"] = _image_builder(settings, _client(settings, None), base_image)
    kwargs["registry_auth"] = registry_auth()  # MODELPORT_IMAGE_REGISTRY_USERNAME/_PASSWORD
    kwargs["installation"] = installation_id()  # objects from before ids are left alone
    kwargs["batch_data_root"] = str(_data_dir(settings))  # the jobs' work dirs live under it
    accepted = inspect.signature(KubernetesRuntime).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = [] if open_ended else sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ReplicaRuntimeError(f"the kubernetes runtime does not take {', '.join(unknown)}")
    return KubernetesRuntime(**kwargs)
