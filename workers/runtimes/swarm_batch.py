"""Batch scoring jobs on Docker Swarm: one ``replicated-job`` service per submission
(``whole_job`` mode of ``batch.BatchRuntime``), ``MaxConcurrent = parallelism``,
``TotalCompletions`` = the chunks submitted, on a network of its own that leads nowhere.

How a task learns its chunk — checked against this machine's Engine (20.10, API 1.41): the
tasks of a replicated job get slots ``0 .. TotalCompletions-1``; a failed task's replacement
keeps its slot and a slot whose task completed never runs again, so slot ``k`` is exactly one
successful task. ``{{.Task.Slot}}`` in an environment variable renders the slot — except slot
0, which Docker stores as "no slot" and the template renders as the *node id*. So the task's
environment carries ``MODELPORT_SLOT={{.Task.Slot}}`` and the chunk list ``MODELPORT_CHUNKS``,
and the container's command sets ``MODELPORT_CHUNK`` to ``MODELPORT_CHUNKS[slot]`` (a
non-numeric slot is 0), then runs ``python -m serving.batch`` as on Docker. A submission may be
a subset of the chunks (a resume): then it is a new service (the name carries a digest of the
chunk list), and ``chunk_states`` lets the latest submission win for the chunks it covers.

Submitting: the runner passes every chunk still to do at each tick; only those no earlier
service runs, retries or finished are submitted. ``start_chunk`` is a per-chunk bridge: a
one-chunk service per attempt that Swarm does not retry (restart condition ``none``), removed by
``remove_chunk``.

Retries are Swarm's: restart policy ``on-failure`` with ``MaxAttempts = max_retries``, per slot;
``chunk_states`` counts a slot's failed tasks and reports the chunk FAILED once they exceed
``max_retries`` (Swarm keeps at most the task history retention limit of them, 5 by default).

No network: Swarm services cannot join ``none`` (the Engine answers "could not find the
corresponding predefined swarm network: network none not found") and a service without networks
gets the Engine's default bridge, which normally leads out. So each job gets its own **internal**
overlay network (``mp-<installation>-<job>``, created with the first submission, removed by
``remove_job``): a task there has one interface on that subnet and no route out, and nothing but
the same job's other tasks is on it (checked in the tests). The host network of the Swarm
runtime's host mode is never used for batch.

Reservations: off by default (``reservations=True`` turns them on). Swarm's constraint enforcer
counts the reservations of a replicated job's *completed* tasks against the node until they are
pruned, so a later task of the job — or a replica — is rejected with "assigned node no longer
meets constraints" although the node is idle (seen here on Engine 20.10 with two 1-CPU chunks on
a 2-CPU node; moby/moby#52652, fixed by moby/swarmkit#3237 in 2026 engines). The platform's
admission and the target's capacity still account for the job; the limits still bound each
task. GPU chunks keep their generic-resource reservation (that is how Swarm finds a GPU node).

Hardening as the Swarm runtime's replicas: uid/gid 10001, read-only root with a private
``/tmp`` tmpfs, every capability dropped, CPU/memory limits, a pids limit,
no-new-privileges where the API has it (>= 1.44), no Docker socket. The model directory is
bind-mounted read-only at ``/model``, the job's input directory read-only at ``/job/input``
and its output directory at ``/job/output``: on a multi-node swarm those paths must be on
storage every node mounts at the same path (as the Swarm runtime's model directories).

No Django import.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.types import ContainerSpec, Mount, Resources, RestartPolicy, ServiceMode, TaskTemplate
from docker.utils import version_gte

from .base import LABEL_INSTALLATION, LABEL_MANAGED, LogFn, ReplicaRuntimeError, short_id
from .batch import (
    ENV_CHUNK,
    INPUT_MOUNT,
    LABEL_JOB,
    OUTPUT_MOUNT,
    BatchRuntime,
    BatchSpec,
    ChunkPhase,
    ChunkState,
)
from .docker_spec import DOCKER_SOCKET_PATHS, HARDENING, MODEL_MOUNT
from .images import ImageBuilder
from .registry_push import RegistryPublisher

LABEL_CHUNKS = "modelport.job-chunks"  # on the service: the chunk each slot runs
LABEL_SUBMITTED = "modelport.job-submitted"  # ns since the epoch: orders a job's submissions
LABEL_ATTEMPT = "modelport.attempt"  # start_chunk's one-chunk services: the runner's attempt
ENV_CHUNKS = "MODELPORT_CHUNKS"
ENV_SLOT = "MODELPORT_SLOT"
TMPFS_BYTES = 64 * 1024 * 1024
DEFAULT_GPU_RESOURCE = "NVIDIA-GPU"
_PENDING = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing",
                      "ready", "starting"})


def chunk_command(module: str = "serving.batch", python: str = "python") -> list[str]:
    """slot -> chunk, then the batch scorer (see the module docstring for slot 0)."""
    return [
        python, "-c",
        "import os, runpy; "
        f"slot = os.environ.get('{ENV_SLOT}', ''); "
        f"os.environ['{ENV_CHUNK}'] = os.environ['{ENV_CHUNKS}'].split(',')"
        "[int(slot) if slot.isdigit() else 0]; "
        f"runpy.run_module('{module}', run_name='__main__', alter_sys=True)",
    ]


def format_indices(indices: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted({int(i) for i in indices}))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in text).strip("-.") or "job"


def job_network_name(job: str, installation: str = "") -> str:
    scope = f"{short_id(installation)}-" if installation else ""
    return f"mp-{scope}{_slug(job)}"


def job_service_name(job: str, indices: Iterable[int], installation: str = "") -> str:
    digest = hashlib.sha256(format_indices(indices).encode()).hexdigest()[:6]
    return f"{job_network_name(job, installation)}-{digest}"


class SwarmBatchRuntime(BatchRuntime):
    """Runs a batch job's chunks as replicated-job services through a manager's endpoint.

    ``installation`` as in ``Runtime``: services and networks carry the id and only this
    installation's are listed or removed. ``entry_module`` and ``python``: the module a chunk
    runs and the interpreter (``serving.batch`` in the serving image; the tests give a
    stand-in run by the base image's ``python3``). ``reservations``: also reserve the CPU and
    memory (limits always apply) — off by default, see the module docstring."""

    mode = "whole_job"

    def __init__(self, client: Any = None, *, base_image: str = "modelport/base:bookworm",
                 image_builder: ImageBuilder | None = None,
                 extra_labels: dict[str, str] | None = None,
                 gpu_resource: str = DEFAULT_GPU_RESOURCE, installation: str = "",
                 entry_module: str = "serving.batch", python: str = "python",
                 reservations: bool = False, remove_wait_s: float = 60.0,
                 publisher: RegistryPublisher | None = None) -> None:
        self.client = client if client is not None else docker.from_env()
        self.images = image_builder or ImageBuilder(self.client, base_image)
        self.publisher = publisher
        self.extra_labels = dict(extra_labels or {})
        self.gpu_resource = gpu_resource
        self.installation = installation
        self.entry_module = entry_module
        self.python = python
        self.reservations = reservations
        self.remove_wait_s = remove_wait_s

    def ensure_batch_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """The replicas' serving image, built on the manager's engine and, with a registry
        (``publisher``), pushed there for every node to pull, as for replicas."""
        local = self.images.ensure_image(requirements, on_log)
        return self.publisher.publish(local, on_log) if self.publisher else local

    # --- labels and lookups -----------------------------------------------------------------
    def _scope(self, job: str) -> dict[str, str]:
        labels = {LABEL_MANAGED: "1", LABEL_JOB: job}
        if self.installation:
            labels[LABEL_INSTALLATION] = self.installation
        return labels

    def _filters(self, job: str) -> dict[str, list[str]]:
        return {"label": [f"{k}={v}" for k, v in self._scope(job).items()]}

    def _mine(self, labels: dict[str, str], job: str) -> bool:
        """Labels filter by key=value only: an unscoped runtime must also skip objects that
        carry an installation id."""
        return labels.get(LABEL_JOB) == job and \
            labels.get(LABEL_INSTALLATION, "") == self.installation

    def _services(self, job: str) -> list[dict[str, Any]]:
        services = [s for s in self.client.api.services(filters=self._filters(job))
                    if self._mine((s.get("Spec") or {}).get("Labels") or {}, job)]

        def order(s: dict[str, Any]) -> tuple[int, str]:
            sub = ((s.get("Spec") or {}).get("Labels") or {}).get(LABEL_SUBMITTED, "")
            return (int(sub) if sub.isdigit() else 0, s.get("CreatedAt") or "")

        return sorted(services, key=order)

    # --- submitting -------------------------------------------------------------------------
    def service_spec(self, spec: BatchSpec, indices: list[int]) -> dict[str, Any]:
        """The keyword arguments of ``APIClient.create_service`` for these chunks."""
        chunks = sorted({int(i) for i in indices})
        if not chunks:
            raise ReplicaRuntimeError("a job needs at least one chunk to run")
        labels = {**self.extra_labels, **spec.labels, **self._scope(spec.job),
                  LABEL_CHUNKS: format_indices(chunks)}
        threads = str(max(1, int(-(-spec.cpu // 1)))) if spec.cpu else "1"
        gpus = len(spec.gpu_device_ids) or spec.gpus
        env = {
            "MODELPORT_MODEL_DIR": MODEL_MOUNT, "MODELPORT_JOB": spec.job,
            ENV_CHUNKS: ",".join(str(i) for i in chunks), ENV_SLOT: "{{.Task.Slot}}",
            "HOME": "/tmp",  # noqa: S108 - the task's own tmpfs
            "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            **({"NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
                "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus)),
                "MODELPORT_DEVICE": "auto"} if gpus else
               {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "",
                "MODELPORT_DEVICE": "cpu"}),
            **spec.env,
        }
        mounts = [Mount(target="/tmp", source=None, type="tmpfs",  # noqa: S108
                        tmpfs_size=TMPFS_BYTES),
                  self._bind(spec.input_dir, INPUT_MOUNT, read_only=True),
                  self._bind(spec.output_dir, OUTPUT_MOUNT, read_only=False)]
        if spec.model_dir:
            mounts.append(self._bind(spec.model_dir, MODEL_MOUNT, read_only=True))
        container = ContainerSpec(
            spec.image, command=chunk_command(self.entry_module, self.python),
            env=[f"{k}={v}" for k, v in env.items()], user=HARDENING["user"], labels=labels,
            mounts=mounts, read_only=True, cap_drop=list(HARDENING["cap_drop"]),
            stop_signal="SIGTERM", stop_grace_period=10_000_000_000)
        if self._api_at_least("1.44"):
            container["Privileges"] = {**(container.get("Privileges") or {}),
                                       "NoNewPrivileges": True}
        nano = int(spec.cpu * 1e9) if spec.cpu else None
        memory = int(spec.memory_mb) * 1024 * 1024 if spec.memory_mb else None
        reserve = self.reservations or bool(gpus)  # GPUs: Swarm must pick a node that has them
        resources = Resources(cpu_limit=nano, mem_limit=memory,
                              cpu_reservation=nano if reserve else None,
                              mem_reservation=memory if reserve else None,
                              generic_resources={self.gpu_resource: gpus} if gpus else None)
        if spec.pids_limit:
            resources.setdefault("Limits", {})["Pids"] = int(spec.pids_limit)
        template = TaskTemplate(
            container, resources=resources,
            # MaxAttempts 0 means "no limit" to Swarm: no retries is condition "none".
            restart_policy=RestartPolicy(condition="on-failure", delay=1_000_000_000,
                                         max_attempts=int(spec.max_retries))
            if spec.max_retries > 0 else RestartPolicy(condition="none"),
            networks=[job_network_name(spec.job, self.installation)])
        return {"task_template": template,
                "name": job_service_name(spec.job, chunks, self.installation),
                "labels": labels,
                "mode": ServiceMode("replicated-job", replicas=len(chunks),
                                    concurrency=max(1, min(int(spec.parallelism),
                                                           len(chunks))))}

    @staticmethod
    def _bind(path: str, target: str, *, read_only: bool) -> Mount:
        source = str(Path(path).resolve())
        if any(source.rstrip("/").endswith(sock) for sock in DOCKER_SOCKET_PATHS):
            raise ReplicaRuntimeError("refusing to mount the Docker socket into a job container")
        return Mount(target=target, source=source, type="bind", read_only=read_only)

    def submit_job(self, spec: BatchSpec, indices: list[int]) -> None:
        """Submit the chunks among ``indices`` that no service of the job runs, retries or
        finished (the runner passes every chunk still to do at each tick: idempotent). The
        first call creates one service for all of them (and the job's network); a resume after
        failed chunks, one for those only; earlier services are kept for their states."""
        self._submit(spec, indices)

    def start_chunk(self, spec: BatchSpec, index: int, attempt: int) -> ChunkState:
        """The per-chunk bridge, for a runner that drives chunks itself (``per_chunk``, as the
        jobs runner does today): a one-chunk replicated job per attempt, which Swarm does not
        retry (the runner does). Idempotent per (chunk, attempt)."""
        one = replace(spec, max_retries=0, parallelism=1)
        service = self._submit(one, [index], attempt=attempt)
        if service is None:
            return ChunkState(index=index, phase=ChunkPhase.PENDING, attempt=attempt)
        return self._states_of(service).get(index) or \
            ChunkState(index=index, phase=ChunkPhase.PENDING, attempt=attempt)

    def _submit(self, spec: BatchSpec, indices: list[int], *,
                attempt: int = 0) -> dict[str, Any] | None:
        """The service for these chunks (created unless it exists; None: nothing to submit, or
        created by another worker a moment ago)."""
        if spec.installation != self.installation:
            spec = replace(spec, installation=self.installation)
        if not spec.image:
            raise ReplicaRuntimeError("the swarm runtime needs spec.image "
                                      "(see ensure_batch_image)")
        chunks = sorted({int(i) for i in indices})
        services = self._services(spec.job)
        if not attempt and services:  # only the chunks no earlier service runs or finished
            live = {i for i, st in self.chunk_states(spec.job).items() if st.phase in
                    (ChunkPhase.PENDING, ChunkPhase.RUNNING, ChunkPhase.SUCCEEDED)}
            chunks = [i for i in chunks if i not in live]
            if not chunks:
                return None  # every one of them is submitted already
        kwargs = self.service_spec(spec, chunks)
        if attempt:
            kwargs["name"] += f"-a{int(attempt)}"
            kwargs["labels"] = {**kwargs["labels"], LABEL_ATTEMPT: str(int(attempt))}
        for service in services:
            if (service.get("Spec") or {}).get("Name") == kwargs["name"]:
                return service  # submitted already
        self._ensure_network(spec.job)
        kwargs["labels"] = {**kwargs["labels"], LABEL_SUBMITTED: str(time.time_ns())}
        try:
            created = self.client.api.create_service(**kwargs)
        except APIError as exc:
            if getattr(exc, "status_code", None) == 409:  # another worker, a moment ago
                return None
            raise ReplicaRuntimeError(f"creating service {kwargs['name']} failed: "
                                      f"{exc}") from exc
        try:
            return dict(self.client.api.inspect_service(created["ID"]))
        except NotFound:
            return None

    def _ensure_network(self, job: str) -> None:
        name = job_network_name(job, self.installation)
        existing = [n for n in self.client.api.networks(names=[name]) if n.get("Name") == name]
        if existing:
            if not existing[0].get("Internal") or existing[0].get("Driver") != "overlay":
                raise ReplicaRuntimeError(f"network {name} exists and is not an internal "
                                          "overlay network: refusing to run the job on it")
            return
        try:
            self.client.api.create_network(
                name, driver="overlay", internal=True, attachable=False,
                labels={**self.extra_labels, **self._scope(job)})
        except APIError as exc:
            if getattr(exc, "status_code", None) != 409:
                raise ReplicaRuntimeError(f"creating network {name} failed: {exc}") from exc

    # --- reading ----------------------------------------------------------------------------
    def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        return list(self.client.api.tasks(filters={"service": service_id}))

    def chunk_states(self, job: str) -> dict[int, ChunkState]:
        states: dict[int, ChunkState] = {}
        for service in self._services(job):
            states.update(self._states_of(service))
        return states

    def _states_of(self, service: dict[str, Any]) -> dict[int, ChunkState]:
        spec = service.get("Spec") or {}
        labels = spec.get("Labels") or {}
        chunks = [int(i) for i in labels.get(LABEL_CHUNKS, "").split(",") if i.isdigit()]
        policy = ((spec.get("TaskTemplate") or {}).get("RestartPolicy") or {})
        max_retries = int(policy.get("MaxAttempts") or 0)
        by_slot: dict[int, list[dict[str, Any]]] = {}
        for task in self._tasks(service["ID"]):
            by_slot.setdefault(int(task.get("Slot") or 0), []).append(task)
        out: dict[int, ChunkState] = {}
        for slot, chunk in enumerate(chunks):
            tasks = sorted(by_slot.get(slot, []), key=lambda t: (
                t.get("CreatedAt") or "", (t.get("Version") or {}).get("Index", 0)))
            out[chunk] = _slot_state(chunk, tasks, max_retries)
            attempt = labels.get(LABEL_ATTEMPT, "")
            out[chunk].attempt = int(attempt) if attempt.isdigit() else 0
        return out

    def chunk_logs(self, job: str, index: int, tail: int = 200) -> str:
        state = self.chunk_states(job).get(index)
        if state is None or not state.runtime_id:
            return ""
        api = self.client.api
        try:
            res = api._get(api._url("/tasks/{0}/logs", state.runtime_id),
                           params={"stdout": 1, "stderr": 1, "tail": str(tail)}, stream=False)
            raw = api._get_result_tty(False, res, False)
        except (APIError, NotFound):
            return ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else "".join(
            p.decode("utf-8", "replace") for p in raw)
        return text

    # --- removing ---------------------------------------------------------------------------
    def remove_chunk(self, job: str, index: int) -> None:
        """Remove the chunk's one-chunk services (``start_chunk``'s, whatever their state), and
        the containers of its finished tasks in a service of several chunks. A replicated job
        cannot drop one slot: there a running chunk stops for good only with ``remove_job``
        (killing its container would count as a failure and be retried)."""
        single = [s for s in self._services(job)
                  if ((s.get("Spec") or {}).get("Labels") or {}).get(LABEL_CHUNKS) == str(index)]
        for service in single:
            self._remove_service(service["ID"])
        for container in self._containers([s["ID"] for s in single]):
            with contextlib.suppress(APIError):
                container.remove(force=True)
        state = self.chunk_states(job).get(index)
        if state is None or state.phase in (ChunkPhase.RUNNING, ChunkPhase.PENDING):
            return
        for container in self.client.containers.list(
                all=True, filters={"label": f"com.docker.swarm.task.id={state.runtime_id}"}):
            with contextlib.suppress(APIError):
                container.remove(force=True)

    def remove_job(self, job: str) -> None:
        """Remove every service of the job, wait (up to ``remove_wait_s``) until no task
        container of them is left on this node, then remove the job's network."""
        ids = [s["ID"] for s in self._services(job)]
        for service_id in ids:
            self._remove_service(service_id)
        deadline = time.monotonic() + self.remove_wait_s
        while ids and self._containers(ids):
            # Swarm removes a removed service's task containers lazily (exited ones can stay
            # for a long while): they are ours (labelled with the service), remove them.
            for container in self._containers(ids):
                with contextlib.suppress(APIError):
                    container.remove(force=True)
            if not self._containers(ids):
                break
            if time.monotonic() >= deadline:
                raise ReplicaRuntimeError(f"containers of job {job} are still being removed; "
                                          "try again")
            time.sleep(0.5)
        name = job_network_name(job, self.installation)
        for network in self.client.api.networks(names=[name]):
            if network.get("Name") != name or not self._mine(network.get("Labels") or {}, job):
                continue
            while True:
                try:
                    self.client.api.remove_network(network["Id"])
                    break
                except NotFound:
                    break
                except APIError as exc:  # endpoints of removed tasks are released lazily
                    if time.monotonic() >= deadline:
                        raise ReplicaRuntimeError(f"removing network {name} failed: "
                                                  f"{exc}") from exc
                    time.sleep(0.5)

    def _containers(self, service_ids: list[str]) -> list[Any]:
        found = []
        for service_id in service_ids:
            found += self.client.containers.list(
                all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"})
        return found

    def _remove_service(self, service_id: str) -> None:
        try:
            self.client.api.remove_service(service_id)
        except NotFound:
            pass
        except APIError as exc:
            if getattr(exc, "status_code", None) not in (404, 409):
                raise ReplicaRuntimeError(f"removing service {service_id} failed: "
                                          f"{exc}") from exc

    def _api_at_least(self, version: str) -> bool:
        api = getattr(self.client.api, "_version", None) or "1.41"
        return bool(version_gte(api, version))


def _slot_state(chunk: int, tasks: list[dict[str, Any]], max_retries: int) -> ChunkState:
    """One slot's tasks (oldest first) as the chunk's state."""
    if not tasks:
        return ChunkState(index=chunk, phase=ChunkPhase.PENDING)
    failed = [t for t in tasks if (t.get("Status") or {}).get("State") in
              ("failed", "rejected", "orphaned")]
    complete = [t for t in tasks if (t.get("Status") or {}).get("State") == "complete"]
    task = complete[-1] if complete else tasks[-1]
    status = task.get("Status") or {}
    state = status.get("State", "")
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    message = status.get("Err") or ""
    if complete:
        phase, message = ChunkPhase.SUCCEEDED, ""
    elif state == "running":
        phase = ChunkPhase.RUNNING
    elif state in _PENDING:
        phase = ChunkPhase.PENDING
    elif len(failed) > max_retries:
        phase = ChunkPhase.FAILED
        message = f"gave up after {len(failed)} failed attempt(s)" + \
            (f": {message}" if message else "")
    else:  # failed, Swarm starts another task after the restart delay
        phase = ChunkPhase.PENDING
        message = f"retrying: {message or 'failed'}"
    if failed and phase in (ChunkPhase.PENDING, ChunkPhase.RUNNING) and not message:
        last = (failed[-1].get("Status") or {})
        message = f"retry {len(failed)}: the last attempt failed: {last.get('Err') or 'failed'}"
    return ChunkState(index=chunk, phase=phase, runtime_id=str(task.get("ID", "")),
                      exit_code=exit_code if phase in (ChunkPhase.SUCCEEDED, ChunkPhase.FAILED)
                      else None, message=message, host=str(task.get("NodeID") or ""))
