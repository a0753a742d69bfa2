"""A replica without a network listens on a unix socket file (serving/sockets.py) and, with a
replica key, answers only requests that carry it. Real ``python -m serving`` processes, one
and two workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import IRIS_COLUMNS, REPO_ROOT, free_port, start_server
from tests.unix_http import listening, unix_request

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROW = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}
KEY = {"X-Modelport-Replica-Key": "k" * 64}


@pytest.mark.parametrize("workers", [1, 2])
def test_replica_answers_only_on_its_socket_file_and_removes_nothing_else_on_stop(
        model_dirs: dict[str, Path], tmp_path: Path, workers: int) -> None:
    path = str(tmp_path / "sock" / "serve.sock")
    Path(path).parent.mkdir()
    server = start_server("iris", model_dirs["iris"], tmp_path,
                          {"MODELPORT_UNIX_SOCKET": path, "MODELPORT_PORT": ""},
                          workers=workers, tcp=False)
    try:
        deadline = time.monotonic() + 60
        expected = [(200, {"predictions": [0]})] * 6
        answers: list[tuple[int, object]] = []
        # /ready answers from whichever worker took the connection: with two, wait until
        # several fresh connections in a row are answered (both workers have loaded).
        while answers[-6:] != expected and time.monotonic() < deadline:
            if listening(path):
                answers.append(unix_request(path, "POST", "/invocations", ROW))
            time.sleep(0.05)
        assert answers[-6:] == expected, answers[-6:]
        assert oct(os.stat(path).st_mode & 0o777) == "0o666"  # the directory keeps others out
        with pytest.raises(httpx.ConnectError):  # no TCP listener at all
            httpx.post(server.url + "/invocations", json=ROW, timeout=2)
        bad = {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [[1, 2, 3]]}}
        status, answer = unix_request(path, "POST", "/invocations", bad)
        while status == 503 and time.monotonic() < deadline:  # the other worker still loading
            time.sleep(0.05)
            status, answer = unix_request(path, "POST", "/invocations", bad)
        assert status == 400 and "petal_width" in answer["message"]
    finally:
        assert server.stop() == 0, server.log_path.read_text()
    assert not listening(path)


def test_with_a_replica_key_only_keyed_requests_are_answered_but_health_checks_are_open(
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    server = start_server("iris", model_dirs["iris"], tmp_path,
                          {"MODELPORT_REPLICA_KEY": KEY["X-Modelport-Replica-Key"]})
    try:
        server.wait_ready()
        refused = httpx.post(server.url + "/invocations", json=ROW, timeout=10)
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
        wrong = httpx.post(server.url + "/invocations", json=ROW, timeout=10,
                           headers={"X-Modelport-Replica-Key": "k" * 63 + "x"})
        assert wrong.status_code == 403
        for path in ("/metrics", "/version", "/v2/models/iris"):
            assert httpx.get(server.url + path, timeout=10).status_code == 403, path
        for path in ("/ping", "/health", "/ready", "/v2/health/ready", "/v2/health/live"):
            assert httpx.get(server.url + path, timeout=10).status_code == 200, path
        keyed = httpx.post(server.url + "/invocations", json=ROW, headers=KEY, timeout=10)
        assert (keyed.status_code, keyed.json()) == (200, {"predictions": [0]})
    finally:
        server.stop()


def test_a_stale_socket_file_is_replaced_and_another_file_is_never_overwritten(
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    import socket

    path = tmp_path / "serve.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: a container that was restarted
    server = start_server("iris", model_dirs["iris"], tmp_path,
                          {"MODELPORT_UNIX_SOCKET": str(path), "MODELPORT_PORT": ""},
                          tcp=False)
    try:
        deadline = time.monotonic() + 60
        while not listening(str(path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert unix_request(str(path), "GET", "/health") == (200, {"status": "alive"})
    finally:
        server.stop()
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(model_dirs["iris"]),
         "--unix-socket", str(regular)], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "MODELPORT_PORT": ""})
    assert proc.returncode == 3
    assert "exists and is not a socket" in proc.stderr + proc.stdout
    assert regular.read_text() == "keep me"


@pytest.mark.parametrize("value", ["@abstract", "relative/replica.sock"])
def test_a_socket_that_is_not_an_absolute_path_is_refused_with_a_message(
        model_dirs: dict[str, Path], value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(model_dirs["iris"]),
         "--port", str(free_port()), "--unix-socket", value],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode != 0
    assert "expected the absolute path of a socket file" in proc.stderr
