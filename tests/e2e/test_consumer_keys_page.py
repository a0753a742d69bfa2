"""The team's consumer keys page in a real browser (Debian Chromium): a maintainer creates a key
by the form, sees the secret once with its copy button and curl line, the copy button puts the
key on the clipboard, and a reload shows the key listed without its secret. Rows only: the
deployment runs nothing (calling it through a key is the gateway tests')."""

from __future__ import annotations

import pytest

from deployments.models import ConsumerKey
from teams import tokens
from teams.roles import Role
from tests.deployments.keys_fixtures import make_deployment
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_form_shows_the_secret_once(live_server, page, screenshot):
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="mia"), role=Role.MAINTAINER)
    make_deployment(team, "search-rank")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=live_server.url)
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("mia")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()

    page.goto(f"{live_server.url}/teams/ml-search/")
    page.get_by_role("button", name="Consumer keys: create, limit, revoke").click()
    page.get_by_label("Name").fill("search-api")
    page.get_by_label("search-rank").check()
    page.get_by_label("Rate (requests/s)").fill("20")
    page.get_by_label("Burst (requests)").fill("40")
    page.get_by_role("button", name="Create key").click()

    secret = page.locator("#new-key-secret").inner_text().strip()
    key = ConsumerKey.objects.get(name="search-api")
    assert secret.startswith("mpk_") and tokens.matches(secret, key.digest)
    assert (key.rate_per_s, key.burst) == (20, 40)
    assert "/serve/search-rank/invocations" in page.locator("#new-key-curl").inner_text()
    page.get_by_role("button", name="Copy key").click()
    assert page.evaluate("() => navigator.clipboard.readText()").strip() == secret
    screenshot("consumer-key-created")

    page.goto(f"{live_server.url}/teams/ml-search/consumer-keys/")
    assert secret not in page.content()
    row = page.get_by_role("row", name="search-api")
    assert f"mpk_{key.prefix}_…" in row.inner_text() and "20/s" in row.inner_text()
