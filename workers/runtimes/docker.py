"""Docker runtime: each replica is one hardened container, found again by its labels."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from serving.sockets import SOCKET_NAME, unix_url

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_HOST,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_PORT,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_SOCKET,
    BackendHealth,
    LegacyOwner,
    LogFn,
    NodeInfo,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    env_dict,
    missing_state,
    private_dirs,
)
from .docker_spec import (
    CONTAINER_PORT,
    DOCKER_SOCKET_PATHS,
    HOST_NETWORK,
    INGEST_MOUNT,
    INGEST_PATH,
    MODEL_MOUNT,
    NO_NETWORK,
    SOCKET_MOUNT,
    docker_time,
    http_healthcheck,
    label_int,
    parse_stats,
    replica_env,
    run_kwargs,
    socket_healthcheck,
)
from .images import ImageBuilder, normalize_requirements
from .ports import PortAllocator
from .registry_push import image_present, is_registry_ref, pull_image

_log = logging.getLogger(__name__)

_STATUS = {
    # Created but never started: start_replica creates and starts in one call (under the
    # deployment's lock), so a container still "created" lost its starter (a killed worker).
    "created": ReplicaStatus.DEAD,
    "restarting": ReplicaStatus.STARTING,
    "running": ReplicaStatus.RUNNING,
    "paused": ReplicaStatus.RUNNING,
    "exited": ReplicaStatus.EXITED,
    "dead": ReplicaStatus.DEAD,
    "removing": ReplicaStatus.DEAD,
}


class DockerRuntime(Runtime):
    """Runs replicas as containers on one Docker Engine.

    network="none" (the default on one machine): a replica has no network at all — its code
    reaches nothing, not the outside world, not another replica, not the platform — and serves
    only on a unix socket file in a directory of its own under `socket_dir` (mode 0700 on the
    host), mounted at /run/modelport; its url is ``http+unix://…``. Its prediction log goes to
    the platform's ingest socket (`ingest_socket`, the edge listens there), mounted read-only.
    A deployment a platform admin granted egress runs on `egress_network` instead ("host" here,
    or a bridge network), still serving only on its socket.

    network="host": each replica binds `bind_host` on a port from `port_range`; its url is
    http://<bind_host>:<port> (several plain Docker hosts, where the edge is elsewhere). Any
    other value is a named (bridge) network that this process's own container shares; the url
    is http://<container name>:8080. With `publish_host` (e.g. 127.0.0.1) a replica on a named
    network also publishes its port on that host address at a port from `port_range`, and that
    is its url. On a network, replicas answer only requests carrying their replica key
    (``MODELPORT_REPLICA_KEY``, set by the reconciler).

    `host_name` (a host worker of several plain Docker hosts): containers are named
    `<replica name>.<host_name>` and labelled `modelport.host=<host_name>`, and this runtime
    lists only those — so a host worker never touches containers another host or a
    single-host installation sharing the engine started.

    `installation` (see ``Runtime``): containers are named ``mp-<id[:8]>-…`` and labelled
    ``modelport.installation=<id>``; only those (and legacy containers `legacy_owner` proves
    are this installation's) are listed, adopted or removed. Ports are allocated against every
    Modelport container on the engine, whoever's: the host's ports are shared.
    """

    name = "docker"
    sandboxed = True

    def __init__(self, client: Any = None, *, network: str = NO_NETWORK,
                 port_range: tuple[int, int] = (20000, 20999), bind_host: str = "127.0.0.1",
                 base_image: str = "modelport/base:bookworm",
                 image_builder: ImageBuilder | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 host_path_map: dict[str, str] | None = None,
                 extra_labels: dict[str, str] | None = None,
                 healthcheck: bool = True,
                 publish_host: str | None = None,
                 host_name: str = "",
                 socket_dir: str | os.PathLike[str] | None = None,
                 ingest_socket: str | os.PathLike[str] | None = None,
                 egress_network: str = HOST_NETWORK,
                 installation: str = "",
                 legacy_owner: LegacyOwner | None = None,
                 registry_auth: dict[str, str] | None = None) -> None:
        if client is None:
            client = docker.from_env()
        self.client = client
        self.network = network or NO_NETWORK
        self.bind_host = bind_host
        self.state_dir = Path(state_dir) if state_dir else None
        lock = self.state_dir / "docker-ports.lock" if self.state_dir else None
        self.ports = PortAllocator(port_range, host=bind_host, lock_path=lock)
        self.images = image_builder or ImageBuilder(
            client, base_image, lock_dir=self.state_dir / "locks" if self.state_dir else None)
        # Paths as this process sees them -> as the Docker daemon's host sees them (a worker
        # running in a container with the data dir on a volume). None: discovered from this
        # process's own container's mounts, if it runs in one (compose).
        self.host_path_map = dict(host_path_map) if host_path_map is not None else None
        self.extra_labels = dict(extra_labels or {})
        self.healthcheck = healthcheck
        self.publish_host = publish_host or None
        self.host_name = host_name
        if self.network == NO_NETWORK and socket_dir is None:
            if self.state_dir is None:
                raise ValueError("network='none' needs socket_dir (or state_dir)")
            socket_dir = self.state_dir / "sockets"
        self.socket_dir = Path(socket_dir) if socket_dir else None
        self.ingest_socket = Path(ingest_socket) if ingest_socket else None
        self.egress_network = egress_network or HOST_NETWORK
        self.installation = installation
        self.legacy_owner = legacy_owner
        self.registry_auth = registry_auth

    def container_name(self, spec: ReplicaSpec) -> str:
        name = self.scoped(spec).name
        return f"{name}.{self.host_name}" if self.host_name else name

    # --- images -----------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        return self.images.ensure_image(requirements, on_log)

    def image_for(self, image: str, requirements: list[str],
                  on_log: LogFn | None = None) -> str:
        """What a host worker runs: ``image`` when the platform pushed it to a registry
        (pulled when missing — never built here), else the serving image for
        ``requirements`` built on this engine (no registry: each host builds)."""
        if image and is_registry_ref(image) \
                and image != self.images.tag_for(normalize_requirements(requirements)):
            self.ensure_pulled(image, on_log)
            return image
        return self.ensure_image(requirements)

    def ensure_pulled(self, image: str, on_log: LogFn | None = None) -> None:
        """Pull ``image`` when it names a registry and is not on this engine yet (a host of
        several plain Docker hosts runs what the platform pushed); progress to ``on_log``
        (default: this module's logger). An image without a registry is left to
        ``ensure_image`` / the run, which names it when missing."""
        if not is_registry_ref(image) or image_present(self.client, image):
            return
        pull_image(self.client, image, on_log or _log.info, auth_config=self.registry_auth)

    # --- lifecycle --------------------------------------------------------------------------
    def start_replica(self, spec: ReplicaSpec) -> ReplicaState:
        if not spec.image:
            raise ReplicaRuntimeError("the docker runtime needs spec.image (see ensure_image)")
        spec = self.scoped(spec)
        name = self.container_name(spec)
        existing = self._get(name)
        if existing is not None:
            state = self._state(existing)
            if state.alive and existing.status != "created":  # created: a start that failed
                return state
            existing.remove(force=True)
        self.ensure_pulled(str(spec.image))  # before the ports are locked: a pull takes a while

        labels = self._replica_labels(spec)
        volumes = self._replica_volumes(spec)
        kwargs = run_kwargs(spec, name=name, labels=labels, volumes=volumes)
        env = replica_env(spec)
        with self.ports.locked():
            port = self._attach_network(spec, name, env, labels, volumes, kwargs)
            kwargs["environment"] = env
            container = self._run(spec, name, port, kwargs)
            if isinstance(container, ReplicaState):
                return container  # another worker created it a moment ago
        container.reload()
        return self._state(container)

    def _replica_labels(self, spec: ReplicaSpec) -> dict[str, str]:
        labels = {**self.extra_labels, **spec.labels, **self.scope_labels(),
                  LABEL_MANAGED: "1", LABEL_DEPLOYMENT: spec.deployment,
                  LABEL_REVISION: str(spec.revision), LABEL_REPLICA: str(spec.replica),
                  LABEL_MODEL: spec.model_name, LABEL_MODEL_VERSION: str(spec.model_version)}
        if self.host_name:
            labels[LABEL_HOST] = self.host_name
        return labels

    def _replica_volumes(self, spec: ReplicaSpec) -> dict[str, dict[str, str]]:
        """The model directory, read-only; never the Docker socket."""
        volumes: dict[str, dict[str, str]] = {}
        if spec.model_dir:
            host_dir = self._host_path(spec.model_dir)
            volumes[host_dir] = {"bind": MODEL_MOUNT, "mode": "ro"}
        for src in volumes:
            if any(src.rstrip("/").endswith(sock) for sock in DOCKER_SOCKET_PATHS):
                raise ReplicaRuntimeError(
                    "refusing to mount the Docker socket into a model container")
        return volumes

    def _attach_network(self, spec: ReplicaSpec, name: str, env: dict[str, str],
                        labels: dict[str, str], volumes: dict[str, dict[str, str]],
                        kwargs: dict[str, Any]) -> int | None:
        """Where the replica listens (a socket, a host port, or a port on the named network)
        and its healthcheck; the host port allocated, if any. Called with the ports locked."""
        port: int | None = None
        if self.network == NO_NETWORK:
            self._isolate(spec, name, env, labels, volumes, kwargs)
        elif self.network == HOST_NETWORK:
            port = spec.port or self.ports.allocate(self._used_ports())
            env.update(MODELPORT_HOST=self.bind_host, MODELPORT_PORT=str(port))
            labels[LABEL_PORT] = str(port)
            kwargs["network_mode"] = HOST_NETWORK
        else:
            # Inside its own network namespace: reachable only on the named network.
            env.update(MODELPORT_HOST="0.0.0.0",  # noqa: S104
                       MODELPORT_PORT=str(CONTAINER_PORT))
            kwargs["network"] = self.network
            kwargs["hostname"] = name
            if self.publish_host:
                port = spec.port or self.ports.allocate(self._used_ports())
                kwargs["ports"] = {f"{CONTAINER_PORT}/tcp": (self.publish_host, port)}
                labels[LABEL_PORT] = str(port)
        if self.healthcheck:  # probes from inside the container
            if self.network == NO_NETWORK:
                kwargs["healthcheck"] = socket_healthcheck()
            else:
                in_container = port if self.network == HOST_NETWORK else CONTAINER_PORT
                kwargs["healthcheck"] = http_healthcheck(in_container or CONTAINER_PORT)
        return port

    def _run(self, spec: ReplicaSpec, name: str, port: int | None,
             kwargs: dict[str, Any]) -> Any:
        """Create and start the container (the SDK's Container); the ReplicaState of the one
        another worker created a moment ago when it won the race; otherwise ReplicaRuntimeError,
        the port released."""
        try:
            return self.client.containers.run(spec.image, **kwargs)
        except ImageNotFound as exc:
            raise ReplicaRuntimeError(f"image {spec.image} not found: {exc}") from exc
        except (APIError, NotFound) as exc:
            if port is not None and not spec.port:
                self.ports.release(port)
            conflict = getattr(exc, "status_code", None) == 409
            raced = self._get(name) if conflict else None
            if raced is not None:  # another worker created it a moment ago
                return self._state(raced)
            if conflict and self._get_any(name) is not None:
                raise ReplicaRuntimeError(
                    f"starting {name} failed: a container of that name exists and is not "
                    "this installation's (it is left alone)") from exc
            raise ReplicaRuntimeError(f"starting {name} failed: {exc}") from exc

    def _isolate(self, spec: ReplicaSpec, name: str, env: dict[str, str],
                 labels: dict[str, str], volumes: dict[str, dict[str, str]],
                 kwargs: dict[str, Any]) -> None:
        """No network (or the egress network a platform admin granted): serve on a socket in
        the replica's own directory, ship the prediction log to the platform's ingest socket."""
        directory = self._socket_dir_of(name, create=True)
        volumes[self._host_path(str(directory))] = {"bind": SOCKET_MOUNT, "mode": "rw"}
        env.update(MODELPORT_UNIX_SOCKET=f"{SOCKET_MOUNT}/{SOCKET_NAME}", MODELPORT_PORT="",
                   MODELPORT_HOST="")
        labels[LABEL_SOCKET] = str(directory / SOCKET_NAME)
        if env.get("MODELPORT_INGEST_URL") and self.ingest_socket is not None:
            env["MODELPORT_INGEST_URL"] = (unix_url(f"{INGEST_MOUNT}/{self.ingest_socket.name}")
                                           + INGEST_PATH)
            volumes[self._host_path(str(self.ingest_socket.parent))] = {
                "bind": INGEST_MOUNT, "mode": "ro"}
        if not spec.egress:
            kwargs["network_mode"] = NO_NETWORK
        elif self.egress_network == HOST_NETWORK:
            kwargs["network_mode"] = HOST_NETWORK
        else:
            kwargs["network"] = self.egress_network

    def _socket_dir_of(self, name: str, *, create: bool = False) -> Path:
        """A replica's own socket directory: 0700 parents keep everyone else on the host out;
        the directory itself is writable by the container's user, which binds the socket."""
        if self.socket_dir is None:
            raise ReplicaRuntimeError("this Docker runtime has no socket directory")
        directory = self.socket_dir / name
        if create:
            private_dirs(self.socket_dir)
            directory.mkdir(exist_ok=True)
            directory.chmod(0o777)  # reachable only through the 0700 parent
        return directory

    def stop_replica(self, replica_id: str, timeout: float = 10) -> None:
        container = self._get(replica_id)
        if container is None:
            return
        try:
            container.stop(timeout=int(timeout))
        except APIError as exc:  # already gone / being removed
            if getattr(exc, "status_code", None) not in (304, 404, 409):
                raise

    def remove_replica(self, replica_id: str) -> None:
        container = self._get(replica_id)
        if container is None:
            return
        port = container.labels.get(LABEL_PORT)
        try:
            container.remove(force=True, v=True)
        except APIError as exc:
            if getattr(exc, "status_code", None) not in (404, 409):
                raise
        if port and port.isdigit():
            self.ports.release(int(port))
        if container.labels.get(LABEL_SOCKET) and self.socket_dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._socket_dir_of(container.name), ignore_errors=True)

    # --- discovery --------------------------------------------------------------------------
    def list_replicas(self, deployment: str | None = None) -> list[ReplicaState]:
        # Only replicas: other managed containers (validation sandboxes) carry no deployment.
        filters = [f"{LABEL_MANAGED}=1", LABEL_DEPLOYMENT]
        if deployment is not None:
            filters.append(f"{LABEL_DEPLOYMENT}={deployment}")
        if self.host_name:
            filters.append(f"{LABEL_HOST}={self.host_name}")
        states = [self._state(c) for c in self._list(filters)]
        if not self.host_name:  # host workers' containers are theirs, even on a shared engine
            states = [s for s in states if not s.host]
        return sorted(states, key=lambda s: (s.deployment, s.revision, s.replica, s.id))

    def get_replica(self, replica_id: str) -> ReplicaState:
        container = self._get(replica_id)
        return missing_state(replica_id) if container is None else self._state(container)

    def logs(self, replica_id: str, tail: int = 200) -> str:
        container = self._get(replica_id)
        if container is None:
            return ""
        try:
            return container.logs(tail=tail, stdout=True, stderr=True).decode("utf-8",
                                                                              "replace")
        except APIError:  # removed meanwhile ("dead or marked for removal")
            return ""

    def stats(self, replica_id: str) -> dict[str, float]:
        container = self._get(replica_id)
        if container is None or container.status != "running":
            return {"cpu_percent": 0.0, "memory_bytes": 0.0, "memory_limit_bytes": 0.0}
        raw = container.stats(stream=False)
        return parse_stats(raw)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return False

    def describe(self) -> BackendHealth:
        """One node: the engine's CPUs and memory from `docker info` (which reports no GPUs;
        the capacity registry's GPU inventory does)."""
        try:
            info = self.client.info()
        except Exception as exc:  # noqa: BLE001 - unreachable is an answer here
            return BackendHealth(reachable=False, message=str(exc))
        node = NodeInfo(name=str(info.get("Name") or "docker"), role="engine", state="ready",
                        cpu=float(info.get("NCPU") or 0),
                        memory_mb=int(info.get("MemTotal") or 0) // (1024 * 1024), gpus=None)
        return BackendHealth(reachable=True, nodes=[node],
                             version=str(info.get("ServerVersion") or ""),
                             warnings=self.isolation_warnings())

    def isolation_warnings(self) -> list[str]:
        """What a target's health says when replicas are not isolated (docs/security.md)."""
        if self.network == NO_NETWORK:
            return []
        where = ("this machine's network" if self.network == HOST_NETWORK
                 else f"the network {self.network!r}")
        return [f"Replicas share {where}: their code reaches what is on it (and beyond it); "
                "the replica key still keeps others from calling them. Replicas on the "
                "platform's own machine are isolated with MODELPORT_DOCKER_NETWORK=none."]

    # --- helpers ----------------------------------------------------------------------------
    def _get_any(self, replica_id: str) -> Any | None:
        try:
            return self.client.containers.get(replica_id)
        except NotFound:
            return None

    def _get(self, replica_id: str) -> Any | None:
        container = self._get_any(replica_id)
        if container is None:
            return None
        if container.labels.get(LABEL_MANAGED) != "1":
            return None  # never touch containers Modelport does not manage
        if not self._owned(container):
            return None  # nor another installation's
        return container

    def _list(self, filters: list[str]) -> list[Any]:
        """This installation's containers matching the label filters. The summary list names
        every container's labels in one call; only ours (and unlabelled ones, which may be
        legacy ours) are inspected — another installation's never are. A container removed
        meanwhile is skipped."""
        if self.installation and self.legacy_owner is None:  # legacy ones are never ours
            filters = [*filters, f"{LABEL_INSTALLATION}={self.installation}"]
        out = []
        for summary in self.client.api.containers(all=True, filters={"label": filters}):
            owner = (summary.get("Labels") or {}).get(LABEL_INSTALLATION)
            if owner is not None and owner != self.installation:
                continue
            try:
                container = self.client.containers.get(summary["Id"])
            except NotFound:
                continue
            if self._owned(container):
                out.append(container)
        return out

    def _owned(self, container: Any) -> bool:
        return self.owns(container.labels or {},
                         lambda: env_dict((container.attrs.get("Config") or {}).get("Env")))

    def _used_ports(self) -> set[int]:
        # The low-level list carries the labels: one API call, and no per-container inspect that
        # fails with 404 when another process removes a container meanwhile.
        used = set()
        for c in self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1"}):
            port = (c.get("Labels") or {}).get(LABEL_PORT, "")
            if port.isdigit():
                used.add(int(port))
        return used

    def host_path(self, path: str) -> str:
        """`path` as the Docker daemon's host sees it (for bind mounts)."""
        return self._host_path(path)

    def _host_path(self, path: str) -> str:
        p = str(Path(path).resolve())
        if self.host_path_map is None:
            self.host_path_map = self._own_mounts()
        for inside, outside in sorted(self.host_path_map.items(), key=lambda kv: -len(kv[0])):
            inside = inside.rstrip("/")
            if p == inside or p.startswith(inside + "/"):
                return outside.rstrip("/") + p[len(inside):]
        return p

    def _own_mounts(self) -> dict[str, str]:
        """Destination -> host source of the mounts of the container this process runs in."""
        own = own_container_id()
        if own is None:
            return {}
        try:
            attrs = self.client.api.inspect_container(own)
        except Exception:  # noqa: BLE001 - not visible to this daemon: no mapping
            return {}
        return {m["Destination"]: m["Source"] for m in attrs.get("Mounts") or []
                if m.get("Type") in ("bind", "volume") and m.get("Source")}

    def _state(self, container: Any) -> ReplicaState:
        attrs = container.attrs
        st = attrs.get("State", {})
        labels = container.labels
        raw_status = st.get("Status", container.status)
        status = _STATUS.get(raw_status, ReplicaStatus.DEAD)
        health = (st.get("Health") or {}).get("Status")
        if status is ReplicaStatus.RUNNING and health == "starting":
            status = ReplicaStatus.STARTING
        port = labels.get(LABEL_PORT)
        url: str | None
        if labels.get(LABEL_SOCKET):
            url = unix_url(labels[LABEL_SOCKET])
        elif (self.network == HOST_NETWORK
              or attrs.get("HostConfig", {}).get("NetworkMode") == HOST_NETWORK):
            url = f"http://{self.bind_host}:{port}" if port else None
        elif self.network == NO_NETWORK:
            url = None
        elif self.publish_host and port:
            url = f"http://{self.publish_host}:{port}"
        else:
            url = f"http://{container.name}:{CONTAINER_PORT}"
        running = status in (ReplicaStatus.RUNNING, ReplicaStatus.STARTING)
        message = st.get("Error") or ""
        if raw_status == "created":
            message = "created but never started (the worker starting it stopped)"
        if st.get("OOMKilled"):
            message = (message + " OOM killed").strip()
        if health == "unhealthy":
            message = (message + " healthcheck failing").strip()
        return ReplicaState(
            id=container.name,
            deployment=labels.get(LABEL_DEPLOYMENT, ""),
            revision=label_int(labels.get(LABEL_REVISION)),
            replica=label_int(labels.get(LABEL_REPLICA)),
            status=status,
            url=url,
            exit_code=None if running else st.get("ExitCode"),
            started_at=docker_time(st.get("StartedAt")),
            finished_at=None if running else docker_time(st.get("FinishedAt")),
            restart_count=int(attrs.get("RestartCount") or 0),
            port=int(port) if port and port.isdigit() else None,
            image=(attrs.get("Config") or {}).get("Image"),
            model_name=labels.get(LABEL_MODEL, ""),
            model_version=labels.get(LABEL_MODEL_VERSION, ""),
            message=message,
            health=health,
            labels=dict(labels),
            host=labels.get(LABEL_HOST, ""),
        )


def own_container_id() -> str | None:
    """The id of the Docker container this process runs in (from /proc/self/mountinfo)."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    match = re.search(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)", text)
    return match.group(1) if match else None


