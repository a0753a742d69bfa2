"""Which destinations the platform itself may call (alert webhooks, retraining hooks, imports).

Every URL the platform fetches or calls on someone's behalf is checked here first: a user who
may write a webhook URL must not turn the platform into a scanner of its own loopback services,
private networks or a cloud metadata endpoint. ``check_url`` resolves the host once and
refuses internal addresses that no allow-list entry names (``DestinationRefused``, its message
the reason); ``post_json`` then connects to exactly the addresses checked — no second lookup, no
redirects, TLS verified against the URL's name. Django-free: callers pass the allow-list
(``teams.models.PlatformSettings.outbound_allowlist``) in.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

import urllib3

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


# --- Which addresses are internal ------------------------------------------------------------
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Checked in order (the first match names the reason); anything else that Python does not
# consider globally reachable is refused as "not a public address".
_V4_BLOCKS = [(ipaddress.IPv4Network(net), why) for net, why in [
    ("0.0.0.0/8", "an unspecified (\"this host\") address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a carrier-grade NAT address (RFC 6598)"),
    ("169.254.169.254/32", "the cloud metadata address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "an IETF protocol address (RFC 6890)"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
]]
_V6_BLOCKS = [(ipaddress.IPv6Network(net), why) for net, why in [
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("fd00:ec2::254/128", "the cloud metadata address"),
    ("fc00::/7", "a private address (unique local, RFC 4193)"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("2001::/32", "a Teredo tunnel address"),
    ("2001:db8::/32", "a documentation address"),
    ("100::/64", "a discard-only address"),
    ("::/8", "a reserved IPv6 address"),
]]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address leads to: a
    connection to it reaches that IPv4 host, so it is judged as that host."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def internal_reason(ip: IPAddress) -> str | None:
    """Why the platform does not call ``ip`` on a user's behalf ("a loopback address"), or
    None for a public address."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = internal_reason(inner)
        return f"{why} ({inner} in IPv6 form)" if why else None
    for network, why in _V4_BLOCKS if ip.version == 4 else _V6_BLOCKS:
        if ip in network:
            return why
    return None if ip.is_global else "not a public address"


# --- Ports -----------------------------------------------------------------------------------
# The Fetch standard's "bad ports" (what browsers refuse to send HTTP to): SMTP, SSH, IRC,
# LDAP… A webhook on any other port works; these only when a platform admin allow-lists the
# destination with that port. Why restrict at all: an HTTP POST whose body an engineer writes
# must not become a cross-protocol message to a mail relay or a directory server.
BAD_PORTS = frozenset({
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
    102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389,
    427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636,
    989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665,
    6666, 6667, 6668, 6669, 6679, 6697, 10080})
DEFAULT_PORTS = {"http": 80, "https": 443}


# --- Checking a URL --------------------------------------------------------------------------
class OutboundError(Exception):
    """A call the platform makes on someone's behalf did not happen; the message is safe to
    show to that someone (it names no more than they gave)."""


class DestinationRefused(OutboundError, ValueError):
    """The URL names a destination the platform does not call: not http(s), malformed, a bad
    port, or an address that is internal and not allow-listed."""


class Unreachable(OutboundError):
    """The destination was allowed but could not be called: its name does not resolve, the
    connection failed or timed out, or its TLS certificate is not valid for its name."""


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (``addresses``, every one of them checked) and what to
    say once connected (``host`` for SNI and certificate checks, ``host_header``, ``target``)."""

    scheme: str
    host: str
    port: int
    target: str
    host_header: str
    addresses: tuple[IPAddress, ...]
    username: str | None = None
    password: str | None = None


Resolver = Callable[[str, int], list[IPAddress]]


def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every IPv4 and IPv6 address the system resolver gives for ``host``, in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unreachable(f"{host} does not resolve") from exc
    found: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    if not found:
        raise Unreachable(f"{host} does not resolve")
    return found


def _allow_entries(allow: Iterable[AllowEntry | str]) -> list[AllowEntry]:
    return [entry if isinstance(entry, AllowEntry) else parse_allow_entry(entry)
            for entry in allow]


def _matches(entry: AllowEntry, host: str, ip: IPAddress | None, port: int) -> bool:
    """Does the entry name this host (by name) or this address (by network; an IPv4-mapped,
    NAT64 or 6to4 address also by the IPv4 address it leads to), on this port?"""
    if entry.port is not None and entry.port != port:
        return False
    if entry.host:
        return entry.host == host
    if entry.network is None or ip is None:
        return False
    candidates = (ip, embedded_ipv4(ip))
    return any(c is not None and c.version == entry.network.version and c in entry.network
               for c in candidates)


def _literal_ip(host: str) -> IPAddress | None:
    """The address a host written as an IP literal names, including the legacy IPv4 forms C's
    ``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``) — which a resolver
    would treat the same way."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host) and not host.endswith("."):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, allow: Iterable[AllowEntry | str] = (), *,
              resolve: Resolver | None = None) -> Destination:
    """Check a URL the platform is asked to call and resolve its host once.

    Refused (``DestinationRefused``): anything but http/https, a malformed URL (spaces, control
    characters, backslashes, zone ids), a bad port (``BAD_PORTS``), or a host of which *any*
    address is internal — unless an allow-list entry matches the host name or the address (and
    the port when the entry has one). Numeric hosts are read as the C library reads them
    (``http://2130706433/`` is 127.0.0.1). A name that does not resolve raises ``Unreachable``.
    Callers connect to
    ``Destination.addresses`` (``post_json`` does): never to the name again, so a DNS answer
    that changes after the check (rebinding) is never used.
    """
    if not isinstance(url, str) or not url.strip():
        raise DestinationRefused("the URL is empty")
    url = url.strip()
    if len(url) > 2000:
        raise DestinationRefused("the URL is longer than 2000 characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in url):
        raise DestinationRefused("the URL holds spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise DestinationRefused("the URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise DestinationRefused("only http:// and https:// URLs are called")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise DestinationRefused("the URL has no host")
    if "%" in raw_host:
        raise DestinationRefused("IPv6 zone ids (…%eth0) are not allowed")
    try:
        explicit = parts.port
    except ValueError:
        raise DestinationRefused("the port must be a number from 1 to 65535") from None
    if explicit is not None and not 1 <= explicit <= 65535:
        raise DestinationRefused("the port must be a number from 1 to 65535")
    port = explicit or DEFAULT_PORTS[scheme]
    entries = _allow_entries(allow)

    literal = _literal_ip(raw_host)
    if literal is not None:
        host = str(literal)
        legacy = literal.version == 4 and raw_host != host  # 2130706433, 0177.0.0.1, 0x7f.1
        shown = f"{raw_host} ({host})" if legacy else raw_host
        addresses = [literal]
    else:
        try:
            host = raw_host.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise DestinationRefused(f"{raw_host!r} is not a valid host name") from None
        if not _HOST.match(host):
            raise DestinationRefused(f"{raw_host!r} is not a valid host name")
        shown = host
        addresses = (resolve or system_resolve)(host, port)
        if not addresses:
            raise Unreachable(f"{host} does not resolve")

    for ip in addresses:
        why = internal_reason(ip)
        if why and not any(_matches(e, host, ip, port) for e in entries):
            raise DestinationRefused(f"{shown} is {why}" if literal is not None
                                     else f"{shown} resolves to {ip}, {why}")
    if port in BAD_PORTS and not any(
            e.port == port and _matches(e, host, ip, port) for e in entries for ip in addresses):
        raise DestinationRefused(f"port {port} is reserved for a protocol other than HTTP")

    host_for_header = f"[{host}]" if ":" in host else host
    return Destination(
        scheme=scheme, host=host, port=port, target=_target(parts),
        host_header=host_for_header if explicit is None else f"{host_for_header}:{port}",
        addresses=tuple(addresses), username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None)


def _target(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


# --- Calling it ------------------------------------------------------------------------------
def post_json(url: str, payload: object, *, timeout: float,
              allow: Iterable[AllowEntry | str] = (), resolve: Resolver | None = None,
              ssl_context: ssl.SSLContext | None = None) -> int:
    """POST ``payload`` as JSON to a checked URL and return the HTTP status.

    Connects to the checked addresses only (in the resolver's order, the next one when a
    connection cannot be opened), sends the URL's host in ``Host`` and — for https — in SNI,
    and verifies the certificate against it (the system's CA store, or ``ssl_context``).
    Redirects are never followed: a 3xx is returned like any other status. The answer's body
    is never read. Environment proxies are not used (a proxy would resolve the name again).
    Raises ``DestinationRefused`` or ``Unreachable``.
    """
    destination = check_url(url, allow, resolve=resolve)
    body = json.dumps(payload).encode()
    headers = {"Host": destination.host_header, "Content-Type": "application/json",
               "User-Agent": "Modelport", "Connection": "close"}
    if destination.username is not None:
        headers.update(urllib3.util.make_headers(
            basic_auth=f"{destination.username}:{destination.password or ''}"))
    if destination.scheme == "https" and ssl_context is None:
        ssl_context = ssl.create_default_context()
    deadline = time.monotonic() + timeout
    problem = "timed out"
    for ip in destination.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pool = _pool(destination, ip, remaining, ssl_context)
        try:
            response = pool.urlopen("POST", destination.target, body=body, headers=headers,
                                    retries=False, redirect=False, assert_same_host=False,
                                    preload_content=False, release_conn=False)
            status = response.status
            response.close()
            return status
        except (urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError) as exc:
            # NewConnectionError subclasses ConnectTimeoutError: test it first.
            problem = ("could not connect" if isinstance(exc, urllib3.exceptions.NewConnectionError)
                       else "timed out")
            continue  # nothing was sent: the next address may answer
        except urllib3.exceptions.SSLError as exc:
            raise Unreachable(f"TLS with {destination.host} failed: {_tls_reason(exc)}") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise Unreachable("timed out waiting for the answer") from None
        except (urllib3.exceptions.HTTPError, OSError):
            raise Unreachable("the connection broke before an answer") from None
        finally:
            pool.close()
    raise Unreachable(problem)


def _pool(destination: Destination, ip: IPAddress, timeout: float,
          context: ssl.SSLContext | None) -> urllib3.HTTPConnectionPool:
    limit = urllib3.Timeout(total=timeout)
    if destination.scheme == "http":
        return urllib3.HTTPConnectionPool(host=str(ip), port=destination.port, maxsize=1,
                                          retries=False, timeout=limit)
    return urllib3.HTTPSConnectionPool(host=str(ip), port=destination.port, maxsize=1,
                                       retries=False, timeout=limit, ssl_context=context,
                                       server_hostname=destination.host)


def _tls_reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "hostname mismatch" in text or "doesn't match" in text:
        return "the certificate is not valid for this name"
    if "certificate verify failed" in text:
        return "the certificate is not trusted"
    if "wrong version number" in text:
        return "the server does not speak TLS"
    return "the handshake failed"
