"""``modelport login --sso`` on the platform's side: the portal page that approves the command
line (``/cli/login/``), the one-time code and ``POST /api/v1/cli-login/`` that trades it for a
token. The CLI's own half runs in ``tests/client/test_login_sso.py`` and end to end, with
Chromium, in ``tests/e2e/test_cli_login_journey.py``."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client as DjangoClient
from django.utils import timezone
from rest_framework.test import APIClient

from core.errors import InvalidInput, PermissionDenied
from teams import cli_login, services, tokens
from teams.models import ApiToken, AuditEvent, CliLoginCode
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PORT = 49152


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, cli_login.s256(verifier)


def params(challenge: str, **overrides: object) -> dict[str, object]:
    query: dict[str, object] = {"port": PORT, "state": "s" * 20 + secrets.token_urlsafe(8),
                                "code_challenge": challenge, "name": "cli on laptop"}
    query.update(overrides)
    return {k: v for k, v in query.items() if v is not None}


@pytest.fixture
def cora(db):
    return UserFactory(username="cora")


@pytest.fixture
def browser(cora) -> DjangoClient:
    """A signed-in portal session that enforces CSRF like a real browser would."""
    client = DjangoClient(enforce_csrf_checks=True)
    client.force_login(cora)
    return client


def allow(browser: DjangoClient, query: dict[str, object]) -> tuple[str, dict[str, str]]:
    """GET the page, POST Allow with its CSRF token; returns the redirect's base and query."""
    page = browser.get("/cli/login/", query)
    assert page.status_code == 200, page.content
    answer = browser.post("/cli/login/", {**query, "decision": "allow",
                                          "csrfmiddlewaretoken": page.context["csrf_token"]})
    assert answer.status_code == 302, answer.content
    parts = urlsplit(answer["Location"])
    return (f"{parts.scheme}://{parts.netloc}{parts.path}",
            {k: v[0] for k, v in parse_qs(parts.query).items()})


def redeem(code: str, verifier: str):
    return APIClient().post("/api/v1/cli-login/", {"code": code, "code_verifier": verifier},
                            format="json")


# --- the whole flow through the portal and the API ----------------------------------------------
def test_allow_then_redeem_gives_a_working_token_once(browser, cora):
    verifier, challenge = pkce()
    query = params(challenge)
    target, answer = allow(browser, query)
    assert target == f"http://127.0.0.1:{PORT}/callback"
    assert answer["state"] == query["state"] and answer["code"].startswith("mpc_")
    row = CliLoginCode.objects.get()
    assert row.digest == tokens.digest_of(answer["code"]) and row.user == cora
    assert answer["code"] not in str(CliLoginCode.objects.values().first())
    assert timedelta(0) < row.expires_at - timezone.now() <= cli_login.CODE_TTL

    response = redeem(answer["code"], verifier)
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "name", "token", "expires_at", "username"}
    assert body["username"] == "cora" and body["name"] == "cli on laptop"
    assert response["Cache-Control"] == "no-store"
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert api.get("/api/v1/teams/").status_code == 200
    assert ApiToken.objects.get(pk=body["id"]).user == cora

    actions = list(AuditEvent.objects.order_by("id").values_list("action", "actor_username"))
    assert actions == [("cli_login.approved", "cora"), ("token.created", "cora"),
                       ("cli_login.redeemed", "cora")]
    assert not any(answer["code"] in str(e.after) or body["token"] in str(e.after)
                   for e in AuditEvent.objects.all())

    replay = redeem(answer["code"], verifier)
    assert replay.status_code == 400 and replay.json()["code"] == "code_used"
    assert ApiToken.objects.count() == 1


def test_a_wrong_verifier_is_refused_and_spends_the_code(browser):
    verifier, challenge = pkce()
    _, answer = allow(browser, params(challenge))
    wrong = redeem(answer["code"], secrets.token_urlsafe(48))
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "wrong_verifier" and "detail" in wrong.json()
    # Whoever stole the code had one try: the right verifier comes too late as well.
    late = redeem(answer["code"], verifier)
    assert late.status_code == 400 and late.json()["code"] == "code_used"
    assert ApiToken.objects.count() == 0
    assert AuditEvent.objects.filter(action="cli_login.refused").count() == 1


def test_an_expired_code_is_refused(browser):
    verifier, challenge = pkce()
    _, answer = allow(browser, params(challenge))
    CliLoginCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = redeem(answer["code"], verifier)
    assert response.status_code == 400 and response.json()["code"] == "code_expired"
    assert ApiToken.objects.count() == 0 and CliLoginCode.objects.get().used_at is None


def test_unknown_codes_and_malformed_bodies_are_400s(db):
    response = redeem("mpc_000000000000_nope", secrets.token_urlsafe(48))
    assert response.status_code == 400 and response.json()["code"] == "code_unknown"
    short = redeem("mpc_x", "too-short")
    assert short.status_code == 400 and "code_verifier" in short.json()
    missing = APIClient().post("/api/v1/cli-login/", {}, format="json")
    assert missing.status_code == 400 and set(missing.json()) == {"code", "code_verifier"}


def test_a_deactivated_account_gets_no_token(browser, cora):
    verifier, challenge = pkce()
    _, answer = allow(browser, params(challenge))
    cora.is_active = False
    cora.save()
    response = redeem(answer["code"], verifier)
    assert response.status_code == 403 and response.json()["code"] == "account_disabled"
    assert ApiToken.objects.count() == 0


def test_a_session_or_a_token_of_someone_else_changes_nothing(browser, cora):
    """The API takes no authentication at all: the code decides whose token it is."""
    verifier, challenge = pkce()
    _, answer = allow(browser, params(challenge))
    intruder = UserFactory(username="otto")
    api = APIClient()
    api.force_login(intruder)
    body = api.post("/api/v1/cli-login/", {"code": answer["code"], "code_verifier": verifier},
                    format="json").json()
    assert body["username"] == "cora"


# --- the portal page ------------------------------------------------------------------------------
def test_the_page_asks_and_a_get_alone_mints_nothing(browser):
    _, challenge = pkce()
    page = browser.get("/cli/login/", params(challenge, expires_in_days=7))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Allow the command line on this computer to act as cora?" in text
    assert "cli on laptop" in text
    expected = (timezone.now() + timedelta(days=7)).strftime("%Y-%m-%d")
    assert expected in text
    assert f"form-action 'self' http://127.0.0.1:{PORT}" in page["Content-Security-Policy"]
    assert "no-store" in page["Cache-Control"]
    assert CliLoginCode.objects.count() == 0 and ApiToken.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_anonymous_visitors_go_through_the_login_page_and_come_back(db):
    _, challenge = pkce()
    response = DjangoClient().get("/cli/login/", params(challenge))
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/login/"
    back = urlsplit(parse_qs(location.query)["next"][0])
    assert back.path == "/cli/login/" and parse_qs(back.query)["code_challenge"] == [challenge]
    assert CliLoginCode.objects.count() == 0


def test_a_post_without_the_csrf_token_is_refused(browser):
    _, challenge = pkce()
    response = browser.post("/cli/login/", {**params(challenge), "decision": "allow"})
    assert response.status_code == 403
    assert CliLoginCode.objects.count() == 0 and AuditEvent.objects.count() == 0


@pytest.mark.parametrize("override, field", [
    ({"port": 80}, "port"), ({"port": 65536}, "port"), ({"port": "8080@evil.example"}, "port"),
    ({"port": None}, "port"), ({"state": "short"}, "state"), ({"state": "x" * 20 + "/"}, "state"),
    ({"code_challenge": "abc"}, "code_challenge"), ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"), ({"expires_in_days": 0}, "expires_in_days"),
    ({"expires_in_days": 100000}, "expires_in_days"),
    # digits str.isdigit() accepts but int() refuses: a 400, not a 500
    ({"port": "8080\u00b2"}, "port"), ({"expires_in_days": "\u00b2"}, "expires_in_days"),
])
def test_bad_parameters_are_a_clear_400_page_and_nothing_is_written(browser, override, field):
    _, challenge = pkce()
    query = params(challenge, **override)
    page = browser.get("/cli/login/", query)
    assert page.status_code == 400
    assert field in page.content.decode() and "Allow" not in page.content.decode()
    token = DjangoClient(enforce_csrf_checks=False)
    token.force_login(UserFactory(username="cora"))
    posted = token.post("/cli/login/", {**query, "decision": "allow"})
    assert posted.status_code == 400
    assert CliLoginCode.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_the_redirect_never_leaves_loopback_whatever_the_query_says(browser):
    _, challenge = pkce()
    query = params(challenge, redirect_uri="https://evil.example/steal", host="evil.example")
    target, _ = allow(browser, query)
    assert target == f"http://127.0.0.1:{PORT}/callback"


def test_cancel_sends_the_cli_a_refusal_and_mints_nothing(browser):
    _, challenge = pkce()
    query = params(challenge)
    page = browser.get("/cli/login/", query)
    answer = browser.post("/cli/login/", {**query, "decision": "cancel",
                                          "csrfmiddlewaretoken": page.context["csrf_token"]})
    assert answer.status_code == 302
    parts = urlsplit(answer["Location"])
    assert (parts.netloc, parts.path) == (f"127.0.0.1:{PORT}", "/callback")
    assert parse_qs(parts.query) == {"error": ["access_denied"], "state": [query["state"]]}
    assert CliLoginCode.objects.count() == 0


def test_a_token_name_already_in_use_is_refused_on_allow(browser, cora):
    services.create_token(actor=cora, name="cli on laptop")
    _, challenge = pkce()
    query = params(challenge)
    page = browser.get("/cli/login/", query)
    answer = browser.post("/cli/login/", {**query, "decision": "allow",
                                          "csrfmiddlewaretoken": page.context["csrf_token"]})
    assert answer.status_code == 409 and "already have an active token" in answer.content.decode()
    assert CliLoginCode.objects.count() == 0


# --- the services on their own ----------------------------------------------------------------
def test_approve_checks_the_challenge_and_needs_a_signed_in_user(cora):
    with pytest.raises(InvalidInput) as bad:
        services.approve_cli_login(actor=cora, code_challenge="nope", token_name="x")
    assert bad.value.field == "code_challenge"
    with pytest.raises(PermissionDenied):
        services.approve_cli_login(actor=AnonymousUser(), code_challenge=pkce()[1],
                                   token_name="x")
    assert CliLoginCode.objects.count() == 0


def test_the_token_gets_the_lifetime_that_was_approved(cora):
    verifier, challenge = pkce()
    code = services.approve_cli_login(actor=cora, code_challenge=challenge, token_name="ci",
                                      expires_in_days=3)
    token, secret = services.redeem_cli_login(code=code, code_verifier=verifier)
    assert timedelta(days=2, hours=23) < token.expires_at - timezone.now() <= timedelta(days=3)
    assert tokens.matches(secret, token.digest)


def test_approving_clears_codes_that_expired_over_a_day_ago():
    cora = UserFactory(username="cora")
    services.approve_cli_login(actor=cora, code_challenge=pkce()[1], token_name="old")
    CliLoginCode.objects.update(expires_at=timezone.now() - timedelta(days=2))
    services.approve_cli_login(actor=cora, code_challenge=pkce()[1], token_name="new")
    assert list(CliLoginCode.objects.values_list("token_name", flat=True)) == ["new"]
