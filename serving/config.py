"""Server settings, read from the command line and ``MODELPORT_*`` environment variables."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Prediction-log shipping (serving.shipping): a batch stays below the ingest endpoint's 16 MiB
# default (the platform passes its own limit); a larger request or response body is logged as
# null. Here, not in serving.shipping, so that the supervisor process imports nothing heavy.
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


@dataclass(frozen=True)
class Settings:
    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    model_name: str = "model"
    model_version: str = ""
    ingest_url: str = ""
    ingest_token: str = ""
    deployment: str = ""
    revision: str = ""
    replica: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_buffer_size: int = 10_000
    ship_batch_size: int = 500
    ship_interval_s: float = 1.0
    ship_max_bytes: int = DEFAULT_MAX_BATCH_BYTES  # the ingest endpoint's limit
    log_max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES  # larger bodies are logged as null
    # Listen on this unix socket file (serving.sockets); with it and no MODELPORT_PORT, only there.
    unix_socket: str = ""
    # When set, every request but the health checks must carry it in X-Modelport-Replica-Key:
    # only the platform (the edge, shadowing, probes) knows it.
    replica_key: str = ""

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        """Build settings from ``MODELPORT_*`` variables only (used by each worker process)."""
        e = os.environ if env is None else env
        model_dir = e.get("MODELPORT_MODEL_DIR", "")
        if not model_dir:
            raise SystemExit("MODELPORT_MODEL_DIR (or --model-dir) is required")
        unix_socket = _unix_socket(e.get("MODELPORT_UNIX_SOCKET", ""))
        return cls(
            model_dir=model_dir,
            host=e.get("MODELPORT_HOST", "127.0.0.1"),
            port=_port(e.get("MODELPORT_PORT"), unix_socket),
            workers=int(e.get("MODELPORT_WORKERS") or cpu_limit()),
            model_name=e.get("MODELPORT_MODEL_NAME") or Path(model_dir).name or "model",
            model_version=e.get("MODELPORT_MODEL_VERSION", ""),
            ingest_url=e.get("MODELPORT_INGEST_URL", ""),
            ingest_token=e.get("MODELPORT_INGEST_TOKEN", ""),
            deployment=e.get("MODELPORT_DEPLOYMENT", ""),
            revision=e.get("MODELPORT_REVISION", ""),
            replica=e.get("MODELPORT_REPLICA", ""),
            max_body_bytes=int(e.get("MODELPORT_MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES),
            log_buffer_size=int(e.get("MODELPORT_LOG_BUFFER_SIZE") or 10_000),
            ship_batch_size=int(e.get("MODELPORT_SHIP_BATCH_SIZE") or 500),
            ship_interval_s=float(e.get("MODELPORT_SHIP_INTERVAL_S") or 1.0),
            ship_max_bytes=int(e.get("MODELPORT_SHIP_MAX_BYTES") or DEFAULT_MAX_BATCH_BYTES),
            log_max_payload_bytes=int(e.get("MODELPORT_LOG_MAX_PAYLOAD_BYTES")
                                      or DEFAULT_MAX_PAYLOAD_BYTES),
            unix_socket=unix_socket,
            replica_key=e.get("MODELPORT_REPLICA_KEY", ""),
        )


def _unix_socket(value: str) -> str:
    if value and not value.startswith("/"):
        raise SystemExit(f"MODELPORT_UNIX_SOCKET={value!r}: expected the absolute path of a "
                         "socket file")
    return value


def _port(value: str | None, unix_socket: str) -> int:
    """MODELPORT_PORT; 0 (no TCP listener) when unset or empty and a unix socket is given."""
    if value in (None, ""):
        return 0 if unix_socket else 8080
    return int(value)


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def device_setting(env: os._Environ[str] | dict[str, str] | None = None) -> str:
    """``MODELPORT_DEVICE``: where a framework model runs — ``auto`` (a GPU when the replica was
    given one and the framework sees it, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` (N counts
    the replica's own devices: the platform makes only the allocated ones visible)."""
    value = ((os.environ if env is None else env).get("MODELPORT_DEVICE") or "auto").strip()
    if not DEVICE_PATTERN.fullmatch(value):
        raise SystemExit(f"MODELPORT_DEVICE={value!r}: expected auto, cpu, cuda or cuda:N")
    return value


def cpu_limit() -> int:
    """CPUs this container may use: cgroup v2 ``cpu.max``, then v1 CFS quota, then os.cpu_count."""
    count = os.cpu_count() or 1
    try:
        quota, period = CGROUP_V2_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            return max(1, min(count, int(-(-int(quota) // int(period)))))
        return count
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(CGROUP_V1_QUOTA.read_text())
        period_us = int(CGROUP_V1_PERIOD.read_text())
        if quota_us > 0 and period_us > 0:
            return max(1, min(count, -(-quota_us // period_us)))
    except (OSError, ValueError):
        pass
    return count


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving", description="Modelport model server")
    p.add_argument("--model-dir", help="MLflow model directory (env MODELPORT_MODEL_DIR)")
    p.add_argument("--host", help="bind address (env MODELPORT_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (env MODELPORT_PORT, default 8080)")
    p.add_argument("--workers", type=int, help="worker processes (default: container CPU limit)")
    p.add_argument("--unix-socket",
                   help="listen on this unix socket file; TCP too only with --port "
                        "(env MODELPORT_UNIX_SOCKET)")
    p.add_argument(
        "--name", help="model name reported by /version and /v2 (env MODELPORT_MODEL_NAME)"
    )
    p.add_argument("--log-level", default=os.environ.get("MODELPORT_LOG_LEVEL", "warning"))
    return p.parse_args(argv)


def export_args_to_env(args: argparse.Namespace) -> None:
    """Command-line flags win over the environment; workers read the environment."""
    pairs = {
        "MODELPORT_MODEL_DIR": args.model_dir,
        "MODELPORT_HOST": args.host,
        "MODELPORT_PORT": args.port,
        "MODELPORT_WORKERS": args.workers,
        "MODELPORT_MODEL_NAME": args.name,
        "MODELPORT_UNIX_SOCKET": args.unix_socket,
    }
    for key, value in pairs.items():
        if value is not None:
            os.environ[key] = str(value)
