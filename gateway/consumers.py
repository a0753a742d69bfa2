"""Consumer keys at the gateway (``deployments.ConsumerKey``, ``Authorization: Bearer mpk_…``):
admission, the per-key token bucket and the per-(key, deployment) counts.

A key is not a user: it is good for ``/serve/<deployment>/…`` of its listed deployments only,
so it never goes through ``routes.caller`` (team and admin checks) and a deployment it does not
list answers 404 like one an outsider's token cannot see.

Like token checks (``routes.caller``), a key check is cached per process for
``MODELPORT_GATEWAY_AUTH_TTL_S`` (never past the key's expiry): digest → :class:`Keyed`. A cached
key costs no query; a revoked one is dropped within about a second by ``forget_revoked`` (called
from ``routes.forget_revoked``); a change of its deployments or rate applies at the next refill,
within the TTL (5 s).

The rate limit is a token bucket per key per process. Each of N gateway processes enforces
1/N of the key's rate and burst (at least one request at once), N = ``shares()``: exact with one
edge process (the default), an even split across gunicorn workers on the Django path.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions

from deployments.models import ConsumerKey, ConsumerTraffic
from monitoring.gateway_errors import CONSUMER_REQUESTS, RATE_LIMITED
from teams import tokens

PREFIX = f"{tokens.CONSUMER_SCHEME}_"
_LAST_USED_RESOLUTION = timedelta(minutes=1)
_lock = threading.Lock()
_shares: list[int] = []  # set once: by the edge at start, else on first use (``shares``)


def shares() -> int:
    """How many gateway processes split one key's limit: ``MODELPORT_GATEWAY_PROCESSES``, else
    what the process was told (the edge: its worker count), else the gunicorn worker count
    ``platform/gunicorn.conf.py`` exports (``MODELPORT_WEB_WORKERS``), else 1."""
    if not _shares:
        configured = settings.MODELPORT_GATEWAY_PROCESSES
        _shares.append(configured or int(os.environ.get("MODELPORT_WEB_WORKERS") or 1))
    return _shares[0]


def set_shares(processes: int) -> None:
    """The edge's own count (``MODELPORT_EDGE_WORKERS``), unless the setting overrides it."""
    _shares[:] = [settings.MODELPORT_GATEWAY_PROCESSES or max(1, processes)]


class Bucket:
    """A token bucket: ``capacity`` requests at once, refilled at ``rate`` per second."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.stamp = capacity, time.monotonic()

    def take(self, now: float) -> float:
        """0.0 when a request may go (one token taken), else the seconds until one may."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class Keyed:
    """A checked key, as this process caches it."""

    __slots__ = ("bucket", "burst", "deployments", "id", "label", "limit", "rate", "team_id",
                 "until")

    def __init__(self, until: float, key_id: uuid.UUID, team_id: int,
                 deployments: frozenset[int], label: str, rate: float | None,
                 burst: int | None, bucket: Bucket | None) -> None:
        self.until, self.id, self.team_id = until, key_id, team_id
        self.deployments, self.label = deployments, label
        self.rate, self.burst, self.bucket = rate, burst, bucket
        # X-RateLimit-Limit: requests the key may send at once (its whole burst)
        self.limit = b"%d" % (burst or 0) if bucket is not None else b""


_keys: dict[str, Keyed] = {}
# (key id, deployment pk) -> [admitted, limited, key label, deployment name]
_counts: dict[tuple[uuid.UUID, int], list] = {}


def cached(digest: str) -> Keyed | None:
    """The cached check of a key — no query; None when not cached or stale."""
    keyed = _keys.get(digest)
    if keyed is not None and keyed.until > time.monotonic():
        return keyed
    return None


def any_cached() -> bool:
    return bool(_keys)


def capacity_of(rate: float, burst: int | None) -> int:
    """A key's burst: as set, else one second's worth of its rate (at least 1)."""
    return burst if burst else max(1, math.ceil(rate))


def look_up(raw: str, digest: str) -> Keyed:
    """Check a key against the database and cache it; ``AuthenticationFailed`` saying why not
    (an unknown key reads like an unknown token)."""
    prefix = tokens.parse_prefix(raw, tokens.CONSUMER_SCHEME)
    key = (ConsumerKey.objects.select_related("team").filter(prefix=prefix).first()
           if prefix else None)
    if key is None or not tokens.matches(raw, key.digest):
        raise exceptions.AuthenticationFailed("Invalid token.", code="token_invalid")
    now = timezone.now()
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed(
            f"Consumer key '{key.name}' was revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC.",
            code="key_revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise exceptions.AuthenticationFailed(
            f"Consumer key '{key.name}' expired on {key.expires_at:%Y-%m-%d %H:%M} UTC.",
            code="key_expired")
    deployments = frozenset(key.deployments.values_list("id", flat=True))
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        ConsumerKey.objects.filter(pk=key.pk).update(last_used_at=now)
    ttl = float(settings.MODELPORT_GATEWAY_AUTH_TTL_S)
    if key.expires_at is not None:
        ttl = min(ttl, (key.expires_at - now).total_seconds())
    share = shares()
    with _lock:
        old = _keys.get(digest)
        bucket = old.bucket if old is not None else None
        if key.rate_per_s is None:
            bucket = None
        else:
            rate = key.rate_per_s / share
            capacity = max(1.0, capacity_of(key.rate_per_s, key.burst) / share)
            if bucket is None:
                bucket = Bucket(rate, capacity)
            else:  # the same bucket across refills: a refill is not a fresh burst
                bucket.rate, bucket.capacity = rate, capacity
                bucket.tokens = min(bucket.tokens, capacity)
        if len(_keys) > 10000:
            _keys.clear()
        keyed = _keys[digest] = Keyed(
            time.monotonic() + ttl, key.pk, key.team_id, deployments,
            f"{key.team.slug}/{key.name}", key.rate_per_s,
            capacity_of(key.rate_per_s, key.burst) if key.rate_per_s else None, bucket)
    return keyed


def admits(keyed: Keyed, deployment_id: int, team_id: int) -> bool:
    """Whether the key lists this deployment (else: 404, as for an outsider)."""
    return deployment_id in keyed.deployments and team_id == keyed.team_id


def take(keyed: Keyed, deployment_id: int, name: str) -> float:
    """Count one request of ``keyed`` on a deployment it lists: 0.0 when admitted, else the
    seconds to wait (counted as limited; the caller answers 429). One lock: the Django path
    runs threads, and the edge's flush thread swaps the counts."""
    bucket = keyed.bucket
    count_key = (keyed.id, deployment_id)
    with _lock:
        wait = bucket.take(time.monotonic()) if bucket is not None else 0.0
        entry = _counts.get(count_key)
        if entry is None:
            entry = _counts[count_key] = [0, 0, keyed.label, name]
        entry[1 if wait else 0] += 1
    if wait:
        RATE_LIMITED.labels(name, keyed.label).inc()
    return wait


def remaining(keyed: Keyed) -> bytes:
    """X-RateLimit-Remaining: about what the key may still send at once (this process's share
    scaled up)."""
    bucket = keyed.bucket
    if bucket is None:
        return b""
    return b"%d" % min(int(bucket.tokens * shares()), keyed.burst or 0)


def retry_after(wait: float) -> int:
    """Whole seconds for Retry-After: the wait rounded up, at least 1."""
    return max(1, math.ceil(wait))


def flush(now: datetime) -> None:
    """Write the counts since the last flush: one bulk INSERT of ``ConsumerTraffic`` rows, and
    the admitted requests into the Prometheus counter by the batch."""
    global _counts
    with _lock:
        taken, _counts = _counts, {}
    if not taken:
        return
    rows = []
    for (key_id, deployment_id), (admitted, limited, label, name) in taken.items():
        rows.append(ConsumerTraffic(key_id=key_id, deployment_id=deployment_id, at=now,
                                    requests=admitted, limited=limited))
        if admitted:
            CONSUMER_REQUESTS.labels(name, label).inc(admitted)
    ConsumerTraffic.objects.bulk_create(rows)


def forget_revoked(since: datetime) -> None:
    """Drop keys revoked since ``since`` from this process's cache — one small query, made
    only while keys are cached."""
    if not _keys:
        return
    revoked = list(ConsumerKey.objects.filter(revoked_at__gte=since)
                   .values_list("digest", flat=True))
    with _lock:
        for digest in revoked:
            _keys.pop(digest, None)


def reset() -> None:
    with _lock:
        _keys.clear()
        _counts.clear()
