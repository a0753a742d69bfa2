"""Run ``serving.validate`` on a job directory in the most isolated place available.

Docker (preferred): the serving image, ``network_mode="none"``, read-only root, non-root user,
``cap_drop=ALL``, ``no-new-privileges``, memory/CPU/pids limits, no Docker socket, a time limit;
the job's input mounted read-only and only its output folder writable. Without Docker: a
subprocess with rlimits and a stripped environment, reported as unsandboxed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from docker.errors import DockerException
from requests.exceptions import RequestException

from workers import factory
from workers.runtime_status import resolved_runtime
from workers.runtimes.base import LABEL_INSTALLATION, ReplicaRuntimeError
from workers.runtimes.docker import DockerRuntime
from workers.runtimes.docker_spec import HARDENING
from workers.runtimes.images import ImageReport

REPO_ROOT = Path(__file__).resolve().parent.parent
LABEL = "modelport.sandbox"
LABEL_JOB = "modelport.sandbox.job"


@dataclass
class SandboxOutcome:
    result: dict[str, Any]
    sandboxed: bool
    logs: str
    image: ImageReport | None = None  # the serving image it ran in (None: no Docker)


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the model): image build, timeout, crash."""


LogFn = Callable[[str], None]
StepFn = Callable[[int, str], None]
KEEP_LINES = 200  # of the output, for the outcome's ``logs`` and error messages


def _follow(chunks: Iterable[bytes], on_log: LogFn) -> str:
    """Pass each line of a byte stream to ``on_log`` as it arrives; the last lines, joined."""
    tail: deque[str] = deque(maxlen=KEEP_LINES)
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            tail.append(line)
            on_log(line)
    if buffer:
        line = buffer.decode("utf-8", "replace")
        tail.append(line)
        on_log(line)
    return "\n".join(tail)


def _stop_after(seconds: float, stop: Callable[[], None]) -> tuple[threading.Timer,
                                                                   threading.Event]:
    """Call ``stop`` once ``seconds`` have passed (the sandbox's time limit); the event says
    whether it did."""
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        with contextlib.suppress(Exception):
            stop()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer, fired


def _read_result(job_dir: Path, logs: str) -> dict[str, Any]:
    path = job_dir / "output" / "result.json"
    if not path.is_file():
        tail = "\n".join(logs.strip().splitlines()[-5:])
        raise SandboxError(f"validation produced no result (killed or out of memory?): {tail}")
    return json.loads(path.read_text())


PLATFORM_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")


def platform_requirements() -> list[str]:
    """This platform's own versions of the scikit-learn stack, pinned (one shared image)."""
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


def run_in_docker(job_dir: Path, requirements: list[str], on_log: LogFn,
                  on_step: StepFn) -> SandboxOutcome:
    """The sandbox on Docker; an engine that stops answering is the platform's failure (the
    version keeps its upload for Retry), said in words rather than as a client exception."""
    try:
        return _run_in_docker(job_dir, requirements, on_log, on_step)
    except (DockerException, RequestException) as exc:
        raise SandboxError(f"the Docker Engine failed or did not answer "
                           f"({type(exc).__name__}: {exc})") from None


def _run_in_docker(job_dir: Path, requirements: list[str], on_log: LogFn,
                   on_step: StepFn) -> SandboxOutcome:
    # The docker kind is always a DockerRuntime (its client and host paths are used below).
    runtime = cast(DockerRuntime, factory.get_runtime("docker"))
    wanted = sandbox_requirements(requirements)
    on_step(20, f"Preparing the model's environment: a serving image for {len(wanted)} "
                "requirement(s).")
    try:
        report = runtime.images.ensure_image_report(wanted, on_log=on_log)
    except ReplicaRuntimeError as exc:  # refused requirement, no wheel, not allowed, failed build
        raise SandboxError(f"the model's environment could not be built: {exc}") from None
    image = report.tag
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
                     "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"},
        # Paths as the Docker host sees them (differs when this worker runs in a container).
        volumes={runtime._host_path(str(job_dir / "input")): {"bind": "/job/input", "mode": "ro"},
                 runtime._host_path(str(job_dir / "output")): {"bind": "/job/output",
                                                               "mode": "rw"}},
        labels={LABEL: "1", LABEL_JOB: job, "modelport.managed": "1",
                LABEL_INSTALLATION: installation},
        **hardening,
    )
    try:
        on_step(60, "Loading the model in the sandbox (no network, read-only, non-root).")
        container.start()
        timer, expired = _stop_after(settings.MODELPORT_SANDBOX_TIMEOUT_S, container.kill)
        try:  # the output, line by line, until the container exits (or is killed)
            logs = _follow(container.logs(stream=True, follow=True), on_log)
            status = container.wait(timeout=60)
        except Exception as exc:
            raise SandboxError(f"the sandbox stopped answering: {exc}") from exc
        finally:
            timer.cancel()
        if expired.is_set():
            raise SandboxError(f"validation timed out after "
                               f"{settings.MODELPORT_SANDBOX_TIMEOUT_S}s")
        if status.get("StatusCode") not in (0, None) and not (job_dir / "output" /
                                                             "result.json").is_file():
            raise SandboxError(f"sandbox exited with {status.get('StatusCode')}: "
                               f"{logs.strip()[-500:]}")
        return SandboxOutcome(result=_read_result(job_dir, logs), sandboxed=True, logs=logs,
                              image=report)
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


def run_in_subprocess(job_dir: Path, on_log: LogFn, on_step: StepFn) -> SandboxOutcome:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(job_dir),
                   "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTHONUNBUFFERED": "1"}
    on_step(60, "Loading the model unsandboxed (no Docker here): a resource-limited "
                "subprocess.")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.validate", str(job_dir)], cwd=job_dir,
        env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, preexec_fn=_limits, start_new_session=True)

    def kill_group() -> None:  # the model's own children too: one holding stdout keeps it open
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    # stdout=PIPE with the default buffering: a BufferedReader (read1 returns what is there).
    stdout = cast(io.BufferedReader, process.stdout)
    timer, expired = _stop_after(settings.MODELPORT_SANDBOX_TIMEOUT_S, kill_group)
    try:
        logs = _follow(iter(partial(stdout.read1, 65536), b""), on_log)
        process.wait()
    finally:
        timer.cancel()
        stdout.close()
        kill_group()  # whatever the model left running
        process.wait()
    if expired.is_set():
        raise SandboxError(f"validation timed out after "
                           f"{settings.MODELPORT_SANDBOX_TIMEOUT_S}s")
    return SandboxOutcome(result=_read_result(job_dir, logs), sandboxed=False, logs=logs)


def validate(job_dir: Path, *, requirements: list[str],
             on_log: LogFn = lambda _line: None,
             on_step: StepFn = lambda _progress, _message: None) -> SandboxOutcome:
    """Validate the staged job: ``on_step`` hears each stage (with its percent), ``on_log``
    each line of the image build and of the sandbox's output as it comes."""
    _prepare(job_dir)
    if resolved_runtime() == "docker":
        return run_in_docker(job_dir, requirements, on_log, on_step)
    return run_in_subprocess(job_dir, on_log, on_step)
