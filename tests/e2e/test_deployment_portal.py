"""The deployment page in Chromium: editing a deployment into a canary and seeing its split at
the top, deploying a version from its page, confirming Stop, and the logs panel clicked twice
and on a second replica.

The reconciler runs for real, driven by the test between clicks, against the in-memory runtime
of ``tests/deployments/test_reconcile.py`` (stand-in replicas answering over unix sockets):
these tests are about the portal, ``tests/deployments/test_docker.py`` runs real containers.
The logs are read from that same runtime (``deployment_runtime`` is pointed at it), so the
panel shows its fixed traceback."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from deployments import services
from deployments.models import Deployment
from deployments.reconcile import reconcile_deployment
from tests.deployments import conftest as deployment_fixtures
from tests.deployments.test_reconcile import FakeRuntime
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# The deployments app's fixtures: a stored iris model in two versions, stand-in replicas.
iris_dir, iris_model, v1, v2 = (deployment_fixtures.iris_dir, deployment_fixtures.iris_model,
                                deployment_fixtures.v1, deployment_fixtures.v2)
upstreams, no_enqueue = deployment_fixtures.upstreams, deployment_fixtures.no_enqueue


@pytest.fixture
def running(settings, engineer, team, v1, v2, upstreams, no_enqueue, monkeypatch):
    """iris-rc healthy on v1 with two replicas; logs come from the same in-memory runtime."""
    settings.MODELPORT_DRAIN_SECONDS = 0
    settings.MODELPORT_READY_TIMEOUT_S = 5
    runtime = FakeRuntime(upstreams)
    monkeypatch.setattr("deployments.services.deployment_runtime", lambda d: runtime)
    d = services.create_deployment(actor=engineer, team=team, name="iris-rc", model="iris",
                                   version=1, replicas=2,
                                   resources={"cpu": 0.5, "memory_mb": 256})
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    return d, runtime


# The innermost elements reaching past the viewport's right edge (what makes a page scroll).
WIDEST = """((SCOPE = 'main *') => {
  const past = e => e.getBoundingClientRect().right > window.innerWidth + 1;
  const scrolled = e => { for (let a = e.parentElement; a; a = a.parentElement) {
    if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(a).overflowX)) return true; }
    return false; };
  return [...document.querySelectorAll(SCOPE)].filter(e => past(e) && !scrolled(e)
    && ![...e.children].some(past)).slice(0, 5).map(e => e.tagName + '#' + e.id + '.'
    + e.className + ' ' + (e.textContent || '').trim().slice(0, 40)); })()"""


def log_in(page, live_server, user) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.get_by_role("heading", name="Dashboard").wait_for()


def console_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def test_edit_a_deployment_into_a_canary_and_see_the_split_at_the_top(
        running, live_server, page, screenshot, engineer):
    d, runtime = running
    errors = console_errors(page)
    log_in(page, live_server, engineer)
    page.goto(f"{live_server.url}/deployments/iris-rc/")
    page.get_by_role("button", name="Edit", exact=True).click()
    edit = page.locator("#edit form")
    edit.get_by_label("Version or alias to run").select_option(label="version 2")
    edit.get_by_label("Strategy").select_option("canary")
    edit.get_by_label("Canary steps (% of traffic)").fill("20")
    edit.get_by_label("Seconds per canary step").fill("600")
    screenshot("deployment-edit-form")
    edit.get_by_role("button", name="Save and roll out").click()
    expect(page.get_by_text("Saved: revision 2 of 'iris-rc' is rolling out (canary).")) \
        .to_be_visible()
    assert Deployment.objects.get(pk=d.pk).strategy["steps"] == [20, 100]

    assert reconcile_deployment(d.pk, runtime) == "canary"  # the first step: 20 %
    traffic = page.locator("#traffic")
    expect(traffic).to_contain_text("r2: 20%")  # the page polls its status
    expect(traffic).to_contain_text("r1: 80%")
    expect(page.locator("#rollout")).to_contain_text("Canary step 1 of 1: 20% of traffic")
    top = page.locator("#traffic").bounding_box()["y"]
    assert top < page.locator("#revisions").bounding_box()["y"] \
        < page.locator("#logs").bounding_box()["y"] < page.locator("#edit").bounding_box()["y"]
    screenshot("deployment-canary-20")
    assert errors == [], errors


def test_the_logs_panel_works_twice_and_on_a_second_replica_next_to_its_links(
        running, live_server, page, screenshot, engineer):
    errors = console_errors(page)
    log_in(page, live_server, engineer)
    page.goto(f"{live_server.url}/deployments/iris-rc/")
    panel = page.locator("#logs-panel")
    first = page.get_by_role("link", name="Logs of mp-iris-rc-r1-0")
    first.click()
    expect(panel).to_contain_text("Logs of mp-iris-rc-r1-0")
    expect(panel).to_contain_text("No module named 'boom'")
    gap = panel.bounding_box()["y"] - (first.bounding_box()["y"] + first.bounding_box()["height"])
    assert 0 <= gap < 150, f"the logs appear {gap}px below their link"
    # The status section above swaps itself (outerHTML) every few seconds: the panel stays.
    with page.expect_response(lambda r: r.url.endswith("/deployments/iris-rc/status/")):
        pass
    first.click()
    expect(panel).to_contain_text("Logs of mp-iris-rc-r1-0")
    page.get_by_role("link", name="Logs of mp-iris-rc-r1-1").click()
    expect(panel).to_contain_text("Logs of mp-iris-rc-r1-1")
    page.get_by_role("link", name="Logs of every replica").click()
    expect(panel.locator("h4")).to_have_count(2)
    screenshot("deployment-logs")
    assert errors == [], errors  # no htmx:targetError


def test_deploy_a_version_from_its_page_and_confirm_stop(running, live_server, page,
                                                         screenshot, engineer):
    d, runtime = running
    errors = console_errors(page)
    log_in(page, live_server, engineer)
    page.goto(f"{live_server.url}/models/iris/versions/2/")
    page.get_by_role("button", name="Deploy v2").click()
    page.get_by_role("heading", name="Deploy iris v2").wait_for()
    card = page.locator("#deploy-to-iris-rc")
    card.get_by_label("Strategy").select_option("canary")
    card.get_by_label("Canary share (%)").fill("30")
    screenshot("deploy-version")
    card.get_by_role("button", name="Deploy v2 to iris-rc").click()
    page.get_by_role("heading", name="iris-rc").wait_for()
    expect(page.get_by_text("Deploying iris v2 to 'iris-rc': revision 2 is rolling out "
                            "(canary).")).to_be_visible()
    assert reconcile_deployment(d.pk, runtime) == "canary"
    expect(page.locator("#traffic")).to_contain_text("r2: 30%")

    page.get_by_role("button", name="Stop…").click()
    page.get_by_role("heading", name="Stop iris-rc?").wait_for()
    expect(page.locator("#confirm")).to_contain_text("release its quota reservation")
    screenshot("deployment-stop-confirm")
    page.get_by_role("button", name="Stop iris-rc").click()
    expect(page.get_by_text("Stopping 'iris-rc'")).to_be_visible()
    assert Deployment.objects.get(pk=d.pk).stopped

    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/deployments/iris-rc/", "/deployments/deploy/iris/2/"):
        page.goto(f"{live_server.url}{path}")
        # What this page puts in <main> fits (tables scroll in their own box); the header's
        # navigation is the portal's, checked on every page by the accessibility harness.
        wide = page.evaluate(WIDEST)
        assert wide == [], f"{path} is wider than a phone: {wide}"
    assert errors == [], errors
