"""`make run` — the README's first command — brings up web, worker and beat; Ctrl-C stops all.

Runs the real Makefile target in a process group with a fresh data dir and a free port, using the
venv this suite runs in (so no reinstall), and the embedded broker and SQLite of a bare laptop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children_alive(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_make_run_serves_the_portal_and_stops_everything_on_ctrl_c(tmp_path):
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("make run installs the venv first; run `make install` once")
    port, mlflow_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
           and not k.startswith("PYTEST")}
    env.update({"PORT": str(port), "MLFLOW_PORT": str(mlflow_port),
                "MODELPORT_DATA_DIR": str(tmp_path / "var"),
                "MODELPORT_ADMIN_PASSWORD": "first-run-password",
                "MODELPORT_HEARTBEAT_SECONDS": "2"})
    log = tmp_path / "make-run.log"
    process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = requests.get(f"{base}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert ready is not None and ready.status_code == 200, log.read_text()[-4000:]

        session = requests.Session()
        login = session.get(f"{base}/login/", timeout=5)
        assert login.status_code == 200
        response = session.post(f"{base}/login/", timeout=5, data={
            "username": "admin", "password": "first-run-password",
            "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            headers={"Referer": f"{base}/login/"})
        assert response.status_code == 200 and "demo" in response.text

        # beat → broker files → worker and reconciler → database: the dashboard shows both.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if "2 alive" in session.get(f"{base}/", timeout=5).text:
                break
            time.sleep(1)
        else:
            pytest.fail("worker and reconciler not both alive on the dashboard:\n"
                        + log.read_text()[-4000:])
        static = session.get(f"{base}/static/frontend/vendor/pico.min.css", timeout=5)
        assert static.status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    time.sleep(1)
    assert _children_alive(process.pid) == [], "processes left after Ctrl-C"
