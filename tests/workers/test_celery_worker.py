"""A real Celery worker (and beat) process against the real broker and database.

The worker runs as a subprocess with the same database as the test (``transaction=True`` so rows
are committed and visible across processes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.procs import database_url as _database_url
from tests.procs import stop_processes
from workers.models import WorkerHeartbeat

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]




def _environment(tmp_path: Path, broker_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev",
                "MODELPORT_DATA_DIR": str(tmp_path / "proc-data"),
                "DATABASE_URL": _database_url(), "MODELPORT_HEARTBEAT_SECONDS": "1",
                **broker_env})
    return env


def _stop(*processes: subprocess.Popen) -> None:
    """``tests.procs.stop_processes``, as the modules that import it from here call it."""
    stop_processes(processes)


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", *argv], cwd=ROOT,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)




def _wait_for_heartbeat(processes: list[subprocess.Popen], logs: list[Path],
                        timeout: float = 60) -> WorkerHeartbeat:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heartbeat = WorkerHeartbeat.objects.first()
        if heartbeat is not None:
            return heartbeat
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.5)
    output = "\n".join(log.read_text()[-3000:] for log in logs)
    pytest.fail(f"no heartbeat recorded by the worker; its output:\n{output}")


@pytest.mark.redis
@pytest.mark.postgres
def test_worker_consumes_tasks_from_redis(tmp_path, redis_url):
    from config.celery import app

    env = _environment(tmp_path, {"REDIS_URL": redis_url})
    log = tmp_path / "worker.log"
    worker = _start(["worker", "--concurrency", "1", "--without-gossip", "--without-mingle",
                     "--hostname", "redis-test@%h", "-Q", "celery"], env, log)
    try:
        with app.connection_for_write(redis_url) as conn:
            app.send_task("workers.tasks.heartbeat", connection=conn)
        heartbeat = _wait_for_heartbeat([worker], [log])
        assert heartbeat.hostname.startswith("redis-test@")
    finally:
        _stop(worker)
    assert worker.returncode is not None


@pytest.mark.postgres
def test_beat_and_worker_run_on_the_embedded_broker_like_make_run(tmp_path):
    """`make run` without REDIS_URL: beat and a separate worker meet on the embedded Redis
    server's socket in the data dir (config/embedded_broker.py)."""
    from config import embedded_broker

    env = _environment(tmp_path, {})
    broker = embedded_broker.start(Path(env["MODELPORT_DATA_DIR"]), stdout=subprocess.DEVNULL)
    logs = [tmp_path / "worker.log", tmp_path / "beat.log"]
    worker = _start(["worker", "--concurrency", "1", "--without-gossip", "--without-mingle",
                     "--hostname", "embedded@%h"], env, logs[0])
    beat = _start(["beat", "--schedule", str(tmp_path / "beat-schedule")], env, logs[1])
    try:
        heartbeat = _wait_for_heartbeat([worker, beat], logs)
        assert heartbeat.hostname.startswith("embedded@")
        assert heartbeat.beat_sent_at is not None
    finally:
        _stop(worker, beat)
        broker.terminate()
        broker.wait(timeout=30)


def test_tasks_are_acked_late_with_time_limits():
    assert django_settings.CELERY_TASK_ACKS_LATE is True
    assert django_settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert django_settings.CELERY_TASK_TIME_LIMIT > django_settings.CELERY_TASK_SOFT_TIME_LIMIT
