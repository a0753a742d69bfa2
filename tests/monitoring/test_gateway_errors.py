"""Failures the gateway answers itself are visible in monitoring: a deployment with no ready
replica receiving traffic shows its 503s in the metrics API, the monitoring page's chart data,
an alert rule on the gateway error rate, and ``/metrics``.

The traffic goes through the gateway's Django path in this process (``GatewayMiddleware``, the
same counters as the edge: tests/deployments/test_edge.py checks the edge's); the gateway's
samples are written by ``gateway.routes.flush`` and folded by the rollup task's
``gateway_errors.rollup`` as beat runs them.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from deployments.models import TrafficSample
from gateway import routes
from monitoring import alerts, gateway_errors, rollups
from monitoring.models import Alert, AlertState, MinuteRollup
from tests.factories import UserFactory, make_token

pytestmark = pytest.mark.django_db
REFUSED = 12
BODY = '{"inputs": [[1, 2]]}'


def bearer(user) -> Client:
    _, secret = make_token(user, name="gateway-errors")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def counter(text: str, deployment: str, code: int) -> float:
    """The value of modelport_gateway_errors_total for one deployment and code (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelport_gateway_errors_total" and sample.labels == {
                    "deployment": deployment, "code": str(code)}:
                return sample.value
    return 0.0


def scrape(admin_user) -> str:
    response = bearer(admin_user).get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def refused(deployment, engineer, admin_user):
    """``REFUSED`` predictions sent to a deployment with no ready replica, counted and rolled
    up as the edge's flush and the rollup task do; returns /metrics' counter before them."""
    routes.invalidate()
    before = counter(scrape(admin_user), deployment.name, 503)
    client = bearer(engineer)
    for _ in range(REFUSED):
        answer = client.post(f"/serve/{deployment.name}/invocations", data=BODY,
                             content_type="application/json")
        assert answer.status_code == 503 and answer.json()["code"] == "no_ready_replica"
    routes.flush()
    # What beat does; "now" past the rollup delay, so the samples just written are folded.
    assert gateway_errors.rollup(now=timezone.now() + timedelta(minutes=1)) >= 1
    yield before
    routes.invalidate()


def test_the_gateway_stores_its_refusals_per_deployment_revision_and_code(deployment, refused):
    samples = TrafficSample.objects.filter(deployment=deployment)
    assert {s.revision for s in samples} == {deployment.revision}
    assert sum(s.gateway_503 for s in samples) == REFUSED
    assert sum(s.gateway_requests for s in samples) == REFUSED
    assert sum(s.requests for s in samples) == 0  # no replica was ever tried
    minutes = MinuteRollup.objects.filter(deployment=deployment)
    assert sum(r.gateway_503 for r in minutes) == REFUSED
    assert sum(r.count for r in minutes) == 0  # no prediction log: no replica saw them


def test_the_metrics_api_shows_503s_by_code_and_the_gateway_error_rate(deployment, engineer,
                                                                      refused):
    response = bearer(engineer).get(f"/api/v1/deployments/{deployment.name}/metrics/")
    assert response.status_code == 200
    body = response.json()
    totals = body["totals"]
    assert totals["gateway_errors"] == REFUSED and totals["gateway_requests"] == REFUSED
    assert totals["gateway_error_rate"] == 100.0
    assert totals["gateway_errors_by_code"] == {"500": 0, "502": 0, "503": REFUSED, "504": 0}
    assert sum(v or 0 for v in body["gateway_errors"]["503"]) == REFUSED
    assert len(body["gateway_errors"]["503"]) == len(body["timestamps"])
    assert 100.0 in body["gateway_error_rate"]
    assert totals["requests"] == 0  # replicas logged nothing: the old "0 in range"


def test_the_monitoring_page_charts_the_gateway_errors(deployment, engineer, refused):
    client = Client()
    client.force_login(engineer)
    page = client.get(f"/monitoring/deployments/{deployment.name}/")
    assert page.status_code == 200
    html = page.content.decode()
    data = json.loads(re.search(r'<script id="series-all" type="application/json">(.*?)'
                                r"</script>", html, re.S).group(1))
    assert sum(v or 0 for v in data["gateway_errors"]["503"]) == REFUSED
    assert 'data-chart="gateway"' in html
    assert f"{REFUSED} more failed in the gateway" in html
    assert f"{REFUSED} of {REFUSED} requests (100.00 %)" in html
    index = client.get("/monitoring/").content.decode()
    assert f"{REFUSED} of {REFUSED}</strong>" in index


def test_an_alert_rule_on_the_gateway_error_rate_fires(deployment, engineer, refused):
    rule = alerts.create_alert_rule(actor=engineer, deployment=deployment,
                                    name="Gateway failing", metric="gateway_error_rate",
                                    comparison=">", threshold=50, window_minutes=5)
    count_rule = alerts.create_alert_rule(actor=engineer, deployment=deployment,
                                          name="Any gateway error", metric="gateway_errors",
                                          comparison=">=", threshold=1, window_minutes=5)
    alerts.evaluate_alerts(now=timezone.now() + timedelta(minutes=1))
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.FIRING and alert.value == 100.0
    assert "gateway error rate" in alert.message
    assert Alert.objects.get(rule=count_rule).value == REFUSED


def test_metrics_endpoint_counts_gateway_errors_by_deployment_and_code(deployment, admin_user,
                                                                        refused):
    text = scrape(admin_user)
    assert counter(text, deployment.name, 503) - refused == REFUSED
    assert "# TYPE modelport_gateway_errors_total counter" in text


def test_caller_mistakes_are_not_gateway_errors(deployment, admin_user):
    """401 and 404 are the caller's, not the platform's: neither stored nor counted."""
    stranger = UserFactory(username="outsider")  # in no team: the deployment is a 404
    routes.invalidate()
    before = scrape(admin_user)
    assert Client().post(f"/serve/{deployment.name}/invocations", data=BODY,
                         content_type="application/json").status_code == 401
    assert bearer(stranger).post(f"/serve/{deployment.name}/invocations", data=BODY,
                                 content_type="application/json").status_code == 404
    routes.flush()
    assert not TrafficSample.objects.filter(deployment=deployment).exists()
    after = scrape(admin_user)
    for code in gateway_errors.GATEWAY_CODES:
        assert counter(after, deployment.name, code) == counter(before, deployment.name, code)


def test_gateway_rollup_waits_for_samples_younger_than_the_delay(deployment, settings):
    settings.MODELPORT_MONITORING_ROLLUP_DELAY_S = 5
    now = timezone.now()
    old = TrafficSample.objects.create(deployment=deployment, revision=1,
                                       at=now - timedelta(seconds=30), gateway_requests=3,
                                       gateway_502=1)
    TrafficSample.objects.create(deployment=deployment, revision=1, at=now, gateway_requests=2,
                                 gateway_503=2)
    assert gateway_errors.rollup(now=now) == 1
    rows = MinuteRollup.objects.filter(deployment=deployment)
    assert sum(r.gateway_502 for r in rows) == 1 and sum(r.gateway_503 for r in rows) == 0
    assert gateway_errors.rollup(now=now + timedelta(seconds=10)) == 1
    rows = MinuteRollup.objects.filter(deployment=deployment)
    assert sum(r.gateway_requests for r in rows) == 5 and sum(r.gateway_503 for r in rows) == 2
    assert gateway_errors.rollup(now=now + timedelta(seconds=20)) == 0  # nothing twice
    assert old.pk  # folded once, kept until prune
    rollups.prune(now=now + timedelta(days=settings.MODELPORT_MONITORING_RAW_RETENTION_DAYS,
                                      minutes=1))
    assert not TrafficSample.objects.filter(deployment=deployment).exists()
    assert sum(r.gateway_requests for r in MinuteRollup.objects.filter(
        deployment=deployment)) == 5
