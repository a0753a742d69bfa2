"""The serving gateway: ``POST /serve/<deployment>/invocations`` and the Open Inference Protocol
paths ``/serve/<deployment>/v2/…`` (``gateway.v2``).

Authenticates the Bearer token, checks the caller may view the deployment's team (404 if not),
picks a ready replica by the deployment's traffic split (sticky by ``X-Modelport-Route-Key``),
proxies the body with a pooled HTTP client and returns the replica's answer. Routing tables are
cached in process and reloaded only when the deployment's ``routing_version`` changes (checked
at most once a second); token checks are cached for a few seconds. No per-request DB query.

The same caches, counters and refusals serve the edge (``gateway.edge``) and the Django path
(``gateway.views``, which ``gateway.middleware.GatewayMiddleware`` calls before URL resolving and
``config/urls.py`` routes to where that middleware is not installed).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions

from deployments.models import Deployment, DeploymentStatus, Replica, Revision, TrafficSample
from monitoring.gateway_errors import GATEWAY_CODES, GATEWAY_ERRORS
from teams.authentication import authenticate_token
from teams.models import ApiToken, Membership
from teams.roles import is_platform_admin

from . import consumers, shadowing
from .shadowing import Shadow

log = logging.getLogger(__name__)

ROUTE_CHECK_S = 1.0
REVOKE_CHECK_S = 1.0
REVOKE_LOOKBACK_S = 10.0  # > REVOKE_CHECK_S: a revocation racing a cache fill is seen again
_last_revoke_check = [0.0]
FORWARD_HEADERS = ("Content-Type", "Accept", "X-Request-ID", "Content-Encoding",
                   "Inference-Header-Content-Length")
# Answer headers passed back besides Content-Type: the JSON header's length in a v2 answer with
# binary outputs (gateway/v2.py).
HEADER_LENGTH = "Inference-Header-Content-Length"

_lock = threading.Lock()


Picked = tuple[int, str]  # (revision, replica url): where one request goes
Caller = tuple[bool, frozenset[int]]  # (is platform admin, the caller's team ids)


@dataclass
class Route:
    version: tuple[int, int]  # (deployment pk, routing_version)
    team_id: int
    checked: float
    # [(revision, percent, [url, ...]), ...] — only revisions with ready replicas
    revisions: list[tuple[int, int, list[str]]] = field(default_factory=list)
    shadow: Shadow | None = None
    # revision -> its replicas' key, as the edge sends it (core/replica_keys.py)
    keys: dict[int, bytes] = field(default_factory=dict)
    name: str = ""
    # The revision that should run: what a refusal with no replica picked is counted against.
    revision: int = 0
    # For the Open Inference Protocol paths (gateway/v2.py): the registered model's name, and
    # each live version (a ready, non-shadow revision serves it) -> that revision.
    model: str = ""
    served: dict[str, int] = field(default_factory=dict)
    urls: dict[int, list[str]] = field(default_factory=dict)
    v2_paths: dict[tuple[str, str], object] = field(default_factory=dict)  # gateway.v2's memo
    # Autoscaled and neither stopped nor failed: with no ready replica, a request waits while
    # the deployment wakes (gateway/waking.py) instead of the 503. Refreshed on every check.
    wakes: bool = False

    def pick(self, key: str | None, exclude: set[str]) -> Picked | None:
        """A (revision, url) by the traffic split, sticky by ``key`` (the route key header);
        never a url in ``exclude`` (tried already). None: no ready replica left."""
        if not key and not exclude and len(self.revisions) == 1:  # the common case, fast
            rev, _, urls = self.revisions[0]
            return (rev, urls[0] if len(urls) == 1
                    else urls[random.randrange(len(urls))]) if urls else None  # noqa: S311
        choices = [(rev, pct, [u for u in urls if u not in exclude])
                   for rev, pct, urls in self.revisions]
        choices = [(rev, pct, urls) for rev, pct, urls in choices if urls]
        if not choices:
            return None
        total = sum(pct for _, pct, _ in choices)
        if key:
            h = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)
            bucket, spin = h % max(total, 1), h // 101
        else:
            bucket, spin = random.randrange(max(total, 1)), random.randrange(1 << 30)  # noqa: S311
        if total <= 0:
            rev, _, urls = choices[spin % len(choices)]
            return rev, urls[spin % len(urls)]
        for rev, pct, urls in choices:
            if bucket < pct:
                return rev, urls[spin % len(urls)]
            bucket -= pct
        rev, _, urls = choices[-1]
        return rev, urls[spin % len(urls)]

    def pick_in(self, revision: int, exclude: set[str]) -> Picked | None:
        """A replica of ``revision`` (a request pinned to its version), not in ``exclude``."""
        urls = [u for u in self.urls.get(revision, ()) if u not in exclude]
        return (revision, urls[random.randrange(len(urls))]) if urls else None  # noqa: S311


_routes: dict[str, Route] = {}
_auth: dict[str, tuple[float, bool, frozenset[int]]] = {}
FLUSH_S = 1.0
# (deployment pk, revision) -> [attempts, attempt errors, [ms...], answered, {code: refusals},
#                              total ms of the attempts (the autoscaler's requests in flight)]
_stats: dict[tuple[int, int], list] = {}
_last_flush = [time.monotonic()]


def _entry(key: tuple[int, int]) -> list:
    entry = _stats.get(key)
    if entry is None:
        entry = _stats[key] = [0, 0, [], 0, None, 0.0]
    return entry


def count(deployment_id: int, revision: int, status: int, elapsed_ms: float,
          answered: bool = True) -> None:
    """Count one attempt at a replica (5xx and unreachable replicas are errors) — in memory
    only; ``flush`` writes the counts. ``answered``: the attempt's outcome is what the caller
    got (False when the gateway goes on to another replica or refuses, see ``refused``)."""
    with _lock:
        entry = _entry((deployment_id, revision))
        entry[0] += 1
        entry[1] += status >= 500
        entry[3] += answered
        entry[5] += elapsed_ms
        if len(entry[2]) < 5000:
            entry[2].append(elapsed_ms)


def refused(route: Route, revision: int | None, status: int) -> None:
    """Count a request of an admitted caller that the gateway answered with its own failure
    (``GATEWAY_CODES``): against ``revision``, or the deployment's current one when no replica
    was picked. Not on the success path: only failures pay for the Prometheus counter."""
    with _lock:
        entry = _entry((route.version[0], revision or route.revision))
        entry[3] += 1
        codes = entry[4]
        if codes is None:
            codes = entry[4] = {}
        codes[status] = codes.get(status, 0) + 1
    GATEWAY_ERRORS.labels(route.name, str(status)).inc()


def record(deployment_id: int, revision: int, status: int, elapsed_ms: float,
           answered: bool = True) -> None:
    """Count one proxied request and write the counts when the last flush is ``FLUSH_S`` old."""
    count(deployment_id, revision, status, elapsed_ms, answered)
    if time.monotonic() - _last_flush[0] >= FLUSH_S:
        flush()


def flush() -> None:
    """Write what was counted since the last flush (one INSERT per table, at most once a
    second): the traffic samples and the consumer keys' counts (``gateway.consumers``)."""
    with _lock:
        taken = dict(_stats)
        _stats.clear()
        _last_flush[0] = time.monotonic()
    now = timezone.now()
    try:
        consumers.flush(now)
    except Exception:  # noqa: BLE001 - e.g. the key or deployment was deleted meanwhile
        log.warning("could not store consumer key traffic")
    if not taken:
        return
    rows = []
    for (deployment_id, revision), (n, errors, times, answered, codes, busy) in taken.items():
        times = sorted(times)
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else 0.0
        codes = codes or {}
        rows.append(TrafficSample(deployment_id=deployment_id, revision=revision, at=now,
                                  requests=n, errors=errors, p95_ms=p95,
                                  gateway_requests=answered, busy_ms=busy,
                                  **{f"gateway_{code}": codes.get(code, 0)
                                     for code in GATEWAY_CODES}))
    try:
        TrafficSample.objects.bulk_create(rows)
    except Exception:  # noqa: BLE001 - e.g. the deployment was deleted meanwhile
        log.warning("could not store gateway traffic samples")


def _load(name: str, version: tuple[int, int], team_id: int, traffic: list,
          shadow: dict | None = None, current: int = 0, model: str = "") -> Route:
    ready: dict[int, list[str]] = {}
    for rev, url in (Replica.objects.filter(deployment__name=name, ready=True)
                     .exclude(url="").order_by("revision", "index")
                     .values_list("revision", "url")):
        ready.setdefault(rev, []).append(url)
    weights = {int(t["revision"]): int(t["percent"]) for t in (traffic or [])
               if isinstance(t, dict) and "revision" in t}
    if weights:
        revisions = [(rev, weights[rev], urls) for rev, urls in ready.items() if rev in weights]
        if not revisions:  # the split names revisions with nothing ready: use what is ready
            revisions = [(rev, 1, urls) for rev, urls in ready.items()]
    else:
        revisions = [(rev, 1, urls) for rev, urls in ready.items()]
    mirror = None
    shadow_number = (int(shadow["revision"]) if shadow and shadow.get("revision") is not None
                     else None)
    keys = {}
    served: dict[str, int] = {}
    for number, key, model_version in (Revision.objects.filter(
            deployment_id=version[0], number__in=list(ready))
            .order_by("number").values_list("number", "replica_key", "model_version__version")):
        keys[number] = key
        if number != shadow_number:
            served[str(model_version)] = number  # the newest revision of a version serves it
    urls = {rev: found for rev, found in ready.items() if rev != shadow_number}
    if shadow and shadow_number is not None:
        number = shadow_number
        revisions = [entry for entry in revisions if entry[0] != number]
        if ready.get(number):
            mirror = Shadow(revision=number, percent=int(shadow.get("percent", 100)),
                            tolerance=float(shadow.get("tolerance", 1e-6)),
                            urls=tuple(ready[number]), key=keys.get(number, ""))
    return Route(version=version, team_id=team_id, checked=time.monotonic(), revisions=revisions,
                 shadow=mirror, keys={rev: key.encode() for rev, key in keys.items()},
                 name=name, revision=current, model=model, served=served, urls=urls)


def cached_route(name: str) -> Route | None:
    """The cached route when it was checked less than ``ROUTE_CHECK_S`` ago — no query."""
    route = _routes.get(name)
    if route is not None and time.monotonic() - route.checked < ROUTE_CHECK_S:
        return route
    return None


def route_for(name: str) -> Route | None:
    now = time.monotonic()
    route = _routes.get(name)
    if route is not None and now - route.checked < ROUTE_CHECK_S:
        return route
    row = Deployment.objects.filter(name=name).values_list(
        "pk", "routing_version", "team_id", "traffic", "shadow", "revision",
        "model__name", "autoscaling", "stopped", "status", "replicas").first()
    if row is None:
        _routes.pop(name, None)
        return None
    (pk, routing_version, team_id, traffic, shadow, current, model, scaling, stopped, status,
     count) = row
    version = (pk, routing_version)
    # Held, not refused, only while asleep or waking: a building, degraded or failed
    # deployment answers its 503 at once.
    wakes = bool(scaling) and not stopped and status != DeploymentStatus.FAILED and (
        count == 0 or status in (DeploymentStatus.IDLE, DeploymentStatus.STARTING))
    if route is not None and route.version == version:
        route.checked, route.revision, route.wakes = now, current, wakes
        return route
    route = _load(name, version, team_id, traffic, shadow, current, model)
    route.wakes = wakes
    with _lock:
        _routes[name] = route
    return route


def invalidate(name: str | None = None) -> None:
    with _lock:
        if name is None:
            _routes.clear()
            _auth.clear()
            _stats.clear()
            consumers.reset()
        else:
            _routes.pop(name, None)
    if name is None:
        shadowing.reset()


def forget_revoked(now: float) -> None:
    """At most once every ``REVOKE_CHECK_S`` (and only with tokens or consumer keys cached):
    drop the tokens and keys revoked lately from this process's cache — one small query each,
    so a revocation stops working here within about a second instead of waiting for the
    entry's TTL."""
    if now - _last_revoke_check[0] < REVOKE_CHECK_S:
        return
    _last_revoke_check[0] = now
    if not _auth and not consumers.any_cached():  # nothing cached, nothing to drop
        return
    # a cache entry lives up to the auth TTL: look back at least that far, so a revocation
    # seen late (an idle Django worker checks only on a request) still drops its entry
    lookback = max(REVOKE_LOOKBACK_S, settings.MODELPORT_GATEWAY_AUTH_TTL_S + 1)
    since = timezone.now() - timedelta(seconds=lookback)
    consumers.forget_revoked(since)
    if not _auth:
        return
    revoked = list(ApiToken.objects.filter(revoked_at__gte=since)
                   .values_list("digest", flat=True))
    with _lock:
        for digest in revoked:
            _auth.pop(digest, None)


def maybe_flush() -> None:
    """Flush when the last flush is ``FLUSH_S`` old (the Django path after an answer that was
    not proxied, e.g. a 429: ``record`` flushes only after proxied ones)."""
    if time.monotonic() - _last_flush[0] >= FLUSH_S:
        flush()


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def cached_caller(digest: str) -> Caller | None:
    """(is platform admin, team ids) from this process's token cache — no query; None when the
    token is not cached (or its entry expired)."""
    cached = _auth.get(digest)
    if cached and cached[0] > time.monotonic():
        return cached[1], cached[2]
    return None


def caller(raw: str) -> Caller:
    """(is platform admin, team ids) for a token; AuthenticationFailed when invalid.

    Cached per process for ``MODELPORT_GATEWAY_AUTH_TTL_S`` (5 s; never past the token's
    expiry): a removed membership or a deactivated user takes effect within that window, a
    revoked token within about ``REVOKE_CHECK_S`` (see ``forget_revoked``)."""
    digest = token_digest(raw)
    now = time.monotonic()
    forget_revoked(now)
    cached = cached_caller(digest)
    if cached is not None:
        return cached
    token = authenticate_token(raw)
    admin = is_platform_admin(token.user)
    teams = frozenset(Membership.objects.filter(user=token.user).values_list("team_id",
                                                                             flat=True))
    until = now + min(settings.MODELPORT_GATEWAY_AUTH_TTL_S,
                      (token.expires_at - timezone.now()).total_seconds())
    with _lock:
        if len(_auth) > 10000:
            _auth.clear()
        _auth[digest] = (until, admin, teams)
    return admin, teams


def consumer(raw: str) -> consumers.Keyed:
    """The check of consumer key ``raw`` (``gateway.consumers``), cached like ``caller``'s;
    AuthenticationFailed when invalid, revoked or expired."""
    digest = token_digest(raw)
    forget_revoked(time.monotonic())
    return consumers.cached(digest) or consumers.look_up(raw, digest)


class Refusal(NamedTuple):
    """An answer the gateway gives itself (the same from the Django path and the edge)."""

    status: int
    detail: str
    code: str
    headers: dict[str, str]


BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}


def method_not_allowed(method: str) -> Refusal:
    return Refusal(405, f"Method {method} not allowed; POST a scoring request.",
                   "method_not_allowed", {"Allow": "POST"})


def not_authenticated() -> Refusal:
    return Refusal(401, "Authentication required: send 'Authorization: Bearer <token>'.",
                   "not_authenticated", BEARER_CHALLENGE)


def token_refused(exc: exceptions.AuthenticationFailed) -> Refusal:
    codes = exc.get_codes()
    return Refusal(401, str(exc.detail), codes if isinstance(codes, str) else "token_invalid",
                   BEARER_CHALLENGE)


def key_refusal(keyed: consumers.Keyed, route: Route | None, name: str) -> Refusal | None:
    """None when consumer key ``keyed`` may call deployment ``name`` now (the request counted
    as admitted); else 404 — a deployment it does not list, as for an outsider's token — or
    429 over its rate limit (counted as limited)."""
    if route is None or not consumers.admits(keyed, route.version[0], route.team_id):
        return not_found(name)
    wait = consumers.take(keyed, route.version[0], name)
    return rate_limited(keyed, wait) if wait else None


def rate_limited(keyed: consumers.Keyed, wait: float) -> Refusal:
    """429 for a consumer key over its rate limit (``gateway.consumers``)."""
    seconds = consumers.retry_after(wait)
    return Refusal(429, f"Consumer key '{keyed.label}' is over its rate limit of "
                        f"{keyed.rate:g} requests/s (burst {keyed.burst}); retry in {seconds} s.",
                   "rate_limited", {"Retry-After": str(seconds),
                                    "X-RateLimit-Limit": keyed.limit.decode(),
                                    "X-RateLimit-Remaining": "0"})


def not_found(name: str) -> Refusal:
    return Refusal(404, f"No deployment '{name}'.", "not_found", {})


def timed_out(name: str) -> Refusal:
    return Refusal(504, f"Deployment '{name}' did not answer within "
                        f"{settings.MODELPORT_GATEWAY_TIMEOUT_S:g} s.", "upstream_timeout", {})


def no_ready_replica(name: str) -> Refusal:
    return Refusal(503, f"Deployment '{name}' has no ready replica right now; check its "
                        "status and events.", "no_ready_replica", {"Retry-After": "5"})


def unavailable(name: str, last_error: str) -> Refusal:
    return Refusal(502, f"Deployment '{name}': replicas did not answer ({last_error}).",
                   "upstream_unavailable", {"Retry-After": "1"})
