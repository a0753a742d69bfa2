"""Docker Swarm runtime: each replica is one single-replica Swarm service, found again by labels.

Why a service per revision x replica (and not one service per revision with N tasks):

* the reconciler manages replicas one by one — a rolling update drains and removes *that* old
  replica, a scale-down removes index >= replicas, a dead replica is replaced by index. Swarm
  cannot remove a chosen task from a service (scaling down picks the tasks itself), so with N
  tasks per service the replica being drained and the one being removed could differ;
* with host networking every task of one service gets the same environment, so all would bind
  the same port. ``{{.Task.Slot}}`` templates cannot do arithmetic (port = base + slot), and a
  slot is reused by a task's replacement, so the port would have to be computed inside the
  model server from the slot — possible, but then the port is known only from the template,
  not from a label the gateway can read before the task runs.

So the unit Swarm schedules, restarts and reports on is exactly the unit the reconciler and the
gateway route to. Swarm still does what it is for: it places each service on a node with room
(reservations), restarts a killed or unhealthy task itself (restart policy + health check), and
spreads services over nodes. A new revision is new services, started (and ready) before the
old ones are drained — start-first at the reconciler's level.

Hardening: the same as plain Docker containers where Swarm can express it — non-root user,
read-only root filesystem with a private tmpfs at /tmp, every capability dropped (API >= 1.41),
CPU/memory limits and a pids limit (API >= 1.41). Swarm services cannot set
``no-new-privileges`` before Docker API 1.44 (``Privileges.NoNewPrivileges``), nor
``memswap_limit``; on older engines the replica runs without them (non-root with no
capabilities and a read-only root, so a setuid binary has nothing to gain, but the flag is not
there). Swarm cannot pin specific GPU devices: GPUs are requested as a *count* of a generic
resource (``NVIDIA-GPU`` by default) and Swarm picks the devices.

Isolation (issue 24): every replica demands its replica key (``MODELPORT_REPLICA_KEY`` in the
task's environment; health checks excepted), so nothing but the platform gets predictions out
of it on any network. What the model's code can reach depends on the network mode:

* overlay mode with an **internal** overlay network (``docker network create -d overlay
  --internal --attachable …``, the recommended setup): the replica reaches the overlay — the
  platform's containers joined to it and other replicas, which refuse it without their key —
  and nothing beyond: no outside world, no node ports, no Docker socket. A deployment a
  platform admin granted egress also joins ``egress_network`` (an ordinary overlay network),
  which leads out.
* host mode (one node on 127.0.0.1; several nodes on 0.0.0.0, reached at the node's address):
  the replica shares the node's network and reaches whatever the node reaches. ``describe()``
  says so on the target's health, as it says when the overlay network is not internal.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Healthcheck,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    RollbackConfig,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)
from docker.utils import version_gte

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_PORT,
    LABEL_REPLICA,
    LABEL_REVISION,
    BackendHealth,
    LegacyOwner,
    LogFn,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    env_dict,
    missing_state,
)
from .batch import BatchRuntime
from .docker_spec import (
    CONTAINER_PORT,
    DOCKER_SOCKET_PATHS,
    HARDENING,
    HOST_NETWORK,
    MODEL_MOUNT,
    docker_time,
    http_healthcheck,
    label_int,
    parse_stats,
    replica_env,
)
from .images import ImageBuilder
from .ports import PortAllocator
from .registry_push import RegistryPublisher
from .swarm_batch import SwarmBatchRuntime
from .swarm_models import ModelImages
from .swarm_networks import OVERLAY, isolation_warnings, network_attrs
from .swarm_nodes import WILDCARDS, NodeAddresses, current_task, node_info

NETWORK_MODES = (HOST_NETWORK, OVERLAY)
DEFAULT_GPU_RESOURCE = "NVIDIA-GPU"
TMPFS_BYTES = 64 * 1024 * 1024
STOP_GRACE_NS = 10_000_000_000

# Swarm task states -> replica status. A task that Swarm is still placing, pulling or whose
# health check has not passed yet is STARTING; Swarm marks a task "running" only once its
# container runs (and, with a health check, not before it turned healthy).
_TASK_STATUS = {
    **dict.fromkeys(("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
                     "starting"), ReplicaStatus.STARTING),
    "running": ReplicaStatus.RUNNING,
    "complete": ReplicaStatus.EXITED,
    "shutdown": ReplicaStatus.EXITED,
    "failed": ReplicaStatus.DEAD,
    "rejected": ReplicaStatus.DEAD,
    "remove": ReplicaStatus.DEAD,
    "orphaned": ReplicaStatus.DEAD,
}


class SwarmRuntime(Runtime):
    """Runs replicas as Swarm services through a manager's Docker endpoint.

    network="host": every service joins the node's host network and its one task binds
    `bind_host` on a port from `port_range` (unique across the swarm: the allocator reads the
    managed services' port labels). 127.0.0.1 (one node: tests, CI) gives
    http://127.0.0.1:<port>; 0.0.0.0 (several nodes) gives http://<the task's node
    address>:<port>, read again at every listing, so a task Swarm moves is followed.
    network="overlay": every service joins `overlay_network` (an attachable, internal overlay
    network Modelport's gateway also joins); the model server listens on 8080 and the url is
    http://<service name>:8080, resolved by Swarm's DNS to the one task's address (endpoint
    mode dnsrr: a single-task service gains nothing from a virtual IP, and VIPs need IPVS in
    the nodes' kernels). Replicas granted egress also join `egress_network`.

    `constraints` (e.g. ``node.role==worker``) go to every service's placement. With a
    `publisher` (a registry) the serving image is pushed and the model is baked into a thin
    layer on top of it (``swarm_models``): no node needs the platform's disk.

    `installation` (see ``Runtime``): services are named ``mp-<id[:8]>-…`` and labelled with the
    id, and only this installation's are listed, adopted or removed.
    """

    name = "swarm"
    sandboxed = True

    def __init__(self, client: Any = None, *, network: str = HOST_NETWORK,
                 overlay_network: str = "", port_range: tuple[int, int] = (20000, 20999),
                 bind_host: str = "127.0.0.1", base_image: str = "modelport/base:bookworm",
                 image_builder: ImageBuilder | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 extra_labels: dict[str, str] | None = None,
                 gpu_resource: str = DEFAULT_GPU_RESOURCE, restart_attempts: int = 3,
                 healthcheck: bool = True, egress_network: str = "",
                 installation: str = "", legacy_owner: LegacyOwner | None = None,
                 publisher: RegistryPublisher | None = None,
                 constraints: list[str] | None = None) -> None:
        if client is None:
            client = docker.from_env()
        if network not in NETWORK_MODES:
            raise ValueError(f"swarm network mode {network!r}; expected one of {NETWORK_MODES}")
        if network == OVERLAY and not overlay_network:
            raise ValueError("swarm overlay mode needs the overlay network's name")
        if egress_network and network != OVERLAY:
            raise ValueError("an egress network applies to overlay mode (in host mode replicas "
                             "already share the node's network)")
        if bind_host != "127.0.0.1" and bind_host not in WILDCARDS:
            raise ValueError("bind_host is 127.0.0.1 (one node) or 0.0.0.0 (each node's "
                             "addresses; which node runs a task is Swarm's choice)")
        if egress_network and egress_network == overlay_network:
            raise ValueError("the egress network must differ from the replicas' overlay network")
        self.client = client
        self.network = network
        self.overlay_network = overlay_network
        self.egress_network = egress_network
        self.bind_host = bind_host
        self.state_dir = Path(state_dir) if state_dir else None
        # The same lock file as the Docker runtime: both hand out ports of one host.
        lock = self.state_dir / "docker-ports.lock" if self.state_dir else None
        self.ports = PortAllocator(port_range, host=bind_host, lock_path=lock)
        self.images = image_builder or ImageBuilder(
            client, base_image, lock_dir=self.state_dir / "locks" if self.state_dir else None)
        self.extra_labels = dict(extra_labels or {})
        self.gpu_resource = gpu_resource
        self.restart_attempts = restart_attempts
        self.healthcheck = healthcheck
        self.installation = installation
        self.legacy_owner = legacy_owner
        self.publisher = publisher
        self.constraints = list(constraints or [])
        self.nodes = NodeAddresses(client)
        self.models = ModelImages(self.images, publisher) if publisher else None

    # --- images -----------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """Built by ``image_builder`` (the factory: the manager's engine without a registry,
        the worker's own with one). With a registry (``publisher``) it is pushed there and
        services name the pinned registry reference, so whichever node Swarm picks pulls it;
        without one, a single node runs the local image as is."""
        local = self.images.ensure_image(requirements, on_log)
        return self.publisher.publish(local, on_log) if self.publisher else local

    def batch_runtime(self) -> BatchRuntime:
        """Batch jobs on this swarm: replicated-job services (``swarm_batch``)."""
        return SwarmBatchRuntime(self.client, image_builder=self.images,
                                 publisher=self.publisher, extra_labels=self.extra_labels,
                                 gpu_resource=self.gpu_resource,
                                 installation=self.installation)

    # --- lifecycle --------------------------------------------------------------------------
    def start_replica(self, spec: ReplicaSpec) -> ReplicaState:
        if not spec.image:
            raise ReplicaRuntimeError("the swarm runtime needs spec.image (see ensure_image)")
        spec = self.scoped(spec)
        if spec.model_dir and self.models is not None:
            # A registry: the nodes share no disk with the platform, the model travels baked.
            spec = dataclasses.replace(
                spec, image=self.models.image_for(spec.image or "", spec.model_dir),
                model_dir=None)
        name = spec.name
        existing = self._get(name)
        if existing is not None:
            state = self._state(existing, self._tasks([existing]))
            if state.alive:
                return state
            self._remove_service(existing)  # stopped or given up by Swarm: start afresh

        with self.ports.locked():
            port: int | None = None
            if self.network == HOST_NETWORK:
                port = spec.port or self.ports.allocate(self._used_ports())
            kwargs = self.service_spec(spec, port)
            if spec.egress and self.network == OVERLAY and not self.egress_network:
                self._check_egress_without_network(spec)
            try:
                self.client.api.create_service(**kwargs)
            except APIError as exc:
                if port is not None and not spec.port:
                    self.ports.release(port)
                raced = self._get(name) if getattr(exc, "status_code", None) == 409 else None
                if raced is not None:  # another worker created it a moment ago
                    return self._state(raced, self._tasks([raced]))
                raise ReplicaRuntimeError(f"creating service {name} failed: {exc}") from exc
        service = self._get(name)
        if service is None:
            raise ReplicaRuntimeError(f"service {name} vanished right after it was created")
        return self._state(service, self._tasks([service]))

    def service_spec(self, spec: ReplicaSpec, port: int | None) -> dict[str, Any]:
        """The keyword arguments of ``APIClient.create_service`` for one replica."""
        spec = self.scoped(spec)
        labels = {**self.extra_labels, **spec.labels, **self.scope_labels(),
                  LABEL_MANAGED: "1", LABEL_DEPLOYMENT: spec.deployment,
                  LABEL_REVISION: str(spec.revision), LABEL_REPLICA: str(spec.replica),
                  LABEL_MODEL: spec.model_name, LABEL_MODEL_VERSION: str(spec.model_version)}
        env = replica_env(spec, pinned_gpus=False)  # Swarm picks the devices
        if port is not None:
            env.update(MODELPORT_HOST=self.bind_host, MODELPORT_PORT=str(port))
            labels[LABEL_PORT] = str(port)
        else:
            env.update(MODELPORT_HOST="0.0.0.0",  # noqa: S104 - own network namespace
                       MODELPORT_PORT=str(CONTAINER_PORT))
        mounts = [Mount(target="/tmp", source=None, type="tmpfs",  # noqa: S108 - private tmpfs
                        tmpfs_size=TMPFS_BYTES)]
        if spec.model_dir:
            source = str(Path(spec.model_dir).resolve())
            if any(source.rstrip("/").endswith(sock) for sock in DOCKER_SOCKET_PATHS):
                raise ReplicaRuntimeError(
                    "refusing to mount the Docker socket into a model container")
            mounts.append(Mount(target=MODEL_MOUNT, source=source, type="bind", read_only=True))
        healthcheck = None
        if self.healthcheck:
            healthcheck = Healthcheck(**http_healthcheck(port or CONTAINER_PORT))
        container = ContainerSpec(
            spec.image, env=env, user=HARDENING["user"], labels=labels, mounts=mounts,
            read_only=True, cap_drop=list(HARDENING["cap_drop"]), stop_signal="SIGTERM",
            stop_grace_period=STOP_GRACE_NS, healthcheck=healthcheck,
            hostname=None if port is not None else spec.name)
        if self._api_at_least("1.44"):  # Privileges.NoNewPrivileges exists from API 1.44 on
            container["Privileges"] = {**(container.get("Privileges") or {}),
                                       "NoNewPrivileges": True}
        nano = int(spec.cpu * 1e9) if spec.cpu else None
        memory = int(spec.memory_mb) * 1024 * 1024 if spec.memory_mb else None
        gpus = len(spec.gpu_device_ids)
        resources = Resources(cpu_limit=nano, mem_limit=memory, cpu_reservation=nano,
                              mem_reservation=memory,
                              generic_resources={self.gpu_resource: gpus} if gpus else None)
        if spec.pids_limit:
            resources.setdefault("Limits", {})["Pids"] = int(spec.pids_limit)
        template = TaskTemplate(
            container, resources=resources,
            # Swarm restarts a failed or unhealthy task itself, up to `restart_attempts`
            # times in 10 minutes; after that the reconciler sees the replica dead, replaces
            # the service and its crash-loop back-off applies.
            restart_policy=RestartPolicy(condition="on-failure", delay=1_000_000_000,
                                         max_attempts=self.restart_attempts,
                                         window=600_000_000_000),
            networks=self._networks(spec, port),
            placement=Placement(constraints=self.constraints) if self.constraints else None)
        # An in-place update (by an operator: `docker service update`) starts the new task
        # first and rolls back on failure. In host mode the one port cannot be bound twice,
        # so there the update stops the old task first.
        order = "stop-first" if port is not None else "start-first"
        return {
            "task_template": template, "name": spec.name, "labels": labels,
            "mode": ServiceMode("replicated", replicas=1),
            "update_config": UpdateConfig(parallelism=1, order=order, failure_action="rollback",
                                          monitor=30_000_000_000),
            "rollback_config": RollbackConfig(parallelism=1, order=order),
            "endpoint_spec": EndpointSpec(mode="dnsrr"),
        }

    def _networks(self, spec: ReplicaSpec, port: int | None) -> list[str]:
        """Host mode: the node's network. Overlay mode: the replicas' overlay network, plus the
        egress network for a deployment a platform admin granted egress."""
        if port is not None:
            return [HOST_NETWORK]
        if spec.egress and self.egress_network:
            return [self.overlay_network, self.egress_network]
        return [self.overlay_network]

    def _check_egress_without_network(self, spec: ReplicaSpec) -> None:
        """Egress granted but no egress network configured: fine when the overlay leads out
        anyway (not internal; the target's health warns about it), refused otherwise."""
        attrs = self._network_attrs(self.overlay_network)
        if attrs is not None and attrs.get("Internal"):  # a missing one: Docker says so
            raise ReplicaRuntimeError(
                f"deployment {spec.deployment} was granted egress, but this swarm target's "
                f"overlay network {self.overlay_network!r} is internal and the target has no "
                "egress_network: set settings.egress_network to an overlay network that leads "
                "out")

    def _network_attrs(self, name: str) -> dict[str, Any] | None:
        return network_attrs(self.client, name)

    def isolation_warnings(self) -> list[str]:
        """What the target's health should say about how far replicas' code reaches."""
        return isolation_warnings(self.client, network=self.network,
                                  overlay_network=self.overlay_network,
                                  egress_network=self.egress_network)

    def stop_replica(self, replica_id: str, timeout: float = 10) -> None:
        """Scale the service to 0 (Swarm stops the task gracefully, within the stop grace
        period); the service stays, so its logs and state can still be read."""
        service = self._get(replica_id)
        if service is None:
            return
        try:
            service.scale(0)
        except APIError as exc:
            if getattr(exc, "status_code", None) not in (404, 409):
                raise

    def remove_replica(self, replica_id: str) -> None:
        service = self._get(replica_id)
        if service is not None:
            self._remove_service(service)

    # --- discovery --------------------------------------------------------------------------
    def list_replicas(self, deployment: str | None = None) -> list[ReplicaState]:
        filters = [f"{LABEL_MANAGED}=1", LABEL_DEPLOYMENT]
        if deployment is not None:
            filters.append(f"{LABEL_DEPLOYMENT}={deployment}")
        if self.installation and self.legacy_owner is None:  # legacy ones are never ours
            filters.append(f"{LABEL_INSTALLATION}={self.installation}")
        services = [s for s in self.client.services.list(filters={"label": filters})
                    if self._owned(s)]
        tasks = self._tasks(services)
        states = [self._state(s, tasks) for s in services]
        return sorted(states, key=lambda s: (s.deployment, s.revision, s.replica, s.id))

    def get_replica(self, replica_id: str) -> ReplicaState:
        service = self._get(replica_id)
        if service is None:
            return missing_state(replica_id)
        return self._state(service, self._tasks([service]))

    def logs(self, replica_id: str, tail: int = 200) -> str:
        """Through the manager, from whichever node ran the task (json-file/journald logs)."""
        service = self._get(replica_id)
        if service is None:
            return ""
        chunks = self.client.api.service_logs(service.id, stdout=True, stderr=True, tail=tail,
                                              follow=False, is_tty=False)
        text = b"".join(chunks).decode("utf-8", "replace")
        if text:
            return text
        # The manager gathers service logs from the nodes' agents and can come back empty
        # for a task that just started: read the container directly when it runs here.
        container = self._local_container(service)
        if container is None:
            return ""
        return container.logs(tail=tail, stdout=True, stderr=True).decode("utf-8", "replace")

    def stats(self, replica_id: str) -> dict[str, float]:
        """Live figures of the running task's container. Swarm has no stats API: only tasks
        on the node this endpoint belongs to are measured; others read as zero."""
        zero = {"cpu_percent": 0.0, "memory_bytes": 0.0, "memory_limit_bytes": 0.0}
        service = self._get(replica_id)
        container = self._local_container(service, running=True) if service else None
        if container is None:
            return zero  # not running, or on another node
        return parse_stats(container.stats(stream=False))

    def ping(self) -> bool:
        """The endpoint answers and is a Swarm manager (only managers can create services)."""
        try:
            info = self.client.info()
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return False
        swarm = info.get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    def describe(self) -> BackendHealth:
        try:
            info = self.client.info()
        except Exception as exc:  # noqa: BLE001 - unreachable is an answer here
            return BackendHealth(reachable=False, message=str(exc))
        swarm = info.get("Swarm") or {}
        version = str(info.get("ServerVersion") or "")
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            return BackendHealth(reachable=False, version=version,
                                 message="the engine answers but is not a Swarm manager "
                                         f"(swarm state {swarm.get('LocalNodeState')!r})")
        try:
            nodes = self.client.nodes.list()
        except Exception as exc:  # noqa: BLE001
            return BackendHealth(reachable=False, version=version, message=str(exc))
        try:
            warnings = self.isolation_warnings()
        except Exception as exc:  # noqa: BLE001 - reported, the target is still reachable
            warnings = [f"Could not check the replicas' networks: {exc}"]
        warnings += self._multi_node_warnings(len(nodes))
        return BackendHealth(reachable=True, version=version,
                             nodes=sorted((node_info(n.attrs) for n in nodes),
                                          key=lambda n: n.name), warnings=warnings)

    def _multi_node_warnings(self, nodes: int) -> list[str]:
        """What a swarm of several nodes needs that one node does not."""
        if nodes < 2:
            return []
        warnings = []
        if self.network == HOST_NETWORK and self.bind_host not in WILDCARDS:
            warnings.append(f"{nodes} nodes, but host-mode replicas listen on 127.0.0.1 of "
                            "their node: replicas on other nodes are unreachable. Set "
                            'settings.bind_host to "0.0.0.0".')
        if self.publisher is None:
            warnings.append(f"{nodes} nodes, but no registry: images and model files exist "
                            "on the manager only. Set settings.registry.")
        return warnings

    # --- helpers ----------------------------------------------------------------------------
    def _local_container(self, service: Any, *, running: bool = False) -> Any | None:
        """The container of the service's current task, if it is on this endpoint's node."""
        task = current_task(self._tasks([service]).get(service.id, []))
        status = (task or {}).get("Status") or {}
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        if not container_id or (running and status.get("State") != "running"):
            return None
        try:
            return self.client.containers.get(container_id)
        except (NotFound, APIError):
            return None  # on another node, or already removed

    def _api_at_least(self, version: str) -> bool:
        api = getattr(self.client.api, "_version", None) or "1.41"
        return version_gte(api, version)

    def _get(self, replica_id: str) -> Any | None:
        try:
            service = self.client.services.get(replica_id)
        except NotFound:
            return None
        labels = (service.attrs.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "1" or service.name != replica_id:
            return None  # never touch services Modelport does not manage (or id prefixes)
        if not self._owned(service):
            return None  # nor another installation's
        return service

    def _owned(self, service: Any) -> bool:
        spec = service.attrs.get("Spec") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        return self.owns(spec.get("Labels") or {}, lambda: env_dict(container.get("Env")))

    def _tasks(self, services: list[Any]) -> dict[str, list[dict[str, Any]]]:
        """Tasks of these services, by service id (one API call)."""
        if not services:
            return {}
        by_service: dict[str, list[dict[str, Any]]] = {s.id: [] for s in services}
        for task in self.client.api.tasks(filters={"service": [s.id for s in services]}):
            if task.get("ServiceID") in by_service:
                by_service[task["ServiceID"]].append(task)
        return by_service

    def _remove_service(self, service: Any) -> None:
        port = ((service.attrs.get("Spec") or {}).get("Labels") or {}).get(LABEL_PORT, "")
        try:
            service.remove()
        except APIError as exc:
            if getattr(exc, "status_code", None) not in (404, 409):
                raise
        if port.isdigit():
            self.ports.release(int(port))

    def _used_ports(self) -> set[int]:
        """Ports claimed by managed services and by plain managed containers on this host."""
        used = set()
        for service in self.client.services.list(filters={"label": f"{LABEL_MANAGED}=1"}):
            port = ((service.attrs.get("Spec") or {}).get("Labels") or {}).get(LABEL_PORT, "")
            if port.isdigit():
                used.add(int(port))
        # The raw list (one call, no inspect per container): task containers come and go.
        for c in self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1"}):
            port = (c.get("Labels") or {}).get(LABEL_PORT, "")
            if port.isdigit():
                used.add(int(port))
        return used

    def _state(self, service: Any, tasks: dict[str, list[dict[str, Any]]]) -> ReplicaState:
        spec = service.attrs.get("Spec") or {}
        labels = spec.get("Labels") or {}
        history = tasks.get(service.id, [])
        task = current_task(history)
        wanted = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
        task_status = (task or {}).get("Status") or {}
        raw = task_status.get("State", "")
        container = task_status.get("ContainerStatus") or {}
        failed = [t for t in history if (t.get("Status") or {}).get("State") in
                  ("failed", "rejected")]
        restarting = False
        if wanted == 0:
            status = ReplicaStatus.EXITED  # stopped (scaled to 0)
        elif task is None:
            status = ReplicaStatus.STARTING  # created; Swarm has not made a task yet
        else:
            status = _TASK_STATUS.get(raw, ReplicaStatus.DEAD)
            if status is ReplicaStatus.DEAD and task.get("DesiredState") in ("running",
                                                                              "ready"):
                # Failed, and Swarm still wants it running: it replaces the task itself (after
                # the restart delay), so the replica is coming back, not lost. When Swarm gives
                # up (restart attempts used up) no task is desired running any more: dead.
                status, restarting = ReplicaStatus.STARTING, True
            elif task.get("DesiredState") not in ("running", "ready") \
                    and status is not ReplicaStatus.EXITED:
                status = ReplicaStatus.DEAD
        running = status in (ReplicaStatus.RUNNING, ReplicaStatus.STARTING)
        port = labels.get(LABEL_PORT, "")
        url: str | None
        if port.isdigit():
            host = self.bind_host
            if host in WILDCARDS:  # wherever Swarm placed the task; none yet: no url yet
                host = self.nodes.address((task or {}).get("NodeID", ""))
            url = f"http://{host}:{port}" if host else None
        else:
            url = f"http://{service.name}:{CONTAINER_PORT}"
        message = task_status.get("Err") or ""
        if restarting:
            message = f"Swarm is restarting the task ({len(failed)} failed): {message}".strip()
        if not message and not running and failed:
            message = (failed[0].get("Status") or {}).get("Err") or ""
        exit_code = container.get("ExitCode")
        if exit_code is None and failed:
            exit_code = ((failed[0].get("Status") or {}).get("ContainerStatus") or {}) \
                .get("ExitCode")
        image = (((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")
                 or "").split("@")[0]
        return ReplicaState(
            id=service.name,
            deployment=labels.get(LABEL_DEPLOYMENT, ""),
            revision=label_int(labels.get(LABEL_REVISION)),
            replica=label_int(labels.get(LABEL_REPLICA)),
            status=status,
            url=url,
            exit_code=None if running else exit_code,
            started_at=docker_time(task_status.get("Timestamp")) if raw == "running" else None,
            finished_at=None if running else docker_time(task_status.get("Timestamp")),
            restart_count=len(failed),
            port=int(port) if port.isdigit() else None,
            image=image or None,
            model_name=labels.get(LABEL_MODEL, ""),
            model_version=labels.get(LABEL_MODEL_VERSION, ""),
            message=message,
            health="healthy" if raw == "running" and self.healthcheck else None,
            labels=dict(labels),
        )

