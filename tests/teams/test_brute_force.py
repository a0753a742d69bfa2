"""Sign-in brute force is refused (issue 24): django-axes on the portal's /login/, the console's
login and HTTP Basic at POST /api/v1/tokens/.

After ``AXES_FAILURE_LIMIT`` (5) failures of one username from one address, that pair is
refused — even with the right password — until the cool-off has passed: the API with 429
``{"detail", "code": "locked_out"}`` and ``Retry-After``, the login page with a message. Others
still sign in. Axes keeps its records in the database, so each test starts clean (rolled back).
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.test import APIClient

from teams.models import AuditEvent
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
TOKENS = "/api/v1/tokens/"


def basic(username: str, password: str, **extra) -> tuple[int, dict, object]:
    client = APIClient(**extra)
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {raw}")
    response = client.post(TOKENS, {"name": "ci"}, format="json")
    return response.status_code, response.json(), response


def portal_login(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def test_basic_auth_answers_429_with_retry_after_once_the_limit_is_reached(settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    UserFactory(username="eve")
    statuses = [basic("eve", "wrong")[0] for _ in range(4)]
    assert statuses == [401] * 4
    status, body, response = basic("eve", "wrong")
    assert status == 429
    assert body["code"] == "locked_out" and "Too many failed sign-ins" in body["detail"]
    assert 0 < int(response["Retry-After"]) <= 15 * 60


def test_sixty_wrong_passwords_are_not_sixty_guesses():
    UserFactory(username="eve")
    statuses = [basic("eve", f"guess-{n}")[0] for n in range(60)]
    assert statuses.count(401) == 4 and statuses.count(429) == 56


def test_the_right_password_is_refused_during_the_lockout_and_accepted_after_it():
    UserFactory(username="eve")
    for _ in range(5):
        basic("eve", "wrong")
    status, body, _ = basic("eve", PASSWORD)
    assert status == 429 and body["code"] == "locked_out"
    # The cool-off (15 min) passes: the stored failure is moved back in time.
    moved = AccessAttempt.objects.filter(username="eve").update(
        attempt_time=AccessAttempt.objects.get(username="eve").attempt_time - timedelta(
            minutes=16))
    assert moved == 1
    status, body, _ = basic("eve", PASSWORD)
    assert status == 201 and body["token"].startswith("mpt_")


def test_refused_attempts_during_the_lockout_do_not_extend_it():
    UserFactory(username="eve")
    for _ in range(5):
        basic("eve", "wrong")
    recorded = AccessAttempt.objects.get(username="eve")
    for _ in range(5):
        assert basic("eve", "wrong")[0] == 429
    again = AccessAttempt.objects.get(username="eve")
    assert (again.failures_since_start, again.attempt_time) == (
        recorded.failures_since_start, recorded.attempt_time)


def test_others_still_get_a_token_while_one_username_is_locked_out():
    UserFactory(username="eve")
    UserFactory(username="mia")
    for _ in range(5):
        basic("eve", "wrong")
    assert basic("eve", PASSWORD)[0] == 429
    assert basic("mia", PASSWORD)[0] == 201
    # The lock is on the username from that address: eve from her own machine is not locked
    # out by someone guessing from another one.
    assert basic("eve", PASSWORD, REMOTE_ADDR="10.20.30.40")[0] == 201


def test_behind_the_edge_the_forwarded_address_is_the_one_locked():
    """Under `make run` gunicorn listens on a unix socket: no REMOTE_ADDR, the edge's
    X-Forwarded-For names the caller (core.middleware.client_ip)."""
    UserFactory(username="eve")
    attacker = {"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for _ in range(5):
        basic("eve", "wrong", **attacker)
    assert basic("eve", PASSWORD, **attacker)[0] == 429
    assert AccessAttempt.objects.get(username="eve").ip_address == "198.51.100.7"
    assert basic("eve", PASSWORD, REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="198.51.100.8")[0] == 201


def test_a_successful_sign_in_resets_the_count():
    UserFactory(username="eve")
    for _ in range(4):
        basic("eve", "wrong")
    assert basic("eve", PASSWORD)[0] == 201
    assert [basic("eve", "wrong")[0] for _ in range(4)] == [401] * 4


def test_portal_login_shows_the_lockout_message_and_still_lets_others_in():
    UserFactory(username="eve")
    UserFactory(username="mia")
    client = Client()
    for _ in range(4):
        response = portal_login(client, "eve", "wrong")
        assert response.status_code == 200
        assert "didn't match" in response.content.decode()
    response = portal_login(client, "eve", PASSWORD)
    assert response.status_code == 302  # the 5th attempt is the right one: signed in
    client = Client()
    for _ in range(5):
        response = portal_login(client, "eve", "wrong")
    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many failed sign-ins" in html and "Log in to Modelport" in html
    assert int(response["Retry-After"]) > 0
    locked = portal_login(client, "eve", PASSWORD)
    assert locked.status_code == 429 and "_auth_user_id" not in client.session
    other = portal_login(Client(), "mia", PASSWORD)
    assert other.status_code == 302 and other["Location"] == "/"


def test_console_login_is_protected_too(admin_user):
    client = Client()
    for _ in range(5):
        response = client.post("/admin/login/?next=/admin/",
                               {"username": admin_user.username, "password": "wrong"})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()


def test_lockouts_are_audited_and_listed_in_the_console(admin_user):
    UserFactory(username="eve")
    for _ in range(5):
        basic("eve", "wrong")
    event = AuditEvent.objects.get(action="auth.locked_out")
    assert event.object_id == "eve" and event.ip == "127.0.0.1"
    console = Client()
    console.force_login(admin_user)
    page = console.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and "eve" in page.content.decode()
    assert AccessFailureLog.objects.filter(username="eve").count() == 5
    page = console.get("/admin/axes/accessfailurelog/")
    assert page.status_code == 200 and "eve" in page.content.decode()


def test_lockout_parameters_setting_is_validated(monkeypatch):
    from config.settings.env import env_combinations

    parts = ("username", "ip_address", "user_agent")
    monkeypatch.setenv("X_LOCK", "username+ip_address,ip_address")
    assert env_combinations("X_LOCK", [], parts) == [["username", "ip_address"], ["ip_address"]]
    monkeypatch.setenv("X_LOCK", "username+cookie")
    with pytest.raises(ImproperlyConfigured, match="X_LOCK: 'username\\+cookie' is not valid"):
        env_combinations("X_LOCK", [], parts)
