"""prometheus-client's multiprocess files, added up across processes and containers.

Every process that counts writes its values to files in its ``PROMETHEUS_MULTIPROC_DIR``. One
folder serves every process of one pid namespace (``make run``, one container); containers that
share a volume each get a subfolder of one root (their pids may coincide, and a file is named by
pid). ``FilesCollector(root)`` reads the root and one level of subfolders. Django-free: the web
server's ``/metrics`` (monitoring.prom) and a Celery worker's own (config.worker_metrics) use it.

An exited process's files must stay (its counts are part of every total from then on), but each
one costs a scrape time: 1,000 of them, left by recycled gunicorn workers, made a scrape take
0.8 s (bench/metrics.py). ``compact`` folds a dead process's counters and histograms into one
``*_archive.db`` per folder, under an exclusive lock that every scrape takes shared, so a
scrape never sees a count twice or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LOCK = ".lock"
ARCHIVE = "archive"  # in place of a pid: counter_archive.db, histogram_archive.db
SUMMED = ("counter", "histogram")  # the types whose values add up across processes


@contextlib.contextmanager
def _locked(folders: Iterable[Path], operation: int) -> Iterator[None]:
    fds = []
    try:
        for folder in sorted(set(folders)):
            fd = os.open(folder / LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
            fds.append(fd)
            fcntl.flock(fd, operation)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


class FilesCollector:
    """The counters of every process whose files are in ``root`` or a folder just below it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> list[str]:
        return sorted(str(p) for pattern in ("*.db", "*/*.db") for p in self.root.glob(pattern))

    def collect(self) -> Iterable[Metric]:
        if not self.root.is_dir():
            return []
        folders = [self.root, *(p for p in self.root.iterdir() if p.is_dir())]
        with _locked(folders, fcntl.LOCK_SH):
            return MultiProcessCollector.merge(self.files(), accumulate=True)


def _write(path: Path, metrics: Iterable[Metric]) -> None:
    values = MmapedDict(str(path))
    try:
        for metric in metrics:
            for sample in metric.samples:
                key = mmap_key(metric.name, sample.name, list(sample.labels),
                               list(sample.labels.values()), metric.documentation)
                values.write_value(key, sample.value, 0.0)
    finally:
        values.close()


def compact(pid: int | str, folder: Path | str | None = None) -> None:
    """Process ``pid`` has exited: its live gauges go (``mark_process_dead``), its counters
    and histograms join the folder's archive, and its own files are removed."""
    where = str(folder or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or "")
    if not where or not os.path.isdir(where):  # not Path(""): that is the working directory
        return
    directory = Path(where)
    mark_process_dead(pid, str(directory))
    with _locked([directory], fcntl.LOCK_EX):
        for kind in SUMMED:
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = directory / f"{kind}_{ARCHIVE}.db"
            merged = MultiProcessCollector.merge(
                [str(p) for p in (archive, dead) if p.exists()], accumulate=False)
            staging = directory / f".{kind}_{ARCHIVE}.tmp"  # not *.db: no scrape reads it
            staging.unlink(missing_ok=True)
            _write(staging, merged)
            os.replace(staging, archive)
            dead.unlink()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def compact_dead(folder: Path | str) -> int:
    """``compact`` every process of ``folder`` that no longer runs; how many. Only for a folder
    written by processes of this pid namespace (``make run``'s supervisor)."""
    directory = Path(folder)
    pids = {int(suffix) for p in directory.glob("*.db")
            if (suffix := p.stem.rsplit("_", 1)[-1]).isdigit()}
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        compact(pid, directory)
    return len(dead)
