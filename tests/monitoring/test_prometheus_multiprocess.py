"""prometheus-client's multiprocess mode as the platform sets it up: the supervisor empties the
folder when the platform starts, and ``/metrics`` adds up the folder and one level of
subfolders (compose and Kubernetes give each container its own). The values are written by
real processes with the real library; the live platform is in test_prometheus_live.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from config.supervise import metrics_dir
from core.prom_files import FilesCollector, compact, compact_dead

COUNT = """
from prometheus_client import Counter, Histogram
Counter("modelport_rollup_records", "x").inc({n})
Counter("modelport_ingest_records", "x", ["deployment"]).labels("iris").inc({n})
Histogram("modelport_ingest_batch_seconds", "x", buckets=(0.1, 1)).observe({n} / 10)
"""


def _count_in_a_process(directory: Path, n: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", COUNT.format(n=n)], env=env, check=True, timeout=60)


def test_the_supervisor_empties_the_folder(tmp_path):
    folder = tmp_path / "run" / "prometheus"
    folder.mkdir(parents=True)
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "web").mkdir()
    assert metrics_dir(folder) == folder.resolve()
    assert list(folder.iterdir()) == []
    assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.django_db
def test_metrics_adds_up_every_process_and_container_folder(tmp_path, settings):
    root = tmp_path / "prometheus"
    (root / "worker").mkdir(parents=True)
    _count_in_a_process(root, 3)  # e.g. `make run`: every process in the one folder
    _count_in_a_process(root / "worker", 4)  # a container with a folder of its own
    _count_in_a_process(root / "worker", 5)
    settings.MODELPORT_PROMETHEUS_DIR = str(root)
    settings.MODELPORT_METRICS_TOKEN = "prom-secret"
    body = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer prom-secret").content.decode()
    assert "modelport_rollup_records_total 12.0" in body.splitlines()
    assert "modelport_deployments" in body  # the database gauges are still there


@pytest.mark.django_db
def test_without_the_folder_metrics_serves_this_process(settings):
    from monitoring import prom

    settings.MODELPORT_PROMETHEUS_DIR = ""
    settings.MODELPORT_METRICS_TOKEN = "prom-secret"
    before = prom.REGISTRY.get_sample_value("modelport_rollup_records_total") or 0.0
    prom.ROLLED_UP.inc(2)
    body = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer prom-secret").content.decode()
    assert f"modelport_rollup_records_total {before + 2}" in body.splitlines()


def _values(root: Path) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in FilesCollector(root).collect() for s in metric.samples}


def test_exited_processes_are_compacted_without_changing_a_value(tmp_path):
    """Files of exited processes (recycled gunicorn workers, restarted Celery pool processes)
    join one archive per folder: every scrape reads fewer files, and no total moves."""
    for n in (1, 2, 3, 4):
        _count_in_a_process(tmp_path, n)
    before = _values(tmp_path)
    assert before[("modelport_rollup_records_total", ())] == 10
    assert before[("modelport_ingest_batch_seconds_bucket", (("le", "0.1"),))] == 1
    assert before[("modelport_ingest_batch_seconds_bucket", (("le", "1.0"),))] == 4
    assert len(list(tmp_path.glob("*.db"))) == 8  # a counter and a histogram file each

    assert compact_dead(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db",
                                                              "histogram_archive.db"]
    assert _values(tmp_path) == before
    _count_in_a_process(tmp_path, 5)  # a later process, then compacted too
    assert compact_dead(tmp_path) == 1
    after = _values(tmp_path)
    assert after[("modelport_rollup_records_total", ())] == 15
    assert after[("modelport_ingest_records_total", (("deployment", "iris"),))] == 15
    assert after[("modelport_ingest_batch_seconds_count", ())] == 5


def test_compact_without_a_folder_touches_nothing(tmp_path, monkeypatch):
    """A Celery worker started without multiprocess mode exits: nothing is written where it
    runs (``Path("")`` would have been the working directory)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (cwd / "counter_4242.db").write_bytes(b"not a metrics file")
    compact(4242)
    assert sorted(p.name for p in cwd.iterdir()) == ["counter_4242.db"]
