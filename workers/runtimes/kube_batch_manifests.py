"""The objects of a batch job on Kubernetes as plain dicts (the Indexed Job, its deny-all
NetworkPolicy), their names and labels, and reading a Job's pod back as a chunk state. See
``kube_batch.py`` for why they look as they do. No Kubernetes SDK and no Django import: what is
built is what the schema tests validate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from .base import LABEL_INSTALLATION, LABEL_MANAGED, short_id
from .batch import (
    ENV_CHUNK,
    INPUT_MOUNT,
    LABEL_JOB,
    OUTPUT_MOUNT,
    BatchSpec,
    ChunkPhase,
    ChunkState,
)
from .kube_manifests import (
    MODEL_PATH,
    RUN_AS,
    TMP_SIZE,
    container_security_context,
    cpu_quantity,
    memory_quantity,
)
from .kube_names import label_value

CONTAINER_NAME = "chunk"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
ANN_CHUNKS = "modelport.job-chunks"  # on the Job: the chunk each completion index runs
ANN_JOB = "modelport.job-name"  # the platform's job name, unabridged
# On the Job: when it was submitted (ns since the epoch), to order a job's submissions (the
# creation timestamp has one-second resolution).
ANN_SUBMITTED = "modelport.job-submitted"
ANN_ATTEMPT = "modelport.attempt"  # start_chunk's one-chunk Jobs: the runner's attempt
ENV_CHUNKS = "MODELPORT_CHUNKS"
# The container's entry point: completion index -> chunk, then the batch scorer.
CHUNK_COMMAND = [
    "python", "-c",
    "import os, runpy; "
    f"os.environ['{ENV_CHUNK}'] = os.environ['{ENV_CHUNKS}'].split(',')"
    "[int(os.environ['JOB_COMPLETION_INDEX'])]; "
    "runpy.run_module('serving.batch', run_name='__main__', alter_sys=True)",
]


# --- names and labels ---------------------------------------------------------------------------
def job_object_name(job: str, indices: Iterable[int], installation: str = "",
                    attempt: int = 0) -> str:
    """``mp-<installation[:8]>-<job>-<digest of the chunk list>[-a<attempt>]``: one Job per
    submission (a resume is a new Job, the earlier one still readable), <= 52 characters so pod
    names keep their index and random suffix."""
    slug = "".join(c if c.isalnum() else "-" for c in job.lower()).strip("-") or "job"
    digest = hashlib.sha256(format_indices(indices).encode()).hexdigest()[:6]
    prefix = f"mp-{short_id(installation)}-" if installation else "mp-"
    tail = f"-{digest}" + (f"-a{int(attempt)}" if attempt else "")
    return f"{prefix}{slug[:52 - len(prefix) - len(tail)].rstrip('-')}{tail}"


def job_selector_labels(job: str, installation: str) -> dict[str, str]:
    labels = {LABEL_MANAGED: "1", LABEL_JOB: label_value(job)}
    if installation:
        labels[LABEL_INSTALLATION] = installation
    return labels


def job_labels(spec: BatchSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
    labels = {k: label_value(v) for k, v in {**(extra or {}), **spec.labels}.items()}
    labels.update(job_selector_labels(spec.job, spec.installation))
    return labels


def format_indices(indices: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted({int(i) for i in indices}))


def parse_intervals(text: str | None) -> set[int]:
    """The Job status' index lists: ``"0,2-4,7"`` -> {0, 2, 3, 4, 7}."""
    out: set[int] = set()
    for part in (text or "").split(","):
        first, dash, last = part.strip().partition("-")
        if first.isdigit() and (not dash or last.isdigit()):
            out.update(range(int(first), int(last if dash else first) + 1))
    return out


# --- the objects --------------------------------------------------------------------------------
def chunk_env(spec: BatchSpec, chunks: list[int]) -> list[dict[str, Any]]:
    threads = str(max(1, int(-(-spec.cpu // 1)))) if spec.cpu else "1"
    gpus = len(spec.gpu_device_ids) or spec.gpus
    plain = {
        "MODELPORT_MODEL_DIR": MODEL_PATH,
        "MODELPORT_JOB": spec.job,
        ENV_CHUNKS: ",".join(str(i) for i in chunks),
        "HOME": "/tmp",  # noqa: S108 - the pod's own emptyDir
        "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
        **({"NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus)),
            "MODELPORT_DEVICE": "auto"} if gpus else
           {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "",
            "MODELPORT_DEVICE": "cpu"}),
        # A chunk has no network, so it needs no credential: spec.env carries none.
        **spec.env,
    }
    return [{"name": k, "value": str(v)} for k, v in plain.items()]


def chunk_resources(spec: BatchSpec, gpu_resource: str) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS), as for replicas; GPUs by count."""
    limits: dict[str, str] = {}
    if spec.cpu:
        limits["cpu"] = cpu_quantity(spec.cpu)
    if spec.memory_mb:
        limits["memory"] = memory_quantity(spec.memory_mb)
    gpus = len(spec.gpu_device_ids) or spec.gpus
    if gpus:
        limits[gpu_resource] = str(gpus)
    return {"requests": {k: v for k, v in limits.items() if k in ("cpu", "memory")},
            "limits": limits}


def build_job(spec: BatchSpec, image: str, indices: list[int], *, namespace: str,
              data_claim: str, input_path: str, output_path: str,
              image_pull_secrets: Iterable[str] = (),
              extra_labels: dict[str, str] | None = None,
              node_selector: dict[str, str] | None = None,
              tolerations: list[dict[str, Any]] | None = None,
              service_account: str | None = None,
              gpu_resource: str = "nvidia.com/gpu", attempt: int = 0) -> dict[str, Any]:
    """The Indexed Job running chunks ``indices`` (completion index k -> ``indices[k]``);
    ``input_path``/``output_path`` are the job's directories inside ``data_claim``;
    ``attempt``: the runner's attempt of a one-chunk Job (``start_chunk``)."""
    chunks = sorted({int(i) for i in indices})
    if not chunks:
        raise ValueError("a job needs at least one chunk to run")
    labels = job_labels(spec, extra_labels)
    annotations = {ANN_JOB: spec.job, ANN_CHUNKS: format_indices(chunks)}
    if attempt:
        annotations[ANN_ATTEMPT] = str(int(attempt))
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(CHUNK_COMMAND),
        "env": chunk_env(spec, chunks),
        "resources": chunk_resources(spec, gpu_resource),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
            {"name": "data", "mountPath": INPUT_MOUNT, "subPath": input_path, "readOnly": True},
            {"name": "data", "mountPath": OUTPUT_MOUNT, "subPath": output_path},
        ],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": data_claim}}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "restartPolicy": "Never",  # retries are the Job's, per index
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in image_pull_secrets]
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = list(tolerations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_object_name(spec.job, chunks, spec.installation, attempt),
                     "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "completionMode": "Indexed",
            "completions": len(chunks),
            "parallelism": max(1, min(int(spec.parallelism), len(chunks))),
            "backoffLimitPerIndex": max(0, int(spec.max_retries)),
            "maxFailedIndexes": len(chunks),
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                         "spec": pod_spec},
        },
    }


def build_job_policy(spec: BatchSpec, name: str, *, namespace: str,
                     extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Deny all: the job's pods take no connection and make none (no rules of either type)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": job_labels(spec, extra_labels),
                     "annotations": {ANN_JOB: spec.job}},
        "spec": {"podSelector": {"matchLabels": job_selector_labels(spec.job,
                                                                    spec.installation)},
                 "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
    }


# --- reading back -------------------------------------------------------------------------------
def pod_chunk_state(pod: Any, chunk: int) -> ChunkState:
    """One pod of an index as a ChunkState (a failed pod here is one Kubernetes will retry
    unless its index is in ``failedIndexes``, which the caller checks first)."""
    status = pod.status
    cstatus = next((c for c in (status.container_statuses or []) if c.name == CONTAINER_NAME),
                   None)
    state = cstatus.state if cstatus else None
    terminated = state.terminated if state else None
    waiting = state.waiting if state else None
    phase = status.phase or "Pending"
    exit_code = terminated.exit_code if terminated is not None else None
    message = ""
    if terminated is not None and terminated.reason and terminated.reason != "Completed":
        message = terminated.reason
    elif waiting is not None and waiting.reason:
        message = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
    elif status.reason:
        message = " ".join(p for p in (status.reason, status.message) if p)
    if pod.metadata.deletion_timestamp is not None:
        chunk_phase = ChunkPhase.RUNNING
        message = (message + " (pod terminating)").strip()
    elif phase == "Succeeded":
        chunk_phase = ChunkPhase.SUCCEEDED
    elif phase == "Failed":
        chunk_phase = ChunkPhase.FAILED
    elif phase == "Running":
        chunk_phase = ChunkPhase.RUNNING
    else:
        chunk_phase = ChunkPhase.PENDING
    return ChunkState(index=chunk, phase=chunk_phase, runtime_id=pod.metadata.name,
                      exit_code=exit_code, message=message,
                      host=(pod.spec.node_name or "") if pod.spec else "")
