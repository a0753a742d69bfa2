"""Benchmark: the serving gateway against calling the replica directly, and deploy/rollback times.

    .venv/bin/python bench/gateway.py            # 10 s per wrk cell, about 2.5 minutes
    .venv/bin/python bench/gateway.py --quick    # 3 s per cell
    .venv/bin/python bench/gateway.py --make-run # the platform as `make run` runs it

Runs the platform as the Procfile does — the edge (``config/edge.py``, which answers
``/serve/`` itself), web under gunicorn behind it, and the reconciler worker — against
``DATABASE_URL`` / ``REDIS_URL`` from the environment (or the embedded SQLite and broker) with a
temporary data dir, on the real Docker Engine. Then, all through the real API:

1. deploys an iris LogisticRegression (1 replica, warm serving image) and times POST →
   ``healthy``;
2. drives ``POST /serve/{name}/invocations`` (Bearer token) and the replica's own
   ``/invocations`` with the same ``wrk`` Lua script as ``bench/serving.py`` (1-row
   ``dataframe_split``) at 1 and 16 connections;
   The same row, as an Open Inference Protocol (v2) JSON request
   (``POST /serve/{name}/v2/models/<model>/infer``, one ``[1, 4]`` FP64 tensor), goes through
   the gateway in the same runs: the report sets it beside ``/invocations`` through the
   gateway (target: within 10 %); and through a consumer key with a rate limit it never
   hits, beside the personal token (``bench/gateway_keys.py``; target ≤ 5 µs CPU a request);
3. rolls out version 2, then times POST rollback → traffic on the new revision, and → healthy.

With ``--make-run`` the platform is the real ``make run`` instead (demo off, a temporary data
dir, free ports): SQLite, the embedded broker and every Procfile process under its supervisor —
the default install a newcomer measures. Each CPU µs/request line then also splits the CPU of
every one of its processes (web, worker, reconciler, beat, MLflow, the broker, the supervisor),
which shows where the default install's CPU goes beside the edge.

The replica has no network (``MODELPORT_DOCKER_NETWORK=none``, the default): the edge reaches
it over its socket file (``serving/sockets.py``). ``wrk`` cannot open a unix socket, so "direct"
is measured on a twin of the replica — the same image, model, CPU and memory limits — that this
benchmark starts on the host network with a loopback port. With ``--tcp`` the platform itself
runs replicas on the host network (``MODELPORT_DOCKER_NETWORK=host``, each demanding its replica
key) and the edge uses loopback TCP, to compare. The report says which transport the edge's
connections used.

At 16 connections it measures ``--pairs`` direct/gateway pairs back to back (half as many at
1) and reports the pair with the median ratio (the machine's speed drifts between cells).
Prints a table with the targets: the gateway adds ≤ 1 ms at p50 and keeps ≥ 80 % of direct
throughput at 16 connections; deploy → healthy < 5 s; rollback < 3 s. Everything it started
(processes, containers) is removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _bench_module(name: str):
    """bench/<name>.py, imported by path (``serving`` would shadow the ``serving`` package):
    serving.py's helpers (wrk runner, process wrapper), gateway_cpu.py, gateway_keys.py."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bs, bk = _bench_module("serving"), _bench_module("gateway_keys")
_cpu = _bench_module("gateway_cpu")
_tree, cpu_split, replica_cgroup = _cpu.tree, _cpu.cpu_split, _cpu.replica_cgroup
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2]]


def procfile_command(name: str, env: dict[str, str]) -> list[str]:
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)],
                                      command.strip()))
    raise KeyError(name)


class MakeRun:
    """``make run`` in its own process group with a temporary data dir (``--make-run``)."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str]) -> None:
        import subprocess

        self.log = data_dir.parent / "make-run.log"
        self.popen = subprocess.Popen(
            ["make", "run"], cwd=REPO_ROOT, env={
                **{k: v for k, v in env.items()
                   if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}},
                "PORT": str(port), "MLFLOW_PORT": str(bs.free_port()),
                "MODELPORT_DEMO": "0", "MODELPORT_ADMIN_PASSWORD": uuid.uuid4().hex},
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, base: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while bs.http_status(f"{base}/readyz") != 200:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("make run did not become ready:\n"
                                   + self.log.read_text()[-3000:])
            time.sleep(0.5)

    def pids(self) -> dict[str, int]:
        """Each supervised process's current pid, and the supervisor's own."""
        found = dict(re.findall(r"(\w+)\.1 +started with pid (\d+)", self.log.read_text()))
        pids = {name: int(pid) for name, pid in found.items() if name != "demo"}
        supervisor = [pid for pid in _tree(self.popen.pid)
                      if b"config.supervise" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        return {**pids, "supervise": supervisor[0]} if supervisor else pids

    def output_lines(self) -> dict[str, int]:
        """Lines of output per process so far (each one costs the supervisor CPU)."""
        counts: dict[str, int] = {}
        for name in re.findall(r"^\d\d:\d\d:\d\d (\w+)(?:\.1)? +\|", self.log.read_text(),
                               re.M):
            counts[name] = counts.get(name, 0) + 1
        return counts

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)  # Ctrl-C
            try:
                self.popen.wait(timeout=60)
            except Exception:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def setup_django(data_dir: Path) -> None:
    os.environ["MODELPORT_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(tmp: Path) -> tuple[str, str, str]:
    """A team, an engineer with a token, and a model with two ready versions (same artifact,
    platform requirements: the serving image already built is reused)."""
    import mlflow.sklearn
    import pandas as pd
    from django.contrib.auth import get_user_model
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from registry import storage
    from registry.models import ModelVersion, RegisteredModel, VersionStatus
    from registry.sandbox import platform_requirements
    from teams import services as team_services
    from teams.models import Membership, Team
    from teams.roles import Role

    suffix = uuid.uuid4().hex[:6]
    team = Team.objects.create(slug=f"bench-gw-{suffix}", name="Gateway benchmark")
    user = get_user_model().objects.create_user(f"bench-gw-{suffix}", password=None)
    Membership.objects.create(team=team, user=user, role=Role.ENGINEER)
    _, secret = team_services.create_token(actor=user, name="bench")
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    model = LogisticRegression(max_iter=300).fit(frame, data.target)
    example = pd.DataFrame(ROWS, columns=COLUMNS)
    model_dir = tmp / "iris"
    mlflow.sklearn.save_model(
        model, str(model_dir), signature=infer_signature(example, model.predict(example)),
        input_example=example, pip_requirements=platform_requirements(),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    registered = RegisteredModel.objects.create(name=f"bench-iris-{suffix}", team=team,
                                                created_by=user)
    stored = storage.store_model_dir(model_dir)
    for number in (1, 2):
        ModelVersion.objects.create(
            model=registered, version=number, status=VersionStatus.READY,
            source_format="mlflow", flavor="sklearn", requirements=platform_requirements(),
            artifact_name=stored.name, artifact_sha256=stored.sha256,
            artifact_size=stored.size)
    return secret, team.slug, registered.name


class Api:
    def __init__(self, base: str, token: str) -> None:
        import requests

        self.base, self.session = base, requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.session.request(method, f"{self.base}/api/v1{path}", timeout=30,
                                        **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def wait(self, name: str, done, timeout: float = 300) -> tuple[float, dict]:
        """Seconds until ``done(deployment)``, polling every 50 ms."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            d = self.call("GET", f"/deployments/{name}/")
            if done(d):
                return time.perf_counter() - started, d
            if d["status"] == "failed":
                raise RuntimeError(f"{name} failed: {d['status_message']}")
            time.sleep(0.05)
        raise RuntimeError(f"{name} not done after {timeout} s: {d['status']} "
                           f"{d['status_message']}")


def remove_containers(name: str) -> None:
    """What the deployment's delete did not remove yet (the worker stops right after)."""
    import docker

    client = docker.from_env()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = client.containers.list(all=True, filters={"label": f"modelport.deployment={name}"})
        if not left:
            return
        time.sleep(0.5)
    for container in left:
        container.remove(force=True, v=True)


def timeline(api: Api, name: str, revision: int) -> str:
    """The revision's events as seconds since it was created (where the time went)."""
    from datetime import datetime

    events = api.call("GET", f"/deployments/{name}/events/", params={"page_size": 100})
    rows = [e for e in events.get("results", events) if e["revision"] == revision]
    rows.sort(key=lambda e: e["id"])
    if not rows:
        return ""
    def at(e: dict) -> datetime:
        return datetime.fromisoformat(e["created_at"].replace("Z", "+00:00"))

    start = at(rows[0])
    return "\n".join(f"      +{(at(e) - start).total_seconds():6.2f} s  "
                     f"{e['message'].splitlines()[0][:90]}" for e in rows)


def healthy_on(revision: int):
    return lambda d: d["status"] == "healthy" and d["revision"] == revision \
        and d["traffic"] == [{"revision": revision, "percent": 100}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk cell (10)")
    ap.add_argument("--quick", action="store_true", help="3 s per cell")
    ap.add_argument("--rollbacks", type=int, default=3, help="rollback timings to take (3)")
    ap.add_argument("--pairs", type=int, default=3,
                    help="direct/gateway pairs at 16 connections (half as many at 1); the "
                         "median is reported (3)")
    ap.add_argument("--tcp", action="store_true",
                    help="replicas on the host network, edge → replica over loopback TCP")
    ap.add_argument("--make-run", action="store_true",
                    help="the platform as `make run` runs it: SQLite, the embedded broker, "
                         "all its processes under the supervisor")
    args = ap.parse_args()
    duration = 3 if args.quick else args.duration
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-gw-"))
    procs: list = []
    cleanup: list = []
    try:
        return run(args, duration, tmp, procs, cleanup)
    finally:
        for step in cleanup:
            try:
                step()
            except Exception as exc:  # report and go on cleaning up
                print(f"cleanup: {exc}", file=sys.stderr)
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, duration: int, tmp: Path, procs: list, cleanup: list) -> int:
    data_dir = tmp / "data"
    data_dir.mkdir()
    port = bs.free_port()
    env = {**os.environ, "MODELPORT_DATA_DIR": str(data_dir), "MODELPORT_WEB_PORT": str(port),
           "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DJANGO_DEBUG": "0",
           "MODELPORT_RUNTIME": "docker",
           "MODELPORT_DOCKER_NETWORK": "host" if args.tcp else "none",
           "MODELPORT_BASE_URL": f"http://127.0.0.1:{port}",
           "PATH": f"{bs.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    base = f"http://127.0.0.1:{port}"
    if args.make_run:
        for name in ("DATABASE_URL", "REDIS_URL"):  # this process seeds make run's SQLite
            os.environ.pop(name, None)
        platform = MakeRun(data_dir, port, env)
        procs.append(platform)
        platform.wait_ready(base)
        setup_django(data_dir)
        secret, team, model = seed(tmp)
        pids = platform.pids
    else:
        setup_django(data_dir)
        secret, team, model = seed(tmp)
        (data_dir / "run").mkdir()  # gunicorn's unix socket, as `make run` prepares it
        started = {name: bs.Proc(procfile_command(name, env), env)
                   for name in ("edge", "web", "reconciler")}
        procs.extend(started.values())
        started["edge"].wait_200(f"{base}/healthz", timeout=120)
        processes = dict(started)  # `started` is reused for timings below
        pids = lambda: {name: proc.popen.pid for name, proc in processes.items()}  # noqa: E731
    api = Api(base, secret)
    name = f"bench-gw-{uuid.uuid4().hex[:6]}"
    spec = {"name": name, "team": team, "model": model,
            "version": 1, "replicas": 1, "resources": {"cpu": 1, "memory_mb": 1024},
            "strategy": {"type": "rolling"}}

    # Warm-up: the worker has booted and the image and model files are in the page cache.
    print("warm-up deploy ...", flush=True)
    cleanup.append(lambda: remove_containers(f"{name}-warm"))  # even if the POST fails
    api.call("POST", "/deployments/", json={**spec, "name": f"{name}-warm"})
    api.wait(f"{name}-warm", healthy_on(1))
    api.call("DELETE", f"/deployments/{name}-warm/")
    print("deploying (warm image) ...", flush=True)
    started = time.perf_counter()
    cleanup.append(lambda: remove_containers(name))
    api.call("POST", "/deployments/", json=spec)
    cleanup.insert(0, lambda: api.call("DELETE", f"/deployments/{name}/"))
    deploy_s, d = api.wait(name, healthy_on(1))
    deploy_s = time.perf_counter() - started
    replica = d["replicas"][0]["url"]
    print(f"  deploy → healthy {deploy_s:.2f} s\n{timeline(api, name, 1)}", flush=True)

    body = bs.body_for(COLUMNS, ROWS, 1)
    v2_body = json.dumps({"inputs": [{"name": "input-0", "shape": [len(ROWS), len(COLUMNS)],
                                      "datatype": "FP64",
                                      "data": [x for row in ROWS for x in row]}]}).encode()
    auth = {"Authorization": f"Bearer {secret}"}
    cells: dict[tuple[str, int], dict] = {}
    key = {"X-Modelport-Replica-Key": replica_key(name)}
    if replica.startswith("http://"):  # --tcp: the replica itself, with its key
        direct, direct_cgroup = f"{replica}/invocations", replica_cgroup(name)
    else:
        twin = tcp_twin(name, tmp, cleanup, base)
        direct, direct_cgroup = f"{twin}/invocations", replica_cgroup(f"{name}-twin")
    targets = [("direct", direct, key, direct_cgroup, body),
               ("gateway", f"{base}/serve/{name}/invocations", auth, replica_cgroup(name), body),
               ("v2", f"{base}/serve/{name}/v2/models/{model}/infer", auth,
                replica_cgroup(name), v2_body)]
    bk.add_target(targets, name)  # a consumer key beside the token: gateway_keys.py
    for _label, url, headers, _cg, data in targets:  # warm up (connections, route, token caches)
        bs.run_wrk(url, 4, 1, data, tmp, headers=headers)
    ratios: list[float] = []
    v2_ratios: dict[int, list[float]] = {}
    for conns in (1, 16):
        # The ratio swings with this machine's speed from one 10 s cell to the next: measure
        # ``--pairs`` direct/gateway pairs back to back at 16 connections (half as many at 1),
        # keep the median.
        pairs = []
        for turn in range(args.pairs if conns == 16 else max(1, args.pairs // 2)):
            pair = {}
            # v2 and /invocations through the gateway take turns going first: neither always
            # meets the machine right after the direct cell.
            order = targets if turn % 2 == 0 else [targets[0], *targets[:0:-1]]
            for label, url, headers, container, data in order:
                running = pids()
                lines = platform.output_lines() if args.make_run else {}
                before = cpu_split(running, container)
                r = bs.run_wrk(url, conns, duration, data, tmp, headers=headers)
                after = cpu_split(running, container)
                if args.make_run:
                    now = platform.output_lines()
                    r["lines"] = {k: v - lines.get(k, 0) for k, v in now.items()
                                  if v > lines.get(k, 0)}
                requests = max(r["rps"] * duration, 1)
                r["cpu_us"] = {k: (after[k] - before[k]) * 1e6 / requests for k in after}
                r["edge_us"] = r["cpu_us"]["edge"]
                pair[label] = r
                print(f"  {label:8} c={conns:<2} {r['rps']:8.0f} req/s p50 {r['p50']:7.2f} ms "
                      f"p99 {r['p99']:7.2f} ms"
                      + (f"  ERRORS {r['errors']}" if r["errors"] else "")
                      + "  CPU µs/request: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                         r["cpu_us"].items())
                      + (f"  output lines: {r['lines']}" if r.get("lines") else ""),
                      flush=True)
            pairs.append((pair["gateway"]["rps"] / max(pair["direct"]["rps"], 1e-9), pair))
            v2_ratios.setdefault(conns, []).append(
                pair["v2"]["rps"] / max(pair["gateway"]["rps"], 1e-9))
            bk.note(pair, conns)
        pairs.sort(key=lambda p: p[0])
        _, median = pairs[(len(pairs) - 1) // 2]
        for label in ("direct", "gateway", "key", "v2"):
            cells[(label, conns)] = median[label]
        if conns == 16:
            ratios = [ratio for ratio, _ in pairs]

    transport = edge_transport(replica)
    print(f"  edge → replica: {transport}", flush=True)

    print("rolling out version 2, then timing rollbacks ...", flush=True)
    api.call("PATCH", f"/deployments/{name}/", json={"version": 2})
    api.wait(name, healthy_on(2))
    switched, healthy = [], []
    revision = 2
    for _ in range(args.rollbacks):
        started = time.perf_counter()
        d = api.call("POST", f"/deployments/{name}/rollback/", json={})
        revision = d["revision"]
        api.wait(name, lambda d, r=revision: d["traffic"] == [{"revision": r, "percent": 100}])
        switched.append(time.perf_counter() - started)
        api.wait(name, healthy_on(revision))
        healthy.append(time.perf_counter() - started)
        print(f"  rollback to r{revision}: traffic {switched[-1]:.2f} s, healthy "
              f"{healthy[-1]:.2f} s\n{timeline(api, name, revision)}", flush=True)
    setup = ("`make run`: SQLite, the embedded broker, every Procfile process under its "
             "supervisor" if args.make_run else
             "the Procfile's edge — 1 uvicorn worker — in front of gunicorn, the reconciler, "
             "DATABASE_URL/REDIS_URL from the environment")
    report(duration, deploy_s, cells, switched, healthy, transport, ratios, setup)
    report_v2(cells, v2_ratios)
    bk.report(cells, bk.micro())
    return 0


def report_v2(cells: dict, v2_ratios: dict[int, list[float]]) -> None:
    """v2 inference beside /invocations, both through the gateway, from the same runs."""
    print(f"\nOpen Inference Protocol v2 vs /invocations, both through the gateway (same row, "
          f"same connections; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})\n")
    print("| conns | /invocations req/s | p50 ms | v2 infer req/s | p50 ms | v2 / invocations "
          "req/s (each pair) | edge + replica CPU µs/req, invocations / v2 | within 10 % |")
    print("|---|---|---|---|---|---|---|---|")
    for conns in (1, 16):
        g, v = cells[("gateway", conns)], cells[("v2", conns)]
        ratios = sorted(v2_ratios.get(conns) or [float("nan")])
        median = ratios[(len(ratios) - 1) // 2]
        print(f"| {conns} | {g['rps']:.0f} | {g['p50']:.2f} | {v['rps']:.0f} | {v['p50']:.2f} | "
              f"{median:.0%} ({', '.join(f'{r:.0%}' for r in ratios)}) | "
              f"{g['cpu_us']['edge'] + g['cpu_us'].get('replica', 0):.0f} / "
              f"{v['cpu_us']['edge'] + v['cpu_us'].get('replica', 0):.0f} | "
              f"{'yes' if median >= 0.9 else 'no'} |")


def edge_transport(replica_url: str) -> str:
    """How the edge's pooled connections reach the replica: connected sockets on the
    replica's socket file, as /proc/net/unix lists them (state 03: connected), else TCP."""
    from serving.sockets import is_unix_url, split_unix_url

    if not is_unix_url(replica_url):
        return "TCP"
    path, _ = split_unix_url(replica_url)
    connected = sum(1 for line in Path("/proc/net/unix").read_text().splitlines()[1:]
                    if line.split()[-1:] == [path] and line.split()[5] == "03")
    return f"unix socket {path} ({connected} connections)"


def replica_key(name: str) -> str:
    """The key the deployment's revision-1 replicas demand (core/replica_keys.py)."""
    from deployments.models import Revision

    return Revision.objects.get(deployment__name=name, number=1).replica_key


def tcp_twin(name: str, tmp: Path, cleanup: list, base: str) -> str:
    """A copy of the deployment's replica on the host network with a loopback port, for wrk
    (same image, model mount, limits, key and prediction logging — over TCP to the platform's
    ingest); removed at the end."""
    import docker

    from workers.runtimes.docker import DockerRuntime

    client = docker.from_env()
    original = client.containers.list(filters={"label": f"modelport.deployment={name}"})[0]
    env = dict(e.split("=", 1) for e in original.attrs["Config"]["Env"])
    host = original.attrs["HostConfig"]
    model = next(m["Source"] for m in original.attrs["Mounts"] if m["Destination"] == "/model")
    from workers.runtimes.base import ReplicaSpec

    runtime = DockerRuntime(client, network="host", port_range=(23900, 23999),
                            state_dir=tmp / "twin")
    spec = ReplicaSpec(deployment=f"{name}-twin", revision=1, replica=0,
                       image=original.attrs["Config"]["Image"], model_dir=model,
                       model_name=env.get("MODELPORT_MODEL_NAME", ""),
                       cpu=host["NanoCpus"] / 1e9, memory_mb=host["Memory"] // 1048576,
                       env={key: env[key] for key in (
                           "MODELPORT_REPLICA_KEY", "MODELPORT_INGEST_TOKEN",
                           "MODELPORT_SHIP_BATCH_SIZE") if key in env})
    if "MODELPORT_INGEST_TOKEN" in spec.env:
        spec.env["MODELPORT_INGEST_URL"] = f"{base}/api/v1/ingest/predictions/"
    state = runtime.start_replica(spec)
    cleanup.append(lambda: runtime.remove_replica(state.id))
    from workers.runtimes.base import wait_ready

    if not wait_ready(state.url, timeout=120):
        raise RuntimeError(f"the TCP twin did not become ready: {runtime.logs(state.id)}")
    return state.url


def report(duration: int, deploy_s: float, cells: dict, switched: list, healthy: list,
           transport: str, ratios: list[float], setup: str) -> None:
    print(f"\nGateway vs direct (wrk, {duration} s per cell, 1-row iris dataframe_split, "
          f"{setup}, 1 replica; edge → replica over "
          f"{transport.split(' (')[0].split(' @')[0]}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})\n")
    print("| conns | direct req/s | p50 ms | p99 ms | gateway req/s | p50 ms | p99 ms | "
          "gateway/direct req/s | added p50 ms | edge CPU µs/req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for conns in (1, 16):
        d, g = cells[("direct", conns)], cells[("gateway", conns)]
        ratio = g["rps"] / d["rps"] if d["rps"] else float("nan")
        print(f"| {conns} | {d['rps']:.0f} | {d['p50']:.2f} | {d['p99']:.2f} | {g['rps']:.0f} | "
              f"{g['p50']:.2f} | {g['p99']:.2f} | {ratio:.2f} | {g['p50'] - d['p50']:+.2f} | "
              f"{g['edge_us']:.0f} |")
    added = cells[("gateway", 1)]["p50"] - cells[("direct", 1)]["p50"]
    ratio16 = cells[("gateway", 16)]["rps"] / max(cells[("direct", 16)]["rps"], 1e-9)
    med_switch = statistics.median(switched) if switched else float("nan")
    med_healthy = statistics.median(healthy) if healthy else float("nan")
    print("\n| measure | value | target | met |\n|---|---|---|---|")
    for label, value, target, met in [
        ("gateway added p50, 1 conn", f"{added:.2f} ms", "≤ 1 ms", added <= 1.0),
        ("gateway throughput, 16 conns" + (f" (median of {len(ratios)} pairs: "
                                           + ", ".join(f"{r:.0%}" for r in ratios) + ")"
                                           if len(ratios) > 1 else ""),
         f"{ratio16:.0%} of direct", "≥ 80 %", ratio16 >= 0.8),
        ("deploy → healthy (warm image)", f"{deploy_s:.2f} s", "< 5 s", deploy_s < 5),
        ("rollback → traffic on it (median)", f"{med_switch:.2f} s", "< 3 s", med_switch < 3),
        ("rollback → healthy (median; old replicas drained)", f"{med_healthy:.2f} s", "—",
         None),
    ]:
        print(f"| {label} | {value} | {target} | {'' if met is None else 'yes' if met else 'no'} |")


if __name__ == "__main__":
    sys.exit(main())
