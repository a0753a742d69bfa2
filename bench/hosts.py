"""Benchmark: several plain Docker hosts that are real hosts (``tests/netlab.py``).

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/hosts.py
    … bench/hosts.py --warm-runs 3 --clients 4 --skip-big    # no 200 MB model

Builds the lab the cross-host tests use — three test hosts, each a network namespace with its
own Docker Engine, a TLS registry (Debian's ``docker-registry``) on the platform's lab
address, PostgreSQL and Redis relayed there — and runs the platform against it as
``tests/hosts_lab.py`` does (``tests/lab_processes.py``): web (gunicorn) and the edge on the
lab address, reconciler, worker and beat; one host worker per host inside its namespace with
its own data dir. Needs root, ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` (the hosts reach
them over the bridge). All deployments go through the REST API on a docker target with
``"placement": "hosts"`` and the lab registry.

1. **Deploy → healthy on a remote host** (iris LogisticRegression, 1 replica, only host A up):
   cold (A's engine never pulled the serving image, the registry is empty: push + pull +
   model fetch), then ``--warm-runs`` warm (image on A, model in A's cache), then one with the
   image on A but its model cache emptied. Split from the revision's build events (push),
   the host worker's log (pull, fetch) and the replica row watched every 50 ms (placed →
   container started → ready).
2. **Artifact fetch** of a 10 MB and a 200 MB model (iris, padded with a random file: MLmodel
   valid, saved with ``platform_requirements()``): deployed on A, the fetch time the host
   worker logs (``GET /api/v1/hosts/{host}/artifacts/{sha256}/`` across the bridge, hashed,
   unpacked); beside it the same endpoint and code (``host_models.model_dir_on_host``) run in
   this process in the root namespace (loopback) into a temporary cache: the anchor.
3. **A host cut under steady load**: hosts A, B, C up, image pre-pulled on each, iris with 2
   replicas spread; ``--clients`` threads send one prediction at a time through the edge; a
   host holding a replica has its link cut (``ip link set … down``). Failed requests, the
   requests in flight at the cut, the latency of those answered after it (over 1 s, max),
   the time until the host is lost and until the deployment has 2 ready replicas on the
   other hosts. The link comes back (its stale container is removed), then the same with the
   edge restarted with ``MODELPORT_GATEWAY_EJECT_S=0`` (passive ejection off): the anchor.

Prints a table with the load average (2 cores shared here: compare runs on the same machine
state). Everything it started — namespaces, dockerds, the registry, processes, containers —
is removed at the end, also on Ctrl-C or an error. Database rows stay (as the other benches).
"""

from __future__ import annotations

import argparse
import logging
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
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


from bench import autoscale  # noqa: E402 - after the path: loads bench/gateway.py by path

bg = autoscale.bg
MB = 1 << 20
BODY = {"dataframe_split": {"columns": bg.COLUMNS, "data": bg.ROWS}}


class Run:
    """What one bench run holds: the lab, the platform's processes, the API session."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.net: Any = None
        self.clients: dict[str, Any] = {}
        self.procs: Any = None
        self.session: Any = None
        self.team = self.target = self.image = ""
        self.hosts: list[str] = []

    # --- the API --------------------------------------------------------------------------
    def deploy(self, name: str, model: str, replicas: int = 1) -> float:
        """POST the deployment; the monotonic time it was sent."""
        sent = time.monotonic()
        answer = self.session.post(f"{self.procs.web}/api/v1/deployments/", json={
            "name": name, "team": self.team, "model": model, "version": 1,
            "replicas": replicas, "resources": {"cpu": 0.5, "memory_mb": 768},
            "target": self.target}, timeout=30)
        if answer.status_code != 202:
            raise RuntimeError(f"deploy {name}: {answer.status_code} {answer.text}")
        return sent

    def delete(self, name: str) -> None:
        from deployments.models import Replica

        answer = self.session.delete(f"{self.procs.web}/api/v1/deployments/{name}/", timeout=30)
        if answer.status_code >= 300:
            raise RuntimeError(f"delete {name}: {answer.status_code} {answer.text}")
        self.procs.wait(f"{name}'s replicas removed", lambda: not Replica.objects.filter(
            deployment__name=name).exists(), timeout=120)

    def predict(self, session: Any, name: str) -> int:
        return session.post(f"{self.procs.edge}/serve/{name}/invocations", json=BODY,
                            timeout=60).status_code

    # --- the hosts ------------------------------------------------------------------------
    def host_up(self, host: str) -> None:
        from compute.models import Host

        self.procs.start_host_worker(host)
        self.procs.wait(f"host {host} alive", lambda: Host.objects.filter(
            name=host, state="alive").exists(), timeout=90)

    def host_log(self, host: str) -> Path:
        return self.procs.logs / f"host-{host}.log"

    def cache_of(self, host: str) -> Path:
        return self.net.hosts[host].dir / "modelport-data" / "host-cache" / "models"


def fresh() -> None:
    from django.db import close_old_connections

    close_old_connections()


class Watch:
    """The replica rows of one deployment every 50 ms: when each was placed, left ``placing``
    (its container started) and became ready; when the deployment was healthy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.placed: dict[int, float] = {}
        self.started: dict[int, float] = {}
        self.ready: dict[int, float] = {}
        self.healthy = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from django.db import close_old_connections

        from deployments.models import Deployment, Replica

        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                for pk, status, ready in Replica.objects.filter(
                        deployment__name=self.name).values_list("pk", "host_status", "ready"):
                    self.placed.setdefault(pk, now)
                    if status not in ("placing", ""):
                        self.started.setdefault(pk, now)
                    if ready:
                        self.ready.setdefault(pk, now)
                if not self.healthy and Deployment.objects.filter(
                        name=self.name, status="healthy").exists():
                    self.healthy = now
                time.sleep(0.05)
        finally:
            close_old_connections()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def log_tail(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def seconds(pattern: str, text: str) -> float | None:
    found = re.findall(pattern, text)
    return float(found[-1]) if found else None


STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):[^\]]*\] .*"


def between(first: str, last: str, text: str) -> float | None:
    """Seconds between the last log line matching ``first`` and the next matching ``last``
    (the host worker's log timestamps: ms, where its own "in N.N s" has 0.1 s)."""
    from datetime import datetime

    starts = [m for m in re.finditer(STAMP + first, text, re.M)]
    if not starts:
        return None
    end = re.search(STAMP + last, text[starts[-1].end():], re.M)
    if end is None:
        return None
    at = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in (starts[-1], end)]
    return (at[1] - at[0]).total_seconds()


def deploy_split(run: Run, host: str, model: str, label: str) -> dict:
    """Deploy ``model`` (1 replica), wait healthy, delete it; the phases in seconds."""
    from deployments.models import DeploymentEvent, Revision

    name = f"bh-{uuid.uuid4().hex[:6]}"
    log = run.host_log(host)
    offset = log.stat().st_size if log.exists() else 0
    watch = Watch(name)
    sent = run.deploy(name, model)
    try:
        run.procs.wait(f"{name} healthy", lambda: watch.healthy, timeout=600)
    finally:
        watch.stop()
    fresh()
    text = log_tail(log, offset)
    builds = "\n".join(DeploymentEvent.objects.filter(
        deployment__name=name, kind="build").values_list("message", flat=True))
    pk = min(watch.placed)
    run.image = run.image or Revision.objects.filter(deployment__name=name).exclude(
        image="").values_list("image", flat=True).first() or ""
    row = {"label": label, "total": watch.healthy - sent,
           "push": seconds(r"pushed \S+ in ([\d.]+)s", builds),
           "pull": between(r": pulling ", r": pulled ", text),
           "fetch": between(r"fetching model ", r"fetched model ", text),
           "to_placed": watch.placed[pk] - sent,
           "placed_to_started": watch.started[pk] - watch.placed[pk],
           "started_to_ready": watch.ready[pk] - watch.started[pk],
           "ready_to_healthy": watch.healthy - watch.ready[pk]}
    run.delete(name)
    return row


def add_padded(run: Run, iris_dir: Path, mb: int) -> tuple[str, Any]:
    """The iris model padded with ``mb`` MB of random bytes (incompressible) as a ready model
    version: (model name, version)."""
    from registry import storage
    from registry.models import ModelVersion, RegisteredModel, VersionStatus
    from registry.sandbox import platform_requirements
    from teams.models import Membership, Team

    path = run.tmp / f"iris-{mb}mb"
    shutil.copytree(iris_dir, path)
    with (path / "padding.bin").open("wb") as out:
        for _ in range(mb):
            out.write(os.urandom(MB))
    team = Team.objects.get(slug=run.team)
    registered = RegisteredModel.objects.create(
        name=f"bench-pad{mb}-{uuid.uuid4().hex[:6]}", team=team,
        created_by=Membership.objects.filter(team=team).first().user)  # type: ignore[union-attr]
    stored = storage.store_model_dir(path)
    shutil.rmtree(path)
    version = ModelVersion.objects.create(
        model=registered, version=1, status=VersionStatus.READY, source_format="mlflow",
        flavor="sklearn", requirements=platform_requirements(), artifact_name=stored.name,
        artifact_sha256=stored.sha256, artifact_size=stored.size)
    return registered.name, version


def fetch_figures(run: Run, host: str, iris_dir: Path, sizes: list[int]) -> list[dict]:
    """Per size: the host's fetch across the bridge (deploy, its worker's log) and the same
    endpoint and code on loopback in this process (the anchor), while the replica is placed."""
    from django.test import override_settings

    from deployments import host_models

    rows = []
    for mb in sizes:
        model, version = add_padded(run, iris_dir, mb)
        name = f"bh-f{mb}-{uuid.uuid4().hex[:4]}"
        log = run.host_log(host)
        offset = log.stat().st_size
        sent = run.deploy(name, model)
        run.procs.wait(f"{name} healthy", lambda name=name: _healthy(name), timeout=600)
        healthy = time.monotonic() - sent
        bridge = between(r"fetching model ", r"fetched model ", log_tail(log, offset))
        cache = run.tmp / f"loopback-cache-{mb}"
        with override_settings(MODELPORT_HOST_CACHE_DIR=str(cache),
                               MODELPORT_PLATFORM_URL=run.procs.web,
                               MODELPORT_HOST_MODEL_SOURCE="fetch"):
            started = time.monotonic()
            host_models.model_dir_on_host(version, host=host)  # logs nothing: level WARNING
            loopback = time.monotonic() - started
        shutil.rmtree(cache, ignore_errors=True)
        rows.append({"mb": version.artifact_size / MB, "bridge": bridge, "loopback": loopback,
                     "healthy": healthy})
        run.delete(name)
    return rows


def _healthy(name: str) -> bool:
    from deployments.models import Deployment

    fresh()
    return Deployment.objects.filter(name=name, status="healthy").exists()


def placed(name: str) -> dict[str, int]:
    from deployments.models import Replica

    fresh()
    out: dict[str, int] = {}
    for host, ready in Replica.objects.filter(deployment__name=name).exclude(
            host_status__in=["lost", "removing"]).values_list("host__name", "ready"):
        out[host] = out.get(host, 0) + int(bool(ready))
    return out


def host_in(host: str, state: str) -> bool:
    from compute.models import Host

    fresh()
    return Host.objects.filter(name=host, state=state).exists()


def cut_under_load(run: Run, name: str, clients: int, label: str) -> dict:
    """Steady traffic; cut a host holding a replica; failures and times; the link restored
    and its stale container gone before returning."""
    from deployments.models import Replica
    from tests.lab_processes import Traffic

    victim = sorted(placed(name))[0]
    stale = [r for r in Replica.objects.filter(deployment__name=name, host__name=victim)
             .values_list("runtime_id", flat=True)]
    traffic = Traffic(lambda s: run.predict(s, name), dict(run.session.headers), clients=clients)
    try:
        time.sleep(3)
        cut = time.monotonic()
        run.net.hosts[victim].link(False)
        lost = run.procs.wait(f"{victim} lost", lambda: host_in(victim, "lost")
                              and time.monotonic(), timeout=90) - cut

        def recovered() -> float | None:
            hosts = placed(name)
            ready = sum(n for h, n in hosts.items() if h != victim)
            return time.monotonic() if ready >= 2 else None
        back = run.procs.wait("2 ready replicas on the other hosts", recovered, timeout=300) - cut
        time.sleep(3)
    finally:
        traffic.stop()
        run.net.hosts[victim].link(True)
    failed = [r for r in traffic.results if r[2] != 200]
    during = [done - sent for sent, done, _ in traffic.results if done >= cut]
    row = {"label": label, "victim": victim, "answered": len(traffic.results),
           "failed": len(failed), "in_flight": traffic.in_flight_at(cut),
           "last_failure": max((r[1] - cut for r in failed), default=None),
           "kinds": sorted({str(r[2]) for r in failed}), "lost": lost, "recovered": back,
           "over_1s": sum(1 for t in during if t > 1), "max": max(during, default=0.0)}
    client = run.clients[victim]
    run.procs.wait(f"{victim} alive again", lambda: host_in(victim, "alive"), timeout=90)
    run.procs.wait("its stale container removed", lambda: not any(
        client.containers.list(all=True, filters={"name": s}) for s in stale), timeout=120)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--warm-runs", type=int, default=3, help="warm deploys (3)")
    ap.add_argument("--clients", type=int, default=4, help="client threads in the cut (4)")
    ap.add_argument("--skip-big", action="store_true", help="no 200 MB model")
    args = ap.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") \
            or not os.environ.get("REDIS_URL"):
        sys.exit("bench/hosts.py needs DATABASE_URL (PostgreSQL) and REDIS_URL: the test "
                 "hosts reach them over the bridge")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-hosts-"))
    run = Run(tmp)
    try:
        return measure(args, run)
    finally:
        cleanup(run)


def cleanup(run: Run) -> None:
    from tests.lab_processes import remove_managed_containers

    for step in (lambda: run.procs and run.procs.stop(),
                 lambda: remove_managed_containers(run.clients),
                 lambda: run.net and run.net.close()):
        try:
            step()
        except Exception as exc:  # report and go on cleaning up
            print(f"cleanup: {exc}", file=sys.stderr)
    shutil.rmtree(run.tmp, ignore_errors=True)


def serving_image() -> str:
    """The base image (Debian packages, no registry pull) and the serving image of the
    platform's scikit-learn stack on this machine's engine, as the test suite builds them."""
    import docker
    from django.conf import settings

    from registry.sandbox import platform_requirements
    from workers.runtimes.images import ImageBuilder

    base = settings.MODELPORT_SERVING_BASE_IMAGE
    subprocess.run(["bash", str(REPO_ROOT / "platform/images/build-base.sh"), "--tag", base],
                   check=True, capture_output=True, timeout=1200)
    return ImageBuilder(docker.from_env(timeout=600), base).ensure_image(
        platform_requirements(), lambda _line: None)


def measure(args, run: Run) -> int:
    import requests

    bg.setup_django(run.tmp / "data")
    from django.conf import settings

    from compute.models import ExecutionTarget
    from tests.lab_processes import LabProcesses, lab_environments
    from tests.netlab import NetLab

    print("serving image, lab (3 hosts, registry), platform ...", flush=True)
    serving_image()
    token, run.team, iris = bg.seed(run.tmp)
    rid = uuid.uuid4().hex[:4]
    run.net = NetLab()
    db, redis = urlsplit(os.environ["DATABASE_URL"]), urlsplit(os.environ["REDIS_URL"])
    run.net.relay(db.port or 5432, db.hostname or "127.0.0.1")
    run.net.relay(redis.port or 6379, redis.hostname or "127.0.0.1")
    registry = run.net.start_registry(bg.bs.free_port())
    run.hosts = [f"bh{rid}-{x}" for x in "abc"]
    for host in run.hosts:
        run.clients[host] = run.net.add_host(host).start_docker()
    run.target = f"bench-hosts-{rid}"
    ExecutionTarget.objects.create(name=run.target, kind="docker", settings={
        "placement": "hosts", "registry": f"{registry}/mp"})
    address = run.net.platform_address
    web_port, edge_port = bg.bs.free_port(), bg.bs.free_port()
    while edge_port == web_port:
        edge_port = bg.bs.free_port()
    env, host_env = lab_environments(
        address=address, web=f"http://{address}:{web_port}", secret_key=settings.SECRET_KEY,
        base_image=settings.MODELPORT_SERVING_BASE_IMAGE,
        database_url=os.environ["DATABASE_URL"], redis_url=os.environ["REDIS_URL"],
        data_dir=str(run.tmp / "data"), target=run.target)
    (run.tmp / "logs").mkdir()
    (run.tmp / "beat").mkdir()
    run.procs = LabProcesses(run.net.hosts, env, host_env, run.tmp / "logs")
    run.procs.start_platform(address=address, web_port=web_port, edge_port=edge_port,
                             beat_dir=run.tmp / "beat")
    run.session = requests.Session()
    run.session.headers["Authorization"] = f"Bearer {token}"
    a, *others = run.hosts
    run.host_up(a)

    print("1. deploy → healthy on host A: cold, warm ...", flush=True)
    deploys = [deploy_split(run, a, iris, "cold image, cold cache")]
    for i in range(args.warm_runs):
        deploys.append(deploy_split(run, a, iris, f"warm #{i + 1}, model cached"))
    shutil.rmtree(run.cache_of(a), ignore_errors=True)
    deploys.append(deploy_split(run, a, iris, "warm image, cache emptied"))

    print("2. artifact fetch 10 MB / 200 MB ...", flush=True)
    logging.getLogger("deployments.host_models").setLevel(logging.WARNING)
    fetches = fetch_figures(run, a, run.tmp / "iris", [10] if args.skip_big else [10, 200])

    print("3. host cut under steady load ...", flush=True)
    for host in others:
        run.host_up(host)
        run.clients[host].api.pull(run.image)  # image present: the recovery is timed, not a pull
    name = f"bh-cut-{rid}"
    run.deploy(name, iris, replicas=2)
    run.procs.wait(f"{name} healthy", lambda: _healthy(name), timeout=600)
    cuts = [cut_under_load(run, name, args.clients, "ejection on (5 s)")]
    run.procs.stop_process("edge")
    run.procs.start_edge(address, edge_port, run.procs.web,
                         env={**env, "MODELPORT_GATEWAY_EJECT_S": "0"})
    run.procs.wait("the edge serving again", lambda: run.predict(run.session, name) == 200)
    cuts.append(cut_under_load(run, name, args.clients, "ejection off (anchor)"))
    report(deploys, fetches, cuts, args)
    return 0


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(deploys: list[dict], fetches: list[dict], cuts: list[dict], args) -> None:
    load = os.getloadavg()
    print("\n1. Deploy → healthy on a remote host (iris, 1 replica, 0.5 CPU; s; "
          "POST → placed includes the push)")
    head = ("run", "total", "push", "pull", "fetch", "→placed", "placed→started",
            "started→ready", "ready→healthy")
    print(f"{head[0]:<27}" + "".join(f"{h:>15}" for h in head[1:]))
    for d in deploys:
        cells = [d["total"], d["push"], d["pull"], d["fetch"], d["to_placed"],
                 d["placed_to_started"], d["started_to_ready"], d["ready_to_healthy"]]
        print(f"{d['label']:<27}" + "".join(f"{fmt(c):>15}" for c in cells))
    warm = [d["total"] for d in deploys if d["label"].startswith("warm #")]
    if warm:
        print(f"warm median {statistics.median(warm):.2f} s (N={len(warm)})")
    print("\n2. Artifact fetch (download + SHA-256 + unpack into the host cache; s)")
    print(f"{'artifact MB':>12} {'host, bridge':>14} {'loopback':>10} {'deploy→healthy':>16}")
    for f in fetches:
        print(f"{f['mb']:>12.1f} {fmt(f['bridge']):>14} {fmt(f['loopback']):>10} "
              f"{f['healthy']:>16.2f}")
    print(f"\n3. Host cut under steady load ({args.clients} clients, one request at a time, "
          "through the edge; 2 replicas; s after the cut; >1 s and max: latency of the requests "
          "answered after the cut)")
    print(f"{'edge':<24} {'answered':>9} {'failed':>7} {'in flight':>10} {'last fail':>10} "
          f"{'host lost':>10} {'2 ready':>8} {'>1 s':>5} {'max s':>6}  kinds")
    for c in cuts:
        print(f"{c['label']:<24} {c['answered']:>9} {c['failed']:>7} {c['in_flight']:>10} "
              f"{fmt(c['last_failure']):>10} {c['lost']:>10.2f} {c['recovered']:>8.2f} "
              f"{c['over_1s']:>5} {c['max']:>6.2f}  "
              f"{','.join(c['kinds']) or '-'}")
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    sys.exit(main())
