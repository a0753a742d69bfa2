"""/metrics: the cost of adding up every process's counters (prometheus-client multiprocess mode).

Usage: DATABASE_URL=postgres://user@127.0.0.1:5432/postgres .venv/bin/python bench/metrics.py
It creates (or reuses) a scratch database ``modelport_bench_metrics`` with 20 deployments, then
times, side by side in one run (p50 / p95 of ``--repeat`` scrapes, in process, no network):

- anchor: one process's own registry and the database gauges (what ``/metrics`` served before
  multiprocess mode — fast, and wrong as soon as there are two processes);
- ``prom.exposition()`` over a multiprocess folder holding the files of N processes, each with
  the platform's counters for every deployment (ingest by deployment and reason, batches,
  the batch-time histogram, rollups, notifications, gateway errors). ``make run`` has about 8
  processes that count; every restart or recycled gunicorn worker (``max_requests``) leaves
  its files, so 100 and 1,000 stand for a long-running installation;
- the same folder once all processes but one have exited and been compacted into the
  folder's archive (``core.prom_files.compact``: gunicorn's ``child_exit``, Celery's pool exit
  and the supervisor call it), with the cost of one compaction. The body must not change;
- ``/metrics/replicas`` with 10 and 50 ready replicas answering a model server's body on their
  socket files (stand-ins in this process: the cost on the platform's side).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from scratch import percentile, setup_django

DEPLOYMENTS = 20
REASONS = ("timestamp", "status", "not_an_object")


def _write_process_files(folder: Path, pid: int) -> None:
    """The files one process leaves: what prometheus-client's MultiProcessValue writes."""
    from prometheus_client.mmap_dict import MmapedDict
    from prometheus_client.mmap_dict import mmap_key as _key

    def mmap_key(metric: str, name: str, labels: dict[str, str]) -> str:
        return _key(metric, name, tuple(labels), tuple(labels.values()), "")

    counters = MmapedDict(str(folder / f"counter_{pid}.db"))
    histograms = MmapedDict(str(folder / f"histogram_{pid}.db"))
    now = time.time()
    for d in range(DEPLOYMENTS):
        name = f"bench-{d}"
        for metric, labels in (
                ("modelport_ingest_records", {"deployment": name}),
                ("modelport_ingest_sampled_out_records", {"deployment": name}),
                *(("modelport_ingest_rejected_records", {"deployment": name, "reason": r})
                  for r in REASONS),
                ("modelport_gateway_errors", {"deployment": name, "code": "503"})):
            counters.write_value(mmap_key(metric, metric + "_total", labels),
                                 pid + d, now)
    for outcome in ("accepted", "malformed", "too_large", "unauthorized"):
        labels = {"outcome": outcome}
        counters.write_value(mmap_key("modelport_ingest_batches",
                                      "modelport_ingest_batches_total", labels), 1.0, now)
    counters.write_value(mmap_key("modelport_rollup_records", "modelport_rollup_records_total",
                                  {}), 1.0, now)
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
               "+Inf"):
        labels = {"le": le}
        histograms.write_value(mmap_key("modelport_ingest_batch_seconds",
                                        "modelport_ingest_batch_seconds_bucket", labels), 1.0, now)
    histograms.write_value(mmap_key("modelport_ingest_batch_seconds",
                                    "modelport_ingest_batch_seconds_sum", {}), 0.5, now)
    counters.close()
    histograms.close()


def _time(fn, repeat: int) -> tuple[float, float, int]:
    fn()  # warm: connections, query plans
    timings, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = len(fn())
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), percentile(timings, 0.95), size


def _server_body() -> bytes:
    """A model server's /metrics after some traffic (its real families, this process)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter("modelport_requests", "x", ["endpoint", "status"], registry=registry)
    latency = Histogram("modelport_request_duration_seconds", "x", ["endpoint"],
                        registry=registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
    for status in ("200", "400", "500"):
        requests.labels("invocations", status).inc(100)
    latency.labels("invocations").observe(0.004)
    for name in ("logs_shipped", "logs_dropped", "logs_rejected", "rows"):
        Counter(f"modelport_prediction_{name}", "x", registry=registry).inc(10)
    return generate_latest(registry)


def _replica_rows(args, model, team) -> list[tuple]:
    """/metrics/replicas with N ready replicas on socket files (stand-ins in this process
    answering a model server's body), timed like the rest."""
    import threading
    from http.server import BaseHTTPRequestHandler

    from deployments.models import Deployment, Replica
    from monitoring import replica_metrics
    from serving.sockets import unix_url
    from tests.deployments.conftest import UnixHTTPServer

    body = _server_body()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

        def address_string(self) -> str:
            return "platform"

    rows: list[tuple] = []
    for n in (int(v) for v in args.replicas.split(",")):
        Replica.objects.filter(runtime_id__startswith="bench-").delete()
        with tempfile.TemporaryDirectory() as folder:
            servers = []
            for i in range(n):
                deployment = Deployment.objects.get(name=f"bench-{i % DEPLOYMENTS}")
                server = UnixHTTPServer(f"{folder}/{i}.sock", Handler)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                servers.append(server)
                Replica.objects.create(deployment=deployment, runtime_id=f"bench-{i}",
                                       revision=1, index=i // DEPLOYMENTS, status="running",
                                       ready=True, url=unix_url(f"{folder}/{i}.sock"))
            rows.append((f"/metrics/replicas, {n} replicas", *_time(
                replica_metrics.exposition, max(5, args.repeat // 3))))
            for server in servers:
                server.shutdown()
                server.server_close()
        Replica.objects.filter(runtime_id__startswith="bench-").delete()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="8,100,1000")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--replicas", default="10,50")
    args = parser.parse_args()
    setup_django("modelport_bench_metrics")
    from django.conf import settings
    from prometheus_client import generate_latest

    from core.prom_files import compact
    from deployments.models import Deployment
    from monitoring import prom
    from registry.models import RegisteredModel
    from teams.models import Team

    team, _ = Team.objects.get_or_create(slug="bench-metrics", defaults={"name": "Bench"})
    model, _ = RegisteredModel.objects.get_or_create(name="bench-metrics", team=team)
    for d in range(DEPLOYMENTS):
        Deployment.objects.get_or_create(name=f"bench-{d}",
                                         defaults={"team": team, "model": model})
    for d in range(DEPLOYMENTS):  # the anchor's one process counts every deployment too
        prom.INGESTED.labels(f"bench-{d}").inc(d)

    rows = [("anchor: this process's registry", *_time(
        lambda: generate_latest(prom.REGISTRY), args.repeat))]
    for n in (int(v) for v in args.processes.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            for pid in range(1, n + 1):
                _write_process_files(Path(folder), pid)
            settings.MODELPORT_PROMETHEUS_DIR = folder
            rows.append((f"multiprocess, {n} processes' files", *_time(prom.exposition,
                                                                       args.repeat)))
            before = prom.exposition()
            started = time.perf_counter()
            for pid in range(1, n):  # all but one have exited: compacted as they ended
                compact(pid, folder)
            took = (time.perf_counter() - started) * 1000 / max(1, n - 1)
            assert prom.exposition() == before, "compacting changed a value"
            rows.append((f"  {n - 1} of them exited, compacted", *_time(prom.exposition,
                                                                         args.repeat)))
            rows.append(("  compact one exited process (ms)", took, took, 0))
    rows += _replica_rows(args, model, team)
    print(f"/metrics body, {DEPLOYMENTS} deployments, {args.repeat} scrapes each "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"{'':40} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>8}")
    for label, p50, p95, size in rows:
        print(f"{label:40} {p50:8.1f} {p95:8.1f} {size:8d}")


if __name__ == "__main__":
    main()
