"""Alert webhooks never reach internal addresses on an engineer's behalf (issue 24, finding 4).

The would-be victim is a real HTTP listener on 127.0.0.1 (as MLflow, the console or a replica
would be). A rule pointing at it is refused when saved; a rule stored earlier, or whose name's
answer changed, is refused at delivery and the listener receives nothing; a platform admin's
allow-list entry lets the delivery through; a redirect is never followed; and what ``/alerts/``
shows is a status code or a reason, never the destination's answer. Nothing leaves this host.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest

from core.errors import InvalidInput
from monitoring import alerts, tasks
from monitoring.models import Alert, AlertRule
from teams.models import AuditEvent
from tests.fixtures import bearer_client
from tests.loopback import Listener

RULES = "/api/v1/alert-rules/"
SETTINGS = "/api/v1/platform/settings/"


@pytest.fixture
def victim():
    server = Listener()
    yield server
    server.close()


def rule_body(**changes) -> dict:
    return {"deployment": "churn-prod", "name": "errors", "metric": "error_rate",
            "comparison": ">", "threshold": 1, "window_minutes": 5, **changes}


def allow(admin_user, *entries: str) -> None:
    """A platform admin sets the allow-list through the API, as the capacity page does."""
    answer = bearer_client(admin_user).patch(SETTINGS, {"outbound_allowlist": list(entries)},
                                             format="json")
    assert answer.status_code == 200, answer.content


def stored_rule(deployment, **urls) -> AlertRule:
    """A rule written straight to the database: one saved before destinations were checked."""
    return AlertRule.objects.create(deployment=deployment, name="old rule", metric="error_rate",
                                    comparison=">", threshold=1, **urls)


def fire(rule: AlertRule) -> Alert:
    return Alert.objects.create(rule=rule, value=50, started_at=datetime.now(UTC),
                                message=f"{rule.name} is firing")


def shown_outcomes(user) -> dict:
    """What the alerts API shows of the latest alert's deliveries."""
    [alert] = bearer_client(user).get("/api/v1/alerts/").json()["results"][:1]
    return alert["notified"]["firing"]


# --- at save ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "reason"), [
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("localhost", "localhost resolves to 127.0.0.1, a loopback address"),
    ("localhost.", "localhost resolves to 127.0.0.1, a loopback address"),
    ("[::1]", "::1 is a loopback address"),
    ("0.0.0.0", "0.0.0.0 is an unspecified"),
    ("2130706433", "2130706433 (127.0.0.1) is a loopback address"),
    ("0177.0.0.1", "0177.0.0.1 (127.0.0.1) is a loopback address"),
    ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is a loopback address (127.0.0.1 in IPv6 form)"),
])
def test_a_webhook_to_the_loopback_listener_is_refused_at_save(deployment, engineer, victim,
                                                               host, reason):
    client = bearer_client(engineer)
    for field in ("webhook_url", "retrain_webhook_url"):
        answer = client.post(RULES, rule_body(**{field: f"http://{host}:{victim.port}/hook"}),
                             format="json")
        assert answer.status_code == 400, answer.content
        message = " ".join(answer.json()[field])
        assert f"Refused: {reason}" in message and "platform admin" in message
    assert not AlertRule.objects.exists()
    assert not AuditEvent.objects.filter(action="alert_rule.created").exists()
    assert victim.received == []


def test_changing_a_rule_to_an_internal_webhook_is_refused_and_nothing_changes(deployment,
                                                                              engineer, victim):
    client = bearer_client(engineer)
    rule_id = client.post(RULES, rule_body(), format="json").json()["id"]
    answer = client.patch(f"{RULES}{rule_id}/",
                          {"threshold": 9, "webhook_url": f"{victim.url('/x')}"}, format="json")
    assert answer.status_code == 400
    assert "127.0.0.1 is a loopback address" in " ".join(answer.json()["webhook_url"])
    rule = AlertRule.objects.get(pk=rule_id)
    assert (rule.threshold, rule.webhook_url) == (1, "")
    assert victim.received == []


def test_a_rule_whose_stored_webhook_is_now_refused_can_still_be_disabled(deployment, engineer,
                                                                         victim):
    rule = stored_rule(deployment, webhook_url=victim.url("/hook"))
    answer = bearer_client(engineer).patch(f"{RULES}{rule.pk}/", {"enabled": False},
                                           format="json")
    assert answer.status_code == 200, answer.content
    rule.refresh_from_db()
    assert rule.enabled is False


def test_a_url_too_long_to_store_is_a_400_not_a_500(deployment, engineer):
    long_url = "https://93.184.215.14/" + "a" * 500
    answer = bearer_client(engineer).post(RULES, rule_body(webhook_url=long_url), format="json")
    assert answer.status_code == 400 and "webhook_url" in answer.json()
    with pytest.raises(InvalidInput, match="longer than 500 characters"):
        alerts.create_alert_rule(actor=engineer, deployment=deployment, name="long",
                                 metric="error_rate", threshold=1, webhook_url=long_url)


# --- at delivery ------------------------------------------------------------------------------
def test_a_rule_stored_earlier_is_refused_at_delivery_and_the_listener_gets_nothing(
        deployment, engineer, victim):
    rule = stored_rule(deployment, webhook_url=victim.url("/hook", host="localhost"),
                       retrain_webhook_url=victim.url("/retrain"))
    alert = fire(rule)
    outcome = tasks.notify_alert(alert.pk, "firing")
    assert outcome == {
        "webhook": "refused: localhost resolves to 127.0.0.1, a loopback address",
        "retrain": "refused: 127.0.0.1 is a loopback address"}
    assert victim.received == []
    # Refused is final: not retried (a retry would have written "attempt 2…" over it).
    alert.refresh_from_db()
    assert alert.notified == {"firing": outcome}
    assert shown_outcomes(engineer) == outcome


def test_a_destination_allowed_when_saved_is_checked_again_at_delivery(deployment, engineer,
                                                                       admin_user, victim):
    # Allowed by name while the rule is saved; then the name is no longer allowed (as when its
    # DNS answer changes to an internal address): the delivery checks again and refuses.
    allow(admin_user, f"localhost:{victim.port}")
    created = bearer_client(engineer).post(
        RULES, rule_body(webhook_url=victim.url("/hook", host="localhost")), format="json")
    assert created.status_code == 201, created.content
    allow(admin_user)
    alert = fire(AlertRule.objects.get(pk=created.json()["id"]))
    outcome = tasks.notify_alert(alert.pk, "firing")
    assert outcome["webhook"] == "refused: localhost resolves to 127.0.0.1, a loopback address"
    assert victim.received == []


def test_with_the_listener_allow_listed_by_a_platform_admin_the_delivery_arrives(
        deployment, engineer, admin_user, victim):
    allow(admin_user, victim.address)
    created = bearer_client(engineer).post(
        RULES, rule_body(webhook_url=victim.url("/slack"), retrain_webhook_url=victim.url("/ci")),
        format="json")
    assert created.status_code == 201, created.content
    alert = fire(AlertRule.objects.get(pk=created.json()["id"]))
    assert tasks.notify_alert(alert.pk, "firing") == {"webhook": "HTTP 200", "retrain": "HTTP 200"}
    assert [seen.path for seen in victim.received] == ["/slack", "/ci"]
    assert b"FIRING" in victim.received[0].body
    assert shown_outcomes(engineer) == {"webhook": "HTTP 200", "retrain": "HTTP 200"}
    assert AuditEvent.objects.filter(action="platform.settings_changed",
                                     actor=admin_user).exists()


def test_an_engineer_cannot_allow_list_a_destination(engineer, victim):
    answer = bearer_client(engineer).patch(SETTINGS, {"outbound_allowlist": [victim.address]},
                                           format="json")
    assert answer.status_code == 403


def test_a_redirect_from_an_allowed_destination_to_loopback_is_not_followed(
        deployment, engineer, admin_user, victim):
    hop = Listener(status=307, headers={"Location": victim.url("/admin/")})
    try:
        allow(admin_user, hop.address)
        created = bearer_client(engineer).post(RULES, rule_body(webhook_url=hop.url("/hook")),
                                               format="json")
        assert created.status_code == 201, created.content
        alert = fire(AlertRule.objects.get(pk=created.json()["id"]))
        outcome = tasks.notify_alert(alert.pk, "firing")
        assert outcome == {"webhook": "failed (attempt 1): HTTP 307: redirects are not followed"}
        assert len(hop.received) == 1  # not retried either: the answer would be the same
        assert victim.received == []
    finally:
        hop.close()


def test_alerts_show_the_status_never_the_answer(deployment, engineer, admin_user):
    banner = b"SSH-2.0-OpenSSH_9.2 root:x:0:0 mlflow-secret"
    target = Listener(status=500, body=banner)
    try:
        allow(admin_user, target.address)
        created = bearer_client(engineer).post(RULES, rule_body(webhook_url=target.url("/")),
                                               format="json")
        alert = fire(AlertRule.objects.get(pk=created.json()["id"]))
        tasks.notify_alert(alert.pk, "firing")
        shown = bearer_client(engineer).get("/api/v1/alerts/").content
        assert b"mlflow-secret" not in shown and b"OpenSSH" not in shown
        assert shown_outcomes(engineer)["webhook"] == \
            f"failed (attempt {tasks.MAX_ATTEMPTS}): HTTP 500"
    finally:
        target.close()


def test_old_outcomes_that_told_what_listens_where_are_scrubbed(deployment):
    rule = stored_rule(deployment, webhook_url="https://93.184.215.14/x")
    alert = fire(rule)
    alert.notified = {"firing": {
        "webhook": "failed (attempt 4): HTTPConnectionPool(host='127.0.0.1', port=5000): Max "
                   "retries exceeded ([Errno 111] Connection refused)",
        "retrain": "HTTP 200", "email": "sent 1 message(s)"},
        "resolved": {"webhook": "404 Client Error: Not Found for url: http://10.0.0.5/"}}
    alert.save()
    migration = importlib.import_module(
        "monitoring.migrations.0003_scrub_webhook_delivery_outcomes")
    from django.apps import apps
    migration.scrub_outcomes(apps, None)
    alert.refresh_from_db()
    assert alert.notified == {
        "firing": {"webhook": "failed (attempt 4): details removed", "retrain": "HTTP 200",
                   "email": "sent 1 message(s)"},
        "resolved": {"webhook": "details removed"}}


@pytest.mark.parametrize("url", ["https://[8F3]/", "https://[::1:89607719/", "http://[zz]:80/"])
def test_a_malformed_bracketed_host_is_a_400_naming_the_field(api_as, admin_user, deployment,
                                                              url):
    answer = api_as(admin_user).post("/api/v1/alert-rules/", {
        "deployment": deployment.name, "name": "bad url", "metric": "error_rate",
        "comparison": ">", "threshold": 0.1, "webhook_url": url}, format="json")
    assert answer.status_code == 400 and "webhook_url" in answer.json()
