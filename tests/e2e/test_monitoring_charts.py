"""The monitoring charts tell the truth, in a real browser (Debian Chromium): minutes without
traffic are null points drawn as gaps (a request count of 0 stays 0), revisions are markers,
canary and stable are overlaid while traffic is split, the range picker and drag-to-zoom change
the URL and the data, auto-refresh swaps new data in without reloading the page, and the
compare view fits the page at 1440 and 390 px. No console error on the way."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model

from deployments.models import Revision
from monitoring import alerts
from monitoring.models import Alert, AlertRule
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

CHART = """(kind) => {
    const canvas = document.querySelector(`canvas[data-chart="${kind}"]`);
    const chart = canvas && window.Chart.getChart(canvas);
    if (!chart) return null;
    return {labels: chart.data.labels.length,
            datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data,
                                                     spanGaps: d.spanGaps})),
            markers: ((chart.options.plugins || {}).mpMarkers || {}).markers || []};
}"""
# What sticks out past the right edge (named in a failure).
WIDER = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 10)
    .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""
READY = ("() => window.Chart && window.mpCharts && "
         "window.Chart.getChart(document.querySelector('canvas[data-chart=\"latency\"]'))")


def _seed():
    team = TeamFactory(slug="ml-search", name="ML Search")
    MembershipFactory(team=team, user=UserFactory(username="eve"), role=Role.ENGINEER)
    model = RegisteredModel.objects.create(name="churn", team=team)
    deployment = make_deployment(team, model, make_version(model, 1))
    Revision.objects.create(deployment=deployment, number=2, model_version=make_version(model, 2),
                            reason="rollback to revision 1")
    deployment.traffic = [{"revision": 1, "percent": 90}, {"revision": 2, "percent": 10}]
    deployment.save(update_fields=["traffic"])
    # Traffic 40 and 5 minutes ago, nothing in between: the minutes between are gaps.
    ingest_direct(deployment, [record(i, minutes_ago(40), latency=20) for i in range(10)])
    ingest_direct(deployment, [record(100 + i, minutes_ago(5), latency=30, status=500 if i < 2
                                      else 200) for i in range(10)])
    ingest_direct(deployment, [record(200 + i, minutes_ago(5), latency=300) for i in range(5)],
                  revision="2")
    roll()
    return deployment


def _log_in(page, url):
    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill("eve")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def _overflow(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def test_charts_gaps_markers_overlay_range_zoom_and_refresh(live_server, page, screenshot):
    deployment = _seed()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    _log_in(page, live_server.url)
    base = f"{live_server.url}/monitoring/deployments/{deployment.name}/"

    page.goto(f"{base}?range=1h")
    page.wait_for_function(READY)
    latency = page.evaluate(CHART, "latency")
    requests = page.evaluate(CHART, "requests")
    # One point a minute (61: the start is rounded down to its minute).
    assert latency["labels"] in (60, 61) and requests["labels"] == latency["labels"]
    p95 = next(d for d in latency["datasets"] if d["label"] == "p95")
    # Gaps are null points, not zeros, and not joined across.
    assert None in p95["data"] and any(v for v in p95["data"] if v)
    assert all(d["spanGaps"] is False for d in latency["datasets"])
    # A request count of 0 is the truth: zeros, never null.
    counts = requests["datasets"][0]["data"]
    assert None not in counts and 0 in counts and sum(counts) > 0
    # Revisions made in the range are markers; the rollback is one.
    kinds = sorted((m["revision"], m["kind"]) for m in latency["markers"])
    assert kinds == [(1, "deploy"), (2, "rollback")]
    assert all(m["index"] is not None for m in latency["markers"])
    # Canary and stable overlaid while traffic is split.
    labels = [d["label"] for d in latency["datasets"]]
    assert "p95 r1 (90 %)" in labels and "p95 r2 (10 %)" in labels
    errors = [d["label"] for d in page.evaluate(CHART, "errors")["datasets"]]
    assert "errors r1 (90 %)" in errors and "errors r2 (10 %)" in errors
    screenshot("monitoring-charts-01-1h")

    # The range picker: the URL and the data change.
    page.get_by_role("button", name="6h", exact=True).click()
    page.wait_for_url("**range=6h**")
    page.wait_for_function(READY)
    assert page.evaluate(CHART, "latency")["labels"] in (180, 181)  # one point per 2 min

    # Drag across the latency chart: zoomed in, the range is in the URL.
    canvas = page.locator('canvas[data-chart="latency"]')
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.55, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, y, steps=8)
    page.mouse.up()
    page.wait_for_url("**start=**")
    assert "range=" not in page.url and "end=" in page.url
    page.wait_for_function(READY)
    zoomed = page.evaluate(CHART, "latency")["labels"]
    assert 0 < zoomed < 180
    # A fixed range does not follow live traffic: no auto-refresh toggle.
    assert page.get_by_label("Auto-refresh every 30 s").count() == 0

    # Auto-refresh: new traffic appears without reloading the page.
    page.goto(f"{base}?range=1h")
    page.wait_for_function(READY)
    toggle = page.get_by_label("Auto-refresh every 30 s")
    assert toggle.is_checked()
    page.evaluate("() => { window.__notReloaded = true; }")
    before = sum(page.evaluate(CHART, "requests")["datasets"][0]["data"])
    ingest_direct(deployment, [record(300 + i, minutes_ago(2)) for i in range(7)])
    roll()
    assert page.evaluate("() => window.mpCharts.refresh()") is True
    page.wait_for_function(READY)
    after = sum(page.evaluate(CHART, "requests")["datasets"][0]["data"])
    assert after == pytest.approx(before + 7 / 1.0)
    assert page.evaluate("() => window.__notReloaded") is True
    assert "Updated" in page.locator("#refresh-status").inner_text()
    toggle.uncheck()
    assert page.locator("#refresh-status").inner_text() == "Paused"

    # The compare view fits the page, wide and narrow.
    compare = f"{base}?range=1h&compare=1&compare=2"
    for width, height in ((1440, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(compare)
        page.get_by_role("heading", name="Revision 2").wait_for()
        page.wait_for_function(READY)
        assert _overflow(page) <= 0, (f"{width} px: page wider than the screen",
                                      page.evaluate(WIDER))
        screenshot(f"monitoring-charts-02-compare-{width}")
    assert console_errors == []


def test_acknowledge_and_silence_by_clicking(live_server, page):
    deployment = _seed()
    eve = get_user_model().objects.get(username="eve")
    alerts.create_alert_rule(actor=eve, deployment=deployment, name="traffic", comparison="<",
                             metric="requests_per_min", threshold=1000)
    alerts.create_alert_rule(actor=eve, deployment=deployment, name="drift", metric="psi_max",
                             comparison=">", threshold=0.2, window_minutes=60)
    alerts.evaluate_alerts(now=datetime.now(UTC))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    _log_in(page, live_server.url)
    page.goto(f"{live_server.url}/monitoring/deployments/{deployment.name}/?range=1h")
    rules = page.locator("#alert-rules")
    assert re.search(r"not enough data \(\d+ of 100\)", rules.inner_text())

    page.get_by_role("button", name="Acknowledge").click()
    page.get_by_text("acknowledged: no more notifications").wait_for()
    assert "by eve" in page.locator("#recent-alerts").inner_text()
    assert Alert.objects.get(rule__name="traffic").acknowledged_by == eve

    page.get_by_label("Silence traffic for").select_option(label="1 day")
    page.get_by_role("button", name="Silence rule traffic").click()
    page.get_by_text("Alert rule 'traffic' silenced until").wait_for()
    assert AlertRule.objects.get(name="traffic").silenced_until is not None
    page.get_by_role("button", name="Unsilence rule traffic").click()
    page.get_by_text("Alert rule 'traffic' notifies again").wait_for()
    assert AlertRule.objects.get(name="traffic").silenced_until is None
    assert console_errors == []
