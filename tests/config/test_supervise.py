"""`make run`'s supervisor (`config/supervise.py`) with real processes: restart with backoff and a
log line, the others untouched, honcho-style prefixes, Ctrl-C stops everything (issue 26).

The supervisor runs in this process for the backoff checks (a short ``Policy``) and as
``python -m config.supervise`` for the signal checks, as `make run` runs it.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from honcho.printer import Printer

from config.supervise import Policy, Program, Supervisor, describe_exit, shell_line

ROOT = Path(__file__).resolve().parents[2]


def _wait(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _run_until(supervisor: Supervisor, done, timeout: float = 30) -> None:
    """Run the supervisor until ``done()``, then stop it as Ctrl-C would."""
    runner = asyncio.create_task(supervisor.run())
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached"
        assert not runner.done(), runner
        await asyncio.sleep(0.05)
    supervisor.stop()
    assert await asyncio.wait_for(runner, 30) == 0


def _supervisor(programs: list[Program], **policy) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    supervisor = Supervisor(programs, printer=Printer(out, width=12),
                            policy=Policy(**{"backoff_first": 0.1, "group_grace": 1,
                                             "stop_timeout": 5, **policy}))
    return supervisor, out


def test_a_process_that_dies_is_restarted_with_backoff_and_the_others_keep_running():
    crashing = Program("crashing", "echo up; exit 3")
    steady = Program("steady", "echo steady up; sleep 600")
    supervisor, out = _supervisor([crashing, steady], backoff_max=0.4)
    steady_pids = set()

    def three_restarts() -> bool:
        if steady.pid:
            steady_pids.add(steady.pid)
        return crashing.restarts >= 4

    asyncio.run(_run_until(supervisor, three_restarts))
    text = out.getvalue()
    delays = re.findall(r"crashing\.1 exited with status 3 after \d+ s; restarting in ([\d.]+) s "
                        r"\(restart (\d+)\)", text)
    # Doubling from the first delay, capped: 0.1, 0.2, 0.4, 0.4.
    assert [(float(d), int(n)) for d, n in delays[:4]] == [(0.1, 1), (0.2, 2), (0.4, 3),
                                                             (0.4, 4)], text
    assert len(steady_pids) == 1 and steady.restarts == 0  # never touched by the crashes
    assert crashing.history[:4] == [3, 3, 3, 3]


def test_a_process_that_ran_long_enough_restarts_after_the_first_delay_again():
    program = Program("flaky", "exit 1")
    supervisor, out = _supervisor([program], stable_after=0)  # every run counts as stable
    asyncio.run(_run_until(supervisor, lambda: program.restarts >= 3))
    assert re.findall(r"restarting in ([\d.]+) s", out.getvalue())[:3] == ["0.1"] * 3


def test_output_keeps_honchos_prefixes_per_process():
    # A last line without a newline is printed when the process ends.
    first = Program("web", "echo 'listening'; printf 'no newline at the end'", once=True)
    second = Program("worker", "echo 'to stderr' >&2; sleep 600")
    supervisor, out = _supervisor([first, second])
    asyncio.run(_run_until(supervisor, lambda: "to stderr" in out.getvalue()
                           and "no newline" in out.getvalue()))
    lines = out.getvalue().splitlines()
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d web\.1 +\| listening", line) for line in lines)
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d worker\.1 +\| to stderr", line) for line in lines)
    assert any(line.endswith("web.1        | no newline at the end") for line in lines)
    assert any(re.search(r"supervise +\| web\.1 started with pid \d+", line) for line in lines)


def test_a_process_that_runs_once_is_restarted_only_when_killed():
    finishing = Program("seed", "echo seeded", once=True)
    failing = Program("broken", "exit 2", once=True)
    killed = Program("victim", "sleep 600", once=True)
    supervisor, out = _supervisor([finishing, failing, killed])

    def victim_killed_and_back() -> bool:
        if killed.pid and not killed.history:
            os.kill(killed.pid, signal.SIGKILL)
        return bool(killed.history) and killed.pid is not None

    asyncio.run(_run_until(supervisor, lambda: finishing.done and failing.done
                           and victim_killed_and_back()))
    text = out.getvalue()
    assert "seed.1 finished" in text and finishing.restarts == 0
    assert "broken.1 exited with status 2 after" in text and "runs once, not restarted" in text
    assert failing.restarts == 0
    assert "victim.1 killed by SIGKILL" in text and killed.restarts == 1


def test_when_a_process_dies_what_is_left_of_its_group_is_stopped_before_the_restart(tmp_path):
    """Like gunicorn's workers or Celery's pool when their master is killed."""
    pids = tmp_path / "pids"
    program = Program("master", f"sleep 600 & echo $! >> {pids}; sleep 600")
    supervisor, _ = _supervisor([program])
    first_child: list[int] = []

    def killed_and_restarted() -> bool:
        if not first_child and pids.exists() and program.pid:
            first_child.append(int(pids.read_text().split()[0]))
            os.kill(program.pid, signal.SIGKILL)  # the leader only, as a crash would
        return bool(first_child) and program.restarts == 1 and program.pid is not None \
            and len(pids.read_text().split()) == 2

    asyncio.run(_run_until(supervisor, killed_and_restarted))
    assert not _alive(first_child[0])


def test_simple_commands_are_execd_and_shell_lines_left_alone():
    assert shell_line("python -m celery -A config beat") == "exec python -m celery -A config beat"
    assert shell_line('X=1 python -m x --name "a b"') == 'exec X=1 python -m x --name "a b"'
    compound = 'mkdir -p "$D" && chmod 700 "$D" && exec python -m mlflow server'
    assert shell_line(compound) == compound
    assert shell_line("exec redis-server") == "exec redis-server"
    assert shell_line("exit 2") == "exit 2"  # a builtin: exec would not find it
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(137) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with status 1"


# --- as `make run` runs it -----------------------------------------------------------------
def _start_supervisor(tmp_path: Path, procfile: str, *args: str) -> tuple[subprocess.Popen,
                                                                           Path]:
    (tmp_path / "Procfile").write_text(procfile)
    log = tmp_path / "supervise.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "config.supervise", "--procfile", str(tmp_path / "Procfile"),
         *args], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    return process, log


def _pids(log: Path) -> dict[str, int]:
    return {name: int(pid) for name, pid in
            re.findall(r"(\w+)\.1 started with pid (\d+)", log.read_text())}


def test_ctrl_c_stops_every_process_and_its_children_broker_last_then_reports(tmp_path):
    order = tmp_path / "order"
    procfile = (
        f"broker: trap 'echo broker >> {order}; exit 0' TERM; sleep 600 & wait\n"
        f"web: sleep 600 & trap 'echo web >> {order}; kill $!; exit 0' TERM; wait\n"
        "stubborn: trap '' TERM; sleep 600 & wait\n")
    process, log = _start_supervisor(tmp_path, procfile, "--stop-last", "broker",
                                     "--stop-timeout", "2", "--on-stop", "echo replicas: none")
    pids = _wait(lambda: len(_pids(log)) == 3 and _pids(log), "three processes")
    groups = {name: [int(x) for x in subprocess.run(
        ["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()]
        for name, pid in pids.items()}
    os.kill(process.pid, signal.SIGINT)  # what Ctrl-C in make's terminal does
    assert process.wait(timeout=60) == 0, log.read_text()
    text = log.read_text()
    assert order.read_text().split() == ["web", "broker"]  # the broker is stopped last
    assert "sending SIGKILL to stubborn.1 (still running after 2 s)" in text
    assert "all processes stopped" in text and "replicas: none" in text
    left = [pid for group in groups.values() for pid in group if _alive(pid)]
    assert left == [], text


def test_if_the_supervisor_itself_is_killed_its_processes_stop_too(tmp_path):
    process, log = _start_supervisor(tmp_path, "one: sleep 600\ntwo: sleep 600\n")
    pids = _wait(lambda: len(_pids(log)) == 2 and _pids(log), "two processes")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    _wait(lambda: not any(_alive(pid) for pid in pids.values()), "the processes to stop")
