"""``modelport login --sso`` end to end: the real CLI in its own process, Chromium signing in
with a password on the portal, Allow, and the token the CLI stored works on the API. The
browser half is ``tests/e2e/cli_login_flow.py`` (an SSO sign-in can replace the password)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest

from teams.cli_login import s256
from teams.models import ApiToken, AuditEvent
from tests.e2e.cli_login_flow import approve_in_browser, password_sign_in, start_cli_login
from tests.e2e.harness import checked_page
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_cli_signs_in_through_the_portal_and_stores_a_working_token(
        live_server, page, screenshot, tmp_path):
    cora = UserFactory(username="cora")
    MembershipFactory(team=TeamFactory(slug="ml-search"), user=cora, role="engineer")
    config = tmp_path / "modelport.json"

    cli = start_cli_login(live_server.url, config, "--expires-in-days", "7")
    assert cli.url.startswith(f"{live_server.url}/cli/login/?")
    page.goto(cli.url)
    page.get_by_role("heading", name="Log in to Modelport").wait_for()  # anonymous: login first
    password_sign_in("cora", PASSWORD)(page)
    page.get_by_role("heading", name="Allow the command line").wait_for()
    screenshot("cli-login-01-allow")
    approve_in_browser(page, page.url, sign_in=None, username="cora")
    screenshot("cli-login-02-done")
    assert cli.finish() == 0, "".join(cli.stderr)
    assert "as cora" in cli.stdout

    saved = json.loads(config.read_text())
    assert saved["url"] == live_server.url and saved["token"].startswith("mpt_")
    teams = httpx.get(f"{live_server.url}/api/v1/teams/",
                      headers={"Authorization": f"Bearer {saved['token']}"})
    assert teams.status_code == 200 and [t["slug"] for t in teams.json()["results"]] == [
        "ml-search"]
    token = ApiToken.objects.get(pk=saved["token_id"])
    assert token.user == cora and token.is_active
    assert 6 <= (token.expires_at - token.created_at).days <= 7
    assert {"cli_login.approved", "cli_login.redeemed", "token.created"} <= set(
        AuditEvent.objects.values_list("action", flat=True))


def test_cancel_in_the_browser_ends_the_cli_without_a_token(live_server, page, tmp_path):
    UserFactory(username="cora")
    config = tmp_path / "modelport.json"
    cli = start_cli_login(live_server.url, config)
    page.goto(cli.url)
    password_sign_in("cora", PASSWORD)(page)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("was not signed in").wait_for()
    assert cli.finish() == 3  # PermissionDenied
    assert not config.exists() and ApiToken.objects.count() == 0


@pytest.mark.parametrize("viewport", ["mobile", "desktop"])
def test_the_allow_page_and_its_refusal_pass_axe(live_server, browser, viewport):
    UserFactory(username="cora")
    query = urlencode({"port": 49152, "state": "s" * 32, "code_challenge": s256("v" * 43),
                       "name": "cli on laptop"})
    with checked_page(browser, live_server.url, viewport, folder="cli-login") as checked:
        checked.login("cora", PASSWORD, check=None)
        checked.goto(f"/cli/login/?{query}")
        checked.page.get_by_role("button", name="Allow").wait_for()
        checked.check("allow")
        with checked.expecting(400):
            checked.goto("/cli/login/?port=80")
            checked.page.get_by_text("port must be a whole number").wait_for()
            checked.check("bad-port")
    assert ApiToken.objects.count() == 0
