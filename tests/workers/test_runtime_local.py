"""Local-process runtime: `python -m serving` subprocesses, rediscovered from the state file."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from serving.sockets import request, split_unix_url
from tests.unix_http import listening
from workers.runtimes.base import ReplicaSpec, ReplicaStatus, wait_ready
from workers.runtimes.local import LocalRuntime, make_preexec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                "petal width (cm)"]


def _serving_available() -> None:
    if not (REPO_ROOT / "serving" / "__main__.py").exists():
        pytest.skip("serving/ (python -m serving) is not there yet")


def _predict(url: str) -> list[Any]:
    body = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS,
                                           "data": [[5.1, 3.5, 1.4, 0.2]]}}).encode()
    status, answer = request(url + "/invocations", "POST", body,
                             {"Content-Type": "application/json"}, timeout=10)
    assert status == 200, answer
    return json.loads(answer)["predictions"]


def _wait_status(rt: LocalRuntime, rid: str, statuses: tuple[ReplicaStatus, ...],
                 timeout: float = 15) -> ReplicaStatus:
    deadline = time.monotonic() + timeout
    status = rt.get_replica(rid).status
    while status not in statuses and time.monotonic() < deadline:
        time.sleep(0.1)
        status = rt.get_replica(rid).status
    return status


def test_local_replica_start_predict_rediscover_stop(iris_model_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _serving_available()
    monkeypatch.setenv("DJANGO_SECRET_KEY", "worker-secret-must-not-leak")
    state_dir = tmp_path / "state"
    rt = LocalRuntime(state_dir, python=sys.executable)
    assert rt.ping() and not rt.sandboxed
    spec = ReplicaSpec(deployment="local-iris", revision=2, replica=0,
                       model_dir=str(iris_model_dir), model_name="iris", model_version="1",
                       memory_mb=1024, labels={"modelport.test": "1"})
    state = rt.start_replica(spec)
    try:
        assert state.status == ReplicaStatus.RUNNING and state.url
        assert state.url.startswith("http+unix://") and state.port is None
        assert wait_ready(state.url, timeout=90,
                          alive=lambda: rt.get_replica(state.id).alive), rt.logs(state.id)
        assert _predict(state.url) == [0]
        # Only on its socket file, in a directory only this user may enter.
        socket_path, _ = split_unix_url(state.url)
        assert socket_path.startswith(str(state_dir))
        assert oct(Path(socket_path).parent.stat().st_mode & 0o777) == "0o700"

        # A new runtime object (a restarted worker) finds the replica from the state file.
        again = LocalRuntime(state_dir)
        (found,) = again.list_replicas("local-iris")
        assert found.id == state.id and found.status == ReplicaStatus.RUNNING
        assert found.url == state.url and found.revision == 2
        assert again.start_replica(spec).url == state.url  # idempotent
        assert again.stats(state.id)["memory_bytes"] > 10 * 1024 * 1024

        # Limits were applied in the child; the worker's secrets were not passed on.
        pid = _pid(state_dir, state.id)
        limits = Path(f"/proc/{pid}/limits").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"worker-secret-must-not-leak" not in environ
        assert b"MODELPORT_PORT=" not in environ and b"MODELPORT_UNIX_SOCKET=" in environ
        assert _tcp_listeners(pid) == []  # nothing on the machine's network
        assert "Max core file size        0" in limits
        assert str((1024 + rt.address_space_overhead_mb) * 1024 * 1024) in limits

        again.stop_replica(state.id, timeout=10)
        assert again.get_replica(state.id).status == ReplicaStatus.EXITED
        assert again.list_replicas("other") == []
    finally:
        rt.remove_replica(state.id)
    assert rt.list_replicas() == []
    assert rt.get_replica(state.id).status == ReplicaStatus.MISSING
    assert not listening(socket_path) and not Path(socket_path).parent.exists()


def test_killed_local_replica_is_reported(iris_model_dir: Path, tmp_path: Path) -> None:
    _serving_available()
    rt = LocalRuntime(tmp_path / "state")
    spec = ReplicaSpec(deployment="local-kill", revision=1, replica=0,
                       model_dir=str(iris_model_dir))
    state = rt.start_replica(spec)
    try:
        os.killpg(_pid(tmp_path / "state", state.id), signal.SIGKILL)
        status = _wait_status(rt, state.id, (ReplicaStatus.EXITED, ReplicaStatus.DEAD))
        assert status in (ReplicaStatus.EXITED, ReplicaStatus.DEAD)
        assert rt.get_replica(state.id).exit_code == -signal.SIGKILL
    finally:
        rt.remove_replica(state.id)


def test_preexec_sets_limits_in_a_child() -> None:
    import subprocess

    code = ("import resource as r; "
            "print(*(r.getrlimit(x)[0] for x in (r.RLIMIT_AS, r.RLIMIT_CORE, r.RLIMIT_CPU)))")
    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=make_preexec(256, address_space_overhead_mb=256, cpu_seconds=30),
        capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(512 * 1024 * 1024), "0", "30"]


def _tcp_listeners(pid: int) -> list[str]:
    """The TCP sockets process ``pid`` listens on (its fds matched in /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    listening = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                listening.append(fields[1])
    return listening


def _pid(state_dir: Path, rid: str) -> int:
    return int(json.loads((state_dir / "local-runtime.json").read_text())[rid]["pid"])
