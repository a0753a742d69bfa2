"""API token secrets: generation, hashing and lookup.

A token reads ``mpt_<prefix>_<secret>`` (a consumer key ``mpk_…``). The prefix (public,
indexed) finds the row; the whole string is compared by SHA-256 digest in constant time.
Secrets are 256-bit random, so a fast hash is the right tool here (no password stretching
needed), as GitHub and PyPI do for their tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_SCHEME = "mpt"
CONSUMER_SCHEME = "mpk"  # consumer keys (deployments.ConsumerKey): the gateway only


@dataclass(frozen=True)
class NewSecret:
    token: str
    prefix: str
    digest: str


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate(scheme: str = TOKEN_SCHEME) -> NewSecret:
    prefix = secrets.token_hex(6)
    token = f"{scheme}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewSecret(token=token, prefix=prefix, digest=digest_of(token))


def parse_prefix(token: str, scheme: str = TOKEN_SCHEME) -> str | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != scheme or len(parts[1]) != 12:
        return None
    return parts[1]


def matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(digest_of(token), digest)
