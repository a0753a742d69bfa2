"""A platform admin's first minutes, in a real browser (Playwright + Debian's Chromium)."""

from __future__ import annotations

import re

import pytest
import requests

from teams.models import AuditEvent, Membership
from tests.factories import PASSWORD, AdminFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_logs_in_creates_team_adds_member_and_a_working_token(live_server, page,
                                                                    screenshot):
    AdminFactory(username="root")
    UserFactory(username="dana")

    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    screenshot("01-login")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    screenshot("02-dashboard")

    page.get_by_role("link", name="Teams", exact=True).first.click()
    page.get_by_label("Slug").fill("ml-search")
    page.get_by_label("Name").fill("ML Search")
    page.get_by_role("button", name="Create team").click()
    page.get_by_role("heading", name="ML Search").wait_for()

    page.get_by_label("Username").fill("dana")
    page.get_by_label("Role", exact=True).select_option("maintainer")
    page.get_by_role("button", name="Add member").click()
    page.get_by_text("Added dana as maintainer.").wait_for()
    screenshot("03-team")
    assert Membership.objects.get(user__username="dana").role == "maintainer"

    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("ci-pipeline")
    page.get_by_label("Expires in (days)").fill("7")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    screenshot("04-token-created")
    assert re.fullmatch(r"mpt_[0-9a-f]{12}_[\w-]+", secret)

    api = requests.get(f"{live_server.url}/api/v1/teams/",
                       headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert api.status_code == 200
    assert [t["slug"] for t in api.json()["results"]] == ["ml-search"]

    page.get_by_role("link", name="Audit log").click()
    page.get_by_text("token.created").first.wait_for()
    screenshot("05-audit")
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {
        "team.created", "membership.created", "token.created"}
