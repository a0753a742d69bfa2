"""Consumer keys: one key per calling application, good only at ``/serve/<deployment>/…`` of
the listed deployments of its team (the gateway checks them; the REST API refuses them).

One function per verb, like ``deployments.services``: the role is checked inside (team
maintainers and platform admins change keys; any member reads them), everything is validated
before anything is written, and every change is audited. The secret is generated here and
returned once; only its SHA-256 digest is stored.

The edge caches a key for ``MODELPORT_GATEWAY_AUTH_TTL_S`` (5 s), so a change of deployments,
rate or burst applies within about that; a revocation within about a second (the edge looks
for keys revoked lately, like tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q, Sum
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from teams import audit, tokens
from teams.access import require_team_role
from teams.models import Team
from teams.roles import Role

from .models import ConsumerKey, ConsumerTraffic, Deployment, name_validator

Actor = User | AnonymousUser | None
_UNSET: Any = object()  # "leave as it is" for update_consumer_key

# A sane ceiling: far above what one model replica serves, low enough to catch a typo (1e9).
MAX_RATE_PER_S = 100_000.0
MAX_BURST = 1_000_000
KEY_STATUSES = [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]
KEY_FIELDS = ["name", "prefix", "rate_per_s", "burst", "expires_at", "revoked_at"]
# The windows the API and the pages offer for "who calls this model".
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def snapshot(key: ConsumerKey) -> dict[str, Any]:
    """The audit view of a key: its settings and deployment names, never the secret."""
    return {**audit.snapshot(key, KEY_FIELDS),
            "deployments": sorted(key.deployments.values_list("name", flat=True))}


# --- Validation ---------------------------------------------------------------------------------
def _name(name: Any) -> str:
    name = str(name or "").strip()
    try:
        name_validator(name)
    except ValidationError as exc:
        raise InvalidInput(f"'{name}' is not a valid key name (name it after the calling "
                           f"service, e.g. 'search-api'). {exc.messages[0]}",
                           field="name") from None
    return name


def _deployments(team: Team, given: Any) -> list[Deployment]:
    """The team's deployments named in ``given`` (names or Deployment rows), in order given;
    a name that is not one of the team's is refused by name."""
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise InvalidInput("deployments must be a list of deployment names.",
                           field="deployments")
    names: list[str] = []
    for item in given:
        name = item.name if isinstance(item, Deployment) else item
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"deployments must be a list of deployment names (got "
                               f"{name!r}).", field="deployments")
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidInput("Give at least one deployment the key may call.",
                           field="deployments")
    found = {d.name: d for d in Deployment.objects.filter(name__in=names, team=team)}
    for name in names:
        if name not in found:
            raise InvalidInput(f"Team '{team.slug}' has no deployment '{name}': a key may call "
                               "only its own team's deployments.", field="deployments")
    return [found[n] for n in names]


def _rate(rate_per_s: Any) -> float | None:
    if rate_per_s is None:
        return None
    if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, (int, float)):
        try:
            rate_per_s = float(rate_per_s)
        except (TypeError, ValueError):
            raise InvalidInput(f"rate_per_s must be a number of requests per second (got "
                               f"{rate_per_s!r}).", field="rate_per_s") from None
    rate = float(rate_per_s)
    if not math.isfinite(rate) or rate <= 0 or rate > MAX_RATE_PER_S:
        raise InvalidInput(f"rate_per_s must be more than 0 and at most {MAX_RATE_PER_S:g} "
                           f"requests per second (got {rate_per_s!r}).", field="rate_per_s")
    return rate


def _burst(burst: Any, rate: float | None) -> int | None:
    """The bucket's size: given, or ``max(1, ceil(rate))`` (a second's worth) by default."""
    if rate is None:
        if burst is not None:
            raise InvalidInput("A burst needs a rate: give rate_per_s too (or neither, for no "
                               "limit).", field="burst")
        return None
    if burst is None:
        return max(1, math.ceil(rate))
    if isinstance(burst, bool) or not isinstance(burst, int):
        if isinstance(burst, float) and burst.is_integer():
            burst = int(burst)
        else:
            raise InvalidInput(f"burst must be a whole number of requests (got {burst!r}).",
                               field="burst")
    if not 1 <= burst <= MAX_BURST:
        raise InvalidInput(f"burst must be from 1 to {MAX_BURST} requests (got {burst}).",
                           field="burst")
    return burst


def _expiry(expires_at: Any) -> datetime | None:
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        raise InvalidInput("expires_at must be a date and time (ISO 8601).", field="expires_at")
    if timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, timezone.get_current_timezone())
    if expires_at <= timezone.now():
        raise InvalidInput(f"expires_at must be in the future (got "
                           f"{expires_at:%Y-%m-%d %H:%M} UTC).", field="expires_at")
    return expires_at


# --- Verbs --------------------------------------------------------------------------------------
@transaction.atomic
def create_consumer_key(*, actor: Actor, team: Team, name: str,
                        deployments: Sequence[str | Deployment], rate_per_s: float | None = None,
                        burst: int | None = None,
                        expires_at: datetime | None = None) -> tuple[ConsumerKey, str]:
    """A new key for the calling service ``name``, usable on ``deployments`` (names of the
    team's deployments); returns the key and its secret, which is shown only now."""
    require_team_role(actor, team, Role.MAINTAINER, "creating consumer keys")
    name = _name(name)
    chosen = _deployments(team, deployments)
    rate = _rate(rate_per_s)
    size = _burst(burst, rate)
    expiry = _expiry(expires_at)
    if ConsumerKey.objects.filter(team=team, name=name, revoked_at__isnull=True).exists():
        raise Conflict(f"Team '{team.slug}' already has an active consumer key named '{name}'; "
                       "revoke it first or choose another name.", code="name_taken",
                       field="name")
    secret = tokens.generate(tokens.CONSUMER_SCHEME)
    try:
        with transaction.atomic():
            key = ConsumerKey.objects.create(
                team=team, name=name, prefix=secret.prefix, digest=secret.digest,
                rate_per_s=rate, burst=size, expires_at=expiry,
                created_by=actor if isinstance(actor, User) else None)
    except IntegrityError:
        raise Conflict(f"Team '{team.slug}' already has an active consumer key named "
                       f"'{name}'.", code="name_taken", field="name") from None
    key.deployments.set(chosen)
    audit.record(actor=actor, action="consumer_key.created", obj=key, team=team,
                 after=snapshot(key))
    return key, secret.token


def _locked(key: ConsumerKey, verb: str) -> ConsumerKey:
    key = ConsumerKey.objects.select_for_update().select_related("team").get(pk=key.pk)
    if key.revoked_at is not None and verb != "revoke":
        raise Conflict(f"Consumer key '{key.name}' was revoked on "
                       f"{key.revoked_at:%Y-%m-%d %H:%M} UTC; create a new one.",
                       code="key_revoked")
    return key


@transaction.atomic
def update_consumer_key(*, actor: Actor, key: ConsumerKey,
                        deployments: Sequence[str | Deployment] = _UNSET,
                        rate_per_s: float | None = _UNSET,
                        burst: int | None = _UNSET) -> ConsumerKey:
    """Change what a key may call and how fast; never its secret (revoke and create a new key
    for that). What is not given stays. ``rate_per_s`` None lifts the limit (and the burst);
    a new rate without a burst gets the default burst; a burst alone keeps the rate."""
    require_team_role(actor, key.team, Role.MAINTAINER, "changing consumer keys")
    key = _locked(key, "update")
    before = snapshot(key)
    chosen = None if deployments is _UNSET else _deployments(key.team, deployments)
    if rate_per_s is _UNSET:
        rate = key.rate_per_s
        size = key.burst if burst is _UNSET else _burst(burst, rate)
    else:
        rate = _rate(rate_per_s)
        size = _burst(None if burst is _UNSET else burst, rate)
    key.rate_per_s, key.burst = rate, size
    key.save(update_fields=["rate_per_s", "burst"])
    if chosen is not None:
        key.deployments.set(chosen)
    after = snapshot(key)
    if after != before:
        audit.record(actor=actor, action="consumer_key.updated", obj=key, team=key.team,
                     before=before, after=after)
    return key


@transaction.atomic
def revoke_consumer_key(*, actor: Actor, key: ConsumerKey) -> ConsumerKey:
    """Revoke a key for good: every edge process refuses it within about a second. Revoking a
    revoked key changes nothing."""
    require_team_role(actor, key.team, Role.MAINTAINER, "revoking consumer keys")
    key = _locked(key, "revoke")
    if key.revoked_at is not None:
        return key
    before = snapshot(key)
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit.record(actor=actor, action="consumer_key.revoked", obj=key, team=key.team,
                 before=before, after=snapshot(key))
    return key


# --- Reads --------------------------------------------------------------------------------------
@dataclass
class Caller:
    """One consumer key's traffic on one deployment: per window asked for, requests admitted
    and requests refused 429 by its rate limit; when the gateway last saw it there."""

    key_id: str
    name: str
    status: str
    rate_per_s: float | None
    burst: int | None
    requests: list[int] = field(default_factory=list)
    limited: list[int] = field(default_factory=list)
    last_seen: datetime | None = None

    def as_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        return {"key": self.key_id, "name": self.name, "status": self.status,
                "rate_limit": ({"per_second": self.rate_per_s, "burst": self.burst}
                               if self.rate_per_s is not None else None),
                "windows": {label: {"requests": r, "limited": lim}
                            for label, r, lim in zip(labels, self.requests, self.limited,
                                                     strict=True)},
                "last_seen": self.last_seen}


def callers(*, actor: Actor, deployment: Deployment, since: Sequence[datetime],
            until: datetime | None = None) -> list[Caller]:
    """Who calls ``deployment`` with a consumer key: per key, the requests and 429s from each
    of ``since`` up to ``until`` (now), summed from ``ConsumerTraffic`` in one aggregate query;
    keys that may call it but did not are listed with zeros (revoked ones only if they called).
    Busiest first."""
    require_team_role(actor, deployment.team, Role.VIEWER, "reading who calls a deployment")
    until = until or timezone.now()
    if not since:
        raise InvalidInput("Give at least one window.", field="window")
    earliest = min(since)
    sums: dict[str, Any] = {}
    for i, start in enumerate(since):
        window = Q(at__gte=start)
        sums[f"r{i}"] = Sum("requests", filter=window, default=0)
        sums[f"l{i}"] = Sum("limited", filter=window, default=0)
    rows = (ConsumerTraffic.objects.filter(deployment=deployment, at__gte=earliest, at__lt=until)
            .values("key_id").annotate(last_seen=Max("at"), **sums))
    traffic: dict[Any, dict[str, Any]] = {row["key_id"]: dict(row) for row in rows}
    keys = ConsumerKey.objects.filter(Q(pk__in=list(traffic))
                                      | Q(deployments=deployment, revoked_at__isnull=True)) \
        .distinct()
    out = []
    for key in keys:
        row: dict[str, Any] = traffic.get(key.pk, {})
        out.append(Caller(key_id=str(key.pk), name=key.name, status=key.status,
                          rate_per_s=key.rate_per_s, burst=key.burst,
                          requests=[int(row.get(f"r{i}", 0)) for i in range(len(since))],
                          limited=[int(row.get(f"l{i}", 0)) for i in range(len(since))],
                          last_seen=row.get("last_seen")))
    widest = since.index(earliest)
    out.sort(key=lambda c: (-(c.requests[widest] + c.limited[widest]), c.name))
    return out


def panel(*, actor: Actor, deployment: Deployment, windows: Sequence[tuple[str, datetime]],
          until: datetime | None = None) -> dict[str, Any]:
    """What a page's "Callers" panel shows: per key and window (label, start) the requests
    and 429s, with each key's share of the busiest key's traffic in the last window (a bar)."""
    rows = callers(actor=actor, deployment=deployment, since=[start for _, start in windows],
                   until=until)
    labels = [label for label, _ in windows]
    top = max((c.requests[-1] + c.limited[-1] for c in rows), default=0)
    return {"labels": labels, "rows": [
        {**c.as_dict(labels), "cells": [{"label": label, "requests": r, "limited": lim}
                                        for label, r, lim in zip(labels, c.requests, c.limited,
                                                                 strict=True)],
         "share": round(100 * (c.requests[-1] + c.limited[-1]) / top) if top else 0}
        for c in rows]}
