"""core.netguard: which URLs the platform calls, and how it calls them (the checked address,
no second lookup, no redirects, TLS verified against the URL's name).

Every connection here goes to a real listener on a loopback address. Where a test needs a DNS
answer this machine cannot give (a public address, a name that changes its answer), it passes
its own resolver or wraps ``socket.getaddrinfo`` — said at each place; nothing leaves the host.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl

import pytest
import trustme

from core import netguard
from core.netguard import DestinationRefused, Unreachable, check_url, post_json
from tests.loopback import Listener

PUBLIC = "93.184.215.14"  # a public address: only checked here, never connected to


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def resolver(answers: dict[str, list[str]], calls: list[str] | None = None):
    """A resolver with fixed answers (DNS for these names cannot run here)."""
    def resolve(host: str, port: int) -> list:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise Unreachable(f"{host} does not resolve")
        return [ipaddress.ip_address(a) for a in answers[host]]
    return resolve


# --- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8000/", "127.0.0.1 is a loopback address"),
    ("http://127.1.2.3/", "127.1.2.3 is a loopback address"),
    ("http://[::1]:5000/", "::1 is a loopback address"),
    ("http://0.0.0.0:8000/", "0.0.0.0 is an unspecified"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),
    ("http://0177.0.0.1/", "0177.0.0.1 (127.0.0.1) is a loopback address"),
    ("http://0x7f.1/", "0x7f.1 (127.0.0.1) is a loopback address"),
    ("http://localhost/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://localhost./", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://LOCALHOST:8000/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback address (127.0.0.1 in IPv6"),
    ("http://[::ffff:10.0.0.1]/", "a private address (RFC 1918) (10.0.0.1 in IPv6 form)"),
    ("http://[64:ff9b::a9fe:a9fe]/", "the cloud metadata address (169.254.169.254 in IPv6"),
    ("http://[2002:c0a8:101::]/", "a private address (RFC 1918) (192.168.1.1 in IPv6 form)"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address (RFC 1918)"),
    ("http://172.20.0.1/", "a private address (RFC 1918)"),
    ("http://192.168.0.10/", "a private address (RFC 1918)"),
    ("http://100.64.0.1/", "a carrier-grade NAT address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata address"),
    ("http://169.254.1.1/", "a link-local address"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is the cloud metadata address"),
    ("http://[fd12:3456::1]/", "a private address (unique local"),
    ("http://[fe80::1]/", "a link-local address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://255.255.255.255/", "the broadcast address"),
    ("http://240.0.0.1/", "a reserved address"),
    ("http://198.18.0.1/", "a benchmarking address"),
    ("http://192.0.0.192/", "an IETF protocol address"),
    ("http://[2001:db8::1]/", "a documentation address"),
    ("http://[fe80::1%25eth0]/", "zone ids"),
    ("ftp://hooks.example.com/x", "only http:// and https:// URLs"),
    ("file:///etc/passwd", "only http:// and https:// URLs"),
    ("gopher://127.0.0.1:6379/_INFO", "only http:// and https:// URLs"),
    ("http:///path", "no host"),
    ("http://[::1/", "malformed"),
    ("http://a b/", "spaces"),
    ("http://allowed.example\\@127.0.0.1/", "backslashes"),
    ("http://x:99999/", "a number from 1 to 65535"),
    ("http://x:0/", "a number from 1 to 65535"),
    (f"http://{PUBLIC}:25/", "port 25 is reserved for a protocol other than HTTP"),
    (f"http://{PUBLIC}:6379/", None),  # Redis' port is not on the list: only the address counts
    ("", "empty"),
])
def test_internal_and_malformed_destinations_are_refused_with_the_reason(url, reason):
    if reason is None:
        assert check_url(url).addresses == (ipaddress.ip_address(PUBLIC),)
        return
    with pytest.raises(DestinationRefused) as refused:
        check_url(url)
    assert reason in str(refused.value)


def test_user_info_does_not_hide_the_host_that_is_called():
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1 is a loopback address"):
        check_url(f"http://{PUBLIC}@127.0.0.1/")
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1 is a loopback address"):
        check_url("http://a@b@127.0.0.1/")


def test_a_name_with_any_internal_address_is_refused():
    # A name that answers with a public and a private address (DNS with public answers cannot
    # run here, so a resolver stands in for it).
    resolve = resolver({"mixed.example": [PUBLIC, "10.0.0.5"]})
    with pytest.raises(DestinationRefused, match=r"mixed.example resolves to 10.0.0.5, a private"):
        check_url("https://mixed.example/hook", resolve=resolve)


def test_a_public_destination_is_checked_once_and_keeps_its_name():
    calls: list[str] = []
    resolve = resolver({"hooks.example": [PUBLIC, "2606:4700::1111"]}, calls)
    destination = check_url("https://Hooks.Example./services/T0/B1?x=1", resolve=resolve)
    assert calls == ["hooks.example"]
    assert destination.host == "hooks.example" and destination.host_header == "hooks.example"
    assert destination.port == 443 and destination.target == "/services/T0/B1?x=1"
    assert [str(a) for a in destination.addresses] == [PUBLIC, "2606:4700::1111"]
    assert check_url("http://hooks.example:8080/", resolve=resolve).host_header == \
        "hooks.example:8080"


def test_a_name_that_does_not_resolve_is_unreachable_not_refused():
    with pytest.raises(Unreachable, match=r"nowhere\.example does not resolve") as raised:
        check_url("https://nowhere.example/", resolve=resolver({}))
    assert not isinstance(raised.value, DestinationRefused)


# --- the allow-list ---------------------------------------------------------------------------
def test_allow_list_entries_match_by_network_name_and_port():
    resolve = resolver({"alerts.internal": ["10.20.3.4"]})
    url = "https://alerts.internal:8443/hook"
    for entry in ["10.20.0.0/16", "10.20.3.4", "10.20.3.4:8443", "alerts.internal",
                  "alerts.internal:8443"]:
        assert check_url(url, [entry], resolve=resolve).addresses == \
            (ipaddress.ip_address("10.20.3.4"),), entry
    for entry in ["10.21.0.0/16", "10.20.3.4:443", "alerts.internal:9000", "other.internal",
                  "internal"]:
        with pytest.raises(DestinationRefused, match=r"resolves to 10\.20\.3\.4, a private"):
            check_url(url, [entry], resolve=resolve)


def test_an_ipv4_entry_also_covers_the_same_address_in_ipv6_form():
    assert check_url("http://[::ffff:127.0.0.1]:9000/", ["127.0.0.1:9000"]).port == 9000
    with pytest.raises(DestinationRefused):
        check_url("http://[::ffff:127.0.0.1]:9001/", ["127.0.0.1:9000"])


def test_a_bad_port_needs_an_entry_naming_that_port():
    with pytest.raises(DestinationRefused, match="port 25"):
        check_url("http://127.0.0.1:25/", ["127.0.0.1"])
    assert check_url("http://127.0.0.1:25/", ["127.0.0.1:25"]).port == 25


# --- calling ----------------------------------------------------------------------------------
def test_post_json_reaches_an_allow_listed_listener_with_the_original_host(listener):
    status = post_json(listener.url("/hook?x=1", host="localhost"), {"text": "hi"}, timeout=5,
                       allow=[listener.address])
    assert status == 200
    [seen] = listener.received
    assert (seen.method, seen.path, seen.body) == ("POST", "/hook?x=1", b'{"text": "hi"}')
    assert seen.headers["host"] == f"localhost:{listener.port}"
    assert seen.headers["content-type"] == "application/json"


def test_post_json_refuses_before_connecting(listener):
    with pytest.raises(DestinationRefused, match="loopback"):
        post_json(listener.url("/hook"), {"text": "hi"}, timeout=5)
    with pytest.raises(DestinationRefused, match="loopback"):
        post_json(listener.url("/hook", host="localhost"), {}, timeout=5,
                  allow=[f"127.0.0.1:{listener.port + 1}"])
    assert listener.received == []


def test_redirects_are_returned_not_followed():
    victim = Listener()
    hop = Listener(status=302, headers={"Location": victim.url("/admin/")})
    try:
        # Even with both allow-listed, the 302 is the answer: nothing reaches the victim.
        status = post_json(hop.url("/hook"), {"text": "hi"}, timeout=5,
                           allow=[hop.address, victim.address])
        assert status == 302
        assert len(hop.received) == 1 and victim.received == []
    finally:
        hop.close()
        victim.close()


def test_the_answer_body_is_never_read_into_the_result():
    secret = Listener(status=500, body=b"root:x:0:0 internal secret")
    try:
        assert post_json(secret.url("/"), {}, timeout=5, allow=[secret.address]) == 500
    finally:
        secret.close()


def test_a_closed_port_is_unreachable(listener):
    port = listener.port
    listener.close()
    with pytest.raises(Unreachable, match="could not connect"):
        post_json(f"http://127.0.0.1:{port}/", {}, timeout=5, allow=["127.0.0.1"])


def test_the_name_is_resolved_once_so_a_rebinding_answer_is_never_used(monkeypatch):
    # A DNS server that answers an allowed address first and an internal one afterwards
    # (rebinding) cannot run here, so socket.getaddrinfo is wrapped for one made-up name.
    allowed = Listener(host="127.0.0.1")
    victim = Listener(host="127.0.0.2", port=allowed.port)
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        looked_up.append(host)
        if host == "rebind.example":
            return real(next(answers), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        status = post_json(f"http://rebind.example:{allowed.port}/hook", {"n": 1}, timeout=5,
                           allow=[allowed.address])
        assert status == 200
        assert looked_up.count("rebind.example") == 1
        assert len(allowed.received) == 1 and victim.received == []
        assert allowed.received[0].headers["host"] == f"rebind.example:{allowed.port}"
    finally:
        allowed.close()
        victim.close()


def test_ipv6_loopback_listener_allow_listed_by_address():
    six = Listener(host="::1")
    try:
        with pytest.raises(DestinationRefused, match="::1 is a loopback address"):
            post_json(six.url("/"), {}, timeout=5)
        assert post_json(six.url("/"), {}, timeout=5, allow=[six.address]) == 200
        assert six.received[0].headers["host"] == f"[::1]:{six.port}"
    finally:
        six.close()


# --- TLS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_listener(ca: trustme.CA, name: str) -> Listener:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return Listener(tls=context)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_https_sends_sni_and_verifies_the_certificate_against_the_url_name(ca):
    # hooks.example resolves to the listener through a resolver (no DNS for it here).
    server = tls_listener(ca, "hooks.example")
    resolve = resolver({"hooks.example": ["127.0.0.1"]})
    try:
        status = post_json(server.url("/hook", host="hooks.example"), {"a": 1}, timeout=5,
                           allow=[server.address], resolve=resolve,
                           ssl_context=client_context(ca))
        assert status == 200
        assert server.server_names == ["hooks.example"]
        assert server.received[0].headers["host"] == f"hooks.example:{server.port}"
    finally:
        server.close()


def test_https_refuses_a_certificate_for_another_name_or_from_an_unknown_ca(ca):
    server = tls_listener(ca, "other.example")
    resolve = resolver({"hooks.example": ["127.0.0.1"]})
    try:
        with pytest.raises(Unreachable, match="not valid for this name"):
            post_json(server.url("/", host="hooks.example"), {}, timeout=5,
                      allow=[server.address], resolve=resolve, ssl_context=client_context(ca))
        with pytest.raises(Unreachable, match="not trusted"):  # the system store: no trustme CA
            post_json(server.url("/", host="other.example"), {}, timeout=5,
                      allow=[server.address], resolve=resolver({"other.example": ["127.0.0.1"]}))
        assert server.received == []
    finally:
        server.close()


def test_bad_ports_list_is_the_fetch_standards():
    assert {22, 25, 6667, 10080} <= netguard.BAD_PORTS
    assert not {80, 443, 8000, 8080, 8443, 5000} & netguard.BAD_PORTS
