"""``modelport login --sso``: sign in through the portal in a browser (RFC 8252 loopback
redirect with PKCE, like ``gh auth login --web``).

The CLI listens on ``127.0.0.1`` at a port the OS picks, opens
``<platform>/cli/login/?port=…&state=…&code_challenge=…&name=…``, and waits for the browser to
come back to ``/callback`` with a one-time code and the same ``state``. It then trades the code
and the PKCE verifier for an API token (``POST /api/v1/cli-login/``). Whatever the portal's
sign-in is (password or single sign-on), the CLI only sees the token. The listener stops on
success, on the timeout and on Ctrl-C: nothing is left listening.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
import webbrowser
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

from . import errors

DEFAULT_TIMEOUT_S = 300.0
_PAGE = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Modelport"
         "</title></head><body><h1>{title}</h1><p>{text}</p></body></html>")


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (43 characters, 256 random bits) and its S256 challenge."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class _Answer:
    state: str
    code: str | None = None
    refused: str | None = None
    ignored: list[str] = field(default_factory=list)


class _CallbackServer(HTTPServer):
    answer: _Answer


class _Handler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self._reply(404, "Not found", "Nothing here.")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        answer = self.server.answer
        if not secrets.compare_digest(query.get("state", ""), answer.state):
            # Not the answer to our request (another page calling this port): ignore it.
            answer.ignored.append("state mismatch")
            self._reply(400, "Sign-in not accepted",
                        "This answer does not belong to the running 'modelport login --sso'.")
            return
        if query.get("code"):
            answer.code = query["code"]
            self._reply(200, "Signed in", "The command line is signed in. You can close this "
                        "tab.")
        else:
            answer.refused = query.get("error") or "no code"
            self._reply(200, "Cancelled", "The command line was not signed in. You can close "
                        "this tab.")

    def _reply(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=title, text=text).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'none'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the code is in the query: never print requests


def browser_login(platform_url: str, *, token_name: str, expires_in_days: int | None = None,
                  open_browser: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
                  stream: TextIO | None = None) -> tuple[str, str]:
    """Run the browser half of the flow; returns ``(code, code_verifier)`` to redeem."""
    stream = stream or sys.stderr
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    server = _CallbackServer(("127.0.0.1", 0), _Handler)
    try:
        server.answer = _Answer(state=state)
        server.timeout = 0.5
        port = server.server_address[1]
        query: dict[str, Any] = {"port": port, "state": state, "code_challenge": challenge,
                                 "name": token_name}
        if expires_in_days:
            query["expires_in_days"] = expires_in_days
        url = f"{platform_url.rstrip('/')}/cli/login/?{urlencode(query)}"
        opened = open_browser and _open(url)
        print(("Your browser opened the sign-in page; if it did not, open this address:\n"
               if opened else "Open this address in a browser to sign in:\n") + f"  {url}",
              file=stream, flush=True)
        deadline = time.monotonic() + timeout
        while server.answer.code is None and server.answer.refused is None:
            if time.monotonic() >= deadline:
                raise errors.TimeoutExpired(f"No answer from the browser within {timeout:.0f} s; "
                                            "run 'modelport login --sso' again.")
            server.handle_request()
    finally:
        server.server_close()
    if server.answer.refused is not None:
        raise errors.PermissionDenied(f"Sign-in cancelled in the browser "
                                      f"({server.answer.refused}).", code="access_denied")
    return server.answer.code or "", verifier


def _open(url: str) -> bool:
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
