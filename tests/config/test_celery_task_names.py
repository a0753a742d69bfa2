"""Celery finds tasks by name: beat entries, routes and messages sent by name (``send_task``,
``deployments.hosts_runtime.send_to_host``) carry a string, never an import. Moving a task
module (issue 17) must keep every name registered, or beat and host workers fail only at run
time; these tests make that a test failure instead.

The registry is read in a fresh interpreter that does what a worker does at start-up (the
loader's autodiscovery), so modules the test session happened to import cannot hide a task
that autodiscovery no longer finds.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = ["config", "core", "teams", "notifications", "registry", "quotas", "compute",
                "workers", "deployments", "jobs", "monitoring", "gateway", "frontend", "demo",
                "serving"]
TASK_NAME = re.compile(rf"^({'|'.join(APP_PACKAGES)})\.tasks\.\w+$")

# Sent by name from code that does not import the task (checked again by the literal scan below).
SENT_BY_NAME = {
    "workers.tasks.host_heartbeat",       # workers/host_step.py, the host worker's boot step
    "workers.tasks.start_host_replica",   # deployments/hosts_runtime.py, send_to_host
    "workers.tasks.remove_host_replica",  # deployments/hosts_runtime.py, send_to_host
    "workers.tasks.start_host_chunk",     # jobs/hosts_batch.py, send_to_host
    "workers.tasks.remove_host_chunks",   # jobs/hosts_batch.py, send_to_host
    "workers.tasks.report_host_chunks",   # workers/host_step.py, the host worker's boot step
}

_REGISTRY_SCRIPT = """
import json
from config.celery import app
app.loader.import_default_modules()
print(json.dumps(sorted(app.tasks)))
"""


@cache
def registered_names() -> frozenset[str]:
    """Task names in the Celery app's registry after a worker's autodiscovery."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    out = subprocess.run([sys.executable, "-c", _REGISTRY_SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return frozenset(json.loads(out.stdout.strip().splitlines()[-1]))


def task_name_literals() -> dict[str, list[str]]:
    """Every string constant in app code that is a task name, with where it appears."""
    found: dict[str, list[str]] = {}
    for package in APP_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and TASK_NAME.match(node.value):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.setdefault(node.value, []).append(where)
    return found


def test_every_beat_entry_names_a_registered_task():
    beat = {entry: spec["task"] for entry, spec in settings.CELERY_BEAT_SCHEDULE.items()}
    missing = {entry: task for entry, task in beat.items() if task not in registered_names()}
    assert beat, "the beat schedule is empty"
    assert missing == {}


def test_tasks_sent_by_name_are_registered():
    assert SENT_BY_NAME - registered_names() == set()


def test_every_task_name_written_in_app_code_is_registered():
    literals = task_name_literals()
    assert literals.keys() >= SENT_BY_NAME, "a task sent by name is no longer written in app code"
    missing = {name: where for name, where in literals.items() if name not in registered_names()}
    assert missing == {}


def test_every_task_route_matches_a_registered_task():
    unmatched = [pattern for pattern in settings.CELERY_TASK_ROUTES
                 if not fnmatch.filter(registered_names(), pattern)]
    assert unmatched == []
