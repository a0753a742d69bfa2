"""Loopback port allocation for replicas that use host networking.

A port is free when no managed replica claims it (labels / state file), this process has not
handed it out recently, and a bind test on the host address succeeds. Cross-process races are
closed by an optional lock file held while a caller allocates and starts its replica.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


class NoFreePortError(Exception):
    """Every port of the range is taken."""


def port_is_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listening socket could be bound on (host, port) right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option servers (uvicorn, gunicorn) set, so TIME_WAIT leftovers do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out ports from `port_range` (inclusive) without collisions."""

    def __init__(self, port_range: tuple[int, int], host: str = "127.0.0.1",
                 lock_path: str | os.PathLike[str] | None = None,
                 reservation_ttl: float = 120.0,
                 bindable: Callable[[int, str], bool] = port_is_bindable) -> None:
        start, end = int(port_range[0]), int(port_range[1])
        if not (0 < start <= end < 65536):
            raise ValueError(f"bad port range {port_range!r}")
        self.start, self.end = start, end
        self.host = host
        self.lock_path = Path(lock_path) if lock_path else None
        self.reservation_ttl = reservation_ttl
        self._bindable = bindable
        self._reserved: dict[int, float] = {}
        self._mutex = threading.Lock()
        self._next = start

    def allocate(self, used: Iterable[int] = ()) -> int:
        """A free port, skipping `used` (ports that managed replicas claim) and recent hand-outs.

        Scans round-robin from after the last port handed out, so a port just released is not
        immediately reused (a replica that is shutting down may still hold it)."""
        taken = {int(p) for p in used}
        with self._mutex:
            now = time.monotonic()
            self._reserved = {p: t for p, t in self._reserved.items() if t > now}
            size = self.end - self.start + 1
            for i in range(size):
                port = self.start + (self._next - self.start + i) % size
                if port in taken or port in self._reserved:
                    continue
                if not self._bindable(port, self.host):
                    continue
                self._reserved[port] = now + self.reservation_ttl
                self._next = port + 1 if port < self.end else self.start
                return port
        raise NoFreePortError(f"no free port in {self.start}-{self.end} on {self.host}")

    def release(self, port: int) -> None:
        with self._mutex:
            self._reserved.pop(port, None)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process allocation lock (no-op without `lock_path`)."""
        if self.lock_path is None:
            yield
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
