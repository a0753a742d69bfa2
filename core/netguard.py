"""Which destinations the platform itself may call (alert webhooks, retraining hooks, imports).

Every URL the platform fetches or calls on someone's behalf is checked here first: a user who
may write a webhook URL must not turn the platform into a scanner of its own loopback services,
private networks or a cloud metadata endpoint. Django-free: callers pass the allow-list
(``teams.models.PlatformSettings.outbound_allowlist``) in.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
                   r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: a network (an address is a /32 or /128) or a host name, each
    optionally limited to one port."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    host: str = ""
    port: int | None = None

    def __str__(self) -> str:
        where = str(self.network) if self.network is not None else self.host
        if self.port is None:
            return where
        return f"[{where}]:{self.port}" if ":" in where else f"{where}:{self.port}"


def parse_allow_entry(raw: str) -> AllowEntry:
    """``10.0.0.0/8``, ``127.0.0.1``, ``127.0.0.1:9000``, ``[::1]:9000``, ``hooks.internal``,
    ``hooks.internal:8443``; ValueError naming the problem otherwise."""
    text = (raw or "").strip().lower()
    if not text:
        raise ValueError("an empty entry")
    port: int | None = None
    where = text
    if text.startswith("["):  # [IPv6]:port
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{raw!r}: a '[' without ']'")
        where, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{raw!r}: expected ':port' after ']'")
            port = _port(rest[1:], raw)
    elif text.count(":") == 1:  # host:port or IPv4:port (a bare IPv6 address has several)
        where, _, port_text = text.partition(":")
        port = _port(port_text, raw)
    try:
        return AllowEntry(network=ipaddress.ip_network(where, strict=False), port=port)
    except ValueError:
        pass
    if "/" in where or not _HOST.match(where):
        raise ValueError(f"{raw!r} is not a host name, an IP address or a CIDR network")
    return AllowEntry(host=where.rstrip("."), port=port)


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{raw!r}: the port must be a number from 1 to 65535")
    return int(text)
