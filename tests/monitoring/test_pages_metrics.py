"""Portal pages (charts drawn by the vendored Chart.js) and the Prometheus endpoint."""

from __future__ import annotations

import json

from django.test import Client

from deployments.models import Revision
from monitoring import alerts, ingest
from monitoring.models import AlertRule

from .conftest import ingest_direct, make_version, minutes_ago, record, roll


def embedded(html: str, element_id: str) -> dict:
    """The JSON a page embeds with ``json_script`` under ``element_id``."""
    start = html.index(f'<script id="{element_id}" type="application/json">')
    body = html[html.index(">", start) + 1:html.index("</script>", start)]
    return json.loads(body)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_deployment_page_draws_charts_and_drift(deployment, viewer):
    ingest_direct(deployment, [record(i, minutes_ago(5), prediction=i % 2) for i in range(30)])
    roll()
    response = logged_in(viewer).get("/monitoring/deployments/churn-prod/?range=1h")
    assert response.status_code == 200
    html = response.content.decode()
    assert "frontend/vendor/chart.umd.js" in html and "cdn" not in html.lower()
    for chart in ("requests", "errors", "latency", "predictions", "drift"):
        assert f'data-chart="{chart}"' in html
    assert 'id="series-all"' in html and 'id="drift-all"' in html
    assert "<code>x1</code>" in html
    assert "Replica CPU and memory" in html


def test_compare_two_revisions_side_by_side(deployment, ml_model, viewer):
    v2 = make_version(ml_model, 2)
    Revision.objects.create(deployment=deployment, number=2, model_version=v2)
    ingest_direct(deployment, [record(i, minutes_ago(5)) for i in range(10)], revision="1")
    ingest_direct(deployment, [record(50 + i, minutes_ago(4), latency=90) for i in range(10)],
                  revision="2")
    roll()
    html = logged_in(viewer).get(
        "/monitoring/deployments/churn-prod/?range=1h&compare=1&compare=2").content.decode()
    assert 'id="series-r1"' in html and 'id="series-r2"' in html
    assert 'id="drift-r1"' in html and 'id="drift-r2"' in html
    assert "Revision 1" in html and "Revision 2" in html
    # Each column holds only its revision's traffic: stable (r1) fast, canary (r2) slow.
    r1, r2 = embedded(html, "series-r1"), embedded(html, "series-r2")
    assert r1["totals"]["requests"] == 10 and r2["totals"]["requests"] == 10
    assert r1["totals"]["latency_p50"] < 20 < 60 < r2["totals"]["latency_p50"]
    assert embedded(html, "drift-r2")["revision"] == 2
    # Changing the range keeps the comparison.
    assert '<input type="hidden" name="compare" value="2">' in html
    # Without a choice the picker offers the two newest revisions (canary vs stable).
    plain = logged_in(viewer).get("/monitoring/deployments/churn-prod/").content.decode()
    assert '<option value="2" selected>' in plain and '<option value="1" selected>' in plain


def test_model_page_and_scoping(deployment, viewer, outsider):
    ingest_direct(deployment, [record(i, minutes_ago(5)) for i in range(10)])
    roll()
    response = logged_in(viewer).get("/monitoring/models/churn/")
    assert response.status_code == 200
    assert b"/monitoring/deployments/churn-prod/" in response.content
    assert logged_in(outsider).get("/monitoring/models/churn/").status_code == 404
    assert logged_in(outsider).get("/monitoring/deployments/churn-prod/").status_code == 404


def test_rules_from_the_page(deployment, engineer, viewer):
    client = logged_in(engineer)
    client.post("/monitoring/deployments/churn-prod/rules/", {
        "name": "errors", "metric": "error_rate", "comparison": ">", "threshold": "1",
        "window_minutes": "5"})
    rule = AlertRule.objects.get()
    client.post("/monitoring/deployments/churn-prod/rules/", {
        "name": "bad", "metric": "nonsense", "comparison": ">", "threshold": "1"})
    assert AlertRule.objects.count() == 1
    logged_in(viewer).post(f"/monitoring/deployments/churn-prod/rules/{rule.pk}/delete/")
    assert AlertRule.objects.count() == 1
    client.post(f"/monitoring/deployments/churn-prod/rules/{rule.pk}/delete/")
    assert AlertRule.objects.count() == 0


def test_prometheus_metrics(deployment, engineer, settings):
    settings.MODELPORT_METRICS_TOKEN = "prometheus-secret"
    ingest_direct(deployment, [record(i, minutes_ago(2)) for i in range(7)])
    alerts.create_alert_rule(actor=engineer, deployment=deployment, name="rpm",
                             metric="requests_per_min", comparison="<", threshold=1000)
    roll()
    alerts.evaluate_alerts()
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer prometheus-secret")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'modelport_ingest_records_total{deployment="churn-prod"}' in text
    assert 'modelport_alerts_firing{deployment="churn-prod"} 1.0' in text
    assert "modelport_rollup_lag_seconds 0.0" in text
    assert "modelport_deployments{status=\"healthy\"}" in text


def test_prometheus_metrics_token(settings, db):
    settings.MODELPORT_METRICS_TOKEN = "s3cret"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_monitoring_index_lists_visible_deployments(deployment, other_deployment, viewer):
    html = logged_in(viewer).get("/monitoring/").content.decode()
    assert "churn-prod" in html and "other-dep" not in html
    assert 'href="/monitoring/"' in html


def test_grafana_dashboard_uses_exposed_metrics(deployment, engineer, admin_user):
    import json
    import re
    from pathlib import Path

    from django.conf import settings

    path = Path(settings.BASE_DIR) / "platform" / "grafana" / "modelport-dashboard.json"
    dashboard = json.loads(path.read_text())
    ingest_direct(deployment, [record(i, minutes_ago(2)) for i in range(2)])
    roll()
    exposed = logged_in(admin_user).get("/metrics").content.decode()
    platform_row = [p for p in dashboard["panels"] if p["gridPos"]["y"] < 29
                    and p["type"] != "row"]
    names = {name for p in platform_row for t in p["targets"]
             for name in re.findall(r"modelport_[a-z_]+", t["expr"])}
    assert names
    for name in names:
        base = re.sub(r"_(bucket|total)$", "", name)
        assert base in exposed, name


def test_monitoring_settings_api(deployment, ml_model, engineer, maintainer, viewer):
    from tests.fixtures import bearer_client

    url = "/api/v1/models/churn/monitoring/"
    assert bearer_client(viewer).get(url).json() == {
        "psi_threshold": 0.2, "p_value_threshold": 0.01, "task": "auto"}
    assert bearer_client(engineer).put(url, {"psi_threshold": 0.3},
                                       format="json").status_code == 403
    body = bearer_client(maintainer).put(url, {"psi_threshold": 0.3, "task": "regression"},
                                         format="json").json()
    assert body["psi_threshold"] == 0.3 and body["task"] == "regression"
    dep_url = "/api/v1/deployments/churn-prod/monitoring/"
    assert bearer_client(engineer).put(dep_url, {"sampling_rate": 0.5},
                                       format="json").json() == {"sampling_rate": 0.5}
    assert bearer_client(engineer).put(dep_url, {"sampling_rate": 2},
                                       format="json").status_code == 400
    assert bearer_client(viewer).get(dep_url).json() == {"sampling_rate": 0.5}


def test_admin_pages(deployment, admin_user, engineer):
    alerts.create_alert_rule(actor=engineer, deployment=deployment, name="rpm",
                             metric="requests_per_min", comparison="<", threshold=1)
    ingest.issue_ingest_token(deployment=deployment)
    client = logged_in(admin_user)
    for path in ("/admin/monitoring/alertrule/", "/admin/monitoring/alert/",
                 "/admin/monitoring/ingesttoken/"):
        assert client.get(path).status_code == 200, path


def test_custom_range_on_the_page(deployment, viewer):
    ingest_direct(deployment, [record(i, minutes_ago(90)) for i in range(4)])
    roll()
    start = minutes_ago(120).strftime("%Y-%m-%dT%H:%M")
    end = minutes_ago(60).strftime("%Y-%m-%dT%H:%M")
    response = logged_in(viewer).get(f"/monitoring/deployments/churn-prod/?start={start}"
                                     f"&end={end}")
    assert response.status_code == 200
    assert "(4 in range)" in response.content.decode()
    bad = logged_in(viewer).get(f"/monitoring/deployments/churn-prod/?start={end}&end={start}")
    assert bad.status_code == 302
