"""The Celery application: configured from Django settings (``CELERY_*``), tasks autodiscovered."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("modelport")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Host workers (MODELPORT_HOST_NAME set) send their own heartbeat; a no-op step elsewhere.
from workers.host_step import HostHeartbeat  # noqa: E402 - after the app is configured

app.steps["worker"].add(HostHeartbeat)
