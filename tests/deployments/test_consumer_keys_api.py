"""``/api/v1/consumer-keys/``, ``/api/v1/deployments/{name}/callers/``, and consumer keys
refused by the REST API (registry, admin, tokens…)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.models import ConsumerKey
from teams.models import AuditEvent
from tests.deployments.keys_fixtures import traffic
from tests.factories import make_consumer_key

pytestmark = pytest.mark.django_db
URL = "/api/v1/consumer-keys/"


def test_create_shows_the_secret_once(api_as, maintainer, search, churn):
    api = api_as(maintainer)
    response = api.post(URL, {"team": "ml-search", "name": "search-api",
                              "deployments": ["search-rank", "churn"],
                              "rate_limit": {"per_second": 20, "burst": 40}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("mpk_") and response["Cache-Control"] == "no-store"
    assert body["deployments"] == ["churn", "search-rank"]
    assert body["rate_limit"] == {"per_second": 20.0, "burst": 40}
    assert (body["status"], body["team"], body["created_by"]) == ("active", "ml-search", "mia")
    listed = api.get(URL).json()
    assert listed["count"] == 1 and "secret" not in listed["results"][0]
    assert body["secret"] not in str(listed)
    one = api.get(f"{URL}{body['id']}/").json()
    assert one["prefix"] == body["prefix"] and "secret" not in one


def test_rate_defaults_and_no_limit(api_as, maintainer, search):
    api = api_as(maintainer)
    body = api.post(URL, {"team": "ml-search", "name": "a", "deployments": ["search-rank"],
                          "rate_limit": {"per_second": 2.5}}, format="json").json()
    assert body["rate_limit"] == {"per_second": 2.5, "burst": 3}
    body = api.post(URL, {"team": "ml-search", "name": "b", "deployments": ["search-rank"]},
                    format="json").json()
    assert body["rate_limit"] is None and body["expires_at"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"deployments": ["ads-ctr"]}, "deployments"),
    ({"deployments": []}, "deployments"),
    ({"deployments": "search-rank"}, "deployments"),
    ({"name": "Bad Name"}, "name"),
    ({"rate_limit": {"per_second": 0}}, "rate_limit"),
    ({"rate_limit": {"per_second": "5"}}, "rate_limit"),
    ({"rate_limit": {"burst": 5}}, "rate_limit"),
    ({"rate_limit": {"per_second": 5, "burst": 0}}, "rate_limit"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "soon"}, "expires_at"),
    # a misspelt limit must not leave the key silently unlimited
    ({"rate_per_s": 2, "burst": 3}, "rate_per_s"),
    ({"rate_limit": {"per_second": 2, "bursts": 3}}, "rate_limit"),
])
def test_bad_bodies_are_400_naming_the_field(api_as, maintainer, search, foreign, body, field):
    response = api_as(maintainer).post(URL, {"team": "ml-search", "name": "search-api",
                                             "deployments": ["search-rank"], **body},
                                       format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert not ConsumerKey.objects.exists() and not AuditEvent.objects.exists()


def test_foreign_deployment_is_named(api_as, maintainer, search, foreign):
    response = api_as(maintainer).post(URL, {"team": "ml-search", "name": "x",
                                             "deployments": ["search-rank", "ads-ctr"]},
                                       format="json")
    assert response.status_code == 400
    assert "ads-ctr" in response.json()["deployments"][0]


def test_roles(api_as, engineer, outsider, admin_user, search):
    body = {"team": "ml-search", "name": "x", "deployments": ["search-rank"]}
    response = api_as(engineer).post(URL, body, format="json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert api_as(outsider).post(URL, body, format="json").status_code == 404
    assert api_as(None).get(URL).status_code == 401
    assert api_as(admin_user).post(URL, body, format="json").status_code == 201
    key = ConsumerKey.objects.get()
    assert api_as(outsider).get(f"{URL}{key.pk}/").status_code == 404
    assert api_as(outsider).delete(f"{URL}{key.pk}/").status_code == 404
    assert api_as(engineer).get(f"{URL}{key.pk}/").status_code == 200  # members read
    assert api_as(engineer).delete(f"{URL}{key.pk}/").status_code == 403
    assert api_as(engineer).patch(f"{URL}{key.pk}/", {"rate_limit": None},
                                  format="json").status_code == 403
    assert api_as(outsider).get(URL).json()["count"] == 0


def test_duplicate_active_name_is_409(api_as, maintainer, search):
    api = api_as(maintainer)
    body = {"team": "ml-search", "name": "x", "deployments": ["search-rank"]}
    assert api.post(URL, body, format="json").status_code == 201
    response = api.post(URL, body, format="json")
    assert response.status_code == 409 and response.json()["code"] == "name_taken"


def test_patch_limits_and_deployments(api_as, maintainer, team, search, churn):
    key, _ = make_consumer_key(team, [search], rate_per_s=5, burst=5)
    api = api_as(maintainer)
    response = api.patch(f"{URL}{key.pk}/", {"deployments": ["churn"],
                                             "rate_limit": {"per_second": 50}}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["deployments"] == ["churn"]
    assert response.json()["rate_limit"] == {"per_second": 50.0, "burst": 50}
    response = api.patch(f"{URL}{key.pk}/", {"rate_limit": None}, format="json")
    assert response.json()["rate_limit"] is None
    response = api.patch(f"{URL}{key.pk}/", {"deployments": ["nope"]}, format="json")
    assert response.status_code == 400 and "nope" in response.json()["deployments"][0]
    response = api.patch(f"{URL}{key.pk}/", {"rate_limit": {}}, format="json")  # found by
    assert response.status_code == 400 and "per_second" in response.json()["rate_limit"]  # fuzz
    response = api.patch(f"{URL}{key.pk}/", {"secret": "mine"}, format="json")
    assert response.status_code == 400 and "secret" in response.json()  # it never changes
    assert key.digest == type(key).objects.get(pk=key.pk).digest


def test_revoke_by_delete_and_by_post(api_as, maintainer, team, search):
    first, _ = make_consumer_key(team, [search], name="one")
    second, _ = make_consumer_key(team, [search], name="two")
    api = api_as(maintainer)
    assert api.delete(f"{URL}{first.pk}/").status_code == 204
    response = api.post(f"{URL}{second.pk}/revoke/")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert api.delete(f"{URL}{first.pk}/").status_code == 204  # again: no change
    assert AuditEvent.objects.filter(action="consumer_key.revoked").count() == 2
    response = api.patch(f"{URL}{first.pk}/", {"rate_limit": None}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "key_revoked"
    assert api.get(URL, {"status": "revoked"}).json()["count"] == 2
    assert api.get(URL, {"status": "active"}).json()["count"] == 0


def test_filters(api_as, viewer, team, search, churn, foreign):
    make_consumer_key(team, [search], name="a")
    make_consumer_key(team, [search, churn], name="b")
    make_consumer_key(team, [churn], name="old", expires_at=timezone.now() - timedelta(days=1))
    make_consumer_key(foreign.team, [foreign], name="theirs")
    api = api_as(viewer)

    def names(**params) -> list[str]:
        return [k["name"] for k in api.get(URL, params).json()["results"]]

    assert names() == ["a", "b", "old"]
    assert names(deployment="search-rank") == ["a", "b"]
    assert names(status="expired") == ["old"] and names(status="active") == ["a", "b"]
    assert names(team="ml-ads") == []
    assert api.get(URL, {"status": "nope"}).status_code == 400


def test_callers(api_as, viewer, outsider, team, search):
    now = timezone.now()
    key, _ = make_consumer_key(team, [search], name="search-api", rate_per_s=1, burst=2)
    traffic(key, search, now - timedelta(minutes=2), 30, 4)
    traffic(key, search, now - timedelta(hours=5), 70, 1)
    api = api_as(viewer)
    body = api.get("/api/v1/deployments/search-rank/callers/", {"window": "1h"}).json()
    assert body["window"] == "1h" and len(body["callers"]) == 1
    row = body["callers"][0]
    assert (row["name"], row["requests"], row["limited"]) == ("search-api", 30, 4)
    assert row["rate_limit"] == {"per_second": 1.0, "burst": 2} and row["last_seen"]
    day = api.get("/api/v1/deployments/search-rank/callers/").json()  # default 24h
    assert (day["window"], day["callers"][0]["requests"]) == ("24h", 100)
    assert api.get("/api/v1/deployments/search-rank/callers/",
                   {"window": "2y"}).status_code == 400
    assert api_as(outsider).get("/api/v1/deployments/search-rank/callers/").status_code == 404


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/api/v1/models/"),
    ("get", "/api/v1/deployments/"),
    ("get", "/api/v1/deployments/search-rank/"),
    ("get", "/api/v1/tokens/"),
    ("post", "/api/v1/tokens/"),
    ("get", "/api/v1/teams/"),
    ("get", "/api/v1/platform/settings/"),
    ("get", "/api/v1/consumer-keys/"),
    ("get", "/api/v1/audit/"),
    ("get", "/metrics"),
])
def test_consumer_keys_never_authenticate_the_api(team, search, method, path, admin_user):
    _, secret = make_consumer_key(team, [search])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = getattr(api, method)(path, {"name": "x"} if method == "post" else None,
                                    format="json")
    assert response.status_code == 401, response.content
    if path != "/metrics":
        assert response.json()["code"] == "consumer_key_not_accepted"
        assert "/serve/" in response.json()["detail"]


def test_admin_console_ignores_consumer_keys(client, team, search):
    """Django admin is session-only: a Bearer key signs no one in."""
    _, secret = make_consumer_key(team, [search])
    response = client.get("/admin/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_mlflow_route_refuses_consumer_keys_by_name(client, team, search):
    _, secret = make_consumer_key(team, [search])
    response = client.get("/mlflow/api/2.0/mlflow/experiments/search",
                          HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 401 and "only at /serve/" in response.json()["message"]
