"""Benchmark: each flavor served by Modelport, by MLflow's own server and by MLServer, side by side.

    .venv/bin/python bench/flavors.py                                   # all flavors, 10 s/cell
    .venv/bin/python bench/flavors.py --flavors xgboost,onnx --quick    # 3 s/cell, ~3 min
    .venv/bin/python bench/flavors.py --servers modelport,mlflow --json out.json

Flavors (``bench/flavor_models.py``: tiny models saved with stock ``mlflow.<flavor>``): sklearn
(the baseline), xgboost, lightgbm, pytorch (an MLP), onnx (a skl2onnx pipeline),
sentence_transformers (all-MiniLM-L6-v2; texts instead of rows). Each model is served, one
server at a time, by

* Modelport: ``python -m serving`` — the replica's process and settings (one worker, the
  replica's thread variables for a 1-CPU limit) in this checkout's venv, which has the same
  packages the model's image would install. A venv, not the image: all three servers then run
  the same way (a host process on 127.0.0.1), so the figures compare servers, not Docker's
  port forwarding; bench/container_cold_start.py measures the container itself. Whatever fast
  paths ``serving/flavors/`` has are used automatically: the bench just runs ``serving``.
* MLflow: ``mlflow models serve --env-manager local -w 1``, its scoring server.
* MLServer 1.7 (``mlserver start``, ``parallel_workers: 0``: one process, like the others) in a
  venv of its own under ~/.cache/modelport-bench/mlserver (created on first use, ~2 min; it sees
  this venv's frameworks through a .pth file and its own pins first): ``mlserver-xgboost`` and
  ``mlserver-lightgbm`` for the trees (their native V2 protocol, one FP32 tensor), and
  ``mlserver-mlflow``'s ``/invocations`` (the same body as the others) for the rest.

``wrk`` drives each at 1 and 16 connections with 1-row and 100-row bodies (100 texts for the
embedder) and the script prints req/s, p50, p99, the server's CPU time per request (process
tree, /proc: robust to other load, unlike req/s) and cold start (process start → first answered
prediction), with Modelport's ratios, the load average and the versions. Every server gets the
same thread variables (``--threads``, default 1: a replica with a 1-CPU limit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from flavor_models import FLAVORS, BenchModel, save
from harness import REPO_ROOT, Proc, cpu_seconds, free_port, run_wrk

VENV_BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelport-bench"
MLSERVER_PINS = ["mlserver>=1.7,<1.8", "mlserver-xgboost>=1.7,<1.8", "mlserver-lightgbm>=1.7,<1.8",
                 "mlserver-mlflow>=1.7,<1.8"]
SERVERS = ("modelport", "mlflow", "mlserver")
WRK_TIMEOUT_S = 30  # 100 texts through a transformer on a busy machine take seconds
LABEL = {"modelport": "Modelport", "mlflow": "MLflow", "mlserver": "MLServer"}


@dataclass
class Cell:
    server: str
    flavor: str
    rows: int
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    errors: int


@dataclass
class Served:
    proc: Proc
    ready_url: str
    url: str
    body: bytes  # 1 row
    body_100: bytes
    protocol: str
    alt: Callable[[int], bytes] | None = None  # another body form, if the first gets a 400


# --- servers -------------------------------------------------------------------------------
def thread_env(threads: int) -> dict[str, str]:
    """What a replica with a ``threads``-CPU limit gets (workers/runtimes/docker_spec.py)."""
    return {var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")}


def start_modelport(model: BenchModel, port: int, env: dict[str, str], _tmp: Path) -> Served:
    env = {**env, "PYTHONPATH": str(REPO_ROOT), "MODELPORT_WORKERS": "1",
           "MODELPORT_MODEL_NAME": model.flavor, "MODELPORT_MODEL_VERSION": "1"}
    cmd = [sys.executable, "-m", "serving", "--model-dir", str(model.path), "--host",
           "127.0.0.1", "--port", str(port), "--workers", "1"]
    base = f"http://127.0.0.1:{port}"
    return Served(Proc(cmd, env), f"{base}/ping", f"{base}/invocations",
                  model.mlflow_body(1), model.mlflow_body(100), "MLflow /invocations",
                  model.alt_body)


def start_mlflow(model: BenchModel, port: int, env: dict[str, str], _tmp: Path) -> Served:
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model.path),
           "--env-manager", "local", "-w", "1", "-p", str(port), "-h", "127.0.0.1"]
    env = {**env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"}
    base = f"http://127.0.0.1:{port}"
    return Served(Proc(cmd, env), f"{base}/ping", f"{base}/invocations",
                  model.mlflow_body(1), model.mlflow_body(100), "MLflow /invocations")


def mlserver_bin() -> Path:
    """MLServer's own venv (its pins apart from ours), made on first use."""
    venv = CACHE / "mlserver"
    exe = venv / "bin" / "mlserver"
    if exe.exists():
        return exe
    print(f"creating MLServer's venv in {venv} (once, about 2 minutes) ...", flush=True)
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    # This venv's frameworks (torch, xgboost, ...) without copying GBs: after MLServer's own.
    ours = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "zz_modelport_frameworks.pth").write_text(ours + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *MLSERVER_PINS],
                   check=True)
    return exe


def start_mlserver(model: BenchModel, port: int, env: dict[str, str], tmp: Path) -> Served:
    folder = tmp / f"mlserver-{model.flavor}"
    folder.mkdir(exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "host": "127.0.0.1", "parallel_workers": 0, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "m", "implementation": model.mlserver_runtime,
        "parameters": {"uri": str(model.mlserver_uri or model.path)}}))
    exe = mlserver_bin()
    env = {**env, "PATH": f"{exe.parent}:{env.get('PATH', '')}"}
    base = f"http://127.0.0.1:{port}"
    if model.v2_body is not None:
        return Served(Proc([str(exe), "start", str(folder)], env), f"{base}/v2/models/m/ready",
                      f"{base}/v2/models/m/infer", model.v2_body(1), model.v2_body(100),
                      "V2 tensor (native runtime)")
    return Served(Proc([str(exe), "start", str(folder)], env), f"{base}/v2/models/m/ready",
                  f"{base}/invocations", model.mlflow_body(1), model.mlflow_body(100),
                  "mlserver-mlflow /invocations")


STARTERS = {"modelport": start_modelport, "mlflow": start_mlflow, "mlserver": start_mlserver}


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def cold_start(served: Served, timeout: float = 240) -> float:
    """Process start → the first answered prediction (readiness polled every 20 ms)."""
    served.proc.wait_200(served.ready_url, timeout)
    status, answer = post(served.url, served.body)
    if status == 400 and served.alt is not None:  # e.g. texts as rows of one value
        served.body, served.body_100 = served.alt(1), served.alt(100)
        served.protocol += " (rows of one value)"
        status, answer = post(served.url, served.body)
    if status != 200:
        raise RuntimeError(f"first prediction: HTTP {status}: {answer[:500]!r}")
    return time.perf_counter() - served.proc.started


def measure(served: Served, body: bytes, conns: int, duration: int, tmp: Path) -> dict:
    before = cpu_seconds(served.proc)
    r = run_wrk(served.url, conns, duration, body, tmp, timeout_s=WRK_TIMEOUT_S)
    time.sleep(0.2)
    served_requests = r["rps"] * duration
    r["cpu_us"] = (cpu_seconds(served.proc) - before) / served_requests * 1e6 \
        if served_requests else float("nan")
    return r


# --- main ----------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flavors", default=",".join(FLAVORS),
                    help=f"comma-separated, of {', '.join(FLAVORS)} (default: all)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="default: all three")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk cell (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s per cell")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/OPENBLAS/MKL threads for every server (default 1: a 1-CPU replica)")
    ap.add_argument("--json", type=Path, help="also write raw results here")
    args = ap.parse_args()
    flavors = [f.strip() for f in args.flavors.split(",") if f.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [f for f in flavors if f not in FLAVORS] + [s for s in servers if s not in SERVERS]
    if bad:
        raise SystemExit(f"unknown flavor or server: {', '.join(bad)}")
    duration = 3 if args.quick else args.duration
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="modelport-flavors-"))
    procs: list[Proc] = []
    started = time.perf_counter()
    try:
        cells, cold = run(flavors, servers, duration, args.threads, tmp, procs)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(flavors, servers, duration, args.threads, cells, cold,
           time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps({"cells": [asdict(c) for c in cells],
                                         "cold_start": cold, "versions": versions()}, indent=2))
    return 0


def run(flavors: list[str], servers: list[str], duration: int, threads: int, tmp: Path,
        procs: list[Proc]) -> tuple[list[Cell], dict[str, dict]]:
    env = {**os.environ, **thread_env(threads)}
    cells: list[Cell] = []
    cold: dict[str, dict] = {}
    for flavor in flavors:
        print(f"saving the {flavor} model ...", flush=True)
        model = save(flavor, tmp / "models")
        for server in servers:
            served = STARTERS[server](model, free_port(), env, tmp)
            procs.append(served.proc)
            try:
                seconds = cold_start(served)
            except RuntimeError as exc:
                print(f"  {LABEL[server]:9} {flavor}: FAILED: {exc}", flush=True)
                served.proc.stop()
                procs.remove(served.proc)
                continue
            cold[f"{server} {flavor}"] = {"seconds": seconds, "rss_mb": served.proc.rss_mb(),
                                          "protocol": served.protocol}
            run_wrk(served.url, 4, 1, served.body, tmp)  # warm-up
            for rows, body in ((1, served.body), (100, served.body_100)):
                for conns in (1, 16):
                    r = measure(served, body, conns, duration, tmp)
                    cells.append(Cell(server, flavor, rows, conns, r["rps"], r["p50"], r["p99"],
                                      r["cpu_us"], r["errors"]))
                    print(f"  {LABEL[server]:9} {flavor:21} rows={rows:<3} c={conns:<2} "
                          f"{r['rps']:8.0f} req/s p50 {r['p50']:7.2f} ms p99 {r['p99']:7.2f} ms "
                          f"CPU {r['cpu_us']:8.0f} µs/req"
                          + (f"  ERRORS {r['errors']}" if r["errors"] else ""), flush=True)
            served.proc.stop()
            procs.remove(served.proc)
    return cells, cold


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("mlflow", "scikit-learn", "xgboost-cpu", "lightgbm", "torch", "onnxruntime",
                 "sentence-transformers", "uvicorn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    mlserver = CACHE / "mlserver" / "bin" / "python"
    if mlserver.exists():
        out["mlserver"] = subprocess.run(
            [str(mlserver), "-c", "import mlserver; print(mlserver.__version__)"],
            capture_output=True, text=True, check=False).stdout.strip()
    out["modelport"] = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short",
                                       "HEAD"], capture_output=True, text=True,
                                      check=False).stdout.strip()
    return out


def _ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.1f}x" if theirs else "-"


def report(flavors: list[str], servers: list[str], duration: int, threads: int,
           cells: list[Cell], cold: dict[str, dict], took: float) -> None:
    by = {(c.server, c.flavor, c.rows, c.conns): c for c in cells}
    others = [s for s in servers if s != "modelport"]
    print()
    print(f"# Flavors: Modelport vs {' and '.join(LABEL[s] for s in others) or '-'} — "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} CPUs, load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; 1 worker each, {threads} thread(s),"
          f" wrk {duration} s per cell, 127.0.0.1; run took {took / 60:.1f} min")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print()
    head = "| flavor | rows | conns |" + "".join(
        f" {LABEL[s]} req/s | p50 ms | p99 ms | CPU µs/req |" for s in servers)
    head += "".join(f" req/s x{LABEL[s]} | CPU ÷{LABEL[s]} |" for s in others)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for flavor in flavors:
        for rows in (1, 100):
            for conns in (1, 16):
                line = f"| {flavor} | {rows} | {conns} |"
                for s in servers:
                    c = by.get((s, flavor, rows, conns))
                    line += (f" {c.rps:.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | {c.cpu_us:.0f} |"
                             if c else " - | - | - | - |")
                mp = by.get(("modelport", flavor, rows, conns))
                for s in others:
                    c = by.get((s, flavor, rows, conns))
                    line += (f" {_ratio(mp.rps, c.rps)} | {_ratio(c.cpu_us, mp.cpu_us)} |"
                             if mp and c else " - | - |")
                errors = {s: by[(s, flavor, rows, conns)].errors for s in servers
                          if (s, flavor, rows, conns) in by and by[(s, flavor, rows, conns)].errors}
                print(line + (f" errors {errors}" if errors else ""))
    print()
    print("CPU ÷X: X's CPU time per request divided by Modelport's (above 1: Modelport uses less).")
    print()
    print("| cold start (process start → first prediction) | flavor | seconds | RSS MB "
          "| protocol |")
    print("|---|---|---|---|---|")
    for key, v in cold.items():
        server, flavor = key.split(" ", 1)
        print(f"| {LABEL[server]} | {flavor} | {v['seconds']:.2f} | {v['rss_mb']:.0f} | "
              f"{v['protocol']} |")


if __name__ == "__main__":
    sys.exit(main())
