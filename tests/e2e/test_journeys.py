"""Issue 18's journeys, by clicking only, under the browser harness (tests/e2e/harness.py) at
desktop (1440x900) and mobile (390x844): every step is checked (axe-core serious/critical, no
off-host request, no console error, no failed request, no sideways scroll) and screenshotted to
``test-artifacts/screenshots/journeys/<viewport>/``. The one ``goto`` is the sign-in page.

Here: the platform engineer onboarding a team. The software engineer's and the DevOps
engineer's journeys need a running model: tests/e2e/test_journeys_docker.py.
"""

from __future__ import annotations

import pytest

from quotas.models import ResourceRequest, TeamQuota
from quotas.requests import file_request
from teams.models import Membership, Team
from teams.roles import Role
from tests.e2e.harness import checked_page
from tests.factories import PASSWORD, AdminFactory, MembershipFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = ["desktop", "mobile"]


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_platform_engineer_onboards_a_team(live_server, browser, viewport):
    """Create a team, add a member, set its quota, approve another team's resource request."""
    AdminFactory(username="root")
    UserFactory(username="nina")
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

        # 2. A member (today by username; the member picker comes with another stream).
        add = page.locator("form", has=page.get_by_role("button", name="Add member"))
        add.get_by_label("Username").fill("nina")
        add.get_by_label("Role").select_option("maintainer")
        add.get_by_role("button", name="Add member").click()
        page.get_by_role("cell", name="nina", exact=True).wait_for()
        assert Membership.objects.get(team__slug="vision", user__username="nina").role \
            == Role.MAINTAINER
        checked.check("platform-member-added")

        # 3. Its quota, from the team page's link to the quota page.
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

        # 4. Another team's request, approved from the queue.
        checked.nav("Request queue")
        page.get_by_text("Black Friday traffic").wait_for()
        page.get_by_label("Comment").fill("Granted for the season")
        checked.check("platform-request-queue")
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("approved.").first.wait_for()
        assert ResourceRequest.objects.get().status == "approved"
        checked.check("platform-request-approved")
