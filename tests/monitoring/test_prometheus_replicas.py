"""``GET /metrics/replicas``: the platform gathers every ready replica's own ``/metrics`` over its
socket file, with its revision's key, and labels the samples (replicas have no network, so
Prometheus cannot). A replica that does not answer is reported down, never a failed scrape.

The replica here is a stand-in on a real unix socket that, like the model server, answers
``/metrics`` only with the right key; the real model server is scraped this way in
test_prometheus_live.py.
"""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler

import pytest
from django.test import Client

from deployments.models import Replica
from serving.sockets import unix_url
from tests.deployments.conftest import UnixHTTPServer, key_of

pytestmark = pytest.mark.django_db

BODY = (b"# HELP modelport_requests_total Prediction requests answered\n"
        b"# TYPE modelport_requests_total counter\n"
        b'modelport_requests_total{endpoint="invocations",status="200"} 42.0\n')


class FakeReplica(BaseHTTPRequestHandler):
    key = ""
    body = BODY

    def do_GET(self) -> None:
        if self.headers.get("X-Modelport-Replica-Key") != self.key:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "platform"


def scrape(settings) -> str:
    settings.MODELPORT_METRICS_TOKEN = "prom-secret"
    response = Client().get("/metrics/replicas", HTTP_AUTHORIZATION="Bearer prom-secret")
    assert response.status_code == 200
    return response.content.decode()


def serve(path, **attributes) -> UnixHTTPServer:
    server = UnixHTTPServer(str(path), type("Handler", (FakeReplica,), attributes))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_replica_metrics_are_labelled_and_a_silent_replica_is_down(deployment, tmp_path,
                                                                   settings):
    server = serve(tmp_path / "serve.sock", key=key_of(deployment, 1))
    try:
        Replica.objects.create(deployment=deployment, runtime_id="r-0", revision=1, index=0,
                               status="running", ready=True,
                               url=unix_url(str(tmp_path / "serve.sock")))
        Replica.objects.create(deployment=deployment, runtime_id="r-1", revision=1, index=1,
                               status="running", ready=True,
                               url=unix_url(str(tmp_path / "gone.sock")))
        Replica.objects.create(deployment=deployment, runtime_id="r-2", revision=1, index=2,
                               status="starting", ready=False,
                               url=unix_url(str(tmp_path / "starting.sock")))
        lines = scrape(settings).splitlines()
    finally:
        server.shutdown()
        server.server_close()
    assert ('modelport_requests_total{deployment="churn-prod",endpoint="invocations",'
            'replica="0",revision="1",status="200"} 42.0') in lines
    assert 'modelport_replica_up{deployment="churn-prod",replica="0",revision="1"} 1.0' in lines
    assert 'modelport_replica_up{deployment="churn-prod",replica="1",revision="1"} 0.0' in lines
    assert not [line for line in lines if 'replica="2"' in line]  # not ready: not asked


def test_a_replica_refusing_the_key_is_down(deployment, tmp_path, settings):
    """The platform sends the revision's key; a replica demanding another one says 403."""
    server = serve(tmp_path / "serve.sock", key="another revision's key")
    try:
        Replica.objects.create(deployment=deployment, runtime_id="r-0", revision=1, index=0,
                               status="running", ready=True,
                               url=unix_url(str(tmp_path / "serve.sock")))
        lines = scrape(settings).splitlines()
    finally:
        server.shutdown()
        server.server_close()
    assert 'modelport_replica_up{deployment="churn-prod",replica="0",revision="1"} 0.0' in lines
    assert not [line for line in lines if line.startswith("modelport_requests_total")]


def test_a_hostile_replica_cannot_speak_for_the_platform_or_flood_it(deployment, tmp_path,
                                                                     settings):
    """Model code runs in the replica: it may answer anything. Only the model server's
    families pass, with the platform's labels saying whose they are; an endless body is cut."""
    forged = BODY + (b"# TYPE modelport_ingest_records_total counter\n"
                     b'modelport_ingest_records_total{deployment="other-team-model"} 1e9\n'
                     b"# TYPE modelport_prediction_rows_total counter\n"
                     b'modelport_prediction_rows_total{deployment="someone-else"} 5.0\n')
    key = key_of(deployment, 1)
    servers = [serve(tmp_path / "a.sock", key=key, body=forged),
               serve(tmp_path / "b.sock", key=key, body=b"# x\n" * (1 << 19))]
    try:
        for index, name in enumerate(("a.sock", "b.sock")):
            Replica.objects.create(deployment=deployment, runtime_id=f"r-{index}", revision=1,
                                   index=index, status="running", ready=True,
                                   url=unix_url(str(tmp_path / name)))
        lines = scrape(settings).splitlines()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert not [line for line in lines if "modelport_ingest_records" in line]
    assert ('modelport_prediction_rows_total{deployment="churn-prod",replica="0",revision="1"}'
            " 5.0") in lines
    assert 'modelport_replica_up{deployment="churn-prod",replica="0",revision="1"} 1.0' in lines
    assert 'modelport_replica_up{deployment="churn-prod",replica="1",revision="1"} 0.0' in lines


def test_a_replica_cannot_set_timestamps_or_repeat_a_series(deployment, tmp_path, settings):
    """A replica's own timestamps (past or far future) and repeated series would be dropped
    by Prometheus one by one or hold stale values: the platform serves each series once, at
    its scrape's time. What it serves passes promtool's exposition check."""
    body = BODY + (b'modelport_requests_total{endpoint="invocations",status="200"} 7.0\n'
                   b'modelport_requests_total{endpoint="x",status="500"} 3.0 99999999999999\n')
    server = serve(tmp_path / "a.sock", key=key_of(deployment, 1), body=body)
    try:
        Replica.objects.create(deployment=deployment, runtime_id="r-0", revision=1, index=0,
                               status="running", ready=True,
                               url=unix_url(str(tmp_path / "a.sock")))
        text = scrape(settings)
    finally:
        server.shutdown()
        server.server_close()
    lines = [line for line in text.splitlines() if line.startswith("modelport_requests_total")]
    assert lines == [
        'modelport_requests_total{deployment="churn-prod",endpoint="invocations",replica="0",'
        'revision="1",status="200"} 42.0',
        'modelport_requests_total{deployment="churn-prod",endpoint="x",replica="0",'
        'revision="1",status="500"} 3.0']
    checked = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                             capture_output=True, check=False)
    assert b"duplicate" not in checked.stdout + checked.stderr
    assert b"error" not in (checked.stdout + checked.stderr).lower(), checked
