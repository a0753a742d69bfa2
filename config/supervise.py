"""`make run`'s process supervisor: the Procfile's processes, each restarted when it dies.

    python -m config.supervise --procfile Procfile --once demo --stop-last redis \\
        --on-stop "python -m config.replicas_left"

honcho (which `make run` used before) stops every process as soon as one exits, so one crash
took the whole platform down (issue 26). Here a process that exits is restarted after a backoff
(1 s, doubling up to 30 s; back to 1 s once it has run for 60 s) with a log line saying how it
ended; the others never notice. Output keeps honcho's format (honcho's own ``Printer``: time,
``name.1 |`` prefix, colours on a terminal), and the Procfile stays the one list of processes.

Why not supervisord or circus: supervisord writes each program's output to its own log (a
prefixed terminal stream needs an event-listener process that every log line makes a round trip
through), and gives up on a process that keeps failing early (FATAL) instead of backing off;
circus respawns immediately, and its flapping plugin also ends by stopping the watcher, and it
brings ZeroMQ and TCP control ports (one set per installation). What `make run` needs is small:
start, prefix, back off, stop.

Each process runs in its own session (so Ctrl-C in the terminal reaches only this supervisor,
which then stops everything in order) with ``PR_SET_PDEATHSIG``: if the supervisor itself is
killed, its processes get SIGTERM instead of holding the platform's ports and sockets. When a
process exits, whatever is left of its process group (gunicorn workers, Celery pool processes,
MLflow's uvicorn) is stopped before it is started again. Model replicas are started in sessions
of their own by the runtimes and are left running by design; ``--on-stop`` says which.

``--metrics-dir`` (the Makefile passes ``$MODELPORT_DATA_DIR/run/prometheus``) is
prometheus-client's multiprocess folder for every process: emptied when the supervisor starts,
``PROMETHEUS_MULTIPROC_DIR`` in their environment, and the files of a process group that ended
folded into the folder's archive (``core.prom_files``), so ``/metrics`` adds every process up.

Imports nothing from Django: a small, long-lived process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from honcho.colour import get_colours
from honcho.environ import parse_procfile
from honcho.printer import Message, Printer

from core.prom_files import compact_dead

NAME = "supervise"
_PR_SET_PDEATHSIG = 1


@dataclass
class Policy:
    """How processes are restarted and stopped."""

    backoff_first: float = 1.0
    backoff_max: float = 30.0
    stable_after: float = 60.0  # a process that ran this long restarts after backoff_first
    stop_timeout: float = 10.0  # SIGTERM, then this long, then SIGKILL
    group_grace: float = 5.0  # after a process exits: its group gets SIGTERM, then SIGKILL

    def delay(self, failures: int) -> float:
        """Seconds before restart number ``failures`` of a run of quick exits."""
        return min(self.backoff_max, self.backoff_first * 2 ** max(failures - 1, 0))


@dataclass
class Program:
    name: str
    command: str
    once: bool = False  # runs to completion: restarted only when killed by a signal
    colour: str | None = None
    pid: int | None = None
    started_at: float = 0.0
    restarts: int = 0  # restarts so far (for the log line)
    failures: int = 0  # consecutive quick exits (for the backoff)
    done: bool = False
    history: list[int] = field(default_factory=list)  # return codes, newest last

    @property
    def label(self) -> str:
        return f"{self.name}.1"


def killed_by(returncode: int) -> int | None:
    """The signal that ended a process: a negative return code, or a shell's 128+N."""
    if returncode < 0:
        return -returncode
    if 128 < returncode < 128 + signal.NSIG:
        return returncode - 128
    return None


def describe_exit(returncode: int) -> str:
    number = killed_by(returncode)
    if number is None:
        return f"exited with status {returncode}"
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"killed by signal {number}"


_SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&", ">", "<", ">>"}


def shell_line(command: str, path: str | None = None) -> str:
    """The line ``sh -c`` runs: a simple command that names a program gets ``exec`` (dash
    would otherwise stay as its parent), so the supervised pid is the program's own and its
    signals reach it. Shell lists, pipelines and builtins are left to the shell."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: let the shell say so
        return command
    if not tokens or tokens[0] == "exec" or _SHELL_OPERATORS & set(tokens):
        return command
    words = [t for t in tokens if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", t)]
    if not words or shutil.which(words[0], path=path) is None:
        return command
    return f"exec {command}"


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``pgid``. Orphans whose
    new parent does not reap them stay zombies: they hold nothing and do not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor (this thread) dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """Runs ``programs`` until :meth:`stop` (SIGINT/SIGTERM); returns 0 when all have stopped."""

    def __init__(self, programs: list[Program], *, printer: Printer | None = None,
                 policy: Policy | None = None, env: dict[str, str] | None = None,
                 stop_last: tuple[str, ...] = (),
                 on_stop: Callable[[], None] | None = None) -> None:
        self.programs = programs
        self.policy = policy or Policy()
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.stop_last = stop_last
        self.on_stop = on_stop
        width = max([len(p.label) for p in programs] + [len(NAME)])
        self.printer = printer or Printer(sys.stdout, width=width)
        if self.printer.width < width:
            self.printer.width = width
        colours = get_colours()
        for program in programs:
            program.colour = program.colour or next(colours)
        self._stopping: asyncio.Event | None = None
        self._killing = False

    # --- output ----------------------------------------------------------------------------
    def say(self, text: str, *, name: str = NAME, colour: str | None = None) -> None:
        self.printer.write(Message(type="line", data=text, name=name, colour=colour,
                                   time=datetime.datetime.now()))

    async def _pump(self, program: Program, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(65536):
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            if lines:
                self.say(b"\n".join(lines).decode("utf-8", "replace"), name=program.label,
                         colour=program.colour)
        if pending:
            self.say(pending.decode("utf-8", "replace"), name=program.label,
                     colour=program.colour)

    # --- one program -----------------------------------------------------------------------
    async def _spawn(self, program: Program) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_shell(
            shell_line(program.command, self.env.get("PATH")), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent)
        program.pid, program.started_at = process.pid, time.monotonic()
        return process

    @staticmethod
    async def _exited(process: asyncio.subprocess.Process) -> int:
        """The return code once the process itself has exited. (``Process.wait()`` also
        waits for its output pipe to close, which a surviving child may hold open.)"""
        try:
            pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):  # already reaped, or no pidfd: poll
            pidfd = None
        if pidfd is not None:
            loop, ended = asyncio.get_running_loop(), asyncio.Event()
            loop.add_reader(pidfd, ended.set)
            try:
                await ended.wait()
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        while process.returncode is None:  # the child watcher reaps it right after
            await asyncio.sleep(0.02)
        return process.returncode

    async def _end_group(self, pgid: int) -> None:
        """What is left of an exited process's group: SIGTERM, a grace, then SIGKILL."""
        if not _group_alive(pgid):
            return
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.policy.group_grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)
        while _group_alive(pgid):
            await asyncio.sleep(0.05)

    async def _keep(self, program: Program) -> None:
        """Run ``program``; restart it with backoff whenever it ends, until stopping."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                process = await self._spawn(program)
            except OSError as exc:
                returncode, ran = 127, 0.0
                self.say(f"{program.label} could not start: {exc}")
            else:
                self.say(f"{program.label} started with pid {process.pid}"
                         + (f" (restart {program.restarts})" if program.restarts else ""))
                assert process.stdout is not None
                pump = asyncio.create_task(self._pump(program, process.stdout))
                returncode = await self._exited(process)
                ran = time.monotonic() - program.started_at
                await self._end_group(process.pid)
                await pump
                self._compact_metrics()
            program.history.append(returncode)
            program.pid = None
            if self._stopping.is_set():
                self.say(f"{program.label} stopped ({describe_exit(returncode)})")
                break
            how = f"{program.label} {describe_exit(returncode)} after {ran:.0f} s"
            if program.once and killed_by(returncode) is None:
                self.say(f"{how}; runs once, not restarted" if returncode else
                         f"{program.label} finished")
                break
            program.failures = 1 if ran >= self.policy.stable_after else program.failures + 1
            program.restarts += 1
            delay = self.policy.delay(program.failures)
            self.say(f"{how}; restarting in {delay:g} s (restart {program.restarts})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        program.done = True

    def _compact_metrics(self) -> None:
        """The ended process group's metric files join the folder's archive (every process of
        the Procfile shares this supervisor's pid namespace, so "not running" is exact)."""
        folder = self.env.get("PROMETHEUS_MULTIPROC_DIR")
        if folder and Path(folder).is_dir():
            try:
                compact_dead(folder)
            except (OSError, ValueError) as exc:  # a torn file must not stop the supervisor
                self.say(f"could not compact the metric files in {folder}: {exc}")

    # --- all of them -----------------------------------------------------------------------
    def stop(self) -> None:
        """First call: stop gracefully. A second one (Ctrl-C again): SIGKILL everything."""
        assert self._stopping is not None
        if self._stopping.is_set():
            if not self._killing:
                self._killing = True
                self.say("stopping now (SIGKILL)")
                self._signal_all(signal.SIGKILL, self.programs)
            return
        self._stopping.set()

    def _signal_all(self, sig: int, programs: list[Program]) -> None:
        for program in programs:
            if program.pid is not None:
                _signal_group(program.pid, sig)

    async def _stop_all(self, tasks: dict[str, asyncio.Task]) -> None:
        first = [p for p in self.programs if p.name not in self.stop_last]
        last = [p for p in self.programs if p.name in self.stop_last]
        for batch in (first, last):
            if not batch:
                continue
            running = [p for p in batch if p.pid is not None]
            if running:
                self.say("sending SIGTERM to " + ", ".join(p.label for p in running))
            self._signal_all(signal.SIGTERM, running)
            waiting = [tasks[p.name] for p in batch]
            _, late = await asyncio.wait(waiting, timeout=self.policy.stop_timeout)
            if late:
                slow = [p for p in batch if not p.done]
                self.say("sending SIGKILL to " + ", ".join(p.label for p in slow)
                         + f" (still running after {self.policy.stop_timeout:g} s)")
                self._signal_all(signal.SIGKILL, slow)
                await asyncio.wait(late)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        tasks = {p.name: asyncio.create_task(self._keep(p)) for p in self.programs}
        await self._stopping.wait()
        await self._stop_all(tasks)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        self.say("all processes stopped")
        if self.on_stop is not None:
            self.on_stop()
        return 0


def metrics_dir(path: Path) -> Path:
    """An empty, private prometheus-client multiprocess directory. Emptied when the platform
    starts, never when one process restarts: a restarted process's predecessors keep their
    counts, so totals never go back (Prometheus would read a drop as a counter reset)."""
    path = path.resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    return path


def load_programs(procfile: Path, once: tuple[str, ...] = ()) -> list[Program]:
    parsed = parse_procfile(procfile.read_text())
    unknown = set(once) - set(parsed.processes)
    if unknown:
        raise SystemExit(f"{NAME}: --once names no process of {procfile}: {sorted(unknown)}")
    return [Program(name, command, once=name in once)
            for name, command in parsed.processes.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.supervise", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument("--skip", action="append", default=[],
                        help="a process not to start (e.g. the embedded broker when REDIS_URL "
                             "names another)")
    parser.add_argument("--once", action="append", default=[],
                        help="a process that runs to completion (restarted only if killed)")
    parser.add_argument("--stop-last", action="append", default=[],
                        help="stopped after the others (e.g. the broker they hand work back to)")
    parser.add_argument("--on-stop", default="",
                        help="a command run when everything has stopped (says what still runs)")
    parser.add_argument("--stop-timeout", type=float, default=Policy.stop_timeout)
    parser.add_argument("--metrics-dir", type=Path, default=None,
                        help="prometheus-client's multiprocess directory for every process: "
                             "emptied now, then PROMETHEUS_MULTIPROC_DIR in their environment")
    args = parser.parse_args(argv)
    programs = [p for p in load_programs(args.procfile, tuple(args.once))
                if p.name not in args.skip]

    def on_stop() -> None:
        if args.on_stop:
            done = subprocess.run(shlex.split(args.on_stop), capture_output=True, text=True,
                                  check=False)
            supervisor.say((done.stdout + done.stderr).rstrip() or "(--on-stop said nothing)")

    env = dict(os.environ)
    if args.metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(args.metrics_dir))
    supervisor = Supervisor(programs, policy=Policy(stop_timeout=args.stop_timeout),
                            env=env, stop_last=tuple(args.stop_last), on_stop=on_stop)
    supervisor.say(f"starting {', '.join(p.name for p in programs)} from {args.procfile}; "
                   "a process that exits is restarted; Ctrl-C stops all")
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
