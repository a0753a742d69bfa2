"""``modelport consumer-keys …``: keys for the services that call a team's models — create
(the secret is printed once), list, update limits, revoke, and who calls a deployment.

A key is named after its calling service and is unique among a team's active keys, so
``revoke``/``update`` take the name with ``--team`` (or the key's id). The server checks every
value and names the field it refuses; this module only shapes them.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from . import errors
from .client import Client
from .output import Output

COLUMNS = ["name", "team", "prefix", "deployments", "limit", "expires_at", "status",
           "last_used_at"]
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _limit(key: dict[str, Any]) -> str:
    limit = key.get("rate_limit")
    return f"{limit['per_second']:g}/s burst {limit['burst']}" if limit else "none"


def _rows(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**k, "prefix": f"mpk_{k['prefix']}_…", "limit": _limit(k)} for k in keys]


def _deployments(values: list[str] | None) -> list[str] | None:
    """``--deployment a --deployment b`` or ``--deployment a,b``."""
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def find(client: Client, which: str, team: str | None) -> dict[str, Any]:
    """The key by id, or the team's active (else newest) key of that name."""
    if _UUID.match(which):
        return client.request("GET", f"/consumer-keys/{which}/")
    if not team:
        raise errors.BadRequest(f"give --team with a key name ('{which}'), or the key's id")
    named = [k for k in client.consumer_keys(team=team) if k["name"] == which]
    if not named:
        raise errors.NotFound(f"team '{team}' has no consumer key named '{which}'", status=404)
    active = [k for k in named if k["status"] == "active"]
    return (active or sorted(named, key=lambda k: k["created_at"], reverse=True))[0]


def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    keys = client.consumer_keys(team=args.team, deployment=args.deployment, status=args.status)
    if out.as_json:
        out.emit(keys)
    else:
        out.emit(_rows(keys), columns=COLUMNS)
    return 0


def cmd_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    key = client.create_consumer_key(team=args.team, name=args.name,
                                     deployments=_deployments(args.deployment) or [],
                                     rate_per_s=args.rate, burst=args.burst,
                                     expires_at=args.expires_at)
    if args.quiet:
        print(key["secret"])
        return 0
    out.emit(key, text=(
        f"consumer key '{key['name']}' of team {key['team']} for "
        f"{', '.join(key['deployments'])} (limit: {_limit(key)}). Store it now: it is not "
        f"shown again.\n{key['secret']}"))
    return 0


def cmd_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    key = find(client, args.key, args.team)
    if args.no_limit and (args.rate is not None or args.burst is not None):
        raise errors.BadRequest("--no-limit takes no --rate or --burst")
    limit: Any = ...
    if args.no_limit:
        limit = None
    elif args.rate is not None:
        limit = {"per_second": args.rate, "burst": args.burst}
    elif args.burst is not None:
        if not key.get("rate_limit"):
            raise errors.BadRequest("a burst needs a rate: give --rate too")
        limit = {"per_second": key["rate_limit"]["per_second"], "burst": args.burst}
    updated = client.update_consumer_key(key["id"], deployments=_deployments(args.deployment),
                                         rate_limit=limit)
    out.emit(updated, text=f"{updated['name']}: {', '.join(updated['deployments'])}; limit "
                           f"{_limit(updated)} (the gateway applies it within a few seconds)")
    return 0


def cmd_revoke(client: Client, args: argparse.Namespace, out: Output) -> int:
    key = client.revoke_consumer_key(find(client, args.key, args.team)["id"])
    out.emit(key, text=f"revoked {key['name']} (mpk_{key['prefix']}_…): every gateway "
                       "refuses it within about a second")
    return 0


def cmd_callers(client: Client, args: argparse.Namespace, out: Output) -> int:
    body = client.callers(args.deployment, window=args.window)
    if out.as_json:
        out.emit(body)
    else:
        print(f"{body['deployment']}: callers with a consumer key over the last {body['window']}")
        out.emit([{**c, "limit": _limit(c)} for c in body["callers"]],
                 columns=["name", "status", "limit", "requests", "limited", "last_seen"])
    return 0


def add_parser(sub: Any) -> None:
    """``modelport consumer-keys …`` on the top-level subparsers."""
    keys = sub.add_parser(
        "consumer-keys", help="keys for the services that call your models (rate-limited, "
                              "/serve/ only)").add_subparsers(dest="keys_command", required=True)

    listing = keys.add_parser("list", help="keys you can see (never their secrets)")
    listing.add_argument("--team")
    listing.add_argument("--deployment")
    listing.add_argument("--status", choices=["active", "expired", "revoked"])
    listing.set_defaults(func=cmd_list)

    create = keys.add_parser("create", help="a key for one calling service (team maintainers)")
    create.add_argument("name", help="the calling service, e.g. search-api")
    create.add_argument("--team", required=True)
    create.add_argument("--deployment", action="append", required=True,
                        help="a deployment of the team it may call (repeat, or a,b)")
    _limit_arguments(create)
    create.add_argument("--expires-at", help="ISO 8601, e.g. 2027-06-30T00:00:00Z (default: "
                                             "never)")
    create.add_argument("-q", "--quiet", action="store_true", help="print only the key")
    create.set_defaults(func=cmd_create)

    update = keys.add_parser("update", help="change a key's deployments or rate limit")
    update.add_argument("key", help="the key's name (with --team) or id")
    update.add_argument("--team")
    update.add_argument("--deployment", action="append",
                        help="replace its deployments (repeat, or a,b)")
    _limit_arguments(update)
    update.add_argument("--no-limit", action="store_true", help="lift the rate limit")
    update.set_defaults(func=cmd_update)

    revoke = keys.add_parser("revoke", help="revoke a key (within about a second)")
    revoke.add_argument("key", help="the key's name (with --team) or id")
    revoke.add_argument("--team")
    revoke.set_defaults(func=cmd_revoke)

    callers = keys.add_parser("callers", help="per key: requests and 429s on a deployment")
    callers.add_argument("deployment")
    callers.add_argument("--window", choices=["1h", "24h", "7d"], default="24h")
    callers.set_defaults(func=cmd_callers)


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, metavar="PER_S",
                        help="sustained requests per second (default: no limit)")
    parser.add_argument("--burst", type=int,
                        help="requests allowed at once (default: a second's worth)")
