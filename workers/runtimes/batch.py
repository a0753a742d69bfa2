"""What a runtime does for a batch scoring job (``jobs``): run its chunks in hardened,
network-less containers of the version's serving image, and say how each chunk is doing. No
Django import.

A job's staged input is one Parquet file whose row group ``i`` is chunk ``i``; a chunk's
container runs ``python -m serving.batch`` with ``MODELPORT_CHUNK=i`` (or, on Kubernetes, the
Indexed Job's ``JOB_COMPLETION_INDEX``; on Swarm the task's slot), reads ``/job/input``
(read-only), writes ``/job/output/chunk-<i>.parquet`` atomically (a temporary name, then a
rename) and ``/job/output/progress-<i>.json`` as it goes, and exits 0 when the chunk is complete.
The output directory is the one writable place; there is no network.

Two ways to run chunks, by what the backend offers:
- ``per_chunk`` (Docker, several plain Docker hosts, local): the platform starts each chunk
  (``start_chunk``) up to the job's parallelism, retries failed ones itself and resumes a job
  whose worker died by starting only the chunks whose output is missing.
- ``whole_job`` (Kubernetes Indexed Job, Swarm replicated job): the platform submits the job
  once with the chunk indices still to do (``submit_job``); the orchestrator runs them with the
  parallelism and retries; the platform reads the per-index states.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum

from .base import LogFn

LABEL_JOB = "modelport.job"
LABEL_CHUNK = "modelport.chunk"
INPUT_MOUNT = "/job/input"
OUTPUT_MOUNT = "/job/output"
ENV_CHUNK = "MODELPORT_CHUNK"


def chunk_output(index: int) -> str:
    """The file a chunk writes in the output directory when, and only when, it is complete."""
    return f"chunk-{index:06d}.parquet"


def chunk_progress(index: int) -> str:
    """``{"rows_done": n, "rows": total}``, rewritten as the chunk goes."""
    return f"progress-{index:06d}.json"


@dataclass
class BatchSpec:
    """One job as a runtime runs it."""

    job: str  # "job-<id>": part of every object's name, with the installation's short id
    image: str
    model_dir: str | None  # the MLflow model directory on the host, mounted at /model
    input_dir: str  # holds input.parquet; mounted read-only at INPUT_MOUNT
    output_dir: str  # the chunks' outputs; mounted read-write at OUTPUT_MOUNT
    chunks: int
    parallelism: int = 1
    cpu: float = 1.0  # per container
    memory_mb: int = 1024
    gpus: int = 0
    gpu_device_ids: list[str] = field(default_factory=list)
    pids_limit: int = 256
    max_retries: int = 2  # per chunk (whole_job runtimes pass it to the orchestrator)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    installation: str = ""


class ChunkPhase(StrEnum):
    PENDING = "pending"  # submitted, not started (whole_job) / not found (per_chunk: MISSING)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # exited non-zero (or the orchestrator gave up on the index)
    MISSING = "missing"  # no container / pod / task for it


@dataclass
class ChunkState:
    index: int
    phase: ChunkPhase
    runtime_id: str = ""
    exit_code: int | None = None
    message: str = ""  # e.g. "OOMKilled", the orchestrator's reason
    host: str = ""
    attempt: int = 0  # per_chunk: the attempt this container runs (0: unknown / whole_job)


class BatchRuntime(abc.ABC):
    """The batch side of a runtime. Everything is found again by labels (``LABEL_JOB``,
    ``LABEL_CHUNK``, the installation's), so a restarted worker resumes where the last left
    off; a runtime only ever lists or removes its own installation's objects."""

    mode: str = "per_chunk"  # or "whole_job"

    def start_chunk(self, spec: BatchSpec, index: int, attempt: int) -> ChunkState:
        """per_chunk: start chunk ``index`` (idempotent: an existing container of that chunk and
        attempt is returned, a finished one of an earlier attempt is replaced)."""
        raise NotImplementedError(f"{type(self).__name__} runs whole jobs")

    def submit_job(self, spec: BatchSpec, indices: list[int]) -> None:
        """whole_job: submit the job for these chunk indices (idempotent: submitted once)."""
        raise NotImplementedError(f"{type(self).__name__} runs chunk by chunk")

    @abc.abstractmethod
    def chunk_states(self, job: str) -> dict[int, ChunkState]:
        """Each chunk the backend knows of for this job, by index."""

    @abc.abstractmethod
    def remove_chunk(self, job: str, index: int) -> None:
        """Stop and remove the chunk's container/task (a finished chunk's, a cancelled one's)."""

    @abc.abstractmethod
    def remove_job(self, job: str) -> None:
        """Stop and remove everything of the job (cancel, finish): no container left."""

    @abc.abstractmethod
    def chunk_logs(self, job: str, index: int, tail: int = 200) -> str:
        """The last lines of a chunk's output ("" when gone)."""

    def ensure_batch_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """The serving image for these requirements (the version's replicas' image)."""
        raise NotImplementedError
