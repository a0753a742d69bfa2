"""Soak: everything at once against `make run`, for half an hour (issue 26).

    .venv/bin/python bench/soak.py                # 30 minutes
    .venv/bin/python bench/soak.py --minutes 5    # a shorter run

Starts `make run` in this checkout with a fresh data dir and free ports (the demo on, as a user
gets it), then, all through the platform's own API and gateway and all at the same time:

- **uploads**: a new version of a model every ~90 s (an MLflow zip), validated in the sandbox;
- **deploys, canaries, rollbacks**: two deployments with a canary strategy; every ~60 s one is
  moved to another ready version (a canary rollout), rolled back, stopped and started, or
  deleted and deployed again (each kind once in every five actions);
- **traffic**: ~20 predictions a second through the gateway, each with its own request id;
- **API fuzzing**: schemathesis against the live OpenAPI schema as an engineer of a team of its
  own (so it can change nothing of the others'), rate-limited;
- **a watcher**: `/healthz` through the edge every second (the platform is "down" while it
  does not answer), and the supervisor's own lines in make run's log: which process ended, how,
  and that it was restarted (its processes run in sessions of their own, so a process-group
  listing would not see them).

At the end traffic stops, every deployment must converge (healthy with all traffic and replicas
on its current revision and no rollout under way, or stopped with no replica) and every version
settle (ready or failed) within ``--converge-minutes``, and every prediction the gateway
answered with 200 must be in the prediction log (sampling is 1.0): the request ids are looked
up in the database. Prints a report and exits non-zero when a target is missed: 0 platform-down
periods over 5 s, 0 lost prediction records, every deployment converged.

Everything it started is stopped and removed, also on Ctrl-C, SIGTERM or a failure: make run,
the fuzzer, and every container labelled with this installation's id (the demo's replicas
outlive make run by design) — never another installation's. Needs Docker for the sandbox and
the replicas (the serving image is built on first use if missing: minutes).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [[5.1, 3.5, 1.4, 0.2]]
ADMIN_PASSWORD = "soak-admin-password-1"
FUZZER_PASSWORD = "soak-fuzzer-password-1"
ACTIONS = ["update", "update", "rollback", "restart", "recreate"]
# config/supervise.py's line when a process it runs ends (other than at Ctrl-C).
# A process's error log line: Celery's "[time: ERROR/Process] ...", Django's "time ERROR name ...".
ERROR_LINE = re.compile(r"(?:: ERROR/\S+\]| ERROR | CRITICAL )(?P<message>.*)$")
EXIT_LINE = re.compile(r"\| (?P<name>[\w-]+)\.1 (?P<how>(?:exited with status -?\d+|killed by \w+)"
                       r" after \d+ s; (?:restarting|runs once).*)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Tally:
    """What happened, counted by every thread (under one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter = field(default_factory=Counter)
    served: list[tuple[str, int, str]] = field(default_factory=list)  # (deployment, its
    # generation: deleted and deployed again, request id)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(f"{time.strftime('%H:%M:%S')} {text}")
        print(f"  {text}", flush=True)


class Platform:
    """`make run` in a process group of its own, and an API session as a given user."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port, self.mlflow_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.demo = f"soak-demo-{uuid.uuid4().hex[:6]}"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
        self.env.update({"PORT": str(self.port), "MLFLOW_PORT": str(self.mlflow_port),
                         "MODELPORT_DATA_DIR": str(data_dir),
                         "MODELPORT_ADMIN_PASSWORD": ADMIN_PASSWORD,
                         "MODELPORT_DEMO_DEPLOYMENT": self.demo,
                         "MODELPORT_BASE_URL": self.base})
        self.log = log
        self.proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=self.env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"make run exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base}/readyz", timeout=3).status_code == 200:
                    return
            time.sleep(1)
        sys.exit(f"make run not ready after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def manage(self, code: str) -> str:
        done = subprocess.run([str(VENV_PYTHON), "manage.py", "shell", "-c", code], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"manage.py shell failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def token(self, username: str, password: str) -> str:
        """A new API token (names are unique per user)."""
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        answer = requests.post(f"{self.base}/api/v1/tokens/",
                               json={"name": f"soak {username} {uuid.uuid4().hex[:8]}"},
                               headers={"Authorization": f"Basic {basic}"}, timeout=30)
        answer.raise_for_status()
        return answer.json()["token"]

    def installation(self) -> str:
        """This installation's id: every container it starts carries it as a label."""
        out = self.manage("from teams.installation import installation_id; "
                          "print('ID=' + installation_id())")
        return out.split("ID=", 1)[1].split()[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, f"{self.base}/api/v1{path}", timeout=60, **kw)


def model_zip(tmp: Path, max_iter: int) -> bytes:
    """An iris LogisticRegression as an MLflow zip, pinned to this platform's scikit-learn stack
    (so every version shares the serving image already built)."""
    from importlib import metadata

    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    model = LogisticRegression(max_iter=max_iter).fit(frame, data.target)
    target = tmp / f"iris-{max_iter}"
    example = pd.DataFrame(ROW, columns=COLUMNS)
    mlflow.sklearn.save_model(model, str(target), input_example=example,
                              signature=infer_signature(example, model.predict(example)),
                              pip_requirements=[  # registry.sandbox.platform_requirements()
                                  f"{n}=={metadata.version(n)}" for n in (
                                      "mlflow", "scikit-learn", "numpy", "pandas", "scipy",
                                      "skops")])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(target.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(target).as_posix())
    return buffer.getvalue()


class Soak:
    def __init__(self, args: argparse.Namespace, platform: Platform, admin: Api,
                 tmp: Path) -> None:
        self.args, self.platform, self.admin, self.tmp = args, platform, admin, tmp
        self.tally = Tally()
        self.stop = threading.Event()
        self.deployments = ["soak-a", "soak-b"]
        self.down_since: float | None = None
        self.down_periods: list[float] = []
        self.fuzzer_proc: subprocess.Popen | None = None
        self.log_pos = 0
        self.stopped: set[str] = set()  # deployments stopped by the soak, until healthy again
        self.errors_seen: set[str] = set()
        self.generation: Counter = Counter()
        self.recreating: set[str] = set()  # deployments deleted and deployed again
        self.gateway = requests.Session()
        self.gateway.headers["Authorization"] = admin.session.headers["Authorization"]

    def guarded(self, work):
        """A worker that notes an unexpected exception and carries on (a dead thread would
        silently take its share of the load away)."""
        def run() -> None:
            while not self.stop.is_set():
                try:
                    work()
                    return
                except Exception as exc:  # counted and shown in the report
                    self.tally.add(f"soak errors in {work.__name__}")
                    self.tally.note(f"{work.__name__}: {type(exc).__name__}: {exc}"[:500])
                    self.stop.wait(5)
        return run

    # --- the workers ----------------------------------------------------------------------------
    def uploads(self) -> None:
        n = 0
        while not self.stop.wait(random.uniform(60, 120)):
            n += 1
            body = model_zip(self.tmp, 200 + n)
            answer = self.admin("POST", "/models/soak-iris/versions/",
                                files={"file": ("model.zip", body)}, data={"format": "mlflow"})
            if answer.status_code != 202:
                self.tally.add(f"upload refused {answer.status_code}")
                continue
            self.tally.add("uploads")
            status = self.wait_version(answer.json()["version"], until=self.stop)
            if status:
                self.tally.add(f"versions {status}")

    def wait_version(self, number: int, timeout: float = 900,
                     until: threading.Event | None = None) -> str:
        """'ready' or 'failed'; 'stuck' after ``timeout``; '' once ``until`` is set."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.admin("GET", f"/models/soak-iris/versions/{number}/")
            if answer.status_code == 200 and answer.json()["status"] in ("ready", "failed"):
                return answer.json()["status"]
            if (until or threading.Event()).wait(3):
                return ""
        return "stuck"

    def ready_versions(self) -> list[int]:
        return [v["version"] for v in self.versions() if v.get("status") == "ready"]

    def versions(self) -> list[dict]:
        answer = self.admin("GET", "/models/soak-iris/versions/", params={"page_size": 200})
        answer.raise_for_status()
        return answer.json()["results"]

    def deploy(self, name: str, version: int) -> requests.Response:
        return self.admin("POST", "/deployments/", json={
            "name": name, "team": "soak", "model": "soak-iris", "version": version,
            "replicas": 1, "resources": {"cpu": 0.5, "memory_mb": 768},
            "strategy": {"type": "canary", "steps": [50, 100], "interval_s": 15}})

    def rollouts(self) -> None:
        deck: list[str] = []  # every kind of action once per five, in a random order
        while not self.stop.wait(random.uniform(45, 75)):
            if not deck:
                deck = random.sample(ACTIONS, len(ACTIONS))
            name, action = random.choice(self.deployments), deck.pop()
            if action == "update":
                current = self.admin("GET", f"/deployments/{name}/").json().get("version")
                versions = [v for v in self.ready_versions() if v != current]
                if not versions:  # the same version again would change nothing
                    continue
                answer = self.admin("PATCH", f"/deployments/{name}/",
                                    json={"version": random.choice(versions)})
            elif action == "rollback":
                answer = self.admin("POST", f"/deployments/{name}/rollback/", json={})
            elif action == "restart":
                # Errors while a deployment is stopped (and until it is healthy again) are
                # what the user asked for: counted apart.
                self.stopped.add(name)
                self.admin("POST", f"/deployments/{name}/stop/")
                time.sleep(5)
                answer = self.admin("POST", f"/deployments/{name}/start/")
            else:  # deleted and deployed again under the same name, on the latest version
                self.stopped.add(name)
                with self.tally.lock:
                    self.recreating.add(name)
                    self.generation[name] += 1
                self.admin("DELETE", f"/deployments/{name}/")
                deadline = time.monotonic() + 120
                while (self.admin("GET", f"/deployments/{name}/").status_code != 404
                       and time.monotonic() < deadline):
                    time.sleep(2)
                answer = self.deploy(name, max(self.ready_versions()))
                with self.tally.lock:
                    self.recreating.discard(name)
            self.tally.add(f"{action} {answer.status_code}")
            detail = "" if answer.ok else f" {answer.text[:200]}"
            if action == "rollback" and not answer.ok:
                revisions = self.admin("GET", f"/deployments/{name}/revisions/").json()
                detail += " revisions: " + ", ".join(
                    f"r{r['number']} {r['state']} healthy_at={r['healthy_at']}"
                    for r in revisions.get("results", revisions)
                    if isinstance(revisions, (dict, list)))
            self.tally.note(f"{action} {name}: {answer.status_code}{detail}")
            if action in ("restart", "recreate"):
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and not self.stop.wait(2):
                    if converged(self.admin("GET", f"/deployments/{name}/").json()):
                        break
                self.stopped.discard(name)

    def traffic(self) -> None:
        body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": ROW}})
        names = [*self.deployments, self.platform.demo]
        while not self.stop.is_set():
            name = random.choice(names)
            request_id = uuid.uuid4().hex
            stopped_before = set(self.stopped)
            with self.tally.lock:
                generation = (-1 if name in self.recreating else self.generation[name])
            try:
                answer = self.gateway.post(
                    f"{self.platform.base}/serve/{name}/invocations", data=body, timeout=30,
                    headers={"Content-Type": "application/json", "X-Request-ID": request_id})
                status = answer.status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            if status == 200:
                self.tally.add("predictions 200")
                with self.tally.lock:
                    # Answered while its deployment was being deleted and deployed again: by
                    # either one (-1: counted with the deleted ones).
                    if name in self.recreating or generation != self.generation[name]:
                        generation = -1
                    self.tally.served.append((name, generation, request_id))
            else:
                stopped = name in self.stopped or name in stopped_before
                key = f"predictions {status} from {name}" + (
                    " (stopped by the soak)" if stopped else "")
                if not self.tally.counts[key]:
                    text = answer.text[:200] if isinstance(status, int) else ""
                    self.tally.note(f"first {key}: {text!r}")
                self.tally.add(key)
            time.sleep(0.05)

    def fuzz(self) -> None:
        """Rounds of schemathesis, each with a fresh token (a round may revoke its own)."""
        schema = f"{self.platform.base}/api/v1/schema/?format=json"
        while not self.stop.is_set():
            token = self.platform.token("soak-fuzzer", FUZZER_PASSWORD)
            command = [str(ROOT / ".venv" / "bin" / "st"), "run", schema,
                       "--url", self.platform.base, "-H", f"Authorization: Bearer {token}",
                       "--max-examples", "3", "--rate-limit", "10/s", "--workers", "1",
                       "--phases", "fuzzing", "--checks", "not_a_server_error",
                       "--generation-allow-x00", "false", "--generation-codec", "utf-8",
                       "--generation-database", "none", "--no-color",
                       "--seed", str(random.randrange(1 << 30)), "--request-timeout", "30"]
            with self.tally.lock:
                if self.stop.is_set():
                    return
                # cwd: schemathesis writes a .schemathesis/ folder where it runs
                self.fuzzer_proc = subprocess.Popen(command, cwd=self.tmp, text=True,
                                                    stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT)
            output, _ = self.fuzzer_proc.communicate()
            if self.stop.is_set():
                return  # cut short at the end: not a round
            (self.tmp / "fuzz-last-round.txt").write_text(output)
            self.tally.add("fuzz rounds")
            if self.fuzzer_proc.returncode != 0:
                self.tally.add(f"fuzz rounds exiting {self.fuzzer_proc.returncode}")
                self.tally.note(f"fuzz: exit {self.fuzzer_proc.returncode}:\n"
                                + output[-2500:])

    def stop_all(self) -> None:
        """Stop every worker thread; the fuzzer's running round is cut short."""
        with self.tally.lock:
            self.stop.set()
            if self.fuzzer_proc is not None and self.fuzzer_proc.poll() is None:
                self.fuzzer_proc.terminate()

    def watch(self) -> None:
        """/healthz every second (through the edge to the web process); the supervisor's own
        lines in make run's log say which process ended, how, and that it was restarted."""
        self.log_pos = self.platform.log.stat().st_size
        while not self.stop.wait(1.0):
            up = False
            with contextlib.suppress(requests.RequestException):
                up = requests.get(f"{self.platform.base}/healthz", timeout=5).status_code == 200
            now = time.monotonic()
            if up and self.down_since is not None:
                self.down_periods.append(now - self.down_since)
                self.tally.note(f"platform back after {now - self.down_since:.1f} s")
                self.down_since = None
            elif not up and self.down_since is None:
                self.down_since = now
                self.tally.note("platform not answering /healthz")
            self.read_log()
        if self.down_since is not None:  # still down at the end
            self.down_periods.append(time.monotonic() - self.down_since)

    def read_log(self) -> None:
        """The complete lines make run wrote since the last call (also after the soak: what
        the convergence and the deletions log counts too)."""
        with self.platform.log.open("rb") as log:
            log.seek(self.log_pos)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self.log_pos += end
        for line in data[:end].splitlines():
            self.supervisor_line(line.decode("utf-8", "replace"))

    def supervisor_line(self, line: str) -> None:
        if "Traceback (most recent call last)" in line:
            self.tally.add("tracebacks in make run's log")
        error = ERROR_LINE.search(line)
        if error:  # each kind noted once, counted always
            kind = re.sub(r"\[[0-9a-f-]{36}\]|\d+", "#", error["message"])[:160]
            self.tally.add("ERROR lines in make run's log")
            with self.tally.lock:
                new = kind not in self.errors_seen
                self.errors_seen.add(kind)
            if new:
                self.tally.note(f"make run logged: {line[:300]}")
        found = EXIT_LINE.search(line)
        if found:
            self.tally.add(f"process exits: {found['name']}")
            self.tally.note(f"supervisor: {found['name']} {found['how']}")

    # --- the end ------------------------------------------------------------------------------
    def converge(self) -> dict[str, str]:
        """Each deployment's and each version's final state, once settled (or the timeout).
        A deployment has converged when it is healthy with all its traffic and all its desired
        replicas on its current revision and no rollout under way, or stopped with none."""
        final: dict[str, str] = {}
        deadline = time.monotonic() + self.args.converge_minutes * 60
        for name in [*self.deployments, self.platform.demo]:
            while True:
                answer = self.admin("GET", f"/deployments/{name}/")
                data = answer.json() if answer.status_code == 200 else {}
                if converged(data) or time.monotonic() > deadline:
                    final[name] = describe(data, answer.status_code)
                    break
                time.sleep(3)
        return final

    def settle_versions(self) -> dict[int, str]:
        """Each version's status once all are ready or failed (or the timeout)."""
        deadline = time.monotonic() + self.args.converge_minutes * 60
        while True:
            versions = {v["version"]: v["status"] for v in self.versions()}
            if all(s in ("ready", "failed") for s in versions.values()) \
                    or time.monotonic() > deadline:
                return versions
            time.sleep(3)

    def lost_records(self) -> tuple[int, int, int, int]:
        """(answered 200, of those not in the prediction log) for deployments that still
        exist, then the same for deployments the soak deleted afterwards or was deleting then
        (a replica removed with its deployment has nowhere to ship its last records: its
        ingest token was deleted with the deployment; not counted as lost).
        Waits for the shippers' last flushes."""
        ids_file = self.tmp / "served.json"
        with self.tally.lock:
            served = list(self.tally.served)
            generation = dict(self.generation)
        ids_file.write_text(json.dumps([rid for _, _, rid in served]))
        # Every stored id read back (an IN list of a half-hour's ids exceeds SQLite's limit).
        code = ("import json; from monitoring.models import PredictionRecord as R; "
                f"ids = set(json.load(open({str(ids_file)!r}))); "
                "found = set(R.objects.values_list('request_id', flat=True).iterator()); "
                "print('MISSING=' + json.dumps(sorted(ids - found)))")
        missing: set[str] = set()
        for _ in range(20):  # replicas ship once a second; rollouts drain theirs on removal
            out = self.platform.manage(code)
            missing = set(json.loads(out.split("MISSING=", 1)[1].splitlines()[0]))
            if not missing:
                break
            time.sleep(3)
        live = [rid for name, gen, rid in served if gen == generation.get(name, 0)]
        deleted = [rid for name, gen, rid in served if gen != generation.get(name, 0)]
        return (len(live), len(missing.intersection(live)), len(deleted),
                len(missing.intersection(deleted)))


def converged(data: dict) -> bool:
    current = data.get("revision")
    replicas = data.get("replicas") or []
    if data.get("stopped"):
        return data.get("status") == "stopped" and not replicas
    return (data.get("status") == "healthy" and not data.get("rollout")
            and [(t["revision"], t["percent"]) for t in data.get("traffic") or []]
            == [(current, 100)]
            and len(replicas) == data.get("desired_replicas")
            and all(r["revision"] == current and r["ready"] for r in replicas))


def describe(data: dict, status_code: int) -> str:
    if not data:
        return f"HTTP {status_code} (not converged)"
    text = f"{data['status']} r{data['revision']}"
    if converged(data):
        return text
    replicas = [(r["revision"], r["status"]) for r in data.get("replicas") or []]
    return (f"{text} (not converged: {data.get('status_message', '')[:160]!r}, traffic "
            f"{data.get('traffic')}, rollout {data.get('rollout')}, replicas {replicas})")


def setup(platform: Platform, admin: Api) -> None:
    """A team 'soak' (the admin deploys there), a team 'fuzz' with an engineer whose tokens the
    fuzzer uses (so it can change nothing of the others'), and the model soak-iris."""
    for slug in ("soak", "fuzz"):
        admin("POST", "/teams/", json={"slug": slug, "name": slug.title()}).raise_for_status()
    platform.manage(
        "from django.contrib.auth import get_user_model; from teams.models import *; "
        "u, _ = get_user_model().objects.get_or_create(username='soak-fuzzer'); "
        f"u.set_password({FUZZER_PASSWORD!r}); u.save(); "
        "Membership.objects.get_or_create(team=Team.objects.get(slug='fuzz'), user=u, "
        "defaults={'role': 'engineer'})")
    admin("POST", "/models/", json={"name": "soak-iris", "team": "soak"}).raise_for_status()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--converge-minutes", type=float, default=10)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (data dir, make run's log)")
    args = ap.parse_args()
    if not VENV_PYTHON.exists():
        sys.exit("run `make install` first")
    # SIGTERM ends the soak like Ctrl-C: through the clean-up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="modelport-soak-"))
    platform = Platform(tmp / "var", tmp / "make-run.log")
    started = time.time()
    soak: Soak | None = None
    admin: Api | None = None
    installation = ""
    try:
        print(f"make run on {platform.base} (log {platform.log}) ...", flush=True)
        platform.wait_ready()
        installation = platform.installation()
        admin = Api(platform.base, platform.token("admin", ADMIN_PASSWORD))
        setup(platform, admin)
        soak = Soak(args, platform, admin, tmp)
        print("uploading and validating the first version ...", flush=True)
        first = admin("POST", "/models/soak-iris/versions/", data={"format": "mlflow"},
                      files={"file": ("model.zip", model_zip(tmp, 150))})
        first.raise_for_status()
        if soak.wait_version(first.json()["version"]) != "ready":
            sys.exit("the first version did not validate")
        for name in soak.deployments:
            soak.deploy(name, 1).raise_for_status()
        print("waiting for the deployments to be healthy ...", flush=True)
        for name, state in soak.converge().items():
            if "not converged" in state:
                sys.exit(f"{name} did not become healthy: {state}")
        threads = [threading.Thread(target=soak.guarded(fn), name=fn.__name__, daemon=True)
                   for fn in (soak.watch, soak.uploads, soak.rollouts, soak.traffic, soak.fuzz)]
        for thread in threads:
            thread.start()
        print(f"soaking for {args.minutes:g} minutes ...", flush=True)
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30, max(end - time.monotonic(), 0)))
            with soak.tally.lock:
                print(f"  {time.strftime('%H:%M:%S')} {dict(soak.tally.counts)}", flush=True)
        soak.stop_all()
        for thread in threads:
            thread.join(timeout=120)
        print("waiting for every deployment and version to settle ...", flush=True)
        final, versions = soak.converge(), soak.settle_versions()
        records = soak.lost_records()
        # Deleting is part of the soak: what the platform logs after it (the next rollup
        # pass, the containers' removal) counts too.
        delete_deployments(platform, admin, soak.deployments)
        time.sleep(25)  # MODELPORT_MONITORING_ROLLUP_SECONDS (20) and its delay (5)
        soak.read_log()
        return report(soak, final, versions, records, time.time() - started)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    finally:
        # A second Ctrl-C must not leave containers and processes behind half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("cleaning up (make run, this installation's replicas, the temporary directory) "
              "...", flush=True)
        if soak is not None:
            soak.stop_all()
        if admin is not None:
            delete_deployments(platform, admin, ["soak-a", "soak-b"])
        if not installation:  # it failed before asking: the database is still there
            with contextlib.suppress(Exception):
                installation = platform.installation()
        platform.stop()
        left = remove_replicas(installation, tmp / "var")
        print(f"removed {left} replica container(s)/process(es) left by this installation",
              flush=True)
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def delete_deployments(platform: Platform, admin: Api, names: list[str]) -> None:
    """Delete the soak's deployments through the platform (it stops their replicas); the
    demo's replicas, like any user's, outlive make run and are removed afterwards."""
    with contextlib.suppress(requests.RequestException):
        for name in names:
            admin("DELETE", f"/deployments/{name}/")
        deadline = time.monotonic() + 60
        while names and time.monotonic() < deadline and platform.proc.poll() is None:
            names = [n for n in names if admin("GET", f"/deployments/{n}/").status_code != 404]
            time.sleep(2)


def remove_replicas(installation: str, data_dir: Path) -> int:
    """Remove every container labelled with this installation's id (never another's), and the
    local-runtime processes it recorded. Returns how many there were."""
    removed = 0
    if installation:
        with contextlib.suppress(Exception):
            import docker

            client = docker.from_env()
            for container in client.containers.list(all=True, filters={
                    "label": f"modelport.installation={installation}"}):
                container.remove(force=True, v=True)
                removed += 1
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((data_dir / "runtime" / "local-runtime.json").read_text())
        for record in state.values():
            pid = int(record.get("pid") or 0)
            if pid > 0:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # a local replica leads its own session
                    removed += 1
    return removed


def report(soak: Soak, final: dict[str, str], versions: dict[int, str],
           records: tuple[int, int, int, int], seconds: float) -> int:
    served, lost, served_deleted, lost_deleted = records
    counts = soak.tally.counts
    down = [p for p in soak.down_periods if p > 5]
    all_converged = all("not converged" not in status for status in final.values())
    unsettled = {n: s for n, s in versions.items() if s not in ("ready", "failed")}
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nSoak of {seconds / 60:.1f} minutes (soaking {soak.args.minutes:g}), "
          f"load average at the end {load} (1/5/15 min, {os.cpu_count()} cores)\n")
    print("| what | count |\n|---|---|")
    for key in sorted(counts):
        print(f"| {key} | {counts[key]} |")
    print(f"| platform down (> 5 s) | {len(down)} ({', '.join(f'{p:.0f} s' for p in down)}) |")
    print(f"| predictions answered 200 (deployments that still exist) | {served} |")
    print(f"| of those, missing from the prediction log | {lost} |")
    print(f"| predictions answered 200 by deployments deleted later | {served_deleted} |")
    print(f"| of those, missing from the prediction log (not a target) | {lost_deleted} |")
    print(f"| soak-iris versions at the end | {dict(Counter(versions.values()))} |")
    for name, status in final.items():
        print(f"| {name} at the end | {status} |")
    if soak.tally.notes:
        print("\nNotes:\n" + "\n".join(soak.tally.notes))
    met = not down and lost == 0 and all_converged and not unsettled
    print("\nTargets (no platform-down period over 5 s, 0 lost prediction records, every "
          f"deployment converged, every version settled): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
