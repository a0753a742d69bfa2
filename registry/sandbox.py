"""Run ``serving.validate`` on a job directory in the most isolated place available.

Docker (preferred): the serving image, ``network_mode="none"``, read-only root, non-root user,
``cap_drop=ALL``, ``no-new-privileges``, memory/CPU/pids limits, no Docker socket, a time limit;
the job's input mounted read-only and only its output folder writable. Without Docker: a
subprocess with rlimits and a stripped environment, reported as unsandboxed.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from workers.runtime_status import resolved_runtime
from workers.runtimes.base import LABEL_INSTALLATION, ReplicaRuntimeError

REPO_ROOT = Path(__file__).resolve().parent.parent
LABEL = "modelport.sandbox"
LABEL_JOB = "modelport.sandbox.job"


@dataclass
class SandboxOutcome:
    result: dict[str, Any]
    sandboxed: bool
    logs: str


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the model): image build, timeout, crash."""


def _read_result(job_dir: Path, logs: str) -> dict[str, Any]:
    path = job_dir / "output" / "result.json"
    if not path.is_file():
        tail = "\n".join(logs.strip().splitlines()[-5:])
        raise SandboxError(f"validation produced no result (killed or out of memory?): {tail}")
    return json.loads(path.read_text())


PLATFORM_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")


def platform_requirements() -> list[str]:
    """This platform's own versions of the scikit-learn stack, pinned (one shared image)."""
    from importlib import metadata

    return [f"{name}=={metadata.version(name)}" for name in PLATFORM_PACKAGES]


def sandbox_requirements(model_requirements: list[str]) -> list[str]:
    """The serving image a model is validated in: its own requirements when it has them."""
    return model_requirements or platform_requirements()


def _prepare(job_dir: Path) -> None:
    output = job_dir / "output"
    # A re-run after a killed worker starts clean: no result of the interrupted run is read.
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    # The sandbox runs as uid 10001; let it read the input and write the output only.
    for path in [job_dir, *job_dir.rglob("*")]:
        if path == output or output in path.parents:
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)
    output.chmod(0o777)


def run_in_docker(job_dir: Path, requirements: list[str],
                  on_log: Callable[[str], None]) -> SandboxOutcome:
    from workers.runtimes import get_runtime
    from workers.runtimes.docker import HARDENING

    runtime = get_runtime("docker")
    try:
        image = runtime.ensure_image(sandbox_requirements(requirements), on_log=on_log)
    except ReplicaRuntimeError as exc:  # refused requirement, no wheel, not allowed, failed build
        raise SandboxError(f"the model's environment could not be built: {exc}") from None
    job = job_dir.name
    installation = runtime.installation
    _remove_leftovers(runtime.client, job, installation)
    hardening = {k: v for k, v in HARDENING.items() if k != "restart_policy"}
    container = runtime.client.containers.create(
        image,
        command=["python", "-m", "serving.validate", "/job"],
        entrypoint=[],
        network_mode="none",
        mem_limit=f"{settings.MODELPORT_SANDBOX_MEMORY_MB}m",
        nano_cpus=int(settings.MODELPORT_SANDBOX_CPUS * 1e9),
        pids_limit=256,
        # The container's own private tmpfs, the only writable place besides /job/output.
        environment={"HOME": "/tmp", "MPLCONFIGDIR": "/tmp",  # noqa: S108
                     "PYTHONDONTWRITEBYTECODE": "1"},
        # Paths as the Docker host sees them (differs when this worker runs in a container).
        volumes={runtime._host_path(str(job_dir / "input")): {"bind": "/job/input", "mode": "ro"},
                 runtime._host_path(str(job_dir / "output")): {"bind": "/job/output",
                                                               "mode": "rw"}},
        labels={LABEL: "1", LABEL_JOB: job, "modelport.managed": "1",
                LABEL_INSTALLATION: installation},
        **hardening,
    )
    try:
        container.start()
        try:
            status = container.wait(timeout=settings.MODELPORT_SANDBOX_TIMEOUT_S)
        except Exception as exc:
            raise SandboxError(f"validation timed out after "
                               f"{settings.MODELPORT_SANDBOX_TIMEOUT_S}s") from exc
        logs = container.logs().decode(errors="replace")
        if status.get("StatusCode") not in (0, None) and not (job_dir / "output" /
                                                             "result.json").is_file():
            raise SandboxError(f"sandbox exited with {status.get('StatusCode')}: "
                               f"{logs.strip()[-500:]}")
        return SandboxOutcome(result=_read_result(job_dir, logs), sandboxed=True, logs=logs)
    finally:
        container.remove(force=True)


def _remove_leftovers(client: Any, job: str, installation: str) -> None:
    """The container of an interrupted run of this same job (its worker was killed) — of this
    installation: another's job may have the same name."""
    filters = [f"{LABEL_JOB}={job}", f"{LABEL_INSTALLATION}={installation}"]
    for container in client.containers.list(all=True, filters={"label": filters}):
        with contextlib.suppress(Exception):
            container.remove(force=True)


def _limits() -> None:  # runs in the child between fork and exec
    memory = settings.MODELPORT_SANDBOX_MEMORY_MB * 1024 * 1024 * 4  # address space, not RSS
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = settings.MODELPORT_SANDBOX_TIMEOUT_S
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_in_subprocess(job_dir: Path) -> SandboxOutcome:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(job_dir),
                   "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "serving.validate", str(job_dir)], cwd=job_dir,
            env=environment, capture_output=True, text=True,
            timeout=settings.MODELPORT_SANDBOX_TIMEOUT_S, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"validation timed out after "
                           f"{settings.MODELPORT_SANDBOX_TIMEOUT_S}s") from None
    logs = completed.stdout + completed.stderr
    return SandboxOutcome(result=_read_result(job_dir, logs), sandboxed=False, logs=logs)


def validate(job_dir: Path, *, requirements: list[str],
             on_log: Callable[[str], None] = lambda _line: None) -> SandboxOutcome:
    _prepare(job_dir)
    if resolved_runtime() == "docker":
        return run_in_docker(job_dir, requirements, on_log)
    return run_in_subprocess(job_dir)
