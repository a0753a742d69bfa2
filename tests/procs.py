"""For tests that run the platform's own processes (Celery workers and beat, the edge,
gunicorn) as subprocesses against the test's database: where that database is, and stopping
them with everything they started."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable

from django.db import connection


def database_url() -> str:
    """The test database as a ``DATABASE_URL`` the subprocesses read."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def stop_processes(processes: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each process group (started with ``start_new_session=True``), then SIGKILL what
    is still there after 20 s."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
