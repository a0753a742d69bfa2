"""The real Prometheus (Debian's ``prometheus`` binary) scraping a live platform with the
shipped ``platform/prometheus/prometheus.yml``: every query of the shipped Grafana dashboard
returns data, and concurrent scrapes of ``/metrics`` agree (issue 25).

The platform is the Procfile under ``config.supervise`` as ``make run`` starts it (edge, gunicorn
with 2 workers, the Celery worker, beat; ``--metrics-dir`` as the Makefile passes it) on the test
database and this suite's Redis. Two of make run's processes are left out: MLflow (nothing here
logs runs) and the reconciler. Instead of a reconciler starting a container, the test starts the
real model server (``python -m serving``, the iris model) as a local process on a socket file
with its revision's replica key and ingest token, and records it as the deployment's ready
replica, as the reconciler would — a Docker replica would take minutes of image build on this
machine and exercise nothing more of the metrics path. Traffic goes through the edge; the model
server ships its prediction log to ingest; beat's rollup and alert evaluation (intervals of
seconds) fold it in, fire an alert and send its webhook notification (to a name that does not
resolve: the delivery fails and is counted as such).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.utils import timezone

from serving import sockets
from serving.sockets import unix_url
from tests.conftest import missing_service
from tests.test_make_run import _free_ports

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "platform" / "grafana" / "modelport-dashboard.json"
SHIPPED = ROOT / "platform" / "prometheus"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
TOKEN = secrets.token_urlsafe(24)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def dashboard_queries() -> list[str]:
    def walk(panels: list[dict]) -> Iterator[str]:
        for panel in panels:
            yield from (t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _post(url: str, body: dict, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(what: str, check, timeout: float, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            value = check()
            if value:
                return value
        time.sleep(0.5)
    tail = log.read_text()[-5000:] if log and log.exists() else ""
    pytest.fail(f"{what} within {timeout:g} s\n{tail}")


def _iris_dir(root: Path) -> Path:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    model = LogisticRegression(max_iter=300).fit(frame, data.target)
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    target = root / "iris"
    mlflow.sklearn.save_model(model, str(target),
                              signature=infer_signature(example, model.predict(example)),
                              input_example=example)
    return target


@contextlib.contextmanager
def _process(args: list[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT
             ) -> Iterator[subprocess.Popen]:
    """A process in its own session, stopped with its whole group at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # what the group left behind
            os.killpg(process.pid, signal.SIGKILL)


def _platform_env(data_dir: Path, port: int, redis_url: str) -> dict[str, str]:
    from tests.config.live_api import UNREACHABLE_MLFLOW, database_url

    env = {k: v for k, v in os.environ.items()
           if k not in {"DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR",
                        "MODELPORT_PROMETHEUS_DIR", "MLFLOW_PORT"}}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "MODELPORT_DATA_DIR": str(data_dir),
        "MODELPORT_WEB_PORT": str(port),
        "MODELPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "MLFLOW_TRACKING_URI": UNREACHABLE_MLFLOW,
        "MODELPORT_METRICS_TOKEN": TOKEN,
        # Beat's monitoring passes every few seconds instead of every 20 s and minute.
        "MODELPORT_MONITORING_ROLLUP_SECONDS": "2",
        "MODELPORT_MONITORING_ROLLUP_DELAY_S": "1",
        "MODELPORT_MONITORING_ALERT_SECONDS": "2",
    })
    return env


def _seed(model_dir: Path):
    """A team, its engineer, the iris model with a ready version, and a deployment of it."""
    from compute.models import ExecutionTarget
    from deployments import services as deployments
    from monitoring import alerts
    from quotas import services as quotas
    from registry import services as registry
    from registry import storage
    from registry.models import ModelVersion
    from teams import services as teams
    from tests.factories import AdminFactory, UserFactory, make_token

    admin = AdminFactory(username="prom-admin")
    team = teams.create_team(actor=admin, slug="prom-team", name="Prometheus team")
    engineer = UserFactory(username="prom-eng")
    teams.add_member(actor=admin, team=team, username=engineer.username, role="engineer")
    quotas.set_quota(actor=admin, team=team, cpu=Decimal(8), memory_mb=16384, gpus=0,
                     deployments=5)
    ExecutionTarget.objects.update_or_create(
        name="default", defaults={"kind": "docker", "endpoint": "tcp://127.0.0.1:9",
                                  "is_default": True, "enabled": True})
    model = registry.create_model(actor=engineer, team=team, name="iris")
    stored = storage.store_model_dir(model_dir)
    ModelVersion.objects.create(
        model=model, version=1, status="ready", source_format="mlflow", flavor="sklearn",
        artifact_name=stored.name, artifact_sha256=stored.sha256, artifact_size=stored.size,
        created_by=engineer, validated_at=timezone.now(),
        input_example={"dataframe_split": {"columns": COLUMNS, "data": ROWS}})
    deployment = deployments.create_deployment(
        actor=engineer, team=team, name="iris-prom", model="iris", version=1, replicas=1,
        resources={"cpu": 0.5, "memory_mb": 512, "gpus": 0})
    alerts.create_alert_rule(actor=engineer, deployment=deployment, name="busy",
                             metric="requests_per_min", threshold=0, window_minutes=5,
                             webhook_url="http://alerts.modelport-test.invalid/hook")
    # Nothing ever becomes ready here: the edge answers its callers with its own 503.
    deployments.create_deployment(
        actor=engineer, team=team, name="iris-idle", model="iris", version=1, replicas=1,
        resources={"cpu": 0.5, "memory_mb": 512, "gpus": 0})
    _, secret = make_token(engineer, name="prom-traffic")
    return deployment, secret


def _replica_env(deployment, socket_path: Path, port: int) -> dict[str, str]:
    from deployments.models import Revision
    from monitoring.ingest import ingest_environment

    revision = Revision.objects.get(deployment=deployment, number=deployment.revision)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(ingest_environment(deployment=deployment))
    env.update({
        "MODELPORT_INGEST_URL": f"http://127.0.0.1:{port}/api/v1/ingest/predictions/",
        "MODELPORT_REPLICA_KEY": revision.replica_key,
        "MODELPORT_DEPLOYMENT": deployment.name,
        "MODELPORT_REVISION": str(revision.number),
        "MODELPORT_REPLICA": "0",
        "MODELPORT_UNIX_SOCKET": str(socket_path),
        "MODELPORT_SHIP_INTERVAL_S": "0.5",
    })
    return env


def _mark_ready(deployment, socket_path: Path) -> None:
    """What the reconciler records once a replica answers its probe."""
    from deployments.models import Deployment, Replica

    Replica.objects.create(deployment=deployment, runtime_id="iris-prom-r1-0",
                           revision=deployment.revision, index=0, status="running", ready=True,
                           url=unix_url(str(socket_path)))
    Deployment.objects.filter(pk=deployment.pk).update(
        status="healthy", traffic=[{"revision": deployment.revision, "percent": 100}])


def _purge_queues(redis_url: str) -> None:
    """What beat enqueued that no process here consumes (the reconciler's queue) or that was
    left when the worker stopped: not for the next test's workers."""
    import redis

    redis.Redis.from_url(redis_url).delete("celery", "deployments")


def _prometheus_config(tmp: Path, port: int) -> Path:
    """The shipped config and rules, pointed at the live platform, scraping every second."""
    config = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    for job in config["scrape_configs"]:
        job["scrape_timeout"] = "1s"
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(SHIPPED / "rules.yml", tmp / "rules.yml")
    token = tmp / "modelport-metrics-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return tmp / "prometheus.yml"


def _query(prometheus: str, expr: str) -> list[dict]:
    body = json.loads(_get(f"{prometheus}/api/v1/query?"
                           + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def _sample(text: str, name: str, labels: str = "") -> float | None:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


@dataclass
class Live:
    """The running platform, its model server and Prometheus."""

    base: str
    prometheus: str
    logs: Path
    folder: Path  # the multiprocess folder
    deployment: Any
    token: str
    processes: list[subprocess.Popen]

    def metrics(self) -> str:
        return _get(f"{self.base}/metrics", {"Authorization": f"Bearer {TOKEN}"}).decode()

    def ingested(self) -> float | None:
        return _sample(self.metrics(), "modelport_ingest_records_total",
                       'deployment="iris-prom"')

    def predict(self, name: str = "iris-prom") -> tuple[int, bytes]:
        return _post(f"{self.base}/serve/{name}/invocations",
                     {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}, self.token)


def _start(stack: contextlib.ExitStack, tmp_path: Path, data_dir: Path, redis_url: str,
           prometheus_bin: str) -> Live:
    (data_dir / "run").mkdir(mode=0o700, exist_ok=True)
    port, prom_port = _free_ports(2)
    base, prometheus = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{prom_port}"
    deployment, token = _seed(_iris_dir(tmp_path))
    socket_path = tmp_path / "replica" / "serve.sock"
    socket_path.parent.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    folder = data_dir / "run" / "prometheus"
    stack.callback(_purge_queues, redis_url)
    platform = stack.enter_context(_process(
        [sys.executable, "-m", "config.supervise", "--procfile", "Procfile",
         "--skip", "redis", "--skip", "mlflow", "--skip", "demo", "--skip", "reconciler",
         "--metrics-dir", str(folder)],
        env=_platform_env(data_dir, port, redis_url), log=logs / "platform.log"))
    _wait("the platform answers /healthz", lambda: _get(f"{base}/healthz"), 90,
          logs / "platform.log")
    replica = stack.enter_context(_process(
        [sys.executable, "-m", "serving", "--model-dir", str(tmp_path / "iris"),
         "--workers", "1"],
        env=_replica_env(deployment, socket_path, port), log=logs / "replica.log"))
    _wait("the model server has loaded the model",
          lambda: sockets.request(unix_url(str(socket_path)) + "/ready")[0] == 200, 120,
          logs / "replica.log")
    _mark_ready(deployment, socket_path)
    config = _prometheus_config(tmp_path, port)
    stack.enter_context(_process(
        [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        env={"PATH": os.environ.get("PATH", "")}, log=logs / "prometheus.log", cwd=tmp_path))
    _wait("Prometheus is ready", lambda: _get(f"{prometheus}/-/ready"), 60,
          logs / "prometheus.log")
    return Live(base, prometheus, logs, folder, deployment, token, [platform, replica])


def _drive_traffic(live: Live) -> None:
    """Predictions through the edge (over a few scrape intervals, so rates have two points),
    a record ingest refuses, and the edge's own 503s."""
    from monitoring.ingest import issue_ingest_token

    for _ in range(10):
        status, answer = live.predict()
        assert status == 200, answer
        time.sleep(0.4)
    status, answer = _post(f"{live.base}/api/v1/ingest/predictions/", {
        "deployment": "iris-prom", "revision": live.deployment.revision, "replica": "test",
        "records": ["not an object"]}, issue_ingest_token(deployment=live.deployment))
    assert status == 202 and json.loads(answer)["rejected"] == 1, answer
    for _ in range(2):  # nothing is ready for iris-idle: counted in the edge process
        status, answer = live.predict("iris-idle")
        assert status == 503, answer
    assert all(p.poll() is None for p in live.processes)


def _assert_every_query_has_data(live: Live) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 19
    empty: list[str] = []
    deadline = time.monotonic() + 240  # bounded; typically 20-60 s on 2 busy cores
    while time.monotonic() < deadline:
        empty = [q for q in queries if not _query(live.prometheus, q)]
        if not empty:
            return
        live.predict()  # keep traffic flowing so every rate has points in its window
        time.sleep(1)
    pytest.fail(f"queries without data: {empty}\n"
                + (live.logs / "platform.log").read_text()[-4000:])


def _assert_scrapes_agree(live: Live) -> float:
    """Concurrent scrapes, answered by both gunicorn workers, give one total: the records the
    database holds (traffic has stopped: first wait until all is shipped)."""
    from monitoring.models import PredictionRecord

    def stored() -> int:
        return PredictionRecord.objects.filter(deployment=live.deployment).count()

    def settled() -> bool:
        before, counted = stored(), live.ingested()
        time.sleep(2)
        return before > 0 and counted == before == stored()

    _wait("the ingest counter matches the stored records", settled, 60)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(lambda _: live.ingested(), range(24)))
    assert set(values) == {float(stored())}
    assert len(list(live.folder.glob("counter_*.db"))) >= 3  # 2 gunicorn workers, a Celery one
    return values[0]


def test_prometheus_reads_every_dashboard_query(tmp_path, settings, redis_url):
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        missing_service("prometheus (Debian package prometheus) is not installed")
    with contextlib.ExitStack() as stack:
        live = _start(stack, tmp_path, Path(settings.MODELPORT_DATA_DIR), redis_url,
                      prometheus_bin)
        _drive_traffic(live)
        _assert_every_query_has_data(live)

        # Counted in Celery tasks and in the edge, exposed by the web workers.
        metrics = live.metrics()
        assert (_sample(metrics, "modelport_rollup_records_total") or 0) > 0
        assert "modelport_alert_notifications_total{" in metrics
        assert _sample(metrics, "modelport_gateway_errors_total",
                       'code="503",deployment="iris-idle"') == 2

        total = _assert_scrapes_agree(live)
        # A gunicorn worker dies: its counts join the archive (child_exit), none is lost.
        victim = _gunicorn_workers(live.folder)[0]
        os.kill(victim, signal.SIGKILL)
        _wait("the dead worker's files are compacted",
              lambda: not list(live.folder.glob(f"*_{victim}.db"))
              and (live.folder / "counter_archive.db").exists(), 60, live.logs / "platform.log")
        assert live.ingested() == total


def _gunicorn_workers(folder: Path) -> list[int]:
    """The pids of gunicorn's workers that wrote metric files (their parent is gunicorn)."""
    def command(pid: int | str) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    found = []
    for path in folder.glob("counter_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        with contextlib.suppress(OSError):
            parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            if "gunicorn" in command(pid) and "gunicorn" in command(parent):
                found.append(int(pid))
    assert found, "no gunicorn worker wrote metric files"
    return sorted(found)
