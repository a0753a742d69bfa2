"""Verbs enqueue reconcile passes by task name (``deployments.passes`` through ``core.queue``),
never by importing the tasks module. A web process has imported no task module, so the name must
still resolve there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRESH_PROCESS = """
import sys
import django
django.setup()
assert "deployments.tasks" not in sys.modules, "the check needs a process without the tasks"
from core import queue
from deployments import passes
for name in (passes.RECONCILE, passes.REMOVE_CONTAINERS):
    print(queue.task(name).name)
"""


def test_a_process_that_imported_no_task_module_still_finds_the_tasks_by_name():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get(
        "DJANGO_SETTINGS_MODULE", "config.settings.test")}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["deployments.tasks.reconcile",
                                   "deployments.tasks.remove_containers"]
