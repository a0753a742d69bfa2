"""The deployment monitoring page in a real browser: every chart is drawn by Chart.js, one
CPU/memory chart per replica, and two revisions side by side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployments.models import Revision
from monitoring.models import ReplicaStat
from registry.models import RegisteredModel
from teams.roles import Role
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory
from tests.monitoring.conftest import (
    ingest_direct,
    make_deployment,
    make_version,
    minutes_ago,
    record,
    roll,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DRAWN = """() => [...document.querySelectorAll('canvas[data-chart]')].map(
    c => [c.dataset.chart, c.dataset.replica || '', !!window.Chart.getChart(c)])"""


def test_charts_replicas_and_revision_comparison_are_drawn(live_server, page, screenshot):
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    model = RegisteredModel.objects.create(name="churn", team=team)
    deployment = make_deployment(team, model, make_version(model, 1))
    Revision.objects.create(deployment=deployment, number=2, model_version=make_version(model, 2))
    ingest_direct(deployment, [record(i, minutes_ago(6), prediction=i % 2) for i in range(20)])
    ingest_direct(deployment, [record(100 + i, minutes_ago(4), latency=80, prediction=1)
                               for i in range(20)], revision="2")
    roll()
    now = datetime.now(UTC)
    for k in range(12):
        at = now - timedelta(minutes=10) + timedelta(seconds=15 * k)
        for rev in (1, 2):
            ReplicaStat.objects.create(deployment=deployment, runtime_id=f"mp-churn-prod-r{rev}-0",
                                       revision=rev, index=0, at=at, cpu_percent=5.0 * k,
                                       memory_mb=200 + k, memory_limit_mb=1024)

    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("eve")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()

    page.goto(f"{live_server.url}/monitoring/deployments/churn-prod/?range=1h")
    page.wait_for_function("() => window.Chart && document.querySelectorAll("
                           "'canvas[data-chart]').length > 0")
    drawn = page.evaluate(DRAWN)
    kinds = {kind for kind, _, ok in drawn if ok}
    assert {"requests", "errors", "latency", "predictions", "drift", "replica"} <= kinds, drawn
    assert {rid for kind, rid, ok in drawn if kind == "replica" and ok} == {
        "mp-churn-prod-r1-0", "mp-churn-prod-r2-0"}
    screenshot("monitoring-01-deployment")

    page.get_by_text("Compare two revisions side by side").click()
    page.get_by_role("button", name="Compare").click()
    page.get_by_role("heading", name="Revision 2").wait_for()
    page.get_by_role("heading", name="Revision 1").wait_for()
    drawn = page.evaluate(DRAWN)
    # Each column draws its own charts, and only its revision's replica.
    assert sum(1 for kind, _, ok in drawn if kind == "latency" and ok) == 2
    assert sorted(rid for kind, rid, ok in drawn if kind == "replica" and ok) == [
        "mp-churn-prod-r1-0", "mp-churn-prod-r2-0"]
    screenshot("monitoring-02-compare")
