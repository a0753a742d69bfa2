"""Issue 18's software-engineer and DevOps journeys, by clicking only, under the browser harness
(tests/e2e/harness.py) at desktop and mobile, against a model really running: the
``Procfile``'s workers and real Docker replicas (the ``platform`` fixture of
test_model_journey.py). Screenshots: ``test-artifacts/screenshots/journeys/<viewport>/``.

Before the browser opens, a script (the Python client, as a CI job would) registers iris v1,
points ``production`` at it and deploys ``production`` with a canary strategy. Then:

(a) a software engineer signs in, finds the model with the search box, opens its version and
    its deployment, copies the curl call, opens the Python client's page from the snippet's
    link, creates an API token and calls the model with it (the call itself from the test, with
    ``requests``), opens the API docs from the navigation (served by the platform: nothing
    off the host) and the deployment's monitoring page with its charts;
(b) a DevOps engineer uploads version 2 on the model page (the format told from the file),
    deploys it from the version's page into the existing deployment as a 25 % canary, watches
    the split at the top of the deployment page, rolls back in one click, changes the memory per
    replica with the Edit form, and stops (confirmed) and starts the deployment again.
"""

from __future__ import annotations

import pytest
import requests

from deployments.models import Deployment
from teams.roles import Role
from tests.e2e.harness import checked_page
from tests.e2e.test_model_journey import (
    COLUMNS,
    DEPLOYMENT,
    ROWS,
    SLOW_MS,
    iris_zip,
    platform,  # noqa: F401 - the fixture: workers, Docker runtime, live server
)
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory, make_token

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres,
              pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
INFO_SUMMARY = "What a client or the CLI needs to know about this platform"  # GET /api/v1/info/


def _deploy_v1(base: str, tmp_path) -> None:
    """What a CI job does before anyone opens the portal: v1 registered and deployed."""
    from modelport import Client

    team = TeamFactory(slug="ml-search", name="ML Search")
    mia = UserFactory(username="mia")
    MembershipFactory(team=team, user=mia, role=Role.MAINTAINER)
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    _, secret = make_token(mia, name="ci")
    with Client(base, secret) as client:
        client.create_model(name="iris", team="ml-search",
                            description="Iris species from sepal and petal sizes")
        client.register_version("iris", iris_zip(tmp_path, "iris-v1", 1.0),
                                description="LogisticRegression C=1.0")
        client.wait_for_version("iris", 1, timeout=SLOW_MS / 1000)
        client.set_alias("iris", "production", 1)
        client.deploy(name=DEPLOYMENT, team="ml-search", model="iris", alias="production",
                      cpu=0.5, memory_mb=768,
                      strategy={"type": "canary", "steps": [25, 50, 100], "interval_s": 3})
        client.wait_until_healthy(DEPLOYMENT, timeout=SLOW_MS / 1000)


def _status(page, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#deployment-status")).to_contain_text(text, timeout=SLOW_MS)


def _software_engineer(checked, base: str) -> None:
    from playwright.sync_api import expect

    page = checked.page
    checked.login("eve", PASSWORD, check="engineer-login")
    checked.check("engineer-dashboard")
    page.get_by_label("Search models and deployments").fill("iris")
    page.keyboard.press("Enter")
    page.get_by_role("link", name="iris", exact=True).first.click()
    page.get_by_role("heading", name="iris", exact=True).wait_for()
    checked.check("engineer-model")
    page.get_by_role("link", name="v1", exact=True).first.click()
    page.get_by_role("heading", name="iris v1").wait_for()
    checked.check("engineer-version")
    page.get_by_role("navigation", name="breadcrumb").get_by_role("link", name="iris").click()
    page.get_by_role("link", name=DEPLOYMENT, exact=True).first.click()
    page.get_by_role("heading", name=DEPLOYMENT).wait_for()
    page.get_by_role("button", name="Copy curl").first.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert f"{base}/serve/{DEPLOYMENT}/invocations" in copied, copied
    checked.check("engineer-deployment-copied")
    # The Python snippet's client, from the platform itself.
    page.locator("#call").get_by_role("link", name="Python client").click()
    page.get_by_role("heading", name="Python client and CLI").wait_for()
    expect(page.locator("main")).to_contain_text(f"{base}/client/")
    checked.check("engineer-client-page")

    checked.nav("API tokens")
    page.get_by_label("Name").fill("my-script")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("mpt_")
    checked.check("engineer-token")
    answer = requests.post(f"{base}/serve/{DEPLOYMENT}/invocations", json=BODY, timeout=60,
                           headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [0, 2, 1]

    # The API docs from the navigation: Swagger UI from the platform's own static files.
    checked.nav("API")
    page.locator(f"text={INFO_SUMMARY} >> visible=true").first.wait_for()
    checked.check("engineer-api-docs")
    page.go_back()  # Swagger UI's page has no portal navigation: the browser's Back button
    page.get_by_role("heading", name="API tokens").wait_for()

    # The deployment's monitoring page: its charts draw without a console error.
    checked.nav("Deployments")
    page.get_by_role("link", name=DEPLOYMENT, exact=True).first.click()
    page.get_by_role("heading", name=DEPLOYMENT).wait_for()
    page.get_by_role("group", name="Deployment actions").get_by_role(
        "button", name="Monitoring").click()
    charts = page.locator("canvas[data-chart]")
    charts.first.wait_for()
    assert charts.count() >= 4
    checked.check("engineer-monitoring")


def _devops_engineer(checked, v2) -> None:
    from playwright.sync_api import expect

    page = checked.page
    checked.login("mia", PASSWORD, check="devops-login")
    checked.nav("Models")
    page.get_by_role("link", name="iris", exact=True).first.click()
    upload = page.locator("form", has=page.get_by_role("button", name="Upload and validate"))
    upload.get_by_label("File").set_input_files(str(v2))  # no format picked: told from the file
    upload.get_by_label("Description").fill("LogisticRegression C=0.3")
    checked.check("devops-upload-form")
    upload.get_by_role("button", name="Upload and validate").click()
    page.get_by_text("uploaded; validating.").first.wait_for()
    expect(page.locator("#version-status .badge").first).to_have_text("ready",
                                                                       timeout=SLOW_MS)
    checked.check("devops-v2-ready")

    # v2 into the running deployment as a 25 % canary, from the version's page.
    page.get_by_role("navigation", name="breadcrumb").get_by_role("link", name="iris").click()
    page.get_by_role("link", name="v2", exact=True).first.click()
    page.get_by_role("button", name="Deploy v2").click()
    page.get_by_role("heading", name="Deploy iris v2").wait_for()
    card = page.locator(f"#deploy-to-{DEPLOYMENT}")
    card.get_by_label("Strategy").select_option("canary")
    card.get_by_label("Canary share (%)").fill("25")
    # Long enough for the page's polls to show the split on a loaded machine.
    card.get_by_label("Seconds before the canary is judged").fill("30")
    checked.check("devops-deploy-v2")
    card.get_by_role("button", name=f"Deploy v2 to {DEPLOYMENT}").click()
    page.get_by_role("heading", name=DEPLOYMENT).wait_for()
    page.get_by_text(f"Deploying iris v2 to '{DEPLOYMENT}': revision 2 is rolling out").wait_for()
    traffic = page.locator("#traffic")
    expect(traffic).to_contain_text("r2: 25%", timeout=SLOW_MS)  # the split, at the top
    expect(traffic).to_contain_text("r1: 75%")
    checked.check("devops-canary-25")
    page.get_by_text("Revision 2 is healthy").first.wait_for(timeout=SLOW_MS)
    _status(page, "r2: 100%")
    checked.check("devops-canary-done")

    page.get_by_role("button", name="Roll back to previous healthy revision").click()
    page.get_by_text(f"Rolling '{DEPLOYMENT}' back.").first.wait_for()
    page.get_by_text("Revision 3 is healthy").first.wait_for(timeout=SLOW_MS)
    _status(page, "r3: 100%")
    checked.check("devops-rolled-back")
    d = Deployment.objects.get(name=DEPLOYMENT)
    assert (d.revision, d.revisions.get(number=3).model_version.version) == (3, 1)

    # The Edit form: less memory per replica, rolled out replica by replica.
    page.get_by_role("group", name="Deployment actions").get_by_role(
        "button", name="Edit", exact=True).click()
    edit = page.locator("#edit form")
    edit.get_by_label("Memory per replica (MB)").fill("640")
    edit.get_by_label("Strategy").select_option("rolling")
    checked.check("devops-edit-form")
    edit.get_by_role("button", name="Save and roll out").click()
    page.get_by_text(f"Saved: revision 4 of '{DEPLOYMENT}' is rolling out").wait_for()
    page.get_by_text("Revision 4 is healthy").first.wait_for(timeout=SLOW_MS)
    _status(page, "r4: 100%")
    checked.check("devops-edited")
    d = Deployment.objects.get(name=DEPLOYMENT)
    assert (d.memory_mb, d.revisions.get(number=4).model_version.version) == (640, 1)

    # Stop, confirmed on its own page; then Start again.
    page.get_by_role("button", name="Stop…").click()
    page.get_by_role("heading", name=f"Stop {DEPLOYMENT}?").wait_for()
    checked.check("devops-stop-confirm")
    page.get_by_role("button", name=f"Stop {DEPLOYMENT}").click()
    page.get_by_text(f"Stopping '{DEPLOYMENT}'").first.wait_for()
    assert Deployment.objects.get(name=DEPLOYMENT).stopped
    _status(page, "No replicas running.")  # the status section polls: the replicas are gone
    checked.check("devops-stopped")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text(f"Starting '{DEPLOYMENT}'.").first.wait_for()
    expect(page.locator("#deployment-status .badge").first).to_have_text("healthy",
                                                                         timeout=SLOW_MS)
    _status(page, "r4: 100%")
    checked.check("devops-started")
    assert not Deployment.objects.get(name=DEPLOYMENT).stopped


@pytest.mark.parametrize("viewport", ["desktop", "mobile"])
def test_engineer_calls_a_model_and_devops_ships_a_canary_and_rolls_back(
        platform, live_server, browser, tmp_path, viewport):  # noqa: F811 - fixture by import
    base = live_server.url
    _deploy_v1(base, tmp_path)
    v2 = iris_zip(tmp_path, "iris-v2", 0.3)

    with checked_page(browser, base, viewport) as checked:
        checked.clear_shots("engineer-")
        checked.clear_shots("devops-")
        checked.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        _software_engineer(checked, base)
        checked.page.context.clear_cookies()
        _devops_engineer(checked, v2)
