"""Benchmark: scale to zero and back, and scaling up under a burst, on the real platform.

    .venv/bin/python bench/autoscale.py                # 10 wakes per model, a 40 s burst
    .venv/bin/python bench/autoscale.py --wakes 0      # the burst only

Runs the platform as the Procfile does — the edge (``python -m config.edge``, which holds
requests while a deployment wakes), web under gunicorn, the worker (the wake task and the
scaler's beat task), the reconciler and beat — against ``DATABASE_URL`` / ``REDIS_URL`` from the
environment (or SQLite and the embedded broker) with a temporary data dir, on the real Docker
Engine, replicas without a network (the default). Warm image: the serving image is built (or
found) before any timing, and a warm-up deployment runs once.

1. **Wake from zero**, for an iris LogisticRegression and a 100-tree random forest (breast
   cancer, as bench/batch.py makes it), ``--cpu`` per replica: an autoscaled deployment
   (``min_replicas`` 1, ``idle_to_zero_after_s`` 10, the shortest allowed) is left idle
   until the scaler takes it to zero (status idle, its container gone); then one request is
   timed from sending to its answer (200, a prediction) through the edge. ``--wakes`` times
   each: p50 and p95 against the goal p50 < 2 s, p95 < 3 s. The deployment's events split
   each wake (woken → image checked → replica started → ready).
2. **A burst** (``wrk``, ``--connections`` connections for ``--burst-seconds``, through the
   edge) on the iris deployment with a small concurrency target (1 request in flight per
   replica, max 3): the time from the burst's start (and from the scaler's decision) until the
   2nd and 3rd replicas are ready, and the share of requests answered in over 1 s during that
   1 → 3 scale-up (from wrk's latency distribution; requests that timed out or failed are
   counted apart).

Prints the figures side by side with the load average (2 cores shared here: compare runs on
the same machine state). Everything it started (processes, containers) is removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _by_path(name: str, file: str):
    """A bench module by path: ``gateway`` and ``serving`` would shadow the packages."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bg = _by_path("bench_gateway", "gateway.py")
bs = bg.bs
IDLE_S = 10
GOAL_P50_S, GOAL_P95_S = 2.0, 3.0
OVER_1S_LUA = """
done = function(summary, latency, requests)
  local over = 0.0
  if latency.max > 1000000 then
    local lo, hi = 0.0, 100.0
    for i = 1, 40 do
      local mid = (lo + hi) / 2
      if latency:percentile(mid) > 1000000 then hi = mid else lo = mid end
    end
    over = 100.0 - hi
  end
  io.write(string.format("OVER1S %.4f\\nANSWERED %d\\n", over, summary.requests))
end
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def add_forest(team_slug: str, tmp: Path) -> tuple[str, list[str], list[list[float]]]:
    """A 100-tree random forest on breast cancer (bench/batch.py's) as a ready model version:
    (model name, columns, two rows)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    from registry import storage
    from registry.models import ModelVersion, RegisteredModel, VersionStatus
    from registry.sandbox import platform_requirements
    from teams.models import Membership, Team

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x.columns = [c.replace(" ", "_") for c in x.columns]
    model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(x, y)
    path = tmp / "rf"
    mlflow.sklearn.save_model(
        model, str(path), signature=infer_signature(x, model.predict(x)),
        pip_requirements=platform_requirements(),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    team = Team.objects.get(slug=team_slug)
    user = Membership.objects.filter(team=team).first().user
    registered = RegisteredModel.objects.create(name=f"bench-rf-{uuid.uuid4().hex[:6]}",
                                                team=team, created_by=user)
    stored = storage.store_model_dir(path)
    ModelVersion.objects.create(
        model=registered, version=1, status=VersionStatus.READY, source_format="mlflow",
        flavor="sklearn", requirements=platform_requirements(), artifact_name=stored.name,
        artifact_sha256=stored.sha256, artifact_size=stored.size)
    return registered.name, list(x.columns), x.iloc[:2].values.tolist()


def deploy(team_slug: str, model: str, name: str, autoscaling: dict, cpu: float = 0.5) -> int:
    """Through the service (the API's autoscaling field comes with another part of issue 21)."""
    from deployments import services
    from teams.models import Membership, Team

    team = Team.objects.get(slug=team_slug)
    actor = Membership.objects.filter(team=team).first().user
    d = services.create_deployment(actor=actor, team=team, name=name, model=model, version=1,
                                   resources={"cpu": cpu, "memory_mb": 512},
                                   autoscaling=autoscaling)
    return d.pk


def state(pk: int) -> tuple[str, int, int]:
    """(status, desired replicas, ready replicas of the current revision)."""
    from django.db import close_old_connections

    from deployments.models import Deployment, Replica

    close_old_connections()
    d = Deployment.objects.get(pk=pk)
    ready = Replica.objects.filter(deployment=d, ready=True, revision=d.revision).count()
    return d.status, d.replicas, ready


def wait_for(check, timeout: float, what: str) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if check():
            return time.perf_counter() - started
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout} s")


def containers(name: str) -> int:
    import docker

    client = docker.from_env()
    return len(client.containers.list(filters={"label": f"modelport.deployment={name}"}))


def wake_split(pk: int) -> str:
    """The last wake's steps from the deployment's events: seconds after the wake."""
    from deployments.models import DeploymentEvent

    events = list(DeploymentEvent.objects.filter(deployment_id=pk).order_by("-id")[:12])
    events.reverse()
    woke = [e for e in events if e.message.startswith("Waking from zero")]
    if not woke:
        return ""
    t0 = woke[-1].created_at
    steps = [f"{(e.created_at - t0).total_seconds():.2f}s {e.message[:60]}"
             for e in events if e.created_at >= t0]
    return "; ".join(steps[:5])


def measure_wakes(base: str, token: str, name: str, pk: int, body: bytes, wakes: int) -> list:
    import requests

    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    times = []
    for i in range(wakes):
        wait_for(lambda: state(pk)[0] == "idle" and state(pk)[1] == 0 and not containers(name),
                 IDLE_S + 90, f"{name} scaling to zero")
        started = time.perf_counter()
        answer = session.post(f"{base}/serve/{name}/invocations", data=body, headers=headers,
                              timeout=120)
        took = time.perf_counter() - started
        if answer.status_code != 200 or "predictions" not in answer.json():
            raise RuntimeError(f"wake {i + 1} of {name}: {answer.status_code} {answer.text}")
        times.append(took)
        print(f"  {name} wake {i + 1}: {took:.2f} s   [{wake_split(pk)}]", flush=True)
    return times


def burst(base: str, token: str, name: str, pk: int, body: bytes, connections: int,
          seconds: int, tmp: Path) -> dict:
    """wrk through the edge while a thread notes when the 2nd and 3rd replicas are ready."""
    script = tmp / "burst.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        f"wrk.body = [==[{body.decode()}]==]\n{OVER_1S_LUA}")
    ready_at: dict[int, float] = {}
    stop = threading.Event()
    started = time.perf_counter()

    def watch() -> None:
        while not stop.is_set():
            ready = state(pk)[2]
            for n in range(2, ready + 1):
                ready_at.setdefault(n, time.perf_counter() - started)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = subprocess.run([bs.WRK, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "--timeout=10s", "-s", str(script),
                          f"{base}/serve/{name}/invocations"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    stop.set()
    watcher.join()
    from deployments.models import DeploymentEvent

    decided, became = [], []  # the scaler's decisions and the replicas' readiness, in order
    for e in DeploymentEvent.objects.filter(deployment_id=pk).order_by("id"):
        if e.message.startswith("Scaling up"):
            decided.append(e.created_at)
        elif e.message.endswith("is ready.") and decided:
            became.append(e.created_at)
    to_ready = [(b - d).total_seconds() for d, b in zip(decided, became, strict=False)]
    over = re.search(r"OVER1S ([\d.]+)", out)
    answered = re.search(r"ANSWERED (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    return {"ready_at": ready_at, "over_1s_pct": float(over.group(1)) if over else float("nan"),
            "answered": int(answered.group(1)) if answered else 0,
            "failed": (int(non2xx.group(1)) if non2xx else 0)
            + (sum(int(g) for g in errs.groups()) if errs else 0),
            "p99_ms": bs.to_ms(p99.group(1)) if p99 else float("nan"),
            "max_replicas": max(ready_at, default=1), "decision_to_ready": to_ready}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--wakes", type=int, default=10, help="wakes per model (10)")
    ap.add_argument("--burst-seconds", type=int, default=40, help="the burst's length (40)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (8)")
    ap.add_argument("--cpu", type=float, default=1.0,
                    help="CPU limit of the woken replicas (1; a replica's start is CPU-bound: "
                         "at 0.5 it takes twice as long)")
    ap.add_argument("--skip-forest", action="store_true", help="iris only")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-autoscale-"))
    procs: list = []
    names: list[str] = []
    try:
        return run(args, tmp, procs, names)
    finally:
        for p in procs:
            p.stop()
        for name in names:
            try:
                bg.remove_containers(name)
            except Exception as exc:  # report and go on cleaning up
                print(f"cleanup {name}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path, procs: list, names: list[str]) -> int:
    data_dir = tmp / "data"
    (data_dir / "run").mkdir(parents=True)
    port = bs.free_port()
    env = {**os.environ, "MODELPORT_DATA_DIR": str(data_dir), "MODELPORT_WEB_PORT": str(port),
           "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
           "MODELPORT_RUNTIME": "docker", "MODELPORT_DOCKER_NETWORK": "none",
           "MODELPORT_BASE_URL": f"http://127.0.0.1:{port}", "MODELPORT_AUTOSCALE_SECONDS": "1",
           "MODELPORT_DRAIN_SECONDS": "1", "MLFLOW_PORT": "",
           "PATH": f"{bs.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update({k: env[k] for k in ("MODELPORT_RUNTIME", "MODELPORT_DOCKER_NETWORK",
                                            "MODELPORT_BASE_URL", "MLFLOW_PORT")})
    base = f"http://127.0.0.1:{port}"
    bg.setup_django(data_dir)
    token, team, iris = bg.seed(tmp)
    forest = None if args.skip_forest else add_forest(team, tmp)
    wanted = ["edge", "web", "worker", "reconciler", "beat"]
    if not os.environ.get("REDIS_URL"):
        wanted.insert(0, "redis")
    started = {}
    for name in wanted:
        command = bg.procfile_command(name, env)
        if name == "beat":
            command += ["--schedule", str(data_dir / "run" / "beat-schedule")]
        started[name] = bs.Proc(command, env)
        procs.append(started[name])
    started["edge"].wait_200(f"{base}/healthz", timeout=120)
    run_id = uuid.uuid4().hex[:6]

    print("warm-up deploy (serving image, page cache) ...", flush=True)
    warm = f"bench-as-warm-{run_id}"
    names.append(warm)
    warm_pk = deploy(team, iris, warm, {"min_replicas": 1, "max_replicas": 1})
    wait_for(lambda: state(warm_pk)[2] >= 1, 600, "warm-up replica")
    from deployments import services
    from deployments.models import Deployment

    warm_d = Deployment.objects.get(pk=warm_pk)
    services.delete(actor=warm_d.created_by, deployment=warm_d)

    models = [("iris LR", iris, bg.COLUMNS, bg.ROWS)]
    if forest is not None:
        models.append(("RF 100 trees", *forest))
    asleep = {"min_replicas": 1, "max_replicas": 3, "metric": "concurrency", "target": 4,
              "scale_down_delay_s": 30, "idle_to_zero_after_s": IDLE_S}
    wakes: dict[str, list[float]] = {}
    for label, model, columns, rows in models if args.wakes else ():
        name = f"bench-as-{label.split()[0].lower()}-{run_id}"
        names.append(name)
        pk = deploy(team, model, name, asleep, cpu=args.cpu)
        wait_for(lambda pk=pk: state(pk)[2] >= 1, 300, f"{name} first replica")
        print(f"{label}: {args.wakes} wakes from zero ...", flush=True)
        wakes[label] = measure_wakes(base, token, name, pk, bs.body_for(columns, rows, 1),
                                     args.wakes)

    print("burst: 1 → 3 replicas (concurrency target 1) ...", flush=True)
    name = f"bench-as-burst-{run_id}"
    names.append(name)
    pk = deploy(team, iris, name, {"min_replicas": 1, "max_replicas": 3, "metric": "concurrency",
                                   "target": 1, "scale_down_delay_s": 60})
    wait_for(lambda: state(pk)[2] >= 1, 300, f"{name} first replica")
    body = bs.body_for(bg.COLUMNS, bg.ROWS, 1)
    bs.run_wrk(f"{base}/serve/{name}/invocations", 1, 1, body, tmp,
               headers={"Authorization": f"Bearer {token}"})  # warm the edge's caches
    time.sleep(IDLE_S + 2)  # the warm-up's traffic out of the scaler's window
    surge = burst(base, token, name, pk, body, args.connections, args.burst_seconds, tmp)
    report(wakes, surge, args)
    return 0


def report(wakes: dict[str, list[float]], surge: dict, args) -> None:
    load = os.getloadavg()
    print(f"\nWake from zero → first answer (warm image, through the edge, {args.cpu:g} CPU per "
          f"replica, N={args.wakes}; "
          f"goal p50 < {GOAL_P50_S:g} s, p95 < {GOAL_P95_S:g} s)")
    print(f"{'model':<14} {'p50 s':>7} {'p95 s':>7} {'min s':>7} {'max s':>7}  goal")
    for label, times in wakes.items():
        p50, p95 = statistics.median(times), percentile(times, 95)
        ok = "met" if p50 < GOAL_P50_S and p95 < GOAL_P95_S else "MISSED"
        print(f"{label:<14} {p50:>7.2f} {p95:>7.2f} {min(times):>7.2f} {max(times):>7.2f}  {ok}")
    ready_at = surge["ready_at"]
    print(f"\nBurst: wrk {args.connections} connections for {args.burst_seconds} s through the "
          "edge, concurrency target 1 per replica, max 3")
    for n in (2, 3):
        at = ready_at.get(n)
        took = surge["decision_to_ready"][n - 2:n - 1]
        print(f"  replica {n} ready {at:.2f} s after the burst began"
              + (f" ({took[0]:.2f} s after the scaler decided)" if took else "")
              if at is not None else f"  replica {n} never ready within the burst")
    print(f"  answered {surge['answered']}, failed {surge['failed']}, "
          f"over 1 s {surge['over_1s_pct']:.2f} %, p99 {surge['p99_ms']:.0f} ms")
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} cores)")


if __name__ == "__main__":
    sys.exit(main())
