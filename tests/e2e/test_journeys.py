"""Issue 18's journeys, by clicking only, under the browser harness (tests/e2e/harness.py) at
desktop (1440x900) and mobile (390x844): every step is checked (axe-core serious/critical, no
off-host request, no console error, no failed request, no sideways scroll) and screenshotted to
``test-artifacts/screenshots/journeys/<viewport>/``. The one ``goto`` is the sign-in page.

Here: the platform engineer onboarding a team. The software engineer's and the DevOps
engineer's journeys need a running model: tests/e2e/test_journeys_docker.py.
"""

from __future__ import annotations

import re

import pytest

from quotas.models import ResourceRequest, TeamQuota
from quotas.requests import file_request
from teams.models import Membership, Team
from teams.roles import Role
from tests.e2e.harness import checked_page
from tests.factories import PASSWORD, AdminFactory, MembershipFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = ["desktop", "mobile"]
NEW_PASSWORD = "tulip-orbit-cobalt-42"


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_platform_engineer_onboards_a_team(live_server, browser, viewport):
    """Create a team and a user, add the user to the team by picking them, set the team's quota,
    approve another team's resource request; then the new user follows the welcome link, sets a
    password, signs in and sees the team, without the platform admins' links."""
    AdminFactory(username="root")
    search = TeamFactory(slug="ml-search", name="ML Search")
    mia = UserFactory(username="mia")
    MembershipFactory(team=search, user=mia, role=Role.MAINTAINER)
    file_request(actor=mia, team=search, justification="Black Friday traffic", cpu=2)

    with checked_page(browser, live_server.url, viewport) as checked:
        checked.clear_shots("platform-")
        page = checked.page
        checked.login("root", PASSWORD, check="platform-login")
        checked.check("platform-dashboard")

        # 1. A new team, from the Teams page.
        checked.nav("Teams")
        create = page.locator("form", has=page.get_by_role("button", name="Create team"))
        create.get_by_label("Slug").fill("vision")
        create.get_by_label("Name").fill("Vision")
        create.get_by_label("Description").fill("Image models for the catalogue")
        checked.check("platform-teams")
        create.get_by_role("button", name="Create team").click()
        page.get_by_role("heading", name="Vision", exact=True).wait_for()
        assert Team.objects.filter(slug="vision").exists()
        checked.check("platform-team-created")

        # 2. A user, from the Users page, who will set their own password.
        checked.nav("Users")
        page.get_by_role("heading", name="Create a user").wait_for()
        page.get_by_label("Username").fill("dana")
        page.get_by_label("Email").fill("dana@corp.example")
        page.get_by_label("First name").fill("Dana")
        page.get_by_label("Last name").fill("Scully")
        page.get_by_label("Give them a one-time link to set their password").check()
        checked.check("platform-user-form")
        page.get_by_role("button", name="Create user").click()
        page.get_by_text("Created dana.").wait_for()
        welcome = page.locator("#welcome-link").inner_text().strip()
        assert welcome.startswith(f"{live_server.url}/welcome/"), welcome
        checked.check("platform-user-created")

        # 3. The user into the team: part of their name typed, the match picked.
        checked.nav("Teams")
        page.get_by_role("link", name="vision", exact=True).click()
        page.get_by_role("heading", name="Vision", exact=True).wait_for()
        add = page.locator("form", has=page.get_by_role("button", name="Add member"))
        add.get_by_label("Username").press_sequentially("scul", delay=30)
        pick = page.get_by_role("button", name=re.compile(r"^dana · Dana Scully"))
        pick.wait_for()
        checked.check("platform-member-picker")
        pick.click()
        assert add.get_by_label("Username").input_value() == "dana"
        add.get_by_label("Role", exact=True).select_option("engineer")
        add.get_by_role("button", name="Add member").click()
        page.get_by_text("Added dana as engineer.").wait_for()
        assert Membership.objects.get(team__slug="vision", user__username="dana").role \
            == Role.ENGINEER
        checked.check("platform-member-added")

        # 4. Its quota, from the team page's link to the quota page.
        page.get_by_role("button", name="Details and request resources").click()
        page.get_by_role("heading", name="Quota of vision").wait_for()
        quota = page.locator("form", has=page.get_by_role("button", name="Save quota"))
        quota.get_by_label("CPU (cores)").fill("16")
        quota.get_by_label("Memory (MB)").fill("65536")
        quota.get_by_label("GPUs").fill("0")
        quota.get_by_label("Deployments").fill("8")
        checked.check("platform-quota-form")
        quota.get_by_role("button", name="Save quota").click()
        page.wait_for_load_state()
        saved = TeamQuota.objects.get(team__slug="vision")
        assert (int(saved.cpu), saved.memory_mb, saved.deployments) == (16, 65536, 8)
        checked.check("platform-quota-set")

        # 5. Another team's request, approved from the queue.
        checked.nav("Request queue")
        page.get_by_text("Black Friday traffic").wait_for()
        page.get_by_label("Comment").fill("Granted for the season")
        checked.check("platform-request-queue")
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("approved.").first.wait_for()
        assert ResourceRequest.objects.get().status == "approved"
        checked.check("platform-request-approved")

    # 6. The new user, in a browser of their own: the welcome link is where they start.
    with checked_page(browser, live_server.url, viewport) as checked:
        checked.clear_shots("newcomer-")
        page = checked.page
        checked.goto(welcome.removeprefix(live_server.url))
        page.get_by_role("heading", name="Welcome to Modelport").wait_for()
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
        checked.check("newcomer-set-password")
        page.get_by_role("button", name="Set password").click()
        page.get_by_text("Your password is set. Sign in as dana.").wait_for()
        page.get_by_label("Username").fill("dana")
        page.get_by_label("Password").fill(NEW_PASSWORD)
        checked.check("newcomer-login")
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Dashboard").wait_for()
        checked.check("newcomer-dashboard")
        checked.nav("Teams")
        page.get_by_role("link", name="vision", exact=True).wait_for()
        nav = page.get_by_role("navigation", name="Main")
        assert nav.get_by_role("link", name="Audit log").count() == 0  # an engineer: hidden
        assert nav.get_by_role("link", name="Users").count() == 0
        checked.check("newcomer-teams")
