"""A sentence-embedding model's monitoring page in a real browser (Debian Chromium): the
prediction chart draws the mean norm of the output vectors (not an argmax histogram), and the
drift chart and table show the text column's length and vocabulary rows. No console error."""

from __future__ import annotations

import pytest

from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.monitoring.test_text_drift import make_text_deployment, text_traffic

from .test_monitoring_charts import CHART, READY, _log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_text_drift_and_vector_charts(live_server, page, screenshot):
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    deployment = make_text_deployment(team, None)
    text_traffic(deployment)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _log_in(page, live_server.url)
    page.goto(f"{live_server.url}/monitoring/deployments/{deployment.name}/?range=1h")
    page.wait_for_function(READY)
    predictions = page.evaluate(CHART, "predictions")
    (norms,) = predictions["datasets"]
    assert norms["label"] == "mean norm of the 384-d output vectors"
    assert [round(v, 3) for v in norms["data"] if v is not None] == [1.0]
    drift = page.evaluate(CHART, "drift")
    assert drift["labels"] == 2
    page.get_by_text("0 (vocabulary)").first.wait_for()
    assert page.locator("tr.drifted", has_text="0 (vocabulary)").count() == 1
    screenshot("monitoring-text-embeddings")
    assert not errors, errors
