"""The bearer token a host worker shows the platform to download the models placed on it
(``GET /api/v1/hosts/{host}/artifacts/{sha256}/``).

Derived, not stored: HMAC-SHA256 of the host's name under the platform's secret key. A host
worker already runs with ``DJANGO_SECRET_KEY`` (it uses the database and the broker as the
platform does), so it computes its own token and nothing has to be issued, stored or rotated;
rotating the secret key rotates every host token. The installation's id is part of the
input, so two installations that share a secret key (a staging copy of production) never
accept each other's hosts. The endpoint serves a host only the artifacts of replicas placed on
it. What this does not do: every host worker holds the secret key, so a compromised host could
compute another host's token — as it could read the database it is given; tokens are not
revocable one host at a time (rotate the secret key).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from django.conf import settings

SCHEME = "mph"
_CONTEXT = b"modelport.host-token.v2:"
# The installation's id (``teams.installation``, which sits above core: TeamsConfig.ready()
# registers it). Empty until then.
_installation: Callable[[], str] = str


def register_installation(source: Callable[[], str]) -> None:
    global _installation
    _installation = source


def host_token(host: str, *, secret: str | None = None) -> str:
    """``mph_<hex>``: the token of host ``host`` under ``secret`` (default: SECRET_KEY)."""
    key = (secret if secret is not None else settings.SECRET_KEY).encode()
    scope = f"{_installation()}:{host}".encode()
    digest = hmac.new(key, _CONTEXT + scope, hashlib.sha256).hexdigest()
    return f"{SCHEME}_{digest}"


def verify(host: str, header: str) -> bool:
    """Whether an ``Authorization`` header carries host ``host``'s token (constant time)."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), host_token(host).encode())
