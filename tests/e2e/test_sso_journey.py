"""Single sign-on in Chromium against a real OpenID provider (panva/oidc-provider on Node.js,
loopback): the platform's login page → the provider's login and consent pages → back, signed
in, the account made with its mapped team; log out ends the provider's session too, so the
next sign-in asks for the password again; an account the provider disables is refused."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from django.contrib.auth import get_user_model

from teams.models import ApiToken, AuditEvent
from tests.e2e.cli_login_flow import approve_in_browser, start_cli_login
from tests.e2e.harness import AXE_RUN, axe_source
from tests.factories import TeamFactory
from tests.oidc_provider import configure, run_provider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def live_idp(live_server, tmp_path_factory):
    with run_provider(tmp_path_factory.mktemp("oidc-e2e"),
                      [f"{live_server.url}/oidc/callback/"],
                      [f"{live_server.url}/login/"]) as provider:
        yield provider


@pytest.fixture
def idp(settings, live_idp):
    configure(settings, live_idp,
              MODELPORT_OIDC_GROUP_MAP=[("ml-search:maintainer", "ml-search", "maintainer")],
              MODELPORT_PASSWORD_LOGIN="admins")
    live_idp.set_accounts([
        {"sub": "alice", "email": "alice@corp.example", "name": "Alice Liddell",
         "groups": ["ml-search:maintainer"]},
        {"sub": "mallory", "email": "mallory@corp.example", "groups": [], "disabled": True},
    ])
    return live_idp


def _no_fonts(page) -> None:
    """The provider's stock pages import a web font; this machine has no internet."""
    page.route(re.compile(r"^https://fonts\.(googleapis|gstatic)\.com/"),
               lambda route: route.abort())


def _provider_sign_in(page, issuer: str, sub: str, *, consent: bool) -> None:
    page.wait_for_url(f"{issuer}/interaction/**")
    page.locator("input[name=login]").fill(sub)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    if consent:
        page.get_by_role("button", name="Continue").click()


def test_sign_in_with_the_provider_then_log_out_of_both(live_server, idp, page, screenshot):
    TeamFactory(slug="ml-search", name="ML Search")
    _no_fonts(page)
    base = live_server.url
    page.goto(f"{base}/login/")
    page.evaluate(axe_source())
    assert page.evaluate(AXE_RUN) == []  # the login page with both ways in is accessible
    screenshot("sso-01-login-page")
    page.get_by_role("button", name="Sign in with Test IdP").click()
    _provider_sign_in(page, idp.issuer, "alice", consent=True)
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert page.url == f"{base}/"
    assert "ml-search" in page.locator("hgroup").inner_text()
    screenshot("sso-02-signed-in")
    user = get_user_model().objects.get(sso_identity__subject="alice")
    assert user.memberships.get().role == "maintainer"
    assert AuditEvent.objects.filter(actor=user, source="sso",
                                     action="membership.created").count() == 1

    page.locator("details.dropdown summary").click()  # the user menu
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{idp.issuer}/session/end**")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{base}/login/")
    page.get_by_role("button", name="Sign in with Test IdP").click()
    page.wait_for_url(f"{idp.issuer}/interaction/**")
    assert page.locator("input[name=password]").is_visible()  # asked for the password again
    screenshot("sso-03-password-again")


def test_a_disabled_account_is_refused_and_says_so(live_server, idp, page):
    _no_fonts(page)
    page.goto(f"{live_server.url}/login/")
    page.get_by_role("button", name="Sign in with Test IdP").click()
    _provider_sign_in(page, idp.issuer, "mallory", consent=False)
    page.wait_for_url(f"{live_server.url}/login/")
    page.get_by_text("Test IdP refused the sign-in: this account is disabled").wait_for()
    assert not get_user_model().objects.filter(sso_identity__subject="mallory").exists()


def test_a_non_admin_password_is_refused_when_passwords_are_for_admins(live_server, idp, page):
    from tests.factories import PASSWORD, UserFactory

    UserFactory(username="carol")
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Password sign-in is reserved for platform admins. "
                     "Sign in with Test IdP.").wait_for()


def test_the_cli_signs_in_with_the_provider_and_stores_a_working_token(
        live_server, idp, page, tmp_path):
    """``modelport login --sso`` (the real CLI) where passwords are for admins only: the
    browser goes from the CLI's address to the login page, on to the provider and back to the
    Allow page; the CLI ends with a token of the SSO account that works on the API."""
    TeamFactory(slug="ml-search", name="ML Search")
    _no_fonts(page)
    config = tmp_path / "modelport.json"
    cli = start_cli_login(live_server.url, config)

    def sso_sign_in(page) -> None:
        page.get_by_role("button", name="Sign in with Test IdP").click()
        _provider_sign_in(page, idp.issuer, "alice", consent=True)

    approve_in_browser(page, cli.url, sign_in=sso_sign_in)
    assert cli.finish() == 0, "".join(cli.stderr)
    saved = json.loads(config.read_text())
    token = ApiToken.objects.get(pk=saved["token_id"])
    assert token.user.sso_identity.subject == "alice" and token.is_active
    teams = httpx.get(f"{live_server.url}/api/v1/teams/",
                      headers={"Authorization": f"Bearer {saved['token']}"})
    assert teams.status_code == 200
    assert [t["slug"] for t in teams.json()["results"]] == ["ml-search"]  # mapped at sign-in
