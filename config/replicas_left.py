"""What keeps running after `make run` stops: the model replicas, and how to stop them.

    python -m config.replicas_left      # the supervisor runs this after Ctrl-C

Replicas outlive `make run` by design (predictions resume at the next start without a cold
start), but a user pressing Ctrl-C should be told so. Reads the reconciler's replica rows and
checks each against its runtime: Docker containers by name, local processes by the pid the local
runtime recorded.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import django
import docker
from django.conf import settings


def _local_pids(data_dir: Path) -> dict[str, int]:
    """Replica name → pid of local-runtime processes still alive."""
    try:
        state = json.loads((data_dir / "runtime" / "local-runtime.json").read_text())
    except (OSError, ValueError):
        return {}
    alive = {}
    for name, record in state.items():
        pid = int(record.get("pid") or 0)
        if pid > 0 and Path(f"/proc/{pid}").exists():
            alive[name] = pid
    return alive


def _docker_running(names: set[str]) -> set[str]:
    try:
        client = docker.from_env(timeout=3)
        try:
            return {c.name for c in client.containers.list() if c.name in names}
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no Docker here: nothing of it runs
        return set()


def lines() -> list[str]:
    # app registry: models import only after main()'s django.setup()
    from deployments.models import Replica  # noqa: PLC0415 - app registry (see above)

    rows = list(Replica.objects.select_related("deployment").order_by("deployment__name",
                                                                       "runtime_id"))
    names = {row.runtime_id for row in rows}
    containers = _docker_running(names)
    local = _local_pids(Path(settings.MODELPORT_DATA_DIR))
    running: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row.runtime_id in containers or row.runtime_id in local:
            running[row.deployment.name].append(row.runtime_id)
    if not running:
        return ["No model replica is left running."]
    out = ["Still running, by design (they serve again at the next `make run`, without a cold "
           "start): model replicas of " + ", ".join(
               f"{name} ({len(ids)})" for name, ids in running.items()) + "."]
    out.append("To stop them: Stop (or delete) the deployment in the portal or the API while "
               "`make run` runs, or now:")
    ours = sorted(n for ids in running.values() for n in ids if n in containers)
    if ours:
        out.append("  docker rm -f " + " ".join(ours))
    pids = sorted(local[n] for ids in running.values() for n in ids if n in local)
    if pids:
        out.append("  kill " + " ".join(str(pid) for pid in pids) + "   (local processes)")
    return out


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    django.setup()
    try:
        text = lines()
    except Exception as exc:  # noqa: BLE001 - a report at exit must not end in a traceback
        text = [f"Could not list model replicas ({type(exc).__name__}: {exc}); they keep "
                "running by design: see the Deployments page at the next `make run`."]
    for line in text:
        print(line, flush=True)


if __name__ == "__main__":
    main()
