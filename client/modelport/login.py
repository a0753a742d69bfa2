"""``modelport login``: a token for this machine, from a password or from a browser sign-in
(``--sso``, see ``sso.py``), kept in the config."""

from __future__ import annotations

import argparse
import getpass
import secrets
import socket
import sys
import time
from typing import Any

from . import errors, sso
from .client import Client
from .config import load_config, save_config
from .output import Output


def add_parser(sub: Any) -> None:
    login = sub.add_parser("login", help="get a token (password, or --sso in a browser) and "
                                         "save it")
    login.add_argument("--url", dest="login_url", help="platform URL")
    login.add_argument("--sso", action="store_true",
                       help="sign in through the portal in a browser (password or single "
                            "sign-on, whatever the portal uses)")
    login.add_argument("--no-browser", action="store_true",
                       help="with --sso: print the address instead of opening a browser")
    login.add_argument("--username")
    login.add_argument("--password-stdin", action="store_true")
    login.add_argument("--token-name",
                       help="default: cli@<host> <UTC time> <random>, new each login")
    login.add_argument("--expires-in-days", type=int)
    login.add_argument("--timeout", type=float, default=sso.DEFAULT_TIMEOUT_S,
                       help=argparse.SUPPRESS)


def cmd_login(args: argparse.Namespace, out: Output) -> int:
    """A new token for this machine, saved in the config; the token the config held before
    (same platform) is revoked, so logging in again rotates the machine's token."""
    if args.sso:
        return _login_sso(args, out)
    username = args.username or input("Username: ")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else \
        getpass.getpass("Password: ")
    client = Client(args.login_url or args.url, token="")
    name = args.token_name or default_token_name()
    token = client.create_token(username, password, name=name,
                                expires_in_days=args.expires_in_days)
    return _keep(client.url, token, name, out, username=username)


def _login_sso(args: argparse.Namespace, out: Output) -> int:
    with Client(args.login_url or args.url, token="") as client:
        name = args.token_name or default_token_name()
        code, verifier = sso.browser_login(client.url, token_name=name,
                                           expires_in_days=args.expires_in_days,
                                           open_browser=not args.no_browser,
                                           timeout=args.timeout)
        token = client.redeem_cli_login(code, verifier)
    return _keep(client.url, token, token["name"], out, username=token["username"])


def _keep(url: str, token: dict[str, Any], name: str, out: Output, *, username: str) -> int:
    previous = load_config()
    path = save_config({"url": url, "token": token["token"], "token_id": token["id"],
                        "token_name": name})
    revoked = None
    if previous.get("url") == url and previous.get("token_id") \
            and previous["token_id"] != token["id"]:
        with Client(url, token["token"]) as fresh:
            try:
                fresh.revoke_token(previous["token_id"])
                revoked = previous.get("token_name") or previous["token_id"]
            except errors.ModelportError:  # gone already, or another user's token
                pass
    out.emit({"url": url, "username": username, "token_id": token["id"], "token_name": name,
              "expires_at": token["expires_at"], "config": str(path), "revoked": revoked},
             text=f"Logged in to {url} as {username}; token '{name}' saved in {path} "
                  f"(expires {token['expires_at']})."
                  + (f" The previous token '{revoked}' is revoked." if revoked else ""))
    return 0


def default_token_name() -> str:
    """``cli@<host> <UTC time> <4 random hex>``: unique per login (two in one second too),
    and says which machine holds it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"cli@{socket.gethostname()[:60]} {stamp} {secrets.token_hex(2)}"
