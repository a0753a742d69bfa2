"""Shapes and checks of ``modelport login --sso`` (a loopback redirect with PKCE, RFC 8252 and
RFC 7636): what the portal page accepts from the query, and the S256 check of a verifier.

The verbs that change state are ``teams.services.approve_cli_login`` and ``redeem_cli_login``;
this module only validates, so the portal page and the services refuse the same things.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import timedelta

from django.conf import settings

from core.errors import InvalidInput

CODE_TTL = timedelta(minutes=2)
# The CLI listens on 127.0.0.1 at a port the OS picked: never a privileged one.
PORT_MIN, PORT_MAX = 1024, 65535
_STATE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_WHOLE = re.compile(r"[0-9]{1,6}")  # ASCII only: str.isdigit() admits "²", int() does not
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256 digest, no padding
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1
TOKEN_NAME_MAX = 100


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    return bool(_VERIFIER.fullmatch(verifier)) and hmac.compare_digest(s256(verifier), challenge)


def check_port(value: str | int | None) -> int:
    text = str(value if value is not None else "")
    if not _WHOLE.fullmatch(text) or not PORT_MIN <= int(text) <= PORT_MAX:
        raise InvalidInput(f"port must be a whole number from {PORT_MIN} to {PORT_MAX}.",
                           field="port")
    return int(text)


def check_state(value: str | None) -> str:
    if not value or not _STATE.fullmatch(value):
        raise InvalidInput("state must be 16-128 letters, digits, '-' or '_'.", field="state")
    return value


def check_challenge(value: str | None) -> str:
    if not value or not _CHALLENGE.fullmatch(value):
        raise InvalidInput("code_challenge must be the 43-character base64url S256 challenge.",
                           field="code_challenge")
    return value


def check_token_name(value: str | None) -> str:
    name = (value or "").strip()
    if not name:
        raise InvalidInput("name (the token's name) is missing.", field="name")
    if len(name) > TOKEN_NAME_MAX or not name.isprintable():
        raise InvalidInput(f"name must be at most {TOKEN_NAME_MAX} printable characters.",
                           field="name")
    return name


def check_days(value: str | None) -> int | None:
    """The token's lifetime the CLI asked for (``expires_in_days``), or None for the default."""
    if value in (None, ""):
        return None
    maximum = settings.MODELPORT_TOKEN_MAX_DAYS
    if not _WHOLE.fullmatch(str(value)) or not 1 <= int(str(value)) <= maximum:
        raise InvalidInput(f"expires_in_days must be a whole number from 1 to {maximum}.",
                           field="expires_in_days")
    return int(str(value))


def callback_url(port: int) -> str:
    """Where the browser goes after the answer: always this computer's loopback address at the
    CLI's port, never a host taken from the request."""
    return f"http://127.0.0.1:{port}/callback"
