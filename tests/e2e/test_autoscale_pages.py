"""Autoscaling in a real browser (Debian Chromium): the monitoring page draws replicas over time
as steps (wanted and ready, each step holding until the next), and the deployment page of an
idle deployment says it is scaled to zero and that the next request wakes it. Rows only: no
container runs (the scaler's runs on Docker are tests/deployments')."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import Deployment, DeploymentStatus, ScaleSample
from deployments.spec import Autoscaling
from registry.models import RegisteredModel
from teams.roles import Role
from tests.e2e.test_monitoring_charts import CHART, _log_in
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.monitoring.conftest import make_deployment, make_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
STEPPED = """(kind) => window.Chart.getChart(
    document.querySelector(`canvas[data-chart="${kind}"]`)).data.datasets.map(d => d.stepped)"""


def _seed() -> Deployment:
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    model = RegisteredModel.objects.create(name="churn", team=team)
    d = make_deployment(team, model, make_version(model, 1))
    now = timezone.now()
    Deployment.objects.filter(pk=d.pk).update(
        autoscaling=Autoscaling(max_replicas=3, idle_to_zero_after_s=600).as_dict(),
        replicas=0, status=DeploymentStatus.IDLE, scaled_at=now - timedelta(minutes=5),
        status_message="Idle (scaled to zero): the next request starts a replica.")
    # A burst 40 minutes ago took it from 1 to 3 replicas; idle since 5 minutes ago.
    for minutes, desired, ready in ((50, 1, 1), (40, 3, 1), (39, 3, 3), (20, 1, 1), (5, 0, 0)):
        ScaleSample.objects.create(deployment=d, at=now - timedelta(minutes=minutes),
                                   desired=desired, ready=ready)
    return d


def test_replicas_over_time_are_steps_and_idle_says_how_it_wakes(live_server, page,
                                                                  screenshot):
    d = _seed()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _log_in(page, live_server.url)

    page.goto(f"{live_server.url}/monitoring/deployments/{d.name}/?range=1h")
    page.wait_for_function("() => window.Chart && window.Chart.getChart("
                           "document.querySelector('canvas[data-chart=\"scale\"]'))")
    chart = page.evaluate(CHART, "scale")
    wanted, ready = (next(s["data"] for s in chart["datasets"] if s["label"] == name)
                     for name in ("wanted", "ready"))
    assert chart["labels"] == len(wanted) == len(ready)
    assert max(v for v in wanted if v is not None) == 3, wanted
    assert wanted[-1] == 0 and ready[-1] == 0
    assert wanted[:5] == [None] * 5  # before the first sample: nothing is made up
    assert 1 in wanted[12:20]  # the count before the burst holds until it
    assert page.evaluate(STEPPED, "scale") == ["after", "after"]
    screenshot("autoscale-01-replicas-over-time")

    page.goto(f"{live_server.url}/deployments/{d.name}/")
    status = page.locator("#deployment-status")
    assert "idle (scaled to zero)" in status.inner_text()
    assert "the next request wakes it" in page.locator("#idle").inner_text()
    assert "Now 0 wanted, 0 ready" in page.locator("#autoscaling").inner_text()
    assert page.locator("#edit-autoscaling input[name='autoscaling-enabled']").is_checked()
    screenshot("autoscale-02-idle-deployment")
    assert not errors, errors
