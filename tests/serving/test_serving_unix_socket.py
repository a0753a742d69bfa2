"""A replica's second listener: the abstract unix socket the edge uses on the same machine
(serving/sockets.py). Real ``python -m serving`` processes, one and two workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serving.sockets import bind_unix, replica_socket, unix_address
from tests.serving.conftest import IRIS_COLUMNS, REPO_ROOT, free_port, start_server
from tests.unix_http import listening, unix_request

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROW = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}


@pytest.mark.parametrize("workers", [1, 2])
def test_replica_answers_on_its_port_and_its_unix_socket_and_frees_both_on_stop(
        model_dirs: dict[str, Path], tmp_path: Path, workers: int) -> None:
    name = f"@modelport-test-{os.getpid()}-{workers}"
    server = start_server("iris", model_dirs["iris"], tmp_path, {"MODELPORT_UNIX_SOCKET": name},
                          workers=workers)
    try:
        server.wait_ready()
        # /ready answers from whichever worker took the connection: with two, wait until
        # several fresh connections in a row are answered (both workers have loaded).
        deadline = time.monotonic() + 60
        expected = [(200, {"predictions": [0]})] * 6
        answers: list[tuple[int, object]] = []
        while answers[-6:] != expected and time.monotonic() < deadline:
            answers.append(unix_request(name, "POST", "/invocations", ROW))
            time.sleep(0.05)
        assert answers[-6:] == expected, answers[-6:]
        over_tcp = httpx.post(server.url + "/invocations", json=ROW, timeout=10)
        assert (over_tcp.status_code, over_tcp.json()) == (200, {"predictions": [0]})
        assert unix_request(name, "GET", "/ready") == (200, {"ready": True})
        status, answer = unix_request(name, "POST", "/invocations", {"dataframe_split": {
            "columns": IRIS_COLUMNS[:3], "data": [[1, 2, 3]]}})
        assert status == 400 and "petal_width" in answer["message"]
    finally:
        assert server.stop() == 0, server.log_path.read_text()
    assert not listening(name)
    with socket.socket() as sock:  # the port is free again too
        sock.bind(("127.0.0.1", server.port))


def test_replica_refuses_to_start_when_its_socket_name_is_taken(
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Whoever holds the name would receive the edge's predictions: the replica must not
    start beside it (the runtime then reports it as crashed)."""
    name = replica_socket("127.0.0.1", free_port())
    squatter = bind_unix(name)
    try:
        server = start_server("iris", model_dirs["iris"], tmp_path,
                              {"MODELPORT_UNIX_SOCKET": name})
        assert server.proc.wait(timeout=60) == 3
        log = server.log_path.read_text()
        assert f"cannot listen on the unix socket {name}" in log and "in use" in log
        with socket.socket() as sock:  # it let go of its TCP port
            sock.bind(("127.0.0.1", server.port))
    finally:
        squatter.close()


@pytest.mark.parametrize("value", ["/tmp/replica.sock", "@", "modelport"])
def test_a_socket_that_is_not_an_abstract_name_is_refused_with_a_message(
        model_dirs: dict[str, Path], value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(model_dirs["iris"]),
         "--port", str(free_port()), "--unix-socket", value],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode != 0
    assert "expected an abstract socket name starting with @" in proc.stderr


def test_socket_names_follow_the_replica_address() -> None:
    assert replica_socket("127.0.0.1", 20001) == "@modelport-replica:127.0.0.1:20001"
    assert unix_address("@modelport-replica:127.0.0.1:20001") == (
        "\0modelport-replica:127.0.0.1:20001")
    with pytest.raises(ValueError, match="not an abstract socket name"):
        unix_address("/run/replica.sock")
