"""CPU time in ``bench/gateway.py``: each platform process (with its children), the replica's
container (its cgroup), the wrk runs and the whole machine, from /proc and /sys."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def replica_cgroup(name: str) -> Path | None:
    """The replica container's cpuacct cgroup directory (cgroup v1 or v2), when readable."""
    import docker

    container = docker.from_env().containers.list(
        filters={"label": f"modelport.deployment={name}"})[0]
    for candidate in (Path("/sys/fs/cgroup/cpuacct/docker") / container.id,
                      Path("/sys/fs/cgroup/system.slice") / f"docker-{container.id}.scope"):
        if candidate.is_dir():
            return candidate
    return None


def cpu_split(pids: dict[str, int], replica: Path | None) -> dict[str, float]:
    """CPU seconds so far: each platform process (with its live children: gunicorn's and
    Celery's workers), the replica's container, finished children (the wrk runs), and the whole
    machine (busy time from /proc/stat)."""
    # The supervisor's tree holds every other process: count it alone.
    split = {name: sum(cpu_seconds(pid) for pid in ([root] if name == "supervise"
                                                     else tree(root)))
             for name, root in pids.items()}
    if replica is not None:
        if (replica / "cpuacct.usage").exists():
            split["replica"] = int((replica / "cpuacct.usage").read_text()) / 1e9
        else:
            usage = (replica / "cpu.stat").read_text().split()
            split["replica"] = int(usage[usage.index("usage_usec") + 1]) / 1e6
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    split["wrk"] = children.ru_utime + children.ru_stime
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    split["machine"] = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return split


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc; 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
