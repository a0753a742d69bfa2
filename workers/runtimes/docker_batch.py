"""The Docker ``BatchRuntime`` (per_chunk): each chunk attempt is one hardened, network-less
container of the version's serving image running ``python -m serving.batch``, found again by
its labels. No Django import.

The container is hardened exactly like a replica (``docker_spec.HARDENING``: uid 10001,
read-only root, private /tmp, cap_drop ALL, no-new-privileges; CPU, memory, pids limits) but
with ``network_mode="none"`` always and no restart policy: a failed chunk is retried by the
platform, which counts its attempts.
"""

from __future__ import annotations

import contextlib
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import DeviceRequest

from .base import LABEL_INSTALLATION, LABEL_MANAGED, LogFn, short_id
from .batch import (
    ENV_CHUNK,
    INPUT_MOUNT,
    LABEL_CHUNK,
    LABEL_JOB,
    OUTPUT_MOUNT,
    BatchRuntime,
    BatchSpec,
    ChunkPhase,
    ChunkState,
)
from .docker import DockerRuntime
from .docker_spec import HARDENING, MODEL_MOUNT, NO_NETWORK, docker_time, label_int

LABEL_ATTEMPT = "modelport.attempt"
COMMAND = ["python", "-m", "serving.batch"]


class DockerBatchRuntime(BatchRuntime):
    """Chunks on the Docker Engine of a ``DockerRuntime`` (its client, installation scope,
    host paths and image builder)."""

    mode = "per_chunk"

    def __init__(self, docker: DockerRuntime) -> None:
        self.docker = docker
        self.client = docker.client
        self.installation = docker.installation

    # --- images -----------------------------------------------------------------------------
    def ensure_batch_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        return self.docker.ensure_image(requirements, on_log)

    # --- naming -----------------------------------------------------------------------------
    def container_name(self, job: str, index: int, attempt: int) -> str:
        scope = f"{short_id(self.installation)}-" if self.installation else ""
        return f"mp-{scope}{job}-c{index}-a{attempt}"

    def _labels(self, spec: BatchSpec, index: int, attempt: int) -> dict[str, str]:
        labels = dict(spec.labels)
        labels.update({LABEL_MANAGED: "1", LABEL_JOB: spec.job, LABEL_CHUNK: str(index),
                       LABEL_ATTEMPT: str(attempt)})
        if self.installation:
            labels[LABEL_INSTALLATION] = self.installation
        return labels

    # --- lifecycle --------------------------------------------------------------------------
    def start_chunk(self, spec: BatchSpec, index: int, attempt: int) -> ChunkState:
        name = self.container_name(spec.job, index, attempt)
        for container in self._containers(spec.job, index):
            if container.name == name:
                return self._state(container)  # already started (a retried tick)
            self._remove(container)  # an earlier attempt's
        threads = str(max(1, int(-(-spec.cpu // 1)))) if spec.cpu else "1"
        env = {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp",  # noqa: S108 - the private tmpfs
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "MODELPORT_MODEL_DIR": MODEL_MOUNT, ENV_CHUNK: str(index),
               "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        # Only the granted devices; none at all otherwise (an NVIDIA default runtime would
        # show every device), as for replicas.
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.gpu_device_ids) or "void"
        env.update(spec.env)
        volumes = {self.docker.host_path(spec.input_dir): {"bind": INPUT_MOUNT, "mode": "ro"},
                   self.docker.host_path(spec.output_dir): {"bind": OUTPUT_MOUNT,
                                                             "mode": "rw"}}
        if spec.model_dir:
            volumes[self.docker.host_path(spec.model_dir)] = {"bind": MODEL_MOUNT, "mode": "ro"}
        kwargs: dict[str, Any] = {k: v for k, v in HARDENING.items() if k != "restart_policy"}
        kwargs.update(
            name=name, command=COMMAND, entrypoint=[], detach=True,
            network_mode=NO_NETWORK, environment=env, volumes=volumes,
            labels=self._labels(spec, index, attempt),
            nano_cpus=int(spec.cpu * 1e9) if spec.cpu else None,
            mem_limit=f"{int(spec.memory_mb)}m" if spec.memory_mb else None,
            memswap_limit=f"{int(spec.memory_mb)}m" if spec.memory_mb else None,
            pids_limit=int(spec.pids_limit) if spec.pids_limit else None,
        )
        if spec.gpu_device_ids:
            kwargs["device_requests"] = [DeviceRequest(device_ids=list(spec.gpu_device_ids),
                                                       capabilities=[["gpu"]])]
        try:
            container = self.client.containers.run(spec.image, **kwargs)
        except APIError as exc:
            if getattr(exc, "status_code", None) != 409:  # 409: a concurrent tick started it
                raise
            container = self.client.containers.get(name)
        return self._state(container)

    def chunk_states(self, job: str) -> dict[int, ChunkState]:
        """The latest attempt's container of each chunk."""
        latest: dict[int, tuple[int, Any]] = {}
        for container in self._containers(job):
            index = label_int(container.labels.get(LABEL_CHUNK))
            attempt = label_int(container.labels.get(LABEL_ATTEMPT))
            if index not in latest or attempt > latest[index][0]:
                latest[index] = (attempt, container)
        return {i: self._state(c) for i, (_a, c) in latest.items()}

    def remove_chunk(self, job: str, index: int) -> None:
        for container in self._containers(job, index):
            self._remove(container)

    def remove_job(self, job: str) -> None:
        for container in self._containers(job):
            self._remove(container)

    def chunk_logs(self, job: str, index: int, tail: int = 200) -> str:
        states = self._containers(job, index)
        if not states:
            return ""
        container = max(states, key=lambda c: label_int(c.labels.get(LABEL_ATTEMPT)))
        try:
            return container.logs(tail=tail, stdout=True, stderr=True).decode("utf-8",
                                                                              "replace")
        except APIError:
            return ""

    # --- helpers ----------------------------------------------------------------------------
    def _containers(self, job: str, index: int | None = None) -> list[Any]:
        filters = [f"{LABEL_MANAGED}=1", f"{LABEL_JOB}={job}"]
        if index is not None:
            filters.append(f"{LABEL_CHUNK}={index}")
        if self.installation:
            filters.append(f"{LABEL_INSTALLATION}={self.installation}")
        out = []
        for summary in self.client.api.containers(all=True, filters={"label": filters}):
            owner = (summary.get("Labels") or {}).get(LABEL_INSTALLATION, "")
            if owner != self.installation:
                continue  # never another installation's (nor an unscoped one's)
            with contextlib.suppress(NotFound):
                out.append(self.client.containers.get(summary["Id"]))
        return out

    @staticmethod
    def _remove(container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except APIError as exc:
            if getattr(exc, "status_code", None) not in (404, 409):
                raise

    @staticmethod
    def _state(container: Any) -> ChunkState:
        st = container.attrs.get("State", {})
        status = st.get("Status", container.status)
        labels = container.labels or {}
        index = label_int(labels.get(LABEL_CHUNK))
        if status in ("running", "restarting", "paused"):
            phase = ChunkPhase.RUNNING
        elif status == "exited" and st.get("ExitCode") == 0 and not st.get("OOMKilled"):
            phase = ChunkPhase.SUCCEEDED
        else:
            phase = ChunkPhase.FAILED
        message = st.get("Error") or ""
        if status == "created":  # run() creates and starts: its starter died in between
            message = "created but never started"
        if st.get("OOMKilled"):
            message = (message + " OOM killed (raise resources.memory_mb)").strip()
        finished = docker_time(st.get("FinishedAt"))
        if phase is ChunkPhase.FAILED and not message:
            message = f"exited with {st.get('ExitCode')}"
            if finished is not None:
                message += f" at {finished:%H:%M:%S}"
        return ChunkState(index=index, phase=phase, runtime_id=container.name,
                          exit_code=None if phase is ChunkPhase.RUNNING else st.get("ExitCode"),
                          message=message, host=labels.get("modelport.host", ""),
                          attempt=label_int(labels.get(LABEL_ATTEMPT)))
