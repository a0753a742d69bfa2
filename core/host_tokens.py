"""The bearer token a host worker shows the platform to download the models placed on it
(``GET /api/v1/hosts/{host}/artifacts/{sha256}/``).

Derived, not stored: HMAC-SHA256 of the host's name under the platform's secret key. A host
worker already runs with ``DJANGO_SECRET_KEY`` (it uses the database and the broker as the
platform does), so it computes its own token and nothing has to be issued, stored or rotated;
rotating the secret key rotates every host token. One host's token opens no other host's
path, and the endpoint serves a host only the artifacts of replicas placed on it.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

SCHEME = "mph"
_CONTEXT = b"modelport.host-token.v1:"


def host_token(host: str, *, secret: str | None = None) -> str:
    """``mph_<hex>``: the token of host ``host`` under ``secret`` (default: SECRET_KEY)."""
    key = (secret if secret is not None else settings.SECRET_KEY).encode()
    digest = hmac.new(key, _CONTEXT + host.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME}_{digest}"


def verify(host: str, header: str) -> bool:
    """Whether an ``Authorization`` header carries host ``host``'s token (constant time)."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), host_token(host).encode())
