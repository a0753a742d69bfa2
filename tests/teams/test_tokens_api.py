from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from teams import tokens
from teams.models import ApiToken, AuditEvent
from tests.factories import PASSWORD, UserFactory, make_token
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {raw}"}


def test_script_gets_first_token_with_basic_then_calls_api_with_bearer():
    UserFactory(username="ci-bot")
    client = APIClient()
    created = client.post("/api/v1/tokens/", {"name": "pipeline", "expires_in_days": 7},
                          format="json", **basic("ci-bot"))
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "name", "token", "expires_at"}
    assert body["token"].startswith("mpt_")

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert client.get("/api/v1/teams/").status_code == 200
    assert ApiToken.objects.get(pk=body["id"]).last_used_at is not None


def test_secret_is_stored_only_as_a_digest_and_never_listed():
    user = UserFactory(username="ci-bot")
    body = APIClient().post("/api/v1/tokens/", {"name": "pipeline"}, format="json",
                           **basic("ci-bot")).json()
    row = ApiToken.objects.get(pk=body["id"])
    assert row.digest == tokens.digest_of(body["token"])
    assert body["token"] not in str(ApiToken.objects.filter(pk=row.pk).values().first())
    listed = bearer_client(user).get("/api/v1/tokens/").json()
    assert all("token" not in t and "digest" not in t for t in listed["results"])
    event = AuditEvent.objects.get(action="token.created")
    assert body["token"] not in str(event.after)


def test_default_expiry_comes_from_settings(settings):
    settings.MODELPORT_TOKEN_DEFAULT_DAYS = 10
    UserFactory(username="ci-bot")
    body = APIClient().post("/api/v1/tokens/", {"name": "p"}, format="json",
                            **basic("ci-bot")).json()
    expires = ApiToken.objects.get(pk=body["id"]).expires_at
    assert timedelta(days=9, hours=23) < expires - timezone.now() <= timedelta(days=10)


def test_wrong_password_is_401_with_a_reason():
    UserFactory(username="ci-bot")
    response = APIClient().post("/api/v1/tokens/", {"name": "p"}, format="json",
                                **basic("ci-bot", "wrong"))
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid username or password.",
                               "code": "bad_credentials"}
    assert response["WWW-Authenticate"].startswith("Basic")
    assert not ApiToken.objects.exists()


def test_basic_auth_is_refused_everywhere_else():
    UserFactory(username="ci-bot")
    response = APIClient().get("/api/v1/teams/", **basic("ci-bot"))
    assert response.status_code == 401
    assert response.json()["code"] == "basic_not_accepted"
    assert APIClient().get("/api/v1/tokens/", **basic("ci-bot")).status_code == 401


def test_expired_token_is_401_saying_when_it_expired():
    user = UserFactory()
    token, secret = make_token(user)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.get("/api/v1/teams/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"
    assert "expired on" in response.json()["detail"]


def test_revoked_token_is_401_saying_it_was_revoked():
    user = UserFactory()
    token, secret = make_token(user, name="old")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    response = client.get("/api/v1/teams/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_revoked"
    assert AuditEvent.objects.get(action="token.revoked").before["revoked_at"] is None


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "Bearer mpt_x_y",
                                    "Bearer mpt_000000000000_wrong"])
def test_malformed_or_unknown_bearer_is_401(header):
    response = APIClient().get("/api/v1/teams/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_no_credentials_is_401_with_bearer_challenge():
    response = APIClient().get("/api/v1/teams/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_token_of_a_deactivated_user_is_refused():
    user = UserFactory()
    _, secret = make_token(user)
    user.is_active = False
    user.save()
    response = APIClient().get("/api/v1/teams/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 401


@pytest.mark.parametrize("days", [0, -1, 366, "soon", 1.5])
def test_out_of_range_expiry_is_400(days):
    user = UserFactory()
    response = bearer_client(user).post("/api/v1/tokens/",
                                        {"name": "p", "expires_in_days": days}, format="json")
    assert response.status_code == 400
    assert "expires_in_days" in response.json()


def test_empty_name_is_400_and_duplicate_active_name_is_409():
    user = UserFactory()
    client = bearer_client(user)
    assert client.post("/api/v1/tokens/", {"name": " "}, format="json").status_code == 400
    assert client.post("/api/v1/tokens/", {"name": "deploy"}, format="json").status_code == 201
    again = client.post("/api/v1/tokens/", {"name": "deploy"}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "name_taken"


def test_a_user_cannot_see_or_revoke_someone_elses_token():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    token, _ = make_token(alice, name="alice-token")
    client = bearer_client(bob)
    assert client.get(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert client.delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
