"""Single sign-on configuration: is it on, where the provider's endpoints are, what a user's
groups mean, and who may still use a password.

The provider's endpoints come from ``<issuer>/.well-known/openid-configuration``, read at first
use and cached for ``MODELPORT_OIDC_DISCOVERY_TTL_S``. The issuer is an operator's setting, so
it is called even on an internal address (a company's Keycloak usually is). Every endpoint the
discovery document names on *another* origin is a URL the provider chose: it must pass the
platform's outbound check (``core.netguard``: no loopback, private, link-local or metadata
address unless the platform settings' outbound allow-list names it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from core import netguard

from .models import PlatformSettings
from .roles import Role, is_platform_admin, rank

DISCOVERY_PATH = "/.well-known/openid-configuration"
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")


class SsoUnavailable(Exception):
    """The provider cannot be used right now; the message says why, for the login page."""


def enabled() -> bool:
    return bool(settings.MODELPORT_OIDC_ISSUER)


def issuer() -> str:
    return str(settings.MODELPORT_OIDC_ISSUER).rstrip("/")


def provider_name() -> str:
    return str(settings.MODELPORT_OIDC_PROVIDER_NAME)


# --- Discovery --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str


_cache: dict[str, tuple[float, Provider]] = {}
_lock = threading.Lock()


def forget_discovery() -> None:
    """Drop the cached document (tests; an operator changing the provider restarts anyway)."""
    with _lock:
        _cache.clear()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _allowed_endpoint(url: str, field: str, issuer_url: str) -> str:
    """``url`` when the platform may call it: on the issuer's own origin, or passing the
    outbound check. Raises ``SsoUnavailable`` naming the field otherwise."""
    if not isinstance(url, str) or not url:
        raise SsoUnavailable(f"the provider's discovery document has no {field}")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise SsoUnavailable(f"the provider's {field} {url!r} is not an http(s) URL")
    if _origin(url) == _origin(issuer_url):
        return url
    row = PlatformSettings.objects.filter(pk=1).first()
    try:
        netguard.check_url(url, (row.outbound_allowlist if row else None) or [])
    except (netguard.DestinationRefused, netguard.Unreachable) as exc:
        raise SsoUnavailable(f"the provider's {field} {url} is refused: {exc}") from None
    return url


def _fetch(issuer_url: str) -> Provider:
    url = issuer_url + DISCOVERY_PATH
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT,
                                headers={"Accept": "application/json"}, allow_redirects=False)
        response.raise_for_status()
        document: Any = response.json()
    except requests.RequestException as exc:
        raise SsoUnavailable(f"cannot read {url}: {exc}") from None
    except ValueError:
        raise SsoUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(document, dict):
        raise SsoUnavailable(f"{url} did not answer a JSON object")
    if str(document.get("issuer", "")).rstrip("/") != issuer_url:
        raise SsoUnavailable(f"{url} names issuer {document.get('issuer')!r}, "
                             f"not {issuer_url!r} (MODELPORT_OIDC_ISSUER)")
    found = {field: _allowed_endpoint(document.get(field, ""), field, issuer_url)
             for field in _ENDPOINTS}
    end_session = document.get("end_session_endpoint") or ""
    if end_session:
        end_session = _allowed_endpoint(end_session, "end_session_endpoint", issuer_url)
    return Provider(issuer=issuer_url, end_session_endpoint=end_session, **found)


def discovery() -> Provider:
    """The provider's endpoints (cached). ``SsoUnavailable`` when SSO is off or unreadable."""
    if not enabled():
        raise SsoUnavailable("single sign-on is not configured")
    key = issuer()
    now = time.monotonic()
    with _lock:
        cached = _cache.get(key)
        if cached and now - cached[0] < settings.MODELPORT_OIDC_DISCOVERY_TTL_S:
            return cached[1]
    provider = _fetch(key)
    with _lock:
        _cache[key] = (now, provider)
    return provider


# --- Groups → teams, roles and platform admin -------------------------------------------------
def groups_of(claims: dict[str, Any]) -> list[str]:
    """The user's groups from the configured claim: a list of strings (or one string)."""
    value = claims.get(settings.MODELPORT_OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value if isinstance(item, (str, int))]
    return []


def mapped_teams() -> set[str]:
    """Slugs of the teams whose memberships single sign-on manages."""
    return {team for _group, team, _role in settings.MODELPORT_OIDC_GROUP_MAP}


def wanted_roles(groups: list[str]) -> dict[str, Role]:
    """Team slug → role the groups give (the highest when several groups name one team)."""
    present = set(groups)
    wanted: dict[str, Role] = {}
    for group, team, role in settings.MODELPORT_OIDC_GROUP_MAP:
        if group in present and rank(role) > rank(wanted.get(team)):
            wanted[team] = Role(role)
    return wanted


def wants_admin(groups: list[str]) -> bool | None:
    """True/False when admin groups are configured, None when SSO does not manage admins."""
    admin_groups = set(settings.MODELPORT_OIDC_ADMIN_GROUPS)
    if not admin_groups:
        return None
    return bool(admin_groups & set(groups))


# --- Passwords --------------------------------------------------------------------------------
def password_refusal(user) -> str | None:
    """Why ``user`` (already authenticated by password) may not sign in that way, or None.
    ``MODELPORT_PASSWORD_LOGIN``: all, admins (break-glass platform admins), off."""
    mode = settings.MODELPORT_PASSWORD_LOGIN
    via = f" Sign in with {provider_name()}." if enabled() else ""
    if mode == "off":
        return "Password sign-in is turned off on this platform." + via
    if mode == "admins" and not (is_platform_admin(user) or getattr(user, "is_superuser", False)):
        return "Password sign-in is reserved for platform admins." + via
    return None


def password_form_shown() -> bool:
    return settings.MODELPORT_PASSWORD_LOGIN != "off"


def password_for_all() -> bool:
    return settings.MODELPORT_PASSWORD_LOGIN == "all"


def form_action_origins() -> list[str]:
    """Origins the portal's forms may lead to besides its own: the provider's, because Log out
    (a POST) redirects to its end-session endpoint and CSP ``form-action`` covers redirects."""
    if not enabled():
        return []
    origins = {_origin_text(issuer())}
    with _lock:
        cached = _cache.get(issuer())
    if cached and cached[1].end_session_endpoint:
        origins.add(_origin_text(cached[1].end_session_endpoint))
    return sorted(origins)


def _origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
