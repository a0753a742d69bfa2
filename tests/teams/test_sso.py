"""Single sign-on against a real OpenID provider (panva/oidc-provider on Node.js, loopback).

The browser's part is played here by ``requests`` on the provider's side (its own login and
consent pages, its session cookie) and Django's test client on the platform's side: the whole
authorization-code flow with PKCE runs, tokens are checked against the provider's JWKS. The
Chromium journey is ``tests/e2e/test_sso_journey.py``. ID tokens with a wrong audience, expired
or badly signed are made by hand and given to the backend's verifier.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from rest_framework.test import APIClient

from teams import sso
from teams.models import AuditEvent, Membership, SsoIdentity
from teams.oidc import ModelportOIDCBackend
from tests.factories import PASSWORD, AdminFactory, MembershipFactory, TeamFactory, UserFactory
from tests.oidc_provider import configure, new_rsa_key

pytestmark = pytest.mark.django_db
GROUP_MAP = [("ml-search:maintainer", "search", "maintainer"),
             ("ml-search", "search", "viewer"),
             ("ml-ads:engineer", "ads", "engineer")]
FORM = re.compile(r'<form[^>]*\saction="([^"]+)"', re.I)


@pytest.fixture
def idp(settings, oidc_provider):
    configure(settings, oidc_provider, MODELPORT_OIDC_GROUP_MAP=GROUP_MAP,
              MODELPORT_OIDC_ADMIN_GROUPS=["platform-admins"])
    oidc_provider.set_accounts([
        {"sub": "alice", "email": "alice@corp.example", "name": "Alice Liddell",
         "groups": ["ml-search:maintainer", "ml-ads:engineer"]},
        {"sub": "bob", "email": "bob@corp.example", "name": "Bob", "groups": []},
        {"sub": "mallory", "email": "mallory@corp.example", "groups": [], "disabled": True},
    ])
    TeamFactory(slug="search")
    TeamFactory(slug="ads")
    return oidc_provider


def provider_login(browser: requests.Session, url: str, sub: str) -> tuple[str, list[str]]:
    """Follow the provider's pages from ``url`` as a browser would, signing in as ``sub`` and
    consenting, until it redirects back to the platform. Returns that URL and the provider's
    pages seen ("login", "consent")."""
    pages: list[str] = []
    for _ in range(12):
        response = browser.get(url, allow_redirects=False, timeout=10)
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            if url.startswith("http://testserver/"):
                return url, pages
            continue
        html = response.text
        action = FORM.search(html)
        assert action, html[:2000]
        prompt = "login" if 'name="login"' in html else "consent"
        pages.append(prompt)
        data = {"prompt": prompt}
        if prompt == "login":
            data.update(login=sub, password="anything")
        response = browser.post(urljoin(url, action.group(1)), data=data, allow_redirects=False,
                                timeout=10)
        assert response.is_redirect, response.text[:2000]
        url = urljoin(url, response.headers["Location"])
        if url.startswith("http://testserver/"):
            return url, pages
    raise AssertionError(f"the provider never redirected back (pages: {pages})")


def sso_login(client: Client, browser: requests.Session, sub: str):
    """The whole flow; returns the platform's answer to the callback and the provider pages."""
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302, start.content[:500]
    query = parse_qs(urlsplit(start["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    back, pages = provider_login(browser, start["Location"], sub)
    parts = urlsplit(back)
    return client.get(f"{parts.path}?{parts.query}"), pages


def messages_of(client: Client) -> str:
    return client.get("/login/").content.decode()


def test_sso_is_off_without_an_issuer(client):
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    assert "Sign in with" not in client.get("/login/").content.decode()
    UserFactory(username="carol")
    assert client.post("/login/", {"username": "carol", "password": PASSWORD}).status_code == 302


def test_first_login_creates_the_user_with_mapped_memberships(idp, client):
    page = client.get("/login/").content.decode()
    assert "Sign in with Test IdP" in page
    answer, pages = sso_login(client, requests.Session(), "alice")
    assert answer.status_code == 302 and answer["Location"] == "/", messages_of(client)
    assert pages[0] == "login"
    user = get_user_model().objects.get(sso_identity__subject="alice")
    assert (user.username, user.email, user.first_name) == ("alice", "alice@corp.example",
                                                            "Alice")
    assert not user.has_usable_password() and not user.is_staff
    assert client.get("/").status_code == 200 and int(client.session["_auth_user_id"]) == user.pk
    roles = {m.team.slug: (m.role, m.sso_managed) for m in user.memberships.all()}
    assert roles == {"search": ("maintainer", True), "ads": ("engineer", True)}
    events = AuditEvent.objects.filter(actor=user).order_by("id")
    assert [e.action for e in events] == ["user.created", "membership.created",
                                          "membership.created"]
    assert {e.source for e in events} == {"sso"}


def test_memberships_follow_the_groups_at_each_login(idp, client):
    sso_login(client, requests.Session(), "alice")
    user = get_user_model().objects.get(sso_identity__subject="alice")
    # Hand-made memberships: one in an unmapped team, one in a mapped team.
    MembershipFactory(user=user, team=TeamFactory(slug="fraud"), role="viewer")
    idp.set_accounts([{"sub": "alice", "email": "alice@corp.example", "name": "Alice Liddell",
                       "groups": ["ml-search"]}])
    client.logout()
    answer, _ = sso_login(client, requests.Session(), "alice")
    assert answer.status_code == 302
    roles = {m.team.slug: (m.role, m.sso_managed) for m in user.memberships.all()}
    assert roles == {"search": ("viewer", True), "fraud": ("viewer", False)}
    actions = list(AuditEvent.objects.filter(actor=user, source="sso").order_by("id")
                   .values_list("action", "team_slug", "before", "after"))[-2:]
    assert [(a, t) for a, t, _b, _a in actions] == [("membership.deleted", "ads"),
                                                     ("membership.updated", "search")]
    assert actions[1][2]["role"] == "maintainer" and actions[1][3]["role"] == "viewer"
    assert SsoIdentity.objects.get(user=user).groups == ["ml-search"]
    # No groups at all: the managed membership goes, the hand-made one stays.
    idp.set_accounts([{"sub": "alice", "email": "alice@corp.example", "groups": []}])
    client.logout()
    sso_login(client, requests.Session(), "alice")
    assert list(user.memberships.values_list("team__slug", flat=True)) == ["fraud"]


def test_a_hand_added_membership_of_a_mapped_team_is_taken_over_not_removed(idp, client):
    bob = get_user_model().objects.create_user("bob")
    SsoIdentity.objects.create(user=bob, issuer=idp.issuer, subject="bob")
    Membership.objects.create(user=bob, team_id=TeamFactory(slug="search").pk, role="engineer")
    sso_login(client, requests.Session(), "bob")  # bob has no groups
    assert bob.memberships.get().role == "engineer"  # not managed: left alone
    idp.set_accounts([{"sub": "bob", "email": "bob@corp.example", "groups": ["ml-search"]}])
    client.logout()
    sso_login(client, requests.Session(), "bob")
    membership = bob.memberships.get()
    assert (membership.role, membership.sso_managed) == ("viewer", True)


def test_platform_admin_group_is_granted_and_withdrawn(idp, client):
    idp.set_accounts([{"sub": "alice", "email": "a@corp.example",
                       "groups": ["platform-admins"]}])
    sso_login(client, requests.Session(), "alice")
    user = get_user_model().objects.get(sso_identity__subject="alice")
    assert user.is_staff and not user.is_superuser
    assert client.get("/admin/").status_code == 200
    idp.set_accounts([{"sub": "alice", "email": "a@corp.example", "groups": []}])
    client.logout()
    sso_login(client, requests.Session(), "alice")
    user.refresh_from_db()
    assert not user.is_staff
    actions = list(AuditEvent.objects.filter(actor=user, source="sso").order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["user.created", "user.admin_granted", "user.admin_removed"]


def test_staff_set_by_hand_is_not_withdrawn_by_sso(idp, client):
    admin = get_user_model().objects.create_user("alice", is_staff=True)
    SsoIdentity.objects.create(user=admin, issuer=idp.issuer, subject="alice")
    idp.set_accounts([{"sub": "alice", "email": "a@corp.example", "groups": []}])
    sso_login(client, requests.Session(), "alice")
    admin.refresh_from_db()
    assert admin.is_staff


def test_the_user_is_matched_by_sub_not_by_email(idp, client):
    UserFactory(username="old-alice", email="alice@corp.example")  # a local account
    sso_login(client, requests.Session(), "alice")
    user = get_user_model().objects.get(sso_identity__subject="alice")
    assert user.username == "alice"
    # The provider gives alice's address to someone else: they do not become alice.
    idp.set_accounts([{"sub": "alice2", "email": "alice@corp.example", "groups": []}])
    client.logout()
    sso_login(client, requests.Session(), "alice2")
    other = get_user_model().objects.get(sso_identity__subject="alice2")
    assert other.pk != user.pk and other.username == "alice2"


def test_link_by_verified_email_takes_over_a_local_account_when_enabled(idp, client, settings):
    settings.MODELPORT_OIDC_LINK_BY_EMAIL = True
    local = UserFactory(username="al", email="alice@corp.example")
    sso_login(client, requests.Session(), "alice")
    assert SsoIdentity.objects.get(subject="alice").user_id == local.pk
    assert AuditEvent.objects.filter(actor=local, action="user.sso_linked").exists()


def test_an_account_disabled_at_the_provider_never_gets_in(idp, client):
    answer, _ = sso_login(client, requests.Session(), "mallory")
    assert answer["Location"] == "/login/"  # the provider answered access_denied
    assert not get_user_model().objects.filter(sso_identity__subject="mallory").exists()
    assert "_auth_user_id" not in client.session
    assert "Test IdP refused the sign-in: this account is disabled" in messages_of(client)


def test_a_deactivated_platform_account_is_refused(idp, client):
    sso_login(client, requests.Session(), "alice")
    user = get_user_model().objects.get(sso_identity__subject="alice")
    user.is_active = False
    user.save()
    client.logout()
    answer, _ = sso_login(client, requests.Session(), "alice")
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert "_auth_user_id" not in client.session
    assert "deactivated on this platform" in messages_of(client)


def test_an_unknown_state_is_refused_with_a_reason(idp, client):
    answer = client.get("/oidc/callback/?code=abc&state=forged")
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert "Sign-in with Test IdP failed" in messages_of(client)


def test_the_provider_refusing_is_shown(idp, client):
    client.get("/oidc/authenticate/")
    state = next(iter(client.session["oidc_states"]))
    answer = client.get(f"/oidc/callback/?error=access_denied&error_description=nope&state={state}")
    assert answer["Location"] == "/login/"
    assert "Test IdP refused the sign-in: nope" in messages_of(client)


# --- Logout -------------------------------------------------------------------------------------
def test_logout_ends_the_provider_session(idp, client):
    browser = requests.Session()
    _answer, pages = sso_login(client, browser, "alice")
    assert pages == ["login", "consent"]
    client.logout()
    _answer, pages = sso_login(client, browser, "alice")  # the provider's session: no password
    assert pages == []
    answer = client.post("/logout/")
    end_session = answer["Location"]
    assert end_session.startswith(idp.issuer + "/session/end?")
    assert "id_token_hint=" in end_session and "_auth_user_id" not in client.session
    page = browser.get(end_session, timeout=10)
    action = FORM.search(page.text)
    assert action, page.text
    done = browser.post(urljoin(page.url, action.group(1)),
                        data={**dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text)),
                              "logout": "yes"}, allow_redirects=False, timeout=10)
    assert done.headers["Location"] == "http://testserver/login/"
    _answer, pages = sso_login(client, browser, "alice")
    assert pages[0] == "login"  # asked for the password again


def test_the_portal_forms_may_lead_to_the_provider_only_while_sso_is_on(settings, client):
    def form_action(answer) -> str:
        return next(part for part in answer["Content-Security-Policy"].split(";")
                    if "form-action" in part).strip()

    assert form_action(client.get("/login/")) == "form-action 'self'"
    settings.MODELPORT_OIDC_ISSUER = "https://idp.corp.example/realms/main"
    answer = client.get("/login/")
    assert form_action(answer) == "form-action 'self' https://idp.corp.example"


def test_logout_after_a_password_login_stays_local(idp, client):
    UserFactory(username="carol")
    client.post("/login/", {"username": "carol", "password": PASSWORD})
    assert client.post("/logout/")["Location"] == "/login/"


# --- Token checks ------------------------------------------------------------------------------
def _token(key, kid: str, **claims) -> str:
    now = int(time.time())
    body = {"iss": claims.pop("iss", None), "sub": "alice", "aud": "modelport",
            "iat": now, "exp": now + 300, "nonce": "n-1", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key,
                      algorithm="RS256", headers={"kid": kid})


@pytest.mark.parametrize(("change", "reason"), [
    ({}, None),
    ({"aud": "another-app"}, "audience"),
    ({"aud": ["modelport", "another-app"], "azp": "another-app"}, "several audiences"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"exp": None}, "exp"),
    ({"iss": "http://127.0.0.1:1"}, "issuer"),
    ({"nonce": "replayed"}, "Nonce"),
])
def test_id_tokens_are_checked(idp, change, reason):
    backend = ModelportOIDCBackend()
    change = {"iss": idp.issuer, **change}
    if "exp" in change and change["exp"] is None:
        del change["exp"]
        raw = jwt.encode({"iss": idp.issuer, "sub": "alice", "aud": "modelport",
                          "iat": int(time.time()), "nonce": "n-1"}, idp.signing_key,
                         algorithm="RS256", headers={"kid": idp.signing_jwk["kid"]})
    else:
        raw = _token(idp.signing_key, idp.signing_jwk["kid"], **change)
    if reason is None:
        assert backend.verify_token(raw, nonce="n-1")["sub"] == "alice"
        return
    with pytest.raises(SuspiciousOperation, match=reason):
        backend.verify_token(raw, nonce="n-1")


def test_a_token_signed_by_another_key_is_refused(idp):
    backend = ModelportOIDCBackend()
    other, _ = new_rsa_key()
    forged = _token(other, idp.signing_jwk["kid"], iss=idp.issuer)  # the provider's kid
    with pytest.raises(SuspiciousOperation, match="signature"):
        backend.verify_token(forged, nonce="n-1")
    unknown = _token(other, "not-the-providers", iss=idp.issuer)
    with pytest.raises(SuspiciousOperation, match="JWKS"):
        backend.verify_token(unknown, nonce="n-1")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "x"}).encode())
    with pytest.raises(SuspiciousOperation, match="signed with 'HS256'"):
        backend.verify_token(header.decode().rstrip("=") + ".e30.c2ln", nonce="n-1")


def test_the_backend_ignores_password_sign_ins(idp, rf):
    request = rf.post("/login/")
    assert ModelportOIDCBackend().authenticate(request, username="alice", password="x") is None


# --- Discovery ---------------------------------------------------------------------------------
class _Discovery(http.server.BaseHTTPRequestHandler):
    document: dict = {}

    def do_GET(self):
        body = json.dumps(self.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_issuer():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Discovery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_discovery_refuses_endpoints_on_other_internal_hosts(fake_issuer, settings, client):
    _server, issuer = fake_issuer
    settings.MODELPORT_OIDC_ISSUER = issuer
    sso.forget_discovery()
    _Discovery.document = {"issuer": issuer, "authorization_endpoint": issuer + "/auth",
                           "token_endpoint": "http://169.254.169.254/token",
                           "userinfo_endpoint": issuer + "/me", "jwks_uri": issuer + "/jwks"}
    with pytest.raises(sso.SsoUnavailable, match=r"token_endpoint .* is refused"):
        sso.discovery()
    answer = client.get("/oidc/authenticate/")
    assert answer["Location"] == "/login/"
    page = messages_of(client)
    assert "is unavailable" in page and "169.254.169.254" in page
    # The operator's allow-list opens it, like any other outbound URL.
    from teams.services import platform_settings

    row = platform_settings()
    row.outbound_allowlist = ["169.254.169.254"]
    row.save()
    assert sso.discovery().token_endpoint == "http://169.254.169.254/token"


def test_discovery_refuses_a_document_for_another_issuer(fake_issuer, settings):
    _server, issuer = fake_issuer
    settings.MODELPORT_OIDC_ISSUER = issuer
    sso.forget_discovery()
    _Discovery.document = {"issuer": "https://evil.example"}
    with pytest.raises(sso.SsoUnavailable, match="names issuer"):
        sso.discovery()


def test_an_unreachable_provider_is_a_clear_message_and_passwords_still_work(settings, client):
    settings.MODELPORT_OIDC_ISSUER = "http://127.0.0.1:9"
    settings.MODELPORT_OIDC_PROVIDER_NAME = "Corp SSO"
    sso.forget_discovery()
    assert client.get("/oidc/authenticate/")["Location"] == "/login/"
    assert "Sign-in with Corp SSO is unavailable: cannot read" in messages_of(client)
    UserFactory(username="carol")
    assert client.post("/login/", {"username": "carol", "password": PASSWORD}).status_code == 302


# --- Password sign-in policy -------------------------------------------------------------------
def _basic(username: str, password: str):
    api = APIClient()
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    api.credentials(HTTP_AUTHORIZATION=f"Basic {raw}")
    return api.post("/api/v1/tokens/", {"name": "ci"}, format="json")


def test_password_login_admins_refuses_everyone_else(idp, settings, client):
    settings.MODELPORT_PASSWORD_LOGIN = "admins"
    UserFactory(username="carol")
    AdminFactory(username="root")
    page = client.post("/login/", {"username": "carol", "password": PASSWORD})
    assert page.status_code == 200 and "_auth_user_id" not in client.session
    assert "Password sign-in is reserved for platform admins. Sign in with Test IdP." in \
        page.content.decode()
    answer = _basic("carol", PASSWORD)
    assert answer.status_code == 401 and answer.json()["code"] == "password_login_disabled"
    assert "reserved for platform admins" in answer.json()["detail"]
    assert _basic("carol", "wrong").json()["code"] == "bad_credentials"
    assert client.post("/login/", {"username": "root", "password": PASSWORD}).status_code == 302
    assert _basic("root", PASSWORD).status_code == 201


def test_password_login_off_refuses_everyone(idp, settings, client):
    settings.MODELPORT_PASSWORD_LOGIN = "off"
    AdminFactory(username="root")
    page = client.get("/login/").content.decode()
    assert 'name="password"' not in page and "Sign in with Test IdP" in page
    answer = client.post("/login/", {"username": "root", "password": PASSWORD})
    assert answer.status_code == 403 and "_auth_user_id" not in client.session
    assert "Password sign-in is turned off" in answer.content.decode()
    assert _basic("root", PASSWORD).json()["code"] == "password_login_disabled"
    console = client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert console.status_code == 200 and "Password sign-in is turned off" in \
        console.content.decode()


def test_group_map_syntax_is_checked(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.settings.env import env_group_map
    from teams.roles import Role

    roles = ("viewer", "engineer", "maintainer")
    assert set(roles) == set(Role.values)
    monkeypatch.setenv("X", "ml-search:maintainer=search/maintainer, all = search/viewer")
    assert env_group_map("X", roles) == [("ml-search:maintainer", "search", "maintainer"),
                                         ("all", "search", "viewer")]
    for bad in ("ml-search", "g=search", "g=search/owner", "=search/viewer"):
        monkeypatch.setenv("X", bad)
        with pytest.raises(ImproperlyConfigured, match="X"):
            env_group_map("X", roles)


def test_refused_sso_sign_ins_do_not_lock_out_others_from_the_same_address(idp, client):
    sso_login(client, requests.Session(), "bob")
    bob = get_user_model().objects.get(sso_identity__subject="bob")
    bob.is_active = False
    bob.save()
    for _ in range(7):
        client.logout()
        answer, _ = sso_login(client, requests.Session(), "bob")
        assert answer["Location"] == "/login/"
    client.logout()
    answer, _ = sso_login(client, requests.Session(), "alice")
    assert answer.status_code == 302 and answer["Location"] == "/", messages_of(client)


@pytest.mark.parametrize(("env", "error"), [
    ({"MODELPORT_PASSWORD_LOGIN": "off"}, "MODELPORT_PASSWORD_LOGIN=off needs single sign-on"),
    ({"MODELPORT_OIDC_ISSUER": "https://idp.example"}, "also set MODELPORT_OIDC_CLIENT_ID"),
    ({"MODELPORT_OIDC_GROUP_MAP": "ml-search"}, "MODELPORT_OIDC_GROUP_MAP: 'ml-search' is not"),
])
def test_settings_that_would_lock_everyone_out_stop_the_start(env, error, tmp_path):
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import config.settings.base"], capture_output=True, text=True,
        env={**os.environ, "MODELPORT_DATA_DIR": str(tmp_path), **env}, timeout=60)
    assert result.returncode != 0 and error in result.stderr, result.stderr[-1500:]
