"""Alert rules that do not cry wolf: a minimum sample size (a PSI over 3 rows is noise), silence
until a time, acknowledging a firing alert, and each rule's last evaluation — through the
services, the portal views and the API, with role checks and audit records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from deployments.models import Revision
from monitoring import alerts, services
from monitoring.models import Alert, AlertRule, Verdict
from teams.models import AuditEvent
from tests.fixtures import bearer_client

from .conftest import ingest_direct, live_rows, minutes_ago, record, roll

PAGE = "/monitoring/deployments/churn-prod/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shifted(n: int, start: int = 0) -> list[dict]:
    """Inputs far from the reference: PSI well above any threshold once enough rows arrive."""
    return [record(start + i, minutes_ago(3), row=row)
            for i, row in enumerate(live_rows(start + 7, n, shift=3.0, colors=[0.1, 0.1, 0.8]))]


def test_a_drift_rule_on_three_rows_says_not_enough_data_and_never_fires(deployment, engineer):
    rule = alerts.create_alert_rule(actor=engineer, deployment=deployment, name="psi",
                                    metric="psi_max", comparison=">", threshold=0.2,
                                    window_minutes=30)
    ingest_direct(deployment, shifted(3))
    roll()
    now = datetime.now(UTC)
    value, samples = alerts.measure(rule, now)
    assert samples == 3 and value is not None and value > 0.2  # it would have fired before
    assert alerts.evaluate_alerts(now=now) == []
    assert not Alert.objects.exists()
    rule.refresh_from_db()
    assert rule.last_verdict == Verdict.NOT_ENOUGH_DATA and rule.last_samples == 3
    assert alerts.verdict_text(rule) == "not enough data (3 of 100)"
    # The page and the API say so too.
    assert "not enough data (3 of 100)" in logged_in(engineer).get(PAGE).content.decode()
    body = bearer_client(engineer).get(f"/api/v1/alert-rules/{rule.pk}/").json()
    assert body["last_verdict"] == "not_enough_data" and body["last_samples"] == 3
    assert body["min_samples"] is None and body["min_samples_effective"] == 100
    assert body["last_evaluation"] == "not enough data (3 of 100)"
    assert body["last_evaluated_at"] is not None

    # With enough rows it fires.
    ingest_direct(deployment, shifted(150, start=1000))
    roll()
    [(alert_id, event)] = alerts.evaluate_alerts(now=datetime.now(UTC))
    assert event == "firing" and Alert.objects.get(pk=alert_id).rule == rule
    rule.refresh_from_db()
    assert rule.last_verdict == Verdict.BREACH and rule.last_samples == 153


def test_a_rule_sets_its_own_minimum_and_bad_ones_are_refused(deployment, engineer):
    client = bearer_client(engineer)
    body = {"deployment": "churn-prod", "name": "acc", "metric": "accuracy", "comparison": "<",
            "threshold": 2, "window_minutes": 30, "min_samples": 5}
    created = client.post("/api/v1/alert-rules/", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["min_samples"] == 5 and created.json()["min_samples_effective"] == 5
    bad = client.post("/api/v1/alert-rules/", {**body, "name": "x", "min_samples": -1},
                      format="json")
    assert bad.status_code == 400 and "min_samples" in str(bad.json())
    ingest_direct(deployment, [record(i, minutes_ago(3), request_id=f"q-{i}")
                               for i in range(8)])
    services.submit_feedback(actor=engineer, deployment=deployment,
                             items=[{"request_id": f"q-{i}", "label": 1} for i in range(8)])
    roll()
    rule = AlertRule.objects.get(name="acc")
    assert alerts.evaluate_alerts(now=datetime.now(UTC)) != []  # 8 labels >= 5: fires
    # Back to the default (null): 8 of 50 is not enough; the open alert is left as it is.
    patched = client.patch(f"/api/v1/alert-rules/{rule.pk}/", {"min_samples": None},
                           format="json")
    assert patched.status_code == 200 and patched.json()["min_samples_effective"] == 50
    assert alerts.evaluate_alerts(now=datetime.now(UTC)) == []
    rule.refresh_from_db()
    assert alerts.verdict_text(rule) == "not enough data (8 of 50)"


def _always_firing(deployment, engineer) -> AlertRule:
    """requests_per_min < 1000 breaches whatever the traffic (0 requests is 0 per minute)."""
    return alerts.create_alert_rule(actor=engineer, deployment=deployment, name="rpm",
                                    metric="requests_per_min", comparison="<", threshold=1000)


def test_silence_through_the_portal_mutes_notifications_not_alerts(deployment, engineer,
                                                                   viewer):
    rule = _always_firing(deployment, engineer)
    url = f"/monitoring/deployments/churn-prod/rules/{rule.pk}/silence/"
    # A viewer may not: the rule stays as it was.
    refused = logged_in(viewer).post(url, {"hours": "4"}, follow=True)
    assert "needs engineer or higher" in refused.content.decode()
    rule.refresh_from_db()
    assert rule.silenced_until is None
    engineer_client = logged_in(engineer)
    assert engineer_client.post(url, {"hours": "nope"}).status_code == 302
    rule.refresh_from_db()
    assert rule.silenced_until is None
    response = engineer_client.post(url, {"hours": "4"})
    assert response.status_code == 302 and response["Location"].endswith("#alert-rules")
    rule.refresh_from_db()
    assert rule.silenced_by == engineer
    assert timedelta(hours=3, minutes=59) < rule.silenced_until - datetime.now(UTC) \
        <= timedelta(hours=4)
    assert AuditEvent.objects.filter(action="alert_rule.silenced", actor=engineer).exists()
    assert "silenced until" in engineer_client.get(PAGE).content.decode()
    # Silenced: the alert opens (the page shows it) but nothing is sent.
    assert alerts.evaluate_alerts(now=datetime.now(UTC)) == []
    assert Alert.objects.get(rule=rule).state == "firing"
    # Lifted (no hours): the alert opened during the silence is notified at the next pass.
    engineer_client.post(url, {})
    rule.refresh_from_db()
    assert rule.silenced_until is None
    assert AuditEvent.objects.filter(action="alert_rule.unsilenced").exists()
    alert = Alert.objects.get(rule=rule)
    assert alerts.evaluate_alerts(now=datetime.now(UTC)) == [(alert.pk, "firing")]
    assert alerts.evaluate_alerts(now=datetime.now(UTC)) == []


def test_silence_through_the_api(deployment, engineer, viewer, outsider):
    rule = _always_firing(deployment, engineer)
    url = f"/api/v1/alert-rules/{rule.pk}/silence/"
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert bearer_client(viewer).post(url, {"until": until}, format="json").status_code == 403
    assert bearer_client(outsider).post(url, {"until": until}, format="json").status_code == 404
    past = bearer_client(engineer).post(url, {"until": "2001-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and "future" in str(past.json())
    too_long = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    assert bearer_client(engineer).post(url, {"until": too_long},
                                        format="json").status_code == 400
    assert bearer_client(engineer).post(url, {}, format="json").status_code == 400
    ok = bearer_client(engineer).post(url, {"until": until}, format="json")
    assert ok.status_code == 200, ok.json()
    assert ok.json()["silenced_by"] == "eve" and ok.json()["silenced_until"] is not None
    assert alerts.evaluate_alerts(now=datetime.now(UTC)) == []
    lifted = bearer_client(engineer).post(url, {"until": None}, format="json")
    assert lifted.status_code == 200 and lifted.json()["silenced_until"] is None


def test_acknowledged_alerts_stop_renotifying_until_they_fire_again(deployment, engineer,
                                                                    viewer, settings):
    settings.MODELPORT_ALERT_RENOTIFY_MINUTES = 60
    rule = _always_firing(deployment, engineer)
    now = datetime.now(UTC)
    [(alert_id, event)] = alerts.evaluate_alerts(now=now)
    assert event == "firing"
    assert alerts.evaluate_alerts(now=now + timedelta(minutes=30)) == []
    # Nobody acknowledged it: notified again after an hour, then not before the next hour.
    assert alerts.evaluate_alerts(now=now + timedelta(minutes=61)) == [(alert_id, "firing")]
    assert alerts.evaluate_alerts(now=now + timedelta(minutes=90)) == []

    url = f"/api/v1/alerts/{alert_id}/acknowledge/"
    assert bearer_client(viewer).post(url).status_code == 403
    acked = bearer_client(engineer).post(url)
    assert acked.status_code == 200, acked.json()
    assert acked.json()["acknowledged_by"] == "eve" and acked.json()["acknowledged_at"]
    again = bearer_client(engineer).post(url)
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="alert.acknowledged", actor=engineer).count() == 1
    assert alerts.evaluate_alerts(now=now + timedelta(minutes=200)) == []

    # It resolves (the resolution is still sent), then fires anew: a new alert, notified.
    alerts.update_alert_rule(actor=engineer, rule=rule, threshold=-1)
    assert alerts.evaluate_alerts(now=now + timedelta(minutes=201)) == [(alert_id, "resolved")]
    resolved = bearer_client(engineer).post(url)
    assert resolved.status_code == 409 and "resolved" in resolved.json()["detail"]
    alerts.update_alert_rule(actor=engineer, rule=rule, threshold=1000)
    [(new_id, event)] = alerts.evaluate_alerts(now=now + timedelta(minutes=202))
    assert event == "firing" and new_id != alert_id


def test_acknowledge_through_the_portal(deployment, engineer, viewer):
    rule = _always_firing(deployment, engineer)
    [(alert_id, _)] = alerts.evaluate_alerts(now=datetime.now(UTC))
    page = logged_in(engineer).get(PAGE).content.decode()
    assert "Acknowledge" in page
    assert "Acknowledge" not in logged_in(viewer).get(PAGE).content.decode()
    url = f"/monitoring/deployments/churn-prod/alerts/{alert_id}/acknowledge/"
    logged_in(viewer).post(url)
    assert Alert.objects.get(pk=alert_id).acknowledged_at is None
    response = logged_in(engineer).post(url)
    assert response.status_code == 302 and response["Location"].endswith("#recent-alerts")
    alert = Alert.objects.get(pk=alert_id)
    assert alert.acknowledged_by == engineer and alert.rule == rule
    assert "by eve" in logged_in(engineer).get(PAGE).content.decode()
    assert logged_in(engineer).post(
        "/monitoring/deployments/churn-prod/alerts/987654/acknowledge/").status_code == 404


def _page_queries(client: Client) -> int:
    client.get(PAGE)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(PAGE + "?range=6h")
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _add(deployment, engineer, start: int, count: int) -> None:
    """Rules (silenced, evaluated, firing and acknowledged) and revisions (markers)."""
    for i in range(start, start + count):
        rule = alerts.create_alert_rule(actor=engineer, deployment=deployment, name=f"r{i}",
                                        metric="requests_per_min", comparison="<",
                                        threshold=1000)
        alerts.silence_alert_rule(actor=engineer, rule=rule,
                                  until=datetime.now(UTC) + timedelta(hours=1))
        Revision.objects.create(deployment=deployment, number=10 + i,
                                model_version=deployment.version, reason="spec changed")
    alerts.evaluate_alerts(now=datetime.now(UTC))
    for alert in Alert.objects.filter(acknowledged_at__isnull=True, state="firing"):
        alerts.acknowledge_alert(actor=engineer, alert=alert)


def test_the_deployment_page_runs_a_fixed_number_of_queries(deployment, engineer):
    """More rules, alerts, acknowledgements and revision markers: no more queries (a traffic
    split adds one series per revision of the split, bounded)."""
    client = logged_in(engineer)
    _add(deployment, engineer, 0, 2)
    few = _page_queries(client)
    _add(deployment, engineer, 2, 8)
    assert _page_queries(client) == few
    deployment.traffic = [{"revision": 1, "percent": 90}, {"revision": 10, "percent": 10}]
    deployment.save(update_fields=["traffic"])
    split = _page_queries(client)
    assert split > few
    _add(deployment, engineer, 10, 5)
    assert _page_queries(client) == split
