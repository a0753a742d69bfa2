"""Benchmark: the model server with prediction logging on vs off (target: within 10 %).

    .venv/bin/python bench/serving_logging.py            # iris LR, 10 s per cell, 3 repeats
    .venv/bin/python bench/serving_logging.py --quick    # 3 s per cell, 2 repeats
    .venv/bin/python bench/serving_logging.py --all      # also the 100-tree random forest
    .venv/bin/python bench/serving_logging.py --ingest-token mpi_… \\
        --ingest-url http://127.0.0.1:8000/api/v1/ingest/predictions/  # a real Modelport

Starts two model servers on the same model (same worker count): one without
``MODELPORT_INGEST_URL`` (logging off), one shipping every record — batches of
``MODELPORT_SHIP_BATCH_SIZE`` (1000, what deployments get) once a second — to an ingest endpoint.
By default that endpoint is a tiny local sink (uvicorn, counts the records, answers 202), so the
figures are the model server's own cost of logging, not the platform's ingest work competing for
the same two cores. ``wrk`` (Lua bodies, helpers from ``bench/serving.py``) drives one server
at a time, alternating off/on per repeat so machine load hits both alike; each cell's figure is
the median over the repeats. Besides req/s and latency, each run records the server's own CPU
time per request (``/proc``, process and children): on a busy machine req/s swings by tens of
per cent between runs, while CPU per request counts only the server's work, so it shows the cost
of logging even when other load drowns the throughput figures. At the end the "on" server's
``/metrics`` and the sink's count prove the records were shipped.

Last, the same comparison in process (``--in-process-requests``, default 2000 per run): the
model server's ASGI app is called directly, without sockets, once with logging off and once
with it on (shipping for real to the same endpoint from its thread), alternating, and the
process's CPU time per request is compared. This isolates exactly what logging adds to a
request and is the figure to trust when the machine is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

# bench/serving.py's helpers (loaded by path: the name "serving" is the model server package).
_spec = importlib.util.spec_from_file_location("bench_serving",
                                               Path(__file__).with_name("serving.py"))
assert _spec is not None and _spec.loader is not None
bench_serving = sys.modules["bench_serving"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_serving)
REPO_ROOT = bench_serving.REPO_ROOT
Proc = bench_serving.Proc
body_for, free_port, run_wrk = bench_serving.body_for, bench_serving.free_port, \
    bench_serving.run_wrk
start_modelport, train_models = bench_serving.start_modelport, bench_serving.train_models
cpu_seconds = importlib.import_module("harness").cpu_seconds

SINK_APP = textwrap.dedent(
    """
    import os

    RECORDS = 0


    async def app(scope, receive, send):
        global RECORDS
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST":
            RECORDS += body.count(b'"request_id"')
        answer = str(RECORDS).encode()
        await send({"type": "http.response.start", "status": 202 if body else 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})
    """
)
SHIPPED = re.compile(r"^modelport_prediction_logs_shipped_total\s+([\d.e+]+)", re.M)
DROPPED = re.compile(r"^modelport_prediction_logs_dropped_total\s+([\d.e+]+)", re.M)


SETTLE_S = 1.5  # > the ship interval: the last second's records are shipped before CPU is read


def measure(proc: Proc, url: str, conns: int, duration: int, body: bytes, tmp: Path) -> dict:
    """One wrk run, plus the server's CPU time per request (robust to other load on the
    machine, unlike req/s: it counts only this process's work). CPU is read ``SETTLE_S`` after
    the run (either mode), so the shipping of the run's last records counts too."""
    before = cpu_seconds(proc)
    r = run_wrk(url, conns, duration, body, tmp)
    time.sleep(SETTLE_S)
    used = cpu_seconds(proc) - before
    served = r["rps"] * duration
    r["cpu_us"] = used / served * 1e6 if served else float("nan")
    return r


def start_sink(port: int, app_dir: Path) -> Proc:
    (app_dir / "ingest_sink.py").write_text(SINK_APP)
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "ingest_sink:app",
           "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
           "warning", "--host", "127.0.0.1", "--port", str(port)]
    return Proc(cmd, {**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def counter(pattern: re.Pattern[str], text: str) -> float:
    m = pattern.search(text)
    return float(m.group(1)) if m else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--repeats", type=int, default=3, help="off/on pairs per cell (default 3)")
    ap.add_argument("--quick", action="store_true", help="3 s per run, 2 repeats")
    ap.add_argument("--all", action="store_true", help="also the 100-tree random forest")
    ap.add_argument("--workers", type=int, default=1, help="workers per server (default 1)")
    ap.add_argument("--ingest-url", help="ship to this ingest endpoint instead of a local sink")
    ap.add_argument("--ingest-token", default="", help="its ingest token (mpi_…)")
    ap.add_argument("--in-process-requests", type=int, default=2000,
                    help="requests per in-process run (0: skip that part)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.repeats = 3, 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-logging-"))
    procs: list[Proc] = []
    try:
        return run(args, tmp, procs)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    print(f"training models in {tmp} ...", flush=True)
    models = train_models(tmp)
    if not args.all:
        models = {"iris LR": models["iris LR"]}
    sink_url = None
    ingest_url = args.ingest_url
    if not ingest_url:
        port = free_port()
        sink = start_sink(port, tmp)
        procs.append(sink)
        sink.wait_200(f"http://127.0.0.1:{port}/")
        sink_url = f"http://127.0.0.1:{port}/"
        ingest_url = f"{sink_url}api/v1/ingest/predictions/"
    logging_env = {"MODELPORT_INGEST_URL": ingest_url, "MODELPORT_INGEST_TOKEN": args.ingest_token,
                   "MODELPORT_SHIP_BATCH_SIZE": "1000", "MODELPORT_DEPLOYMENT": "bench",
                   "MODELPORT_REVISION": "1", "MODELPORT_REPLICA": "bench-r1-0"}
    # Both servers must run predictions the same way: left on "auto", each decides from a timed
    # probe at load, which on a busy machine can put one of them on a thread (+~100 µs/request).
    same = {"MODELPORT_PREDICT_THREAD": os.environ.get("MODELPORT_PREDICT_THREAD", "0")}
    rows_out = []
    shipped_total = dropped_total = served_on = 0.0
    for model_name, (model_dir, columns, data) in models.items():
        servers = {}
        for mode, extra in (("off", same), ("on", {**same, **logging_env})):
            port = free_port()
            proc = start_modelport(model_dir, port, args.workers, extra)
            procs.append(proc)
            proc.wait_200(f"http://127.0.0.1:{port}/ping")
            servers[mode] = (proc, f"http://127.0.0.1:{port}")
            proc.log.seek(0)
            loaded = [line for line in proc.log.read().decode(errors="replace").splitlines()
                      if "model loaded" in line]
            how = loaded[-1].split("model loaded", 1)[1].strip() if loaded else "?"
            print(f"  logging {mode}: model loaded {how}", flush=True)
        for mode in servers:
            run_wrk(f"{servers[mode][1]}/invocations", 4, 1, body_for(columns, data, 1), tmp)
        for rows in (1, 100):
            body = body_for(columns, data, rows)
            for conns in (1, 16):
                runs: dict[str, list[dict]] = {"off": [], "on": []}
                for rep in range(args.repeats):
                    for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                        proc, url = servers[mode]
                        r = measure(proc, f"{url}/invocations", conns, args.duration, body, tmp)
                        runs[mode].append(r)
                        if mode == "on":
                            served_on += r["rps"] * args.duration
                med = {mode: {k: statistics.median(r[k] for r in rs)
                              for k in ("rps", "p50", "p99", "cpu_us")}
                       for mode, rs in runs.items()}
                errors = sum(r["errors"] for rs in runs.values() for r in rs)
                rows_out.append((model_name, rows, conns, med["off"], med["on"], errors))
                off, on = med["off"], med["on"]
                print(f"  {model_name:12} rows={rows:<3} c={conns:<2} off {off['rps']:7.0f} req/s "
                      f"p50 {off['p50']:6.2f} p99 {off['p99']:6.2f} ms | on {on['rps']:7.0f} "
                      f"req/s p50 {on['p50']:6.2f} p99 {on['p99']:6.2f} ms | req/s on/off "
                      f"{on['rps'] / off['rps']:.3f} | CPU µs/request off {off['cpu_us']:.0f} "
                      f"on {on['cpu_us']:.0f}" + (f"  ERRORS {errors}" if errors else ""),
                      flush=True)
        # The shipper sends once a second: let the last batch go before reading the counters.
        time.sleep(2.5)
        metrics_text = fetch(f"{servers['on'][1]}/metrics")
        shipped_total += counter(SHIPPED, metrics_text)
        dropped_total += counter(DROPPED, metrics_text)
        for proc, _ in servers.values():
            proc.stop()
            procs.remove(proc)
    in_process = []
    if args.in_process_requests:
        in_process = asyncio.run(in_process_cost(models, logging_env, args))
    sink_count = int(fetch(sink_url)) if sink_url else None
    report(args, rows_out, shipped_total, dropped_total, served_on, sink_count, ingest_url)
    if in_process:
        print()
        print("| in process: model | rows | CPU µs/request off | on | logging adds µs | on/off |")
        print("|---|---|---|---|---|---|")
        for model_name, rows, off, on in in_process:
            print(f"| {model_name} | {rows} | {off:.0f} | {on:.0f} | {on - off:+.1f} | "
                  f"{on / off:.3f} |")
    return 0


async def in_process_cost(models: dict, logging_env: dict[str, str],
                          args: argparse.Namespace) -> list[tuple]:
    """CPU µs per request of the model server's ASGI app called directly, logging off vs on
    (the median of 2 x ``repeats`` alternating runs; shipping really POSTs, from its thread, and
    each "on" run ends by flushing its records, so all of their logging work is counted)."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("MODELPORT_PREDICT_THREAD", "0")
    from serving.app import ModelServer
    from serving.config import Settings

    out = []
    for model_name, (model_dir, columns, data) in models.items():
        apps = {}
        for mode in ("off", "on"):
            settings = Settings(
                model_dir=str(model_dir),
                ingest_url=logging_env["MODELPORT_INGEST_URL"] if mode == "on" else "",
                ingest_token=logging_env["MODELPORT_INGEST_TOKEN"],
                deployment="bench", revision="1", replica="bench-r1-0",
                ship_batch_size=int(logging_env["MODELPORT_SHIP_BATCH_SIZE"]))
            apps[mode] = ModelServer(settings, load_in_background=False)
            await apps[mode].startup()
        for rows in (1, 100):
            body = body_for(columns, data, rows)
            scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]}

            async def receive(body: bytes = body) -> dict:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict) -> None:
                return None

            cpu: dict[str, list[float]] = {"off": [], "on": []}
            for rep in range(max(3, 2 * args.repeats)):
                for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                    app = apps[mode]
                    started = time.process_time()
                    for _ in range(args.in_process_requests):
                        await app(scope, receive, send)
                    if app.shipper is not None:  # the run's records encoded and POSTed count
                        await app.shipper.flush()
                    cpu[mode].append((time.process_time() - started)
                                     / args.in_process_requests * 1e6)
            off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
            print(f"  in process {model_name:12} rows={rows:<3} CPU µs/request off {off:.0f} "
                  f"on {on:.0f}", flush=True)
            out.append((model_name, rows, off, on))
        for app in apps.values():
            await app.shutdown()
    return out


def report(args, rows_out, shipped, dropped, served_on, sink_count, ingest_url) -> None:
    print()
    print(f"# Model server, prediction logging off vs on — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.workers} worker(s), wrk {args.duration} s x {args.repeats} per mode and cell "
          f"(median), load average at end {os.getloadavg()[0]:.2f}; shipping to "
          f"{'a local sink' if sink_count is not None else ingest_url}")
    print()
    print("| model | rows | conns | off req/s | off p50 ms | off p99 ms | on req/s | on p50 ms "
          "| on p99 ms | req/s on/off | p99 on/off | server CPU µs/req off | on | on/off |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name, rows, conns, off, on, errors in rows_out:
        print(f"| {model_name} | {rows} | {conns} | {off['rps']:.0f} | {off['p50']:.2f} | "
              f"{off['p99']:.2f} | {on['rps']:.0f} | {on['p50']:.2f} | {on['p99']:.2f} | "
              f"{on['rps'] / off['rps']:.3f} | {on['p99'] / off['p99']:.2f} | "
              f"{off['cpu_us']:.0f} | {on['cpu_us']:.0f} | {on['cpu_us'] / off['cpu_us']:.3f} |"
              + (f" errors: {errors}" if errors else ""))
    print()
    print(f"records shipped by the logging server: {shipped:.0f} (≈{served_on:.0f} requests "
          f"served with logging on, incl. none of the warm-up), dropped: {dropped:.0f}"
          + (f"; the sink counted {sink_count}" if sink_count is not None else ""))
    worst = min(on["rps"] / off["rps"] for _, _, _, off, on, _ in rows_out)
    cpu = max(on["cpu_us"] / off["cpu_us"] for _, _, _, off, on, _ in rows_out)
    print(f"worst req/s ratio on/off: {worst:.3f} (target ≥ 0.90); worst server CPU per request "
          f"on/off: {cpu:.3f} (≤ 1.10 means logging costs at most 10 %)")


if __name__ == "__main__":
    sys.exit(main())
