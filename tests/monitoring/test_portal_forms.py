"""Portal forms for what the API can do: alert rules (create, edit, delete), the sampling rate of
a deployment and the drift thresholds of a model — through the services (roles, audit), with
the problem shown next to the field."""

from __future__ import annotations

import html

from django.test import Client

from monitoring import alerts, ingest, services
from monitoring.models import AlertRule, DeploymentMonitoring, ModelMonitoring
from teams.models import AuditEvent

RULES = "/monitoring/deployments/churn-prod/rules/"
# The webhook is a public address written as such: saving checks it without a DNS lookup (none
# leaves this machine in tests) and nothing here calls it.
HOOK = "https://93.184.215.14/hooks/x"
RULE = {"name": "p95", "metric": "latency_p95", "comparison": ">", "threshold": "200",
        "window_minutes": "5", "webhook_url": HOOK,
        "emails": "ops@example.com, ml@example.com", "retrain_webhook_url": "", "enabled": "on"}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def field_errors(response) -> str:
    """The text of the inline errors (``_form_fields.html``), HTML entities decoded."""
    text = response.content.decode()
    return html.unescape(" ".join(part.split("</small>")[0]
                                  for part in text.split('class="field-error"')[1:]))


def test_engineer_creates_a_rule_with_the_form(deployment, engineer):
    client = logged_in(engineer)
    page = client.get(RULES)
    assert page.status_code == 200
    assert '<option value="latency_p95">' in page.content.decode()
    response = client.post(RULES, RULE)
    assert response.status_code == 302
    assert response["Location"].endswith("/monitoring/deployments/churn-prod/#alert-rules")
    rule = AlertRule.objects.get()
    assert (rule.metric, rule.comparison, rule.threshold, rule.window_minutes) == \
        ("latency_p95", ">", 200.0, 5)
    assert rule.emails == ["ops@example.com", "ml@example.com"] and rule.enabled
    assert rule.created_by == engineer
    assert AuditEvent.objects.filter(action="alert_rule.created", actor=engineer).exists()
    listed = client.get("/monitoring/deployments/churn-prod/").content.decode()
    assert f"/monitoring/deployments/churn-prod/rules/{rule.pk}/edit/" in listed


def test_invalid_rules_are_explained_next_to_the_field_and_nothing_is_saved(deployment,
                                                                            engineer):
    client = logged_in(engineer)
    cases = [
        ({"metric": "p95_latency"}, "Unknown metric 'p95_latency'; use one of"),
        ({"threshold": "lots"}, "Enter a number."),
        ({"comparison": "=="}, "comparison must be one of >, >=, <, <=."),
        ({"window_minutes": "0"}, "window_minutes must be 1-10080."),
        ({"webhook_url": "ftp://hooks.example.com/x"}, "Use an http:// or https:// URL."),
        ({"webhook_url": "http://localhost:5000/api/2.0/mlflow/experiments/list"},
         "Refused: localhost resolves to 127.0.0.1, a loopback address."),
        ({"retrain_webhook_url": "http://169.254.169.254/latest/meta-data/"},
         "Refused: 169.254.169.254 is the cloud metadata address."),
        ({"emails": "ops, ml"}, "emails must be a list of addresses."),
        ({"name": ""}, "This field is required."),
    ]
    for change, message in cases:
        response = client.post(RULES, {**RULE, **change})
        assert response.status_code == 400, change
        assert message in field_errors(response), (change, field_errors(response))
        # What was typed stays in the form.
        assert 'value="p95"' in response.content.decode() or change == {"name": ""}
    assert AlertRule.objects.count() == 0
    assert not AuditEvent.objects.filter(action="alert_rule.created").exists()


def test_engineer_edits_a_rule_and_the_change_is_audited(deployment, engineer):
    rule = alerts.create_alert_rule(actor=engineer, deployment=deployment, name="errors",
                                    metric="error_rate", threshold=1.0)
    alerts.create_alert_rule(actor=engineer, deployment=deployment, name="taken",
                             metric="error_rate", threshold=5.0)
    client = logged_in(engineer)
    url = f"{RULES}{rule.pk}/edit/"
    form = client.get(url).content.decode()
    assert 'value="errors"' in form and '<option value="error_rate" selected>' in form

    renamed = client.post(url, {**RULE, "name": "taken", "metric": "error_rate"})
    assert renamed.status_code == 400
    assert "already has a rule named 'taken'" in field_errors(renamed)
    unknown = client.post(url, {**RULE, "name": "errors", "metric": "psi_maximum"})
    assert "Unknown metric 'psi_maximum'" in field_errors(unknown)
    rule.refresh_from_db()
    assert (rule.name, rule.metric, rule.threshold) == ("errors", "error_rate", 1.0)

    data = {**RULE, "name": "errors", "metric": "error_rate", "threshold": "2.5"}
    del data["enabled"]  # an unchecked box is not sent
    assert client.post(url, data).status_code == 302
    rule.refresh_from_db()
    assert (rule.threshold, rule.enabled, rule.webhook_url) == \
        (2.5, False, HOOK)
    event = AuditEvent.objects.get(action="alert_rule.updated")
    assert event.before["threshold"] == 1.0 and event.after["threshold"] == 2.5


def test_viewers_cannot_change_rules_and_outsiders_do_not_see_them(deployment, engineer, viewer,
                                                                   outsider):
    rule = alerts.create_alert_rule(actor=engineer, deployment=deployment, name="errors",
                                    metric="error_rate", threshold=1.0)
    page = logged_in(viewer).get("/monitoring/deployments/churn-prod/").content.decode()
    assert f"/rules/{rule.pk}/edit/" not in page
    refused = logged_in(viewer).post(f"{RULES}{rule.pk}/edit/", {**RULE, "name": "errors"})
    assert refused.status_code == 400
    assert "editing alert rules needs engineer or higher" in refused.content.decode()
    created = logged_in(viewer).post(RULES, RULE)
    assert "creating alert rules needs engineer" in created.content.decode()
    assert AlertRule.objects.count() == 1
    assert logged_in(outsider).get(f"{RULES}{rule.pk}/edit/").status_code == 404
    assert logged_in(outsider).post(RULES, RULE).status_code == 404


def test_sampling_rate_form(deployment, engineer, viewer):
    url = "/monitoring/deployments/churn-prod/settings/"
    client = logged_in(engineer)
    assert 'value="1.0"' in client.get(url).content.decode()
    bad = client.post(url, {"sampling_rate": "1.5"})
    assert bad.status_code == 400
    assert "sampling_rate must be between 0 and 1." in field_errors(bad)
    assert not DeploymentMonitoring.objects.exists()
    assert client.post(url, {"sampling_rate": "0.25"}).status_code == 302
    assert ingest.sampling_rate_of(deployment) == 0.25
    assert AuditEvent.objects.filter(action="deployment_monitoring.updated",
                                     actor=engineer).exists()
    refused = logged_in(viewer).post(url, {"sampling_rate": "0.5"})
    assert refused.status_code == 400 and "needs engineer" in refused.content.decode()
    assert ingest.sampling_rate_of(deployment) == 0.25


def test_drift_thresholds_form(deployment, ml_model, maintainer, engineer, outsider):
    url = "/monitoring/models/churn/settings/"
    assert "/monitoring/models/churn/settings/" in logged_in(engineer).get(
        "/monitoring/models/churn/").content.decode()
    refused = logged_in(engineer).post(url, {"psi_threshold": "0.3", "p_value_threshold": "0.05",
                                             "task": "classification"})
    assert refused.status_code == 400
    assert "changing drift thresholds needs maintainer" in refused.content.decode()
    assert not ModelMonitoring.objects.exists()

    client = logged_in(maintainer)
    bad = client.post(url, {"psi_threshold": "-1", "p_value_threshold": "0.05",
                            "task": "classification"})
    assert "psi_threshold must be between 0 and 10." in field_errors(bad)
    assert client.post(url, {"psi_threshold": "0.3", "p_value_threshold": "0.05",
                             "task": "classification"}).status_code == 302
    row = ModelMonitoring.objects.get(model=ml_model)
    assert (row.psi_threshold, row.p_value_threshold, row.task) == (0.3, 0.05, "classification")
    assert services.thresholds_of(ml_model) == {"psi": 0.3, "p_value": 0.05, "js": 0.1}
    assert AuditEvent.objects.filter(action="model_monitoring.updated", actor=maintainer).exists()
    assert logged_in(outsider).get(url).status_code == 404
