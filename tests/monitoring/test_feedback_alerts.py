"""Ground truth joined by request id; alert rules firing and resolving, with webhook, email and
retraining notifications delivered to a local receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail

from monitoring import alerts, services, tasks
from monitoring.models import Alert, AlertRule, Feedback
from teams.models import AuditEvent
from teams.services import update_platform_settings
from tests.fixtures import bearer_client

from .conftest import ingest_direct, minutes_ago, record, roll


# --- ground truth ----------------------------------------------------------------------------
def test_feedback_matches_request_ids_and_reports_unmatched(deployment, engineer):
    t0 = minutes_ago(10)
    ingest_direct(deployment, [record(i, t0, prediction=i % 2, request_id=f"q-{i}")
                               for i in range(10)])
    labels = [{"request_id": f"q-{i}", "label": 1} for i in range(10)]
    labels.append({"request_id": "never-seen", "label": 0})
    response = bearer_client(engineer).post("/api/v1/deployments/churn-prod/feedback/",
                                            labels, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"matched": 10, "updated": 0, "unmatched": ["never-seen"]}
    assert Feedback.objects.count() == 10
    assert AuditEvent.objects.filter(action="feedback.submitted").exists()
    roll()
    body = bearer_client(engineer).get("/api/v1/deployments/churn-prod/metrics/").json()
    quality = body["quality"]
    assert quality["task"] == "classification"
    assert quality["totals"]["accuracy"] == pytest.approx(0.5)
    assert quality["totals"]["labelled"] == 10
    # Sending a label again replaces it.
    again = bearer_client(engineer).post("/api/v1/deployments/churn-prod/feedback/",
                                         [{"request_id": "q-0", "label": 0}], format="json")
    assert again.json()["updated"] == 1


def test_regression_feedback_gives_mae_and_rmse(deployment, engineer):
    t0 = minutes_ago(10)
    ingest_direct(deployment, [record(i, t0, prediction=1.5 + i, request_id=f"g-{i}")
                               for i in range(4)])
    bearer_client(engineer).post("/api/v1/deployments/churn-prod/feedback/",
                                 [{"request_id": f"g-{i}", "label": 1.0 + i} for i in range(4)],
                                 format="json")
    start = (t0 - timedelta(minutes=5)).isoformat()
    quality = bearer_client(engineer).get("/api/v1/deployments/churn-prod/metrics/",
                                          {"start": start}).json()["quality"]
    assert quality["task"] == "regression"
    assert quality["totals"]["mae"] == pytest.approx(0.5)
    assert quality["totals"]["rmse"] == pytest.approx(0.5)


def test_feedback_permissions_and_bad_bodies(deployment, viewer, outsider, engineer):
    url = "/api/v1/deployments/churn-prod/feedback/"
    item = [{"request_id": "x", "label": 1}]
    assert bearer_client(viewer).post(url, item, format="json").status_code == 403
    assert bearer_client(outsider).post(url, item, format="json").status_code == 404
    client = bearer_client(engineer)
    assert client.post(url, {"request_id": "x"}, format="json").status_code == 400
    assert client.post(url, [{"label": 1}], format="json").status_code == 400


# --- alert rules -----------------------------------------------------------------------------
class Receiver:
    """A local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_alert_rule_api_validates_the_metric(deployment, engineer, viewer):
    client = bearer_client(engineer)
    body = {"deployment": "churn-prod", "name": "p95", "metric": "latency_p95",
            "comparison": ">", "threshold": 200, "window_minutes": 5}
    created = client.post("/api/v1/alert-rules/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["metric"] == "latency_p95" and created.json()["firing"] is False
    bad = client.post("/api/v1/alert-rules/", {**body, "name": "x", "metric": "vibes"},
                      format="json")
    assert bad.status_code == 400 and "metric" in bad.json()
    assert client.post("/api/v1/alert-rules/", body, format="json").status_code == 409
    assert bearer_client(viewer).post("/api/v1/alert-rules/", {**body, "name": "v"},
                                      format="json").status_code == 403
    listed = bearer_client(viewer).get("/api/v1/alert-rules/").json()
    assert listed["count"] == 1
    rule_id = created.json()["id"]
    patched = client.patch(f"/api/v1/alert-rules/{rule_id}/", {"threshold": 300}, format="json")
    assert patched.status_code == 200 and patched.json()["threshold"] == 300
    assert client.delete(f"/api/v1/alert-rules/{rule_id}/").status_code == 204


def test_rules_fire_notify_and_resolve(deployment, engineer, receiver, settings, admin_user):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    # The receiver is on loopback: a platform admin allow-lists it (test_outbound_guard.py
    # shows what happens otherwise).
    update_platform_settings(actor=admin_user, outbound_allowlist=[
        receiver.url.removeprefix("http://")])
    rule = alerts.create_alert_rule(
        actor=engineer, deployment=deployment, name="p95 latency", metric="latency_p95",
        comparison=">", threshold=200, window_minutes=5,
        webhook_url=f"{receiver.url}/slack", emails=["oncall@example.com"],
        retrain_webhook_url=f"{receiver.url}/retrain")
    errors = alerts.create_alert_rule(
        actor=engineer, deployment=deployment, name="errors", metric="error_rate",
        comparison=">", threshold=1, window_minutes=5)
    now = datetime.now(UTC)
    ingest_direct(deployment, [record(i, now - timedelta(minutes=2), latency=450)
                               for i in range(50)])
    roll()
    events = alerts.evaluate_alerts(now=now)
    assert len(events) == 1
    alert = Alert.objects.get(rule=rule)
    assert alert.state == "firing" and alert.value > 200
    assert not Alert.objects.filter(rule=errors).exists()
    outcome = tasks.notify_alert(alert.pk, "firing")
    assert set(outcome) == {"webhook", "email", "retrain"}
    paths = dict(receiver.received)
    assert "FIRING" in paths["/slack"]["text"] and "p95 latency" in paths["/slack"]["text"]
    assert paths["/retrain"]["deployment"] == "churn-prod"
    assert paths["/retrain"]["metric"] == "latency_p95" and paths["/retrain"]["version"] == 1
    assert mail.outbox and "oncall@example.com" in mail.outbox[0].to
    # Still breaching: no second alert.
    assert alerts.evaluate_alerts(now=now) == []
    # Later the window holds fast requests only: resolved, and the resolution is sent.
    later = now + timedelta(minutes=10)
    ingest_direct(deployment, [record(100 + i, later - timedelta(minutes=2), latency=20)
                               for i in range(50)])
    roll(later)
    assert alerts.evaluate_alerts(now=later) == [(alert.pk, "resolved")]
    tasks.notify_alert(alert.pk, "resolved")
    assert "RESOLVED" in receiver.received[-1][1]["text"]
    assert len([p for p, _ in receiver.received if p == "/retrain"]) == 1
    listed = bearer_client(engineer).get("/api/v1/alerts/").json()
    assert listed["results"][0]["state"] == "resolved"
    assert listed["results"][0]["notified"]["firing"]["webhook"] == "HTTP 200"


def test_a_failing_webhook_is_recorded_not_raised(deployment, engineer, admin_user):
    update_platform_settings(actor=admin_user, outbound_allowlist=["127.0.0.1:9"])
    rule = alerts.create_alert_rule(actor=engineer, deployment=deployment, name="rpm",
                                    metric="requests_per_min", comparison="<", threshold=1000,
                                    webhook_url="http://127.0.0.1:9/nothing-listens")
    now = datetime.now(UTC)
    ingest_direct(deployment, [record(i, now - timedelta(minutes=1)) for i in range(5)])
    roll()
    [(alert_id, event)] = alerts.evaluate_alerts(now=now)
    outcome = tasks.notify_alert(alert_id, event)
    assert outcome["webhook"].startswith("failed (attempt 1)")
    alert = Alert.objects.get(pk=alert_id)
    assert alert.rule == rule
    # Retried (eagerly in tests) until the last attempt, which is what the alert keeps.
    assert alert.notified["firing"]["webhook"].startswith(f"failed (attempt {tasks.MAX_ATTEMPTS})")


def test_beat_task_enqueues_notifications_after_commit(deployment, engineer, monkeypatch,
                                                       django_capture_on_commit_callbacks):
    alerts.create_alert_rule(actor=engineer, deployment=deployment, name="rpm",
                             metric="requests_per_min", comparison="<", threshold=1000)
    ingest_direct(deployment, [record(i, minutes_ago(1)) for i in range(3)])
    roll()
    sent = []
    monkeypatch.setattr(tasks.notify_alert, "delay", lambda *a: sent.append(a))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.evaluate_alerts() == 1
    assert sent and sent[0][1] == "firing"


@pytest.mark.parametrize("metric", ["psi_max", "drifted_features", "accuracy"])
def test_drift_and_quality_metrics_evaluate(deployment, engineer, metric):
    rule = AlertRule.objects.create(deployment=deployment, name=metric, metric=metric,
                                    comparison=">", threshold=-1, window_minutes=30)
    ingest_direct(deployment, [record(i, minutes_ago(3), request_id=f"m-{i}")
                               for i in range(20)])
    services.submit_feedback(actor=engineer, deployment=deployment,
                             items=[{"request_id": f"m-{i}", "label": 1} for i in range(20)])
    roll()
    assert alerts.metric_value(rule, datetime.now(UTC)) is not None
