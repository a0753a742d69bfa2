"""``modelport login``: a token for this machine, from a password, kept in the config."""

from __future__ import annotations

import argparse
import getpass
import secrets
import socket
import sys
import time

from . import errors
from .client import Client
from .config import load_config, save_config
from .output import Output


def cmd_login(args: argparse.Namespace, out: Output) -> int:
    """A new token for this machine, saved in the config; the token the config held before
    (same platform) is revoked, so logging in again rotates the machine's token."""
    username = args.username or input("Username: ")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else \
        getpass.getpass("Password: ")
    client = Client(args.login_url or args.url, token="")
    name = args.token_name or default_token_name()
    token = client.create_token(username, password, name=name,
                                expires_in_days=args.expires_in_days)
    previous = load_config()
    path = save_config({"url": client.url, "token": token["token"], "token_id": token["id"],
                        "token_name": name})
    revoked = None
    if previous.get("url") == client.url and previous.get("token_id") \
            and previous["token_id"] != token["id"]:
        with Client(client.url, token["token"]) as fresh:
            try:
                fresh.revoke_token(previous["token_id"])
                revoked = previous.get("token_name") or previous["token_id"]
            except errors.ModelportError:  # gone already, or another user's token
                pass
    out.emit({"url": client.url, "token_id": token["id"], "token_name": name,
              "expires_at": token["expires_at"], "config": str(path),
              "revoked": revoked},
             text=f"Logged in to {client.url}; token '{name}' saved in {path} "
                  f"(expires {token['expires_at']})."
                  + (f" The previous token '{revoked}' is revoked." if revoked else ""))
    return 0


def default_token_name() -> str:
    """``cli@<host> <UTC time> <4 random hex>``: unique per login (two in one second too),
    and says which machine holds it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"cli@{socket.gethostname()[:60]} {stamp} {secrets.token_hex(2)}"
