"""The container-runtime interface that Docker, local-process and (later) Kubernetes/Swarm
runtimes implement. No Django import here: runtimes take explicit constructor arguments."""

from __future__ import annotations

import abc
import dataclasses
import http.client
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from serving import sockets

LABEL_MANAGED = "modelport.managed"
LABEL_DEPLOYMENT = "modelport.deployment"
LABEL_REVISION = "modelport.revision"
LABEL_REPLICA = "modelport.replica"
LABEL_MODEL = "modelport.model"
LABEL_MODEL_VERSION = "modelport.model_version"
LABEL_PORT = "modelport.port"
LABEL_HOST = "modelport.host"  # the host worker that placed it (several plain Docker hosts)
LABEL_SOCKET = "modelport.socket"  # the unix socket a replica without a network serves on
# The installation that created it (``teams.installation``): a runtime lists, adopts and removes
# only objects carrying its own id. Objects without it were made before installation ids
# existed: see ``Runtime.owns`` and ``LegacyOwner``.
LABEL_INSTALLATION = "modelport.installation"
ENV_REPLICA_KEY = "MODELPORT_REPLICA_KEY"  # core.replica_keys.ENV (no Django import here)

LogFn = Callable[[str], None]
# Whether an object without an installation label is this installation's: (deployment name,
# revision number, the replica key in its environment) -> known to this installation's
# database with exactly that key. Supplied by the Django side (``workers.installation``).
LegacyOwner = Callable[[str, int, str], bool]


class ReplicaRuntimeError(Exception):
    """A runtime could not carry out an operation (the message says why)."""


class ReplicaStatus(StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    EXITED = "exited"
    DEAD = "dead"
    MISSING = "missing"
    LOST = "lost"  # on a Docker host that stopped answering (several plain Docker hosts)


@dataclass(frozen=True)
class ScalingHint:
    """A deployment's autoscaling (``deployments.spec.Autoscaling``) as a runtime with its own
    autoscaler may express it: Kubernetes renders a HorizontalPodAutoscaler for ``metric``
    "cpu" (``target``: average CPU utilization, percent). For "concurrency" and "rps" the
    platform's scaler alone moves the replica count; Docker and Swarm ignore the hint."""

    min_replicas: int
    max_replicas: int
    metric: str = "concurrency"  # concurrency | rps | cpu
    target: float = 4


@dataclass
class ReplicaSpec:
    """What one replica of one deployment revision should be."""

    deployment: str
    revision: int
    replica: int
    image: str | None = None  # serving image (Docker); a baked image needs no model_dir
    model_dir: str | None = None  # MLflow model dir on the host, mounted read-only at /model
    model_name: str = ""
    model_version: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 1.0  # cores
    memory_mb: int = 1024
    pids_limit: int = 256
    gpu_device_ids: list[str] = field(default_factory=list)
    port: int | None = None  # None: the runtime allocates one (host networking)
    labels: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    gpus: int = 0  # how many, for runtimes that place replicas and pick the devices themselves
    # Outbound network access a platform admin granted; without it a replica reaches nothing.
    egress: bool = False
    # The installation it belongs to (a runtime scoped to one sets it to its own at start):
    # part of its name, so two installations' replicas of a same-named deployment never meet.
    installation: str = ""
    # The deployment's autoscaling, for runtimes that express it natively (None: a fixed count).
    autoscaling: ScalingHint | None = None

    @property
    def name(self) -> str:
        """Stable replica name: the id under which the runtime knows it."""
        return replica_name(self.deployment, self.revision, self.replica, self.installation)


def gpu_env(spec: ReplicaSpec, *, pinned: bool) -> dict[str, str]:
    """The environment a framework needs to use the replica's GPUs, and to leave alone the
    ones it was not granted.

    With GPUs: the NVIDIA container toolkit's ``NVIDIA_DRIVER_CAPABILITIES`` (CUDA and
    nvidia-smi), ``CUDA_VISIBLE_DEVICES`` numbering the devices as the container sees them
    (``0..n-1``: the toolkit mounts only the granted ones) and ``MODELPORT_DEVICE=auto`` (the
    GPU when the model's framework sees one). ``pinned`` (Docker: the allocated device ids are
    requested by id) also names the ids in ``NVIDIA_VISIBLE_DEVICES``, as the device request
    does; Swarm and Kubernetes pick the devices themselves and set it, so it is left to them.
    Without GPUs: ``NVIDIA_VISIBLE_DEVICES=void`` and an empty ``CUDA_VISIBLE_DEVICES``, so
    that a host whose default runtime is NVIDIA's shows no GPU to a replica granted none, and
    ``MODELPORT_DEVICE=cpu``."""
    count = len(spec.gpu_device_ids) or spec.gpus
    if not count:
        return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "",
                "MODELPORT_DEVICE": "cpu"}
    env = {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
           "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(count)),
           "MODELPORT_DEVICE": "auto"}
    if pinned and spec.gpu_device_ids:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.gpu_device_ids)
    return env


@dataclass
class ReplicaState:
    """What one replica is, as found by the runtime (always rediscoverable from labels/state)."""

    id: str
    deployment: str
    revision: int
    replica: int
    status: ReplicaStatus
    url: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restart_count: int = 0
    port: int | None = None
    image: str | None = None
    model_name: str = ""
    model_version: str = ""
    message: str = ""
    health: str | None = None  # runtime health probe: starting/healthy/unhealthy, None if none
    labels: dict[str, str] = field(default_factory=dict)
    host: str = ""  # the Docker host it was placed on (several plain Docker hosts), else ""

    @property
    def alive(self) -> bool:
        return self.status in (ReplicaStatus.RUNNING, ReplicaStatus.STARTING)


@dataclass
class NodeInfo:
    """One machine of an execution backend, as the backend reports it."""

    name: str
    role: str = ""  # swarm: manager/worker; kubernetes: node roles; docker: "engine"
    state: str = ""  # ready/down/...
    available: bool = True  # schedulable (swarm availability "active", k8s not cordoned)
    cpu: float = 0.0  # cores the backend may allocate
    memory_mb: int = 0
    gpus: int | None = None  # None: the backend does not report GPUs


@dataclass
class BackendHealth:
    """What `Runtime.describe()` returns: reachable or not, nodes, allocatable resources."""

    reachable: bool
    nodes: list[NodeInfo] = field(default_factory=list)
    message: str = ""
    version: str = ""
    # What an operator should know about the isolation this backend gives replicas (e.g. they
    # share a node's network); shown with the target's health.
    warnings: list[str] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return sum(n.cpu for n in self.nodes if n.available)

    @property
    def memory_mb(self) -> int:
        return sum(n.memory_mb for n in self.nodes if n.available)

    @property
    def gpus(self) -> int | None:
        counts = [n.gpus for n in self.nodes if n.available]
        if not counts or all(c is None for c in counts):
            return None
        return sum(c or 0 for c in counts)


class Runtime(abc.ABC):
    """Carries out desired state on one execution backend.

    ``installation``: the id of the installation this runtime works for. Scoped (non-empty), it
    labels what it creates with it and lists, adopts and removes only objects labelled with it
    — or, made before installation ids existed, unlabelled objects that ``legacy_owner`` proves
    are this installation's (their replica key is one of its revisions'). Unscoped (empty, for
    Django-free use such as benchmarks), it labels nothing and sees only unlabelled objects:
    it never touches any installation's replicas either way."""

    name: str = "abstract"
    sandboxed: bool = False
    installation: str = ""
    legacy_owner: LegacyOwner | None = None

    def owns(self, labels: dict[str, str], env: Callable[[], dict[str, str]]) -> bool:
        """Whether an object with these labels is this runtime's (``env()``: its environment,
        read only for an unlabelled object of a scoped runtime)."""
        owner = labels.get(LABEL_INSTALLATION)
        if owner is not None:
            return bool(self.installation) and owner == self.installation
        if not self.installation:
            return True
        if self.legacy_owner is None:
            return False
        key = env().get(ENV_REPLICA_KEY, "")
        try:
            revision = int(labels.get(LABEL_REVISION) or "")
        except ValueError:
            return False
        deployment = labels.get(LABEL_DEPLOYMENT, "")
        return bool(key and deployment) and self.legacy_owner(deployment, revision, key)

    def scoped(self, spec: ReplicaSpec) -> ReplicaSpec:
        """``spec`` as this runtime names it (its installation's)."""
        if spec.installation == self.installation:
            return spec
        return dataclasses.replace(spec, installation=self.installation)

    def scope_labels(self) -> dict[str, str]:
        """The labels marking an object as this installation's."""
        return {LABEL_INSTALLATION: self.installation} if self.installation else {}

    @abc.abstractmethod
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """Make sure an image (or environment) serving models with these requirements exists;
        return its reference. Cached: the same requirement set never builds twice."""

    @abc.abstractmethod
    def start_replica(self, spec: ReplicaSpec) -> ReplicaState:
        """Start one replica (idempotent: an already running replica of that name is returned)."""

    @abc.abstractmethod
    def stop_replica(self, replica_id: str, timeout: float = 10) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after `timeout`). Unknown ids are ignored."""

    @abc.abstractmethod
    def remove_replica(self, replica_id: str) -> None:
        """Stop if needed and forget the replica. Unknown ids are ignored."""

    @abc.abstractmethod
    def list_replicas(self, deployment: str | None = None) -> list[ReplicaState]:
        """Every replica this runtime manages (of one deployment, when given)."""

    @abc.abstractmethod
    def get_replica(self, replica_id: str) -> ReplicaState:
        """One replica; status MISSING when it does not exist."""

    @abc.abstractmethod
    def logs(self, replica_id: str, tail: int = 200) -> str:
        """The last `tail` lines of the replica's output."""

    @abc.abstractmethod
    def stats(self, replica_id: str) -> dict[str, float]:
        """`{"cpu_percent": float, "memory_bytes": float, ...}` of a running replica."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """Whether the backend answers."""

    def describe(self) -> BackendHealth:
        """Reachable or not, its nodes and what they can allocate (never raises). Runtimes
        that can list their nodes override this; the default only pings."""
        try:
            reachable = self.ping()
        except Exception as exc:  # noqa: BLE001 - describe reports, it does not fail
            return BackendHealth(reachable=False, message=str(exc))
        return BackendHealth(reachable=reachable,
                             message="" if reachable else f"the {self.name} backend does not "
                                                          "answer")


def private_dirs(path: Path) -> Path:
    """``path`` and its missing parents, each created 0700 (``mkdir(parents=True)`` would give
    the parents the umask's default): where replicas' sockets live, only the platform may enter.
    Existing directories are left as they are."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)
    return path


_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]+")


def replica_name(deployment: str, revision: int, replica: int, installation: str = "") -> str:
    """``mp-<installation[:8]>-<deployment>-r<revision>-<replica>``: names are unique per
    Docker Engine, Swarm and local state dir, and two installations may both have a deployment
    of one name. (The label carries the whole id; the name only has to differ.)"""
    safe = _NAME_BAD.sub("-", deployment).strip("-.") or "deployment"
    scope = f"{short_id(installation)}-" if installation else ""
    return f"mp-{scope}{safe}-r{revision}-{replica}"


def short_id(installation: str) -> str:
    return installation[:8]


def env_dict(items: list[str] | None) -> dict[str, str]:
    """Docker's ``["KEY=value", ...]`` as a dict."""
    out = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def missing_state(replica_id: str) -> ReplicaState:
    return ReplicaState(id=replica_id, deployment="", revision=0, replica=0,
                        status=ReplicaStatus.MISSING)


def wait_ready(url: str, timeout: float = 60, interval: float = 0.1,
               path: str = "/ready", alive: Callable[[], bool] | None = None) -> bool:
    """Poll `url + path` (http:// or http+unix://) until it answers 200, `timeout` passes, or
    `alive()` turns False."""
    deadline = time.monotonic() + timeout
    target = url.rstrip("/") + path
    while time.monotonic() < deadline:
        try:
            if sockets.request(target, timeout=2)[0] == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        if alive is not None and not alive():
            return False
        time.sleep(interval)
    return False
