"""Benchmark: Modelport's model server against ``mlflow models serve``, side by side.

    .venv/bin/python bench/serving.py            # ~10 s per cell, about 6 minutes
    .venv/bin/python bench/serving.py --quick    # 3 s per cell

Trains the two models from docs/BENCHMARKS (logistic regression on iris, a 100-tree random
forest on breast cancer; both ``mlflow.sklearn.save_model`` with a signature), serves each with
Modelport and with MLflow (same worker count), one after the other, and drives them with
``wrk`` on 127.0.0.1 using 1-row and 100-row ``dataframe_split`` bodies at 1 and 16
connections. Also measures the floor (in-process ``predict(ndarray)``), a bare ASGI hello-world
on the same uvicorn stack, cold start (process start → ``/ping`` 200) and, with several
workers, the Nagle/TCP_NODELAY trap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# bench/harness.py (this script's folder is first on sys.path); re-exported for
# bench/serving_logging.py, which loads this module by path.
from harness import Proc, free_port, http_status, run_wrk, to_ms  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"

HELLO_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
    """
)


@dataclass
class Cell:
    server: str
    model: str
    rows: int
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


# --- models --------------------------------------------------------------------------------


def train_models(root: Path) -> dict[str, tuple[Path, list[str], list[list[float]]]]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    out = {}
    reqs = ["scikit-learn", "numpy"]
    x, y = load_iris(return_X_y=True, as_frame=True)
    lr = LogisticRegression(max_iter=1000).fit(x, y)
    path = root / "iris_lr"
    mlflow.sklearn.save_model(lr, path, signature=infer_signature(x, lr.predict(x)),
                              pip_requirements=reqs)
    out["iris LR"] = (path, list(x.columns), x.to_numpy().tolist())
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    rf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(x, y)
    path = root / "cancer_rf"
    # MLflow 3 saves with skops; tree models need their Tree type trusted explicitly.
    mlflow.sklearn.save_model(rf, path, signature=infer_signature(x, rf.predict(x)),
                              pip_requirements=reqs,
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    out["RF 100 trees"] = (path, list(x.columns), x.to_numpy().tolist())
    return out


def body_for(columns: list[str], data: list[list[float]], rows: int) -> bytes:
    picked = [data[i % len(data)] for i in range(rows)]
    return json.dumps({"dataframe_split": {"columns": columns, "data": picked}}).encode()


def floor_us(model_dir: Path, body: bytes, repeat: int = 300) -> tuple[float, float]:
    """Median µs of in-process predict(ndarray), and of Modelport's whole request pipeline."""
    sys.path.insert(0, str(REPO_ROOT))
    from serving import protocol
    from serving.loader import load
    from serving.schema import validate

    model = load(str(model_dir))
    table, _, _ = protocol.parse_mlflow_json(body)
    matrix = validate(table, model.signature, False).as_matrix()

    def pipeline() -> bytes:
        t, params, _ = protocol.parse_mlflow_json(body)
        batch = validate(t, model.signature, protocol.may_contain_bools(body))
        return protocol.encode_predictions(model.predict(batch, params))

    def median(fn) -> float:
        for _ in range(20):
            fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    # The floor is the library's own predict(), even where the server uses a faster path.
    native = model.native_predict_fn or model.predict_fn
    return median(lambda: native(matrix)), median(pipeline)


# --- processes -----------------------------------------------------------------------------


def start_modelport(model_dir: Path, port: int, workers: int,
                    extra_env: dict[str, str] | None = None) -> Proc:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
    cmd = [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    return Proc(cmd, env)


def start_mlflow(model_dir: Path, port: int, workers: int) -> Proc:
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model_dir),
           "--env-manager", "local", "-w", str(workers), "-p", str(port), "-h", "127.0.0.1"]
    return Proc(cmd, {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})


def start_hello(port: int, workers: int, app_dir: Path, nodelay_fix: bool) -> Proc:
    (app_dir / "hello_asgi.py").write_text(HELLO_APP)
    http = "serving.server:NoDelayHttpToolsProtocol" if nodelay_fix else "httptools"
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "hello_asgi:app",
           "--loop", "uvloop", "--http", http, "--no-access-log", "--log-level", "warning",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return Proc(cmd, {**os.environ, "PYTHONPATH": str(REPO_ROOT)})


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk cell (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s per cell")
    ap.add_argument("--workers", type=int, default=1, help="workers for both servers (default 1)")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow's server")
    ap.add_argument("--no-nagle-check", action="store_true", help="skip the 2-worker latency check")
    ap.add_argument("--json", type=Path, help="also write raw results here")
    ap.add_argument("--model", action="append", metavar="NAME",
                    help="only models whose name contains NAME (repeatable; e.g. RF, iris)")
    args = ap.parse_args()
    duration = 3 if args.quick else args.duration
    # SIGTERM (and SIGINT, ignored in background jobs) → SystemExit, so `finally` stops servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    procs: list[Proc] = []
    try:
        return run(args, duration, tmp, procs)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, duration: int, tmp: Path, procs: list[Proc]) -> int:
    print(f"training models in {tmp} ...", flush=True)
    models = train_models(tmp)
    if args.model:
        models = {k: v for k, v in models.items()
                  if any(m.lower() in k.lower() for m in args.model)}
        if not models:
            raise SystemExit(f"no model matches {args.model}")
    cells: list[Cell] = []
    floors: dict[tuple[str, int], tuple[float, float]] = {}
    cold: dict[tuple[str, str], tuple[float, float]] = {}
    servers = [("Modelport", start_modelport)]
    if not args.no_mlflow:
        servers.append(("MLflow", start_mlflow))

    for model_name, (model_dir, columns, data) in models.items():
        bodies = {rows: body_for(columns, data, rows) for rows in (1, 100)}
        for rows, body in bodies.items():
            floors[(model_name, rows)] = floor_us(model_dir, body)
        for server_name, starter in servers:
            port = free_port()
            proc = starter(model_dir, port, args.workers)
            procs.append(proc)
            started = proc.wait_200(f"http://127.0.0.1:{port}/ping")
            cold[(server_name, model_name)] = (started, proc.rss_mb())
            url = f"http://127.0.0.1:{port}/invocations"
            run_wrk(url, 4, 1, bodies[1], tmp)  # warm-up
            for rows, body in bodies.items():
                for conns in (1, 16):
                    r = run_wrk(url, conns, duration, body, tmp)
                    cells.append(Cell(server_name, model_name, rows, conns, r["rps"], r["p50"],
                                      r["p99"], r["errors"]))
                    print(f"  {server_name:9} {model_name:12} rows={rows:<3} c={conns:<2} "
                          f"{r['rps']:8.0f} req/s p50 {r['p50']:7.2f} ms p99 {r['p99']:7.2f} ms"
                          + (f"  ERRORS {r['errors']}" if r["errors"] else ""), flush=True)
            proc.stop()
            procs.remove(proc)

    hello: dict[str, dict] = {}
    port = free_port()
    proc = start_hello(port, 1, tmp, nodelay_fix=True)
    procs.append(proc)
    proc.wait_200(f"http://127.0.0.1:{port}/")
    for conns in (1, 16):
        hello[f"c{conns}"] = run_wrk(f"http://127.0.0.1:{port}/", conns, duration, None, tmp)
    proc.stop()
    procs.remove(proc)

    nagle: dict[str, dict] = {}
    if not args.no_nagle_check and "iris LR" in models:
        iris_dir, columns, data = models["iris LR"]
        for label, fix in (("uvicorn hello -w 2, stock httptools", False),
                           ("uvicorn hello -w 2, Modelport NoDelay protocol", True)):
            port = free_port()
            proc = start_hello(port, 2, tmp, nodelay_fix=fix)
            procs.append(proc)
            proc.wait_200(f"http://127.0.0.1:{port}/")
            nagle[label] = run_wrk(f"http://127.0.0.1:{port}/", 1, min(duration, 5), None, tmp)
            proc.stop()
            procs.remove(proc)
        port = free_port()
        proc = start_modelport(iris_dir, port, 2)
        procs.append(proc)
        proc.wait_200(f"http://127.0.0.1:{port}/ping")
        nagle["Modelport -w 2, iris 1 row"] = run_wrk(
            f"http://127.0.0.1:{port}/invocations", 1, min(duration, 5),
            body_for(columns, data, 1), tmp,
        )
        proc.stop()
        procs.remove(proc)

    report(args, duration, models, cells, floors, cold, hello, nagle)
    if args.json:
        args.json.write_text(json.dumps({
            "cells": [c.__dict__ for c in cells],
            "floors_us": {f"{k[0]} {k[1]} rows": v for k, v in floors.items()},
            "cold_start": {f"{k[0]} {k[1]}": v for k, v in cold.items()},
            "hello": hello, "nagle": nagle,
        }, indent=2))
    return 0


def report(args, duration, models, cells, floors, cold, hello, nagle) -> None:
    print()
    print(f"# Modelport vs MLflow model server — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.workers} worker(s) each, wrk {duration} s per cell, 127.0.0.1, "
          f"load average at end {os.getloadavg()[0]:.2f}")
    print()
    print("| model | rows | conns | Modelport req/s | p50 ms | p99 ms | MLflow req/s | p50 ms "
          "| p99 ms | req/s ratio | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    by_key = {(c.server, c.model, c.rows, c.conns): c for c in cells}
    for model_name in models:
        for rows in (1, 100):
            for conns in (1, 16):
                mp = by_key.get(("Modelport", model_name, rows, conns))
                ml = by_key.get(("MLflow", model_name, rows, conns))
                if mp is None:
                    continue
                line = f"| {model_name} | {rows} | {conns} | {mp.rps:.0f} | {mp.p50_ms:.2f} | " \
                       f"{mp.p99_ms:.2f} |"
                if ml is not None and ml.rps:
                    line += f" {ml.rps:.0f} | {ml.p50_ms:.2f} | {ml.p99_ms:.2f} | " \
                            f"{mp.rps / ml.rps:.1f}x | {mp.p99_ms / ml.p99_ms:.2f}x |"
                else:
                    line += " - | - | - | - | - |"
                if mp.errors or (ml and ml.errors):
                    line += f" errors: {mp.errors}/{ml.errors if ml else 0}"
                print(line)
    print()
    print("| floor (in-process, median) | rows | predict(ndarray) µs | Modelport parse+validate"
          "+predict+encode µs |")
    print("|---|---|---|---|")
    for (model_name, rows), (pred, pipe) in floors.items():
        print(f"| {model_name} | {rows} | {pred:.0f} | {pipe:.0f} |")
    print()
    h1, h16 = hello["c1"], hello["c16"]
    print(f"bare ASGI hello-world (uvicorn + uvloop + httptools, 1 worker): "
          f"1 conn {h1['rps']:.0f} req/s p50 {h1['p50']:.2f} ms; "
          f"16 conns {h16['rps']:.0f} req/s p50 {h16['p50']:.2f} ms p99 {h16['p99']:.2f} ms")
    for model_name in models:
        mp = by_key.get(("Modelport", model_name, 1, 1))
        if mp:
            target = floors[(model_name, 1)][0] / 1000 + h1["p50"]
            print(f"{model_name}: 1-conn p50 {mp.p50_ms:.2f} ms vs floor+hello {target:.2f} ms "
                  f"(gap {mp.p50_ms - target:+.2f} ms)")
    print()
    print("| cold start (process start → /ping 200) | model | seconds | RSS MB after load |")
    print("|---|---|---|---|")
    for (server_name, model_name), (secs, rss) in cold.items():
        print(f"| {server_name} | {model_name} | {secs:.2f} | {rss:.0f} |")
    if nagle:
        print()
        print("| Nagle check: 1 connection, 2 workers | req/s | p50 ms | p99 ms |")
        print("|---|---|---|---|")
        for label, r in nagle.items():
            print(f"| {label} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
