#!/usr/bin/env python3
"""First run, measured: a clone in a temp dir, `make run` with a fresh data dir and a free port.

Times, from `make run` to:
  install   the venv created and requirements installed (0 when the venv is already there)
  migrate   migrations applied
  seed      the admin and demo team seeded (`manage.py bootstrap`)
  portal    /readyz answers 200
  healthy   the demo deployment reported healthy (models trained, validated, deployed)
  curl      the printed curl line answered with a prediction
then deletes the demo deployment through the API (its container goes), presses Ctrl-C and checks
that no process or container is left.

Standard library only (it runs before any venv exists). Modes:
  python3 bench/first_run.py                 fresh venv (pip, with the pip cache unless
                                             --no-pip-cache)
  python3 bench/first_run.py --reuse-venv    the venv already present: this checkout's .venv is
                                             copied in and relocated, as if `make run` had run
                                             once (copying is not timed)
  --copy-worktree   copy this working tree (uncommitted changes included) instead of `git clone`
  --runtime local   force the local runtime (no Docker)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = {  # name: a line of `make run` output that ends the step
    "install": "manage.py migrate",
    "migrate": "manage.py bootstrap",
    "seed": "-m config.supervise",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checkout(target: Path, copy_worktree: bool) -> None:
    if not copy_worktree:
        subprocess.run(["git", "clone", "--quiet", "--local", str(ROOT), str(target)], check=True)
        return
    files = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        src = ROOT / raw.decode()
        if src.is_file() and not src.is_symlink():
            dest = target / raw.decode()
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def reuse_venv(target: Path) -> None:
    """Copy this checkout's venv and rewrite the absolute paths a venv keeps (script shebangs,
    the editable client), then mark it installed the way the Makefile does."""
    src = ROOT / ".venv"
    if not (src / ".installed").exists():
        sys.exit(f"{src} is not installed (run `make install` there first)")
    dest = target / ".venv"
    shutil.copytree(src, dest, symlinks=True)
    old, new = str(ROOT), str(target)
    candidates = list((dest / "bin").iterdir())
    candidates += list(dest.glob("lib/python*/site-packages/__editable__*"))
    candidates += list(dest.glob("lib/python*/site-packages/*.dist-info/direct_url.json"))
    for path in candidates:
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if old in text:
            path.write_text(text.replace(old, new))
    (dest / ".installed").touch()  # newer than requirements/*.txt: no reinstall


class Run:
    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.started = time.monotonic()
        self.times: dict[str, float] = {}
        self.lines: list[str] = []
        self.log = log.open("w")
        self.process = subprocess.Popen(["make", "run"], cwd=cwd, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()
            self.lines.append(line)
            for name, marker in MARKERS.items():
                if name not in self.times and marker in line:
                    self.times[name] = self.elapsed()
            if "healthy" not in self.times and re.search(r"deployment \S+: healthy", line):
                self.times["healthy"] = self.elapsed()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.process.poll() is not None:
                raise RuntimeError(f"make run exited ({self.process.returncode}) before {what}")
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")

    def stop(self) -> list[str]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        time.sleep(1)
        left = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(self.process.pid)],
                              capture_output=True, text=True).stdout
        self.log.close()
        return [line for line in left.splitlines() if line.strip()]


def get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return 0


def containers(name: str) -> list[str]:
    if not shutil.which("docker"):
        return []
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=modelport.deployment={name}"],
                         capture_output=True, text=True, check=False).stdout
    return out.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reuse-venv", action="store_true")
    parser.add_argument("--copy-worktree", action="store_true")
    parser.add_argument("--no-pip-cache", action="store_true")
    parser.add_argument("--runtime", choices=["auto", "docker", "local"], default="auto")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="modelport-first-run-"))
    target = tmp / "modelport"
    checkout(target, args.copy_worktree)
    if args.reuse_venv:
        reuse_venv(target)
    port, name = free_port(), f"first-run-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV",
                        "MODELPORT_BASE_URL"} and not k.startswith("PYTEST")}
    env.update({"PORT": str(port), "MLFLOW_PORT": str(free_port()),
                "MODELPORT_DATA_DIR": str(tmp / "var"), "MODELPORT_DEMO": "1",
                "MODELPORT_DEMO_DEPLOYMENT": name, "MODELPORT_RUNTIME": args.runtime,
                "MODELPORT_ADMIN_PASSWORD": "first-run-password"})
    if args.no_pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    base = f"http://127.0.0.1:{port}"
    run = Run(target, env, tmp / "make-run.log")
    figures: dict[str, float] = {}
    failure = ""
    token = ""
    try:
        run.wait_for(lambda: get(f"{base}/readyz") == 200, args.timeout, "the portal")
        run.times["portal"] = run.elapsed()
        text = run.wait_for(lambda: "Modelport demo ready" in run.text() and run.text(),
                            args.timeout, "the demo")
        curl = next(line[line.index("curl -sS"):].strip() for line in text.splitlines()
                    if "curl -sS" in line)
        token = re.search(r"Bearer (mpt_[\w-]+)", curl)[1]
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True,
                                timeout=60, check=False)
        if answer.returncode != 0 or "predictions" not in answer.stdout:
            raise RuntimeError(f"the printed curl failed: {answer.stdout} {answer.stderr}")
        run.times["curl"] = run.elapsed()
    except Exception as exc:
        failure = str(exc)
    finally:
        if token:
            request = urllib.request.Request(f"{base}/api/v1/deployments/{name}/",
                                             method="DELETE",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                urllib.request.urlopen(request, timeout=10)
            except (urllib.error.URLError, OSError) as exc:
                print(f"could not delete the demo deployment: {exc}", file=sys.stderr)
            deadline = time.monotonic() + 120
            while containers(name) and time.monotonic() < deadline:
                time.sleep(1)
        left = run.stop()
        stray = containers(name)
        if stray:
            subprocess.run(["docker", "rm", "-f", *stray], capture_output=True, check=False)
    previous = 0.0
    for step in ("install", "migrate", "seed", "portal", "healthy", "curl"):
        if step in run.times:
            figures[step] = round(run.times[step] - previous, 1)
            previous = run.times[step]
    figures["total"] = round(run.times.get("curl", run.elapsed()), 1)
    mode = "venv reused" if args.reuse_venv else "fresh venv"
    if args.json:
        print(json.dumps({"mode": mode, "steps_s": figures, "ok": not failure,
                          "leftover_processes": left, "leftover_containers": stray}))
    else:
        print(f"first run ({mode}, runtime {args.runtime}); seconds per step:")
        for step, seconds in figures.items():
            print(f"  {step:8s} {seconds:7.1f}")
        print(f"leftover processes: {len(left)}, containers: {len(stray)} (removed)")
    if failure:
        print(f"FAILED: {failure}\n--- last lines of make run ---\n{run.text()[-4000:]}",
              file=sys.stderr)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 1 if failure or left else 0


if __name__ == "__main__":
    sys.exit(main())
