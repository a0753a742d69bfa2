"""Shared machinery of the serving benchmarks (bench/serving.py, bench/serving_logging.py,
bench/flavors.py): server processes in their own process group, readiness polling, RSS and
CPU time of a process tree from /proc, and ``wrk`` runs parsed into req/s, p50, p99, errors.

Standard library only; imported by path-less name from scripts run as ``python bench/X.py``
(their folder is first on sys.path).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WRK = shutil.which("wrk") or "/usr/bin/wrk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_200(self, url: str, timeout: float = 120) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.popen.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read().decode()[-3000:]}")
            if http_status(url) == 200:
                return time.perf_counter() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"{url} not ready after {timeout}s")

    def rss_mb(self) -> float:
        """RSS of the process and its children."""
        pids = {self.popen.pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in pids:
                pids.add(int(stat.parent.name))
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)  # the group this script started
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def cpu_seconds(proc: Proc) -> float:
    """CPU time (user + system) used so far by the server process and its children."""
    pids = {proc.popen.pid}
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(stat.parent.name)] = fields
    changed = True
    while changed:  # children of children
        changed = False
        for pid, fields in stats.items():
            if int(fields[1]) in pids and pid not in pids:
                pids.add(pid)
                changed = True
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in pids if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, conns: int, duration: int, body: bytes | None, tmp: Path,
            headers: dict[str, str] | None = None, timeout_s: int | None = None) -> dict:
    """``timeout_s``: wrk's per-request timeout (its default 2 s counts slower answers as
    errors, not latency)."""
    cmd = [WRK, f"-t{min(2, conns)}", f"-c{conns}", f"-d{duration}s", "--latency"]
    if timeout_s:
        cmd.append(f"--timeout={timeout_s}s")
    if body is not None:
        script = tmp / "body.lua"
        extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"{extra}wrk.body = [==[{body.decode()}]==]\n"
        )
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if errs:
        errors += sum(int(g) for g in errs.groups())
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": to_ms(p50.group(1)) if p50 else float("nan"),
        "p99": to_ms(p99.group(1)) if p99 else float("nan"),
        "errors": errors,
    }
