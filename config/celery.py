"""The Celery application: configured from Django settings (``CELERY_*``), tasks autodiscovered."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown, worker_ready

from config import worker_metrics
from core.prom_files import compact
from workers.runtimes.wheelhouse import pip_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("modelport")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Host workers (MODELPORT_HOST_NAME set) send their own heartbeat; a no-op step elsewhere.
from workers.host_step import HostHeartbeat  # noqa: E402 - after the app is configured

app.steps["worker"].add(HostHeartbeat)


@worker_process_shutdown.connect
def _metrics_process_dead(pid: int | None = None, **_: Any) -> None:
    """A pool process exits: its counts join its folder's archive (prometheus-client's
    multiprocess mode, core/prom_files.py), so totals never go back and scrapes stay fast."""
    compact(pid or os.getpid())


@worker_init.connect
def _read_pip_config(**_: Any) -> None:
    """Once, in the worker's main process before its pool forks: every pool process inherits
    the host's pip configuration (``pip config list``, 0.4-3 s) instead of paying for it on its
    first reconcile — a wake from zero was 0.5-1.3 s slower on a pool process's first pass."""
    pip_config()


@worker_ready.connect
def _serve_worker_metrics(**_: Any) -> None:
    """On Kubernetes (``MODELPORT_WORKER_METRICS_PORT``): the worker pod's own /metrics."""
    worker_metrics.start()
