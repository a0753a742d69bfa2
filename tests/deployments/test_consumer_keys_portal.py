"""The team's consumer keys page (list, create with the secret once, edit limits, revoke with a
confirmation) and the deployment page's Callers panel, through Django's test client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from deployments.models import ConsumerKey
from teams import tokens
from teams.models import AuditEvent
from tests.deployments.keys_fixtures import traffic
from tests.factories import make_consumer_key

pytestmark = pytest.mark.django_db
PAGE = "/teams/ml-search/consumer-keys/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_maintainer_creates_a_key_and_sees_the_secret_once(maintainer, search, churn):
    client = logged_in(maintainer)
    assert "Consumer keys" in client.get("/teams/ml-search/").content.decode()
    page = client.get(PAGE).content.decode()
    assert "No consumer keys yet" in page and "Create a consumer key" in page
    response = client.post(PAGE, {"name": "search-api", "deployments": ["search-rank"],
                                  "rate_per_s": "5", "burst": "", "expires_at": ""})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    page = response.content.decode()
    key = ConsumerKey.objects.get()
    secret = page.split('id="new-key-secret">')[1].split("<")[0]
    assert secret.startswith("mpk_") and tokens.matches(secret, key.digest)
    assert "it will not be shown again" in page and 'data-copy="new-key-secret"' in page
    assert "/serve/search-rank/invocations" in page and "$MODELPORT_KEY" in page
    assert (key.rate_per_s, key.burst) == (5, 5)
    again = client.get(PAGE).content.decode()
    assert secret not in again and f"mpk_{key.prefix}_…" in again and "5/s" in again


def test_refusals_show_on_the_form_and_write_nothing(maintainer, search, foreign):
    client = logged_in(maintainer)
    response = client.post(PAGE, {"name": "Bad Name", "deployments": ["search-rank"]})
    assert response.status_code == 400 and "not a valid key name" in response.content.decode()
    response = client.post(PAGE, {"name": "x", "deployments": ["ads-ctr"]})
    assert response.status_code == 400  # not one of the choices: the form refuses it
    response = client.post(PAGE, {"name": "x", "deployments": ["search-rank"], "burst": "4"})
    assert response.status_code == 400 and "needs a rate" in response.content.decode()
    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(PAGE, {"name": "x", "deployments": ["search-rank"],
                                  "expires_at": past})
    assert response.status_code == 400 and "in the future" in response.content.decode()
    assert not ConsumerKey.objects.exists() and not AuditEvent.objects.exists()


def test_members_read_only_maintainers_change(engineer, outsider, team, search):
    key, _ = make_consumer_key(team, [search], name="search-api")
    page = logged_in(engineer).get(PAGE).content.decode()
    assert "search-api" in page and "Create a consumer key" not in page and "Revoke…" not in page
    response = logged_in(engineer).post(PAGE, {"name": "x", "deployments": ["search-rank"]})
    assert not ConsumerKey.objects.filter(name="x").exists()
    assert "maintainer" in response.content.decode()
    logged_in(engineer).post(f"{PAGE}{key.pk}/revoke/")
    key.refresh_from_db()
    assert key.revoked_at is None
    assert logged_in(outsider).get(PAGE).status_code == 404
    assert logged_in(outsider).get(f"{PAGE}{key.pk}/edit/").status_code == 404


def test_edit_limits(maintainer, team, search, churn):
    key, _ = make_consumer_key(team, [search], name="search-api", rate_per_s=5, burst=5)
    client = logged_in(maintainer)
    form = client.get(f"{PAGE}{key.pk}/edit/").content.decode()
    assert "Limits of search-api" in form and 'value="5"' in form
    response = client.post(f"{PAGE}{key.pk}/edit/", {"deployments": ["search-rank", "churn"],
                                                      "rate_per_s": "50", "burst": "80"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.rate_per_s, key.burst) == (50, 80)
    assert sorted(key.deployments.values_list("name", flat=True)) == ["churn", "search-rank"]
    response = client.post(f"{PAGE}{key.pk}/edit/", {"deployments": ["churn"],
                                                      "rate_per_s": "", "burst": "3"})
    assert response.status_code == 400 and "needs a rate" in response.content.decode()
    key.refresh_from_db()
    assert key.burst == 80


def test_revoke_asks_first(maintainer, team, search):
    key, _ = make_consumer_key(team, [search], name="search-api")
    client = logged_in(maintainer)
    confirm = client.get(f"{PAGE}{key.pk}/revoke/").content.decode()
    assert "Revoke search-api?" in confirm and "within about a second" in confirm
    key.refresh_from_db()
    assert key.revoked_at is None  # asking changes nothing
    response = client.post(f"{PAGE}{key.pk}/revoke/", follow=True)
    assert "Revoked &#x27;search-api&#x27;" in response.content.decode()
    key.refresh_from_db()
    assert key.status == "revoked"
    assert AuditEvent.objects.filter(action="consumer_key.revoked").count() == 1


def test_deployment_page_shows_callers(viewer, team, search):
    now = timezone.now()
    key, _ = make_consumer_key(team, [search], name="search-api", rate_per_s=2, burst=4)
    traffic(key, search, now - timedelta(minutes=3), 120, 17)
    traffic(key, search, now - timedelta(hours=6), 1000, 0)
    page = logged_in(viewer).get("/deployments/search-rank/").content.decode()
    section = page.split('id="callers"')[1].split("</section>")[0]
    assert "search-api" in section and "2/s, burst 4" in section
    assert "<td>120</td><td><strong>17</strong></td>" in section
    assert "<td>1120 <meter" in section


def test_console_lists_keys_and_revokes_through_the_service(admin_user, team, search):
    key, secret = make_consumer_key(team, [search], name="search-api", rate_per_s=3, burst=3)
    console = logged_in(admin_user)
    listing = console.get("/admin/deployments/consumerkey/").content.decode()
    assert "search-api" in listing and key.prefix in listing
    detail = console.get(f"/admin/deployments/consumerkey/{key.pk}/change/").content.decode()
    assert key.digest not in detail and secret not in detail
    console.post("/admin/deployments/consumerkey/", {"action": "revoke",
                                                     "_selected_action": [str(key.pk)]})
    key.refresh_from_db()
    assert key.status == "revoked"
    event = AuditEvent.objects.get(action="consumer_key.revoked")
    assert event.actor_username == admin_user.username
