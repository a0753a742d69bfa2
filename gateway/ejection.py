"""Passive ejection: replica addresses a gateway process stopped picking for a while.

A replica whose connect failed (timed out, host unreachable, refused) is very likely on a host
that is gone — its link cut or its engine dead — long before beat's ``check_hosts`` marks that
host lost (``MODELPORT_HOST_LOST_SECONDS``) and the routes drop it. Until then every request
picking it would wait the connect timeout (2 s) before its retry elsewhere, or, on a pooled
connection, the whole gateway timeout. Like Envoy's outlier detection, the process that saw the
failure stops picking the address for ``MODELPORT_GATEWAY_EJECT_S`` and then tries it again
(one request pays a connect timeout and retries; the address is ejected again if still gone).

Only replicas on a network (``http://host:port``) are ejected: a replica on this machine's
socket file refuses at once when it is gone (a retry costs microseconds), and ejecting it while
it restarts would only skew the traffic split for a while.

Per process and in memory: no database write on the hot path, nothing shared to go stale.
When every replica is ejected the gateway picks among them anyway: a try beats a 503.
"""

from __future__ import annotations

import threading
import time

from monitoring.gateway_errors import GATEWAY_EJECTIONS


class Ejections:
    """URLs out of picking until a monotonic time. ``until`` is empty nearly always: the
    hot path's only cost is that dict's truth test."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until: dict[str, float] = {}
        self._lock = threading.Lock()  # the Django path calls from several threads

    def eject(self, url: str, reason: str, now: float | None = None) -> bool:
        """Out of picking for ``seconds``; True when it was not ejected already (counted)."""
        if self.seconds <= 0:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            fresh = self.until.get(url, 0.0) <= now
            self.until[url] = now + self.seconds
        if fresh:
            GATEWAY_EJECTIONS.labels(reason).inc()
        return fresh

    def current(self, now: float | None = None) -> frozenset[str]:
        """The URLs ejected now (expired ones forgotten: tried again)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for url in [u for u, t in self.until.items() if t <= now]:
                del self.until[url]
            return frozenset(self.until)

    def exclude(self, tried: set[str]) -> set[str]:
        """What a pick must skip: the replicas tried already and, when any is ejected, those."""
        if not self.until:
            return tried
        ejected = self.current()
        return tried | ejected if ejected else tried

