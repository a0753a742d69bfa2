"""Per-deployment locks: a Redis lock when REDIS_URL is set, else an fcntl file lock under
``MODELPORT_DATA_DIR/locks`` (one host). Non-blocking: a second reconcile of the same deployment
while one runs simply returns; the running one (or the next beat tick) converges."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

LOCK_TTL_S = 30  # a killed worker's lock expires this soon; a live holder keeps renewing it


@contextlib.contextmanager
def deployment_lock(deployment_id: int) -> Iterator[bool]:
    """Yields True when this process holds the lock, False when someone else does."""
    if settings.REDIS_URL:
        import redis  # noqa: PLC0415 - optional: make run without REDIS_URL has no redis lock

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5)
        lock = client.lock(f"modelport:deployment:{deployment_id}:reconcile",
                           timeout=LOCK_TTL_S, blocking=False, thread_local=False)
        got = lock.acquire(blocking=False)
        done = threading.Event()
        if got:
            threading.Thread(target=_renew, args=(lock, done), daemon=True).start()
        try:
            yield bool(got)
        finally:
            done.set()
            if got:
                with contextlib.suppress(Exception):
                    lock.release()
            client.close()
        return
    folder = Path(settings.MODELPORT_DATA_DIR) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"deployment-{deployment_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _renew(lock, done: threading.Event) -> None:
    """Keep a held Redis lock alive while its holder works (rollouts take minutes)."""
    while not done.wait(LOCK_TTL_S / 3):
        try:
            lock.reacquire()
        except Exception:  # noqa: BLE001 - lost it (e.g. Redis restarted); the holder finishes
            return
