"""Local-process runtime for machines without Docker: `python -m serving` as subprocesses.

Not a sandbox (``sandboxed = False``): the model runs as the same user as the worker. Limits
come from ``resource.setrlimit`` in the child (address space, open files, no core dumps, and
optionally CPU seconds and process count). A replica listens only on a unix socket file in a
directory of its own under the state dir (``serving/sockets.py``), never on a TCP port, so other
users of the machine cannot call it. Model code itself runs as the platform's user, so it can
reach what that user can (other replicas, the data dir): that is what "unsandboxed" means, and
the portal says so. Replicas are recorded in a JSON state file, keyed by replica id with the
pid and the kernel's start time of that pid, so a restarted worker finds them again and never
signals a recycled pid. Each record names the installation that started it; a runtime sees only
its own installation's (see ``Runtime.owns``: a record from before installation ids is its own
when its running process carries one of this installation's replica keys).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.sockets import SOCKET_NAME, unix_url

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_REVISION,
    LegacyOwner,
    LogFn,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    missing_state,
    private_dirs,
)
from .images import REPO_ROOT

_CLK_TCK = os.sysconf("SC_CLK_TCK")
# The only variables of the worker's environment a replica inherits: never its secrets
# (DJANGO_SECRET_KEY, DATABASE_URL ...), since model code runs unsandboxed here.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV",
                 "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PYTHONPATH")


def proc_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()[0]


def make_preexec(memory_mb: int | None, *, address_space_overhead_mb: int = 2048,
                 cpu_seconds: int | None = None, nproc: int | None = None,
                 nofile: int = 4096) -> Callable[[], None]:
    """Build the child-side limit setter (runs between fork and exec: no locks, no logging).

    RLIMIT_AS counts virtual memory, which NumPy/BLAS and thread stacks inflate well beyond the
    resident size, so the limit is `memory_mb` plus an overhead; RLIMIT_CPU is total CPU seconds
    (off by default: a server runs indefinitely); RLIMIT_NPROC counts every process of the user,
    so it is only set when asked for."""

    def preexec() -> None:
        def cap(which: int, value: int) -> None:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))

        cap(resource.RLIMIT_CORE, 0)
        cap(resource.RLIMIT_NOFILE, nofile)
        if memory_mb:
            cap(resource.RLIMIT_AS, (memory_mb + address_space_overhead_mb) * 1024 * 1024)
        if cpu_seconds:
            cap(resource.RLIMIT_CPU, cpu_seconds)
        if nproc:
            cap(resource.RLIMIT_NPROC, nproc)

    return preexec


class LocalRuntime(Runtime):
    name = "local"
    sandboxed = False

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 python: str = sys.executable,
                 source_dir: str | os.PathLike[str] = REPO_ROOT,
                 address_space_overhead_mb: int = 2048,
                 cpu_seconds: int | None = None,
                 nproc: int | None = None,
                 installation: str = "",
                 legacy_owner: LegacyOwner | None = None) -> None:
        self.installation = installation
        self.legacy_owner = legacy_owner
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.state_dir / "local-runtime.json"
        self.log_dir = self.state_dir / "local-logs"
        self.socket_dir = self.state_dir / "local-sockets"
        self.python = python
        self.source_dir = Path(source_dir)
        self.address_space_overhead_mb = address_space_overhead_mb
        self.cpu_seconds = cpu_seconds
        self.nproc = nproc
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # --- images -----------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        log = on_log or (lambda _line: None)
        log(f"local runtime: no image; replicas run with {self.python} "
            f"({len(requirements)} model requirement(s) are not installed separately)")
        return f"local:{self.python}"

    # --- lifecycle --------------------------------------------------------------------------
    def start_replica(self, spec: ReplicaSpec) -> ReplicaState:
        spec = self.scoped(spec)
        if not spec.model_dir:
            raise ReplicaRuntimeError("the local runtime needs spec.model_dir")
        rid = spec.name
        with self._state() as state:
            rec = state.get(rid)
            if rec is not None and not self._mine(rec):
                raise ReplicaRuntimeError(f"a local replica named {rid} exists and is not this "
                                          "installation's (it is left alone)")
            if rec is not None and self._alive(rec):
                return self._to_state(rid, rec)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            socket_path = self._socket_path(rid)
            log_path = self.log_dir / f"{rid}.log"
            env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV}
            env.update(spec.env)
            threads = str(max(1, int(-(-spec.cpu // 1)))) if spec.cpu else "1"
            env.update({
                "MODELPORT_MODEL_DIR": str(Path(spec.model_dir).resolve()),
                "MODELPORT_UNIX_SOCKET": str(socket_path),
                "MODELPORT_WORKERS": str(spec.workers),
                "MODELPORT_MODEL_NAME": spec.model_name or spec.deployment,
                "MODELPORT_MODEL_VERSION": str(spec.model_version),
                "MODELPORT_DEPLOYMENT": spec.deployment,
                "MODELPORT_REVISION": str(spec.revision),
                "MODELPORT_REPLICA": str(spec.replica),
                "PYTHONPATH": os.pathsep.join(
                    [str(self.source_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                              else [])),
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
            })
            cmd = [self.python, "-m", "serving", "--model-dir", env["MODELPORT_MODEL_DIR"],
                   "--unix-socket", str(socket_path), "--workers", str(spec.workers)]
            with open(log_path, "ab") as log_fh:
                proc = subprocess.Popen(
                    cmd, cwd=str(self.source_dir), env=env, stdin=subprocess.DEVNULL,
                    stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True,
                    close_fds=True,
                    preexec_fn=make_preexec(  # only setrlimit runs in the child
                        spec.memory_mb, address_space_overhead_mb=self.address_space_overhead_mb,
                        cpu_seconds=self.cpu_seconds, nproc=self.nproc))
            self._children[proc.pid] = proc
            rec = {
                "pid": proc.pid, "start_ticks": proc_start_ticks(proc.pid),
                "socket": str(socket_path),
                "deployment": spec.deployment, "revision": spec.revision,
                "replica": spec.replica, "model_dir": env["MODELPORT_MODEL_DIR"],
                "model_name": spec.model_name, "model_version": str(spec.model_version),
                "labels": dict(spec.labels), "log": str(log_path),
                "installation": self.installation,
                "started_at": datetime.now(UTC).isoformat(), "exit_code": None,
                "restart_count": int((state.get(rid) or {}).get("restart_count", 0)),
            }
            state[rid] = rec
            return self._to_state(rid, rec)

    def stop_replica(self, replica_id: str, timeout: float = 10) -> None:
        with self._state() as state:
            rec = state.get(replica_id)
            if rec is None or not self._mine(rec):
                return
            if self._alive(rec):
                self._signal(rec, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self._alive(rec):
                    time.sleep(0.05)
                if self._alive(rec):
                    self._signal(rec, signal.SIGKILL)
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline and self._alive(rec):
                        time.sleep(0.05)
            rec["stopped"] = True
            self._reap(rec)

    def remove_replica(self, replica_id: str) -> None:
        self.stop_replica(replica_id, timeout=5)
        with self._state() as state:
            if replica_id not in state or not self._mine(state[replica_id]):
                return
            rec = state.pop(replica_id, None)
        if rec:
            with contextlib.suppress(OSError):
                Path(rec["log"]).unlink()
            with contextlib.suppress(OSError):
                shutil.rmtree(self._socket_path(replica_id).parent)

    # --- discovery --------------------------------------------------------------------------
    def list_replicas(self, deployment: str | None = None) -> list[ReplicaState]:
        with self._state() as state:
            items = [(rid, rec) for rid, rec in state.items()
                     if (deployment is None or rec.get("deployment") == deployment)
                     and self._mine(rec)]
            for _rid, rec in items:
                self._reap(rec)
            out = [self._to_state(rid, rec) for rid, rec in items]
        return sorted(out, key=lambda s: (s.deployment, s.revision, s.replica, s.id))

    def get_replica(self, replica_id: str) -> ReplicaState:
        with self._state() as state:
            rec = state.get(replica_id)
            if rec is None or not self._mine(rec):
                return missing_state(replica_id)
            self._reap(rec)
            return self._to_state(replica_id, rec)

    def logs(self, replica_id: str, tail: int = 200) -> str:
        with self._state() as state:
            rec = state.get(replica_id)
        if rec is None or not self._mine(rec):
            return ""
        try:
            lines = Path(rec["log"]).read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")

    def stats(self, replica_id: str, interval: float = 0.25) -> dict[str, float]:
        with self._state() as state:
            rec = state.get(replica_id)
        if rec is None or not self._mine(rec) or not self._alive(rec):
            return {"cpu_percent": 0.0, "memory_bytes": 0.0}
        pgid = int(rec["pid"])
        first = _group_cpu_ticks(pgid)
        t0 = time.monotonic()
        time.sleep(interval)
        second = _group_cpu_ticks(pgid)
        elapsed = time.monotonic() - t0
        cpu_percent = max(0, second - first) / _CLK_TCK / elapsed * 100.0
        return {"cpu_percent": cpu_percent, "memory_bytes": float(_group_rss(pgid))}

    def ping(self) -> bool:
        return True

    # --- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The state file, locked for the duration and written back atomically."""
        lock_path = self.state_dir / "local-runtime.lock"
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    data = json.loads(self.state_file.read_text())
                except (OSError, ValueError):
                    data = {}
                before = json.dumps(data, sort_keys=True)
                yield data
                after = json.dumps(data, sort_keys=True)
                if after != before:
                    tmp = self.state_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                    os.replace(tmp, self.state_file)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _mine(self, rec: dict[str, Any]) -> bool:
        """Whether the record is this installation's. A legacy record proven ours is adopted
        once: it gets our id (written back with the state file), so it stays ours after its
        process stopped."""
        labels = {LABEL_DEPLOYMENT: str(rec.get("deployment", "")),
                  LABEL_REVISION: str(rec.get("revision", ""))}
        if rec.get("installation"):
            labels[LABEL_INSTALLATION] = str(rec["installation"])
        mine = self.owns(labels, lambda: self._environ(rec))
        if mine and self.installation and not rec.get("installation"):
            rec["installation"] = self.installation
        return mine

    def _environ(self, rec: dict[str, Any]) -> dict[str, str]:
        """The environment of a record's running process (only a live one says anything)."""
        if not self._alive(rec):
            return {}
        try:
            raw = Path(f"/proc/{int(rec['pid'])}/environ").read_bytes()
        except OSError:
            return {}
        return dict(item.decode("utf-8", "replace").partition("=")[::2]
                    for item in raw.split(b"\0") if item)

    def _socket_path(self, rid: str) -> Path:
        """The replica's socket, in a directory of its own (mode 0700, like its parent)."""
        directory = private_dirs(self.socket_dir / rid)
        return directory / SOCKET_NAME

    def _alive(self, rec: dict[str, Any]) -> bool:
        pid = int(rec["pid"])
        ticks = proc_start_ticks(pid)
        if ticks is None or (rec.get("start_ticks") is not None and ticks != rec["start_ticks"]):
            return False  # gone, or the pid now belongs to another process
        return _proc_state(pid) not in ("Z", "X", None)

    def _reap(self, rec: dict[str, Any]) -> None:
        """Collect the exit code of a finished child of this process (and free its zombie)."""
        pid = int(rec["pid"])
        proc = self._children.get(pid)
        if proc is not None:
            code = proc.poll()
            if code is not None:
                rec["exit_code"] = code
                self._children.pop(pid, None)
            return
        if rec.get("exit_code") is None and not self._alive(rec):
            with contextlib.suppress(ChildProcessError, OSError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    rec["exit_code"] = os.waitstatus_to_exitcode(status)

    def _signal(self, rec: dict[str, Any], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(rec["pid"]), sig)  # start_new_session: pgid == pid

    def _to_state(self, rid: str, rec: dict[str, Any]) -> ReplicaState:
        alive = self._alive(rec)
        if alive:
            status = ReplicaStatus.RUNNING
        elif rec.get("exit_code") is None and not rec.get("stopped"):
            status = ReplicaStatus.DEAD  # vanished without an exit code we could collect
        else:
            status = ReplicaStatus.EXITED
        code = rec.get("exit_code")
        return ReplicaState(
            id=rid, deployment=rec.get("deployment", ""), revision=int(rec.get("revision", 0)),
            replica=int(rec.get("replica", 0)), status=status,
            url=unix_url(rec["socket"]) if rec.get("socket") else None,
            exit_code=None if alive else code,
            started_at=datetime.fromisoformat(rec["started_at"]) if rec.get("started_at")
            else None,
            restart_count=int(rec.get("restart_count", 0)),
            image=f"local:{self.python}", model_name=rec.get("model_name", ""),
            model_version=rec.get("model_version", ""), labels=dict(rec.get("labels") or {}),
        )


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            pids.append(int(entry.name))
    return pids


def _group_cpu_ticks(pgid: int) -> int:
    total = 0
    for pid in _group_pids(pgid):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _group_rss(pgid: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in _group_pids(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total
