"""prometheus-client's multiprocess files, added up across processes and containers.

Every process that counts writes its values to files in its ``PROMETHEUS_MULTIPROC_DIR``. One
folder serves every process of one pid namespace (``make run``, one container); containers that
share a volume each get a subfolder of one root (their pids may coincide, and a file is named by
pid). ``FilesCollector(root)`` reads the root and one level of subfolders. Django-free: the web
server's ``/metrics`` (monitoring.prom) and a Celery worker's own (config.worker_metrics) use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector


class FilesCollector:
    """The counters of every process whose files are in ``root`` or a folder just below it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> list[str]:
        return sorted(str(p) for pattern in ("*.db", "*/*.db") for p in self.root.glob(pattern))

    def collect(self) -> Iterable[Metric]:
        return MultiProcessCollector.merge(self.files(), accumulate=True)
