"""Ask for more CPU, get it approved in part, see the gauge move — in a real browser."""

from __future__ import annotations

import pytest

from quotas import services
from quotas.models import ResourceRequest
from teams.roles import Role
from tests.factories import PASSWORD, AdminFactory, MembershipFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, base: str, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def test_member_requests_admin_approves_in_part_and_the_quota_grows(live_server, page,
                                                                      screenshot):
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    AdminFactory(username="root")
    services.admit(team=team, owner="deployment:fraud-v2", cpu=6, memory_mb=4096,
                   deployments=1)

    _login(page, live_server.url, "eve")
    assert page.get_by_label("CPU").first.get_attribute("value") == "6"
    page.goto(f"{live_server.url}/teams/ml-search/quota/")
    page.get_by_label("More CPU (cores)").fill("4")
    page.get_by_label("Justification").fill("Black Friday traffic")
    page.get_by_role("button", name="Send request").click()
    page.get_by_text("Request sent").wait_for()
    screenshot("quota-01-requested")

    _login(page, live_server.url, "root")
    page.get_by_role("link", name="Request queue").click()
    page.get_by_text("Black Friday traffic").wait_for()
    page.get_by_label("CPU to grant (cores)").fill("2")
    page.get_by_label("Comment").fill("2 now, more after the load test")
    screenshot("quota-02-queue")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("approved.").first.wait_for()
    assert ResourceRequest.objects.get().status == "partially_approved"

    _login(page, live_server.url, "eve")
    page.get_by_role("link", name="Notifications").click()
    page.get_by_text("partially approved").wait_for()
    page.goto(f"{live_server.url}/teams/ml-search/")
    meter = page.get_by_label("CPU").first
    assert meter.get_attribute("max") == "10" and meter.get_attribute("value") == "6"
    screenshot("quota-03-team")
