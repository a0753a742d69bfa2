"""Issue 18's software-engineer and DevOps journeys, by clicking only, under the browser harness
(tests/e2e/harness.py) at desktop and mobile, against a model really running: the
``Procfile``'s workers and real Docker replicas (the ``platform`` fixture of
test_model_journey.py). Screenshots: ``test-artifacts/screenshots/journeys/<viewport>/``.

Before the browser opens, a script (the Python client, as a CI job would) registers iris v1,
points ``production`` at it and deploys ``production`` with a canary strategy. Then:

(a) a software engineer signs in, finds the model with the search box, opens its version and
    its deployment, copies the curl call, creates an API token and calls the model with it (the
    call itself from the test, with ``requests``);
(b) a DevOps engineer uploads version 2 on the model page, ships it to the existing deployment
    as a canary by moving ``production`` (the portal's path today; "deploy version N with
    strategy S" from the version page comes with another stream of issue 18 and is added here
    after the merge), watches the split on the deployment page and rolls back in one click.
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


@pytest.mark.parametrize("viewport", ["desktop", "mobile"])
def test_engineer_calls_a_model_and_devops_ships_a_canary_and_rolls_back(
        platform, live_server, browser, tmp_path, viewport):  # noqa: F811 - fixture by import
    from playwright.sync_api import expect

    base = live_server.url
    _deploy_v1(base, tmp_path)
    v2 = iris_zip(tmp_path, "iris-v2", 0.3)

    with checked_page(browser, base, viewport) as checked:
        checked.clear_shots("engineer-")
        checked.clear_shots("devops-")
        page = checked.page
        checked.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

        # (a) The software engineer.
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

        # (b) The DevOps engineer: version 2 from the model page, out as a canary, back.
        page.context.clear_cookies()
        checked.login("mia", PASSWORD, check="devops-login")
        checked.nav("Models")
        page.get_by_role("link", name="iris", exact=True).first.click()
        upload = page.locator("form", has=page.get_by_role("button", name="Upload and validate"))
        upload.get_by_label("File").set_input_files(str(v2))
        upload.get_by_label("Format").select_option("mlflow")
        upload.get_by_label("Description").fill("LogisticRegression C=0.3")
        checked.check("devops-upload-form")
        upload.get_by_role("button", name="Upload and validate").click()
        page.get_by_text("uploaded; validating.").first.wait_for()
        expect(page.locator("#version-status .badge").first).to_have_text("ready",
                                                                           timeout=SLOW_MS)
        checked.check("devops-v2-ready")
        page.get_by_role("navigation", name="breadcrumb").get_by_role("link", name="iris").click()
        move = page.locator("form", has=page.get_by_role("button", name="Move alias"))
        move.get_by_label("Alias").fill("production")
        move.get_by_label("Version").fill("2")
        move.get_by_role("button", name="Move alias").click()
        page.get_by_text("'production' now points to version 2.").first.wait_for()
        checked.check("devops-alias-moved")
        page.get_by_role("link", name=DEPLOYMENT, exact=True).first.click()
        page.get_by_text("Canary: 25% of traffic to revision 2.").first.wait_for(timeout=SLOW_MS)
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
