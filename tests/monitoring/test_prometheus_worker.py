"""A Celery worker pod's own ``/metrics`` (Kubernetes: the worker shares no folder with the web
pods): its pool's counters, added up from the multiprocess folder, only with the bearer token;
never started without one. A real HTTP server on a loopback port; the counts are written by
real processes with prometheus-client."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from config import worker_metrics

COUNT = ('from prometheus_client import Counter\n'
         'Counter("modelport_alert_notifications", "x", ["channel", "outcome"])'
         '.labels("webhook", "failed").inc({n})\n')


def _get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served(tmp_path):
    for n in (2, 5):  # two pool processes
        subprocess.run([sys.executable, "-c", COUNT.format(n=n)], check=True, timeout=60,
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    server = worker_metrics.start({"MODELPORT_WORKER_METRICS_PORT": "0",
                                   "MODELPORT_WORKER_METRICS_HOST": "127.0.0.1",
                                   "MODELPORT_METRICS_TOKEN": "worker-secret",
                                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert server is not None
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_pool_counters_are_added_up(served):
    status, body = _get(f"{served}/metrics", "worker-secret")
    assert status == 200
    assert ('modelport_alert_notifications_total{channel="webhook",outcome="failed"} 7.0'
            in body.splitlines())


def test_only_the_bearer_token_reads_them(served):
    for token in (None, "worker-secre", "x" * 64):
        status, body = _get(f"{served}/metrics", token)
        assert status == 401 and "modelport_" not in body
    assert _get(f"{served}/other", "worker-secret")[0] == 404


def test_not_started_without_a_token_or_a_folder(tmp_path):
    assert worker_metrics.start({}) is None
    assert worker_metrics.start({"MODELPORT_WORKER_METRICS_PORT": "0",
                                 "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) is None
    assert worker_metrics.start({"MODELPORT_WORKER_METRICS_PORT": "0",
                                 "MODELPORT_METRICS_TOKEN": "t"}) is None
