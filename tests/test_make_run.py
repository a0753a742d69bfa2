"""`make run` — the README's first command — brings up web, worker and beat; Ctrl-C stops all.

Runs the real Makefile target in a process group with a fresh data dir and a free port, using the
venv this suite runs in (so no reinstall), and the embedded broker and SQLite of a bare laptop.
The same process carries the first-run demo (issue 9): two models trained, validated in the
Docker sandbox and one deployed in Docker until healthy; the printed curl line answers; demo
traffic with ground truth goes through; seeding again creates nothing. One `make run` for all of
it keeps CI time down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
import uuid
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


COUNTS = ("import json; from registry.models import *; from deployments.models import *; "
          "from monitoring.models import AlertRule; from teams.models import ApiToken; "
          "print('COUNTS=' + json.dumps({'models': RegisteredModel.objects.count(), "
          "'versions': ModelVersion.objects.count(), 'aliases': ModelAlias.objects.count(), "
          "'deployments': Deployment.objects.count(), 'revisions': Revision.objects.count(), "
          "'rules': AlertRule.objects.count(), "
          "'active_tokens': ApiToken.objects.active().count()}))")


def _manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "manage.py", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _counts(env: dict[str, str]) -> dict[str, int]:
    out = _manage(env, "shell", "-c", COUNTS)
    return json.loads(out.split("COUNTS=", 1)[1].splitlines()[0])


def _recorded(env: dict[str, str], deployment: str) -> int:
    out = _manage(env, "shell", "-c", "from monitoring.models import PredictionRecord as R; "
                  f"print('N=%d' % R.objects.filter(deployment__name={deployment!r}).count())")
    return int(out.split("N=", 1)[1].split()[0])


def _curl_line(text: str) -> str:
    lines = [line[line.index("curl -sS"):] for line in text.splitlines() if "curl -sS" in line]
    assert lines, "no curl line printed"
    return lines[-1]


def _wait_for_demo(log: Path, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text()
        if "Modelport demo ready" in text and "→ " in text.split("Modelport demo ready")[1]:
            return text
        if "Demo seeding stopped" in text:
            break
        time.sleep(2)
    pytest.fail("the demo did not become ready:\n" + log.read_text()[-6000:])


def _remove_demo_containers(docker_client, name: str) -> int:
    found = docker_client.containers.list(all=True,
                                          filters={"label": f"modelport.deployment={name}"})
    for container in found:
        container.remove(force=True, v=True)
    return len(found)


def test_make_run_serves_the_portal_and_a_working_demo_then_ctrl_c_stops_all(
        tmp_path, docker_client, platform_serving_image):
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("make run installs the venv first; run `make install` once")
    port, mlflow_port = _free_port(), _free_port()
    # Replica containers are named after the deployment: unique, so a developer's own
    # `make run` demo on the same Docker host is never touched.
    demo_name = f"demo-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
           and not k.startswith("PYTEST")}
    env.update({"PORT": str(port), "MLFLOW_PORT": str(mlflow_port),
                "MODELPORT_DATA_DIR": str(tmp_path / "var"),
                "MODELPORT_ADMIN_PASSWORD": "first-run-password",
                "MODELPORT_HEARTBEAT_SECONDS": "2", "MODELPORT_DEMO": "1",
                "MODELPORT_DEMO_DEPLOYMENT": demo_name,
                "MODELPORT_BASE_URL": f"http://127.0.0.1:{port}"})
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
        # Production-safe by default: DEBUG off (the portal's 404 page), a CSP on every page.
        missing = session.get(f"{base}/no-such-page/", timeout=5)
        assert missing.status_code == 404 and 'class="error-page"' in missing.text
        assert "script-src 'self'" in missing.headers["Content-Security-Policy"]

        # The demo: seeded in the background, deployed in Docker, healthy, curl printed.
        text = _wait_for_demo(log, process, timeout=600)
        assert "healthy, runtime docker" in text
        assert f"{base}/deployments/{demo_name}/" in text
        curl = _curl_line(text)
        answered = subprocess.run(["bash", "-c", curl], capture_output=True, text=True,
                                  timeout=60, check=False)
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["predictions"][0] in {"setosa", "versicolor",
                                                                 "virginica"}
        page = session.get(f"{base}/models/iris-classifier/", timeout=10).text
        assert "production" in page and "diabetes-regressor" in session.get(
            f"{base}/models/", timeout=10).text

        # Nothing under the data dir is readable by other users of the host but the model
        # dirs mounted into containers (and a validation job's folder while it runs).
        data_dir = tmp_path / "var"
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        shared = [str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                  if not p.is_symlink() and not p.is_socket()
                  and stat.S_IMODE(p.lstat().st_mode) & 0o077]
        assert [p for p in shared if not p.startswith(("deployments/models/", "staging/"))] \
            == [], shared
        assert stat.S_IMODE((data_dir / "modelport.sqlite3").stat().st_mode) == 0o600

        # Demo traffic: drifted segment, a few malformed requests, ground truth matched.
        out = _manage(env, "demo_traffic", "--duration", "15")
        sent = re.search(r"Sent (\d+) requests \((\d+) drifted, (\d+) errors\), (\d+) labelled",
                         out)
        assert sent, out
        assert int(sent[1]) > 10 and int(sent[2]) > 0 and int(sent[4]) > 0, out
        # The replica has no network: its prediction log reached the platform through the
        # edge's ingest socket, mounted read-only into the container.
        deadline = time.monotonic() + 60
        while (logged := _recorded(env, demo_name)) < int(sent[1]) // 2:
            assert time.monotonic() < deadline, f"{logged} prediction records arrived"
            time.sleep(2)
        (replica,) = docker_client.containers.list(
            filters={"label": f"modelport.deployment={demo_name}"})
        assert replica.attrs["HostConfig"]["NetworkMode"] == "none"

        # Seeding again creates nothing; it prints a curl line with a new token and revokes
        # the previous one (whose secret was never stored).
        before = _counts(env)
        assert before == {"models": 2, "versions": 2, "aliases": 1, "deployments": 1,
                          "revisions": 1, "rules": 2, "active_tokens": 1}, before
        again = _manage(env, "seed_demo", timeout=600)
        assert "created: nothing new (already seeded)" in again
        assert _counts(env) == before
        new_curl = _curl_line(again)
        assert new_curl != curl
        assert json.loads(subprocess.run(["bash", "-c", new_curl], capture_output=True,
                                         text=True, timeout=60, check=True).stdout)
        old_token = re.search(r"Bearer (mpt_[\w-]+)", curl)[1]
        new_token = re.search(r"Bearer (mpt_[\w-]+)", new_curl)[1]
        gateway = f"{base}/serve/{demo_name}/invocations"
        deadline = time.monotonic() + 15  # the gateway caches a token check for 5 s
        while requests.post(gateway, data=b"{}", timeout=10, headers={
                "Authorization": f"Bearer {old_token}"}).status_code != 401:
            assert time.monotonic() < deadline, "the previous demo token still works"
            time.sleep(1)

        # Deleting the deployment (as a user would) removes its container.
        deleted = requests.delete(f"{base}/api/v1/deployments/{demo_name}/", timeout=10,
                                  headers={"Authorization": f"Bearer {new_token}"})
        assert deleted.status_code == 204, deleted.text
        deadline = time.monotonic() + 120
        while docker_client.containers.list(
                all=True, filters={"label": f"modelport.deployment={demo_name}"}):
            assert time.monotonic() < deadline, "demo container not removed"
            time.sleep(1)
    finally:
        _remove_demo_containers(docker_client, demo_name)
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    time.sleep(1)
    assert _children_alive(process.pid) == [], "processes left after Ctrl-C"
