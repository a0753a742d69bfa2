"""A model container on a Docker Engine, as the Docker and Swarm runtimes both run it: the
mounts and networks it knows, the hardening, the serving process's environment, the
``containers.run`` limits, the healthchecks; and reading back what the engine reports (stats,
labels, timestamps). No Django import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from docker.types import DeviceRequest

from serving.sockets import SOCKET_NAME

from .base import ReplicaSpec, gpu_env

HOST_NETWORK = "host"
NO_NETWORK = "none"
CONTAINER_PORT = 8080
MODEL_MOUNT = "/model"
SOCKET_MOUNT = "/run/modelport"  # the replica's own socket directory
INGEST_MOUNT = "/run/modelport-ingest"  # the platform's ingest socket, read-only
INGEST_PATH = "/api/v1/ingest/predictions/"  # the one path the ingest socket answers
DOCKER_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")

# Hardening applied to every model container (also asserted by the end-to-end tests).
HARDENING: dict[str, Any] = {
    "user": "10001:10001",
    "read_only": True,
    "tmpfs": {"/tmp": "size=64m"},  # noqa: S108 - a private tmpfs per container
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
}


def http_healthcheck(port: int) -> dict[str, Any]:
    probe = (f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/ready', timeout=2)")
    return {"test": ["CMD", "python", "-c", probe], "interval": 5_000_000_000,
            "timeout": 3_000_000_000, "retries": 3, "start_period": 60_000_000_000}


def socket_healthcheck() -> dict[str, Any]:
    probe = ("import sys; from serving.sockets import request, unix_url; "
             f"sys.exit(request(unix_url('{SOCKET_MOUNT}/{SOCKET_NAME}') + '/ready', "
             "timeout=2)[0] != 200)")
    return {"test": ["CMD", "python", "-c", probe], "interval": 5_000_000_000,
            "timeout": 3_000_000_000, "retries": 3, "start_period": 60_000_000_000}


def parse_stats(raw: dict[str, Any]) -> dict[str, float]:
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0)
                 - pre.get("cpu_usage", {}).get("total_usage", 0))
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    cpu_percent = (cpu_delta / sys_delta) * ncpu * 100.0 if cpu_delta > 0 and sys_delta > 0 else 0
    mem = raw.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    # Like `docker stats`: usage minus page cache (cgroup v2: inactive_file, v1: total_inactive).
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    usage = max(0, mem.get("usage", 0) - cache)
    return {"cpu_percent": float(cpu_percent), "memory_bytes": float(usage),
            "memory_limit_bytes": float(mem.get("limit", 0))}


def label_int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def docker_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker: RFC 3339 with nanoseconds, e.g. 2026-11-24T01:02:03.123456789Z
    head, _, frac = value.rstrip("Z").partition(".")
    frac = "".join(ch for ch in frac if ch.isdigit())[:6]
    text = f"{head}.{frac or '0'}+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def replica_env(spec: ReplicaSpec, *, pinned_gpus: bool = True) -> dict[str, str]:
    """The serving process's environment, without where it listens (each runtime adds that);
    the GPU variables (``pinned_gpus``: the device ids are requested by id, see ``gpu_env``);
    ``spec.env`` (the ingest URL and token, the replica key) last."""
    env = {
        "MODELPORT_MODEL_DIR": MODEL_MOUNT,
        "MODELPORT_WORKERS": str(spec.workers),
        "MODELPORT_MODEL_NAME": spec.model_name or spec.deployment,
        "MODELPORT_MODEL_VERSION": str(spec.model_version),
        "MODELPORT_DEPLOYMENT": spec.deployment,
        "MODELPORT_REVISION": str(spec.revision),
        "MODELPORT_REPLICA": str(spec.replica),
        "HOME": "/tmp",  # noqa: S108 - the container's own tmpfs
    }
    threads = str(max(1, int(-(-spec.cpu // 1)))) if spec.cpu else "1"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = threads
    env.update(gpu_env(spec, pinned=pinned_gpus))
    env.update(spec.env)
    return env


def run_kwargs(spec: ReplicaSpec, *, name: str, labels: dict[str, str],
                volumes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """``containers.run`` arguments: the hardening, the limits, the GPUs."""
    kwargs: dict[str, Any] = dict(HARDENING)
    kwargs.update(
        name=name, detach=True, labels=labels, volumes=volumes,
        nano_cpus=int(spec.cpu * 1e9) if spec.cpu else None,
        mem_limit=f"{int(spec.memory_mb)}m" if spec.memory_mb else None,
        memswap_limit=f"{int(spec.memory_mb)}m" if spec.memory_mb else None,
        pids_limit=int(spec.pids_limit) if spec.pids_limit else None,
        stop_signal="SIGTERM",
    )
    if spec.gpu_device_ids:
        kwargs["device_requests"] = [DeviceRequest(device_ids=list(spec.gpu_device_ids),
                                                   capabilities=[["gpu"]])]
    return kwargs
