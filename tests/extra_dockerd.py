"""A second Docker Engine on this machine for tests: its own data root, exec root, socket and
pidfile under a short /tmp path (unix socket paths are limited to 108 bytes), no bridge, no
iptables — an engine that shares nothing with the one the platform builds on, so an image
reaches it only the way it reaches a real host (here: pulled from a registry).

    with extra_dockerd() as engine:
        engine.client   # docker.DockerClient on its socket

127.0.0.0/8 registries are "insecure" (plain HTTP) for every dockerd by default; give others
in ``insecure_registries``. Stopped (SIGTERM, then SIGKILL) and its directories deleted at the
end, images and containers with them. Needs root (skips otherwise; fails under
MODELPORT_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from tests.conftest import missing_service

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"


@dataclass
class Engine:
    socket: str  # unix://… for DockerClient(base_url=…)
    directory: Path
    process: subprocess.Popen[bytes]
    client: Any

    def log(self) -> str:
        path = self.directory / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.contextmanager
def extra_dockerd(*, insecure_registries: list[str] = (),  # type: ignore[assignment]
                  timeout: float = 60) -> Iterator[Engine]:
    if os.geteuid() != 0 or not Path(DOCKERD).is_file():
        missing_service("a second dockerd needs root and the dockerd binary")
    directory = Path(tempfile.mkdtemp(prefix="mpd-", dir="/tmp"))
    sock = directory / "d.sock"
    args = [DOCKERD, "--data-root", str(directory / "data"), "--exec-root",
            str(directory / "exec"), "-H", f"unix://{sock}", "--pidfile",
            str(directory / "d.pid"), "--bridge=none", "--iptables=false", "--ip-masq=false",
            "--ip6tables=false", "--log-level=warn"]
    for reg in insecure_registries:
        args += ["--insecure-registry", reg]
    with (directory / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    client = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                engine_log = (directory / "dockerd.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the second dockerd did not start:\n{engine_log}")
            if sock.exists():
                with contextlib.suppress(Exception):
                    client = docker.DockerClient(base_url=f"unix://{sock}", timeout=300)
                    client.ping()
                    break
            time.sleep(0.2)
        yield Engine(socket=f"unix://{sock}", directory=directory, process=process,
                     client=client)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            client.close()
        _stop(process)
        _unmount_under(directory)  # e.g. exec/netns/default, which dockerd leaves mounted
        shutil.rmtree(directory, ignore_errors=True)


def _unmount_under(directory: Path) -> None:
    """Unmount whatever is still mounted below ``directory``, deepest first."""
    root = str(directory.resolve()) + "/"
    with contextlib.suppress(OSError):
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith(root)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
