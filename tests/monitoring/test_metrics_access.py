"""`GET /metrics` names every deployment: only Prometheus (bearer MODELPORT_METRICS_TOKEN) and
platform admins (API token or session) read it; anonymous callers get a 401 (issue 24)."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import make_token

pytestmark = pytest.mark.django_db


def get(**headers):
    return Client().get("/metrics", **headers)


def bearer(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_anonymous_gets_401_with_a_bearer_challenge(settings):
    settings.MODELPORT_METRICS_TOKEN = ""
    response = get()
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"modelport_" not in response.content


def test_prometheus_token_reads_the_metrics(settings):
    settings.MODELPORT_METRICS_TOKEN = "prom-secret-123"
    response = get(**bearer("prom-secret-123"))
    assert response.status_code == 200
    assert b"modelport_deployments" in response.content
    assert get(**bearer("prom-secret-12")).status_code == 401
    assert get(HTTP_AUTHORIZATION="Basic cHJvbTpwcm9t").status_code == 401


def test_a_platform_admins_api_token_reads_the_metrics(admin_user, settings):
    settings.MODELPORT_METRICS_TOKEN = ""
    _, secret = make_token(admin_user)
    assert get(**bearer(secret)).status_code == 200


def test_a_platform_admins_session_reads_the_metrics(admin_user):
    client = Client()
    client.force_login(admin_user)
    assert client.get("/metrics").status_code == 200


def test_team_members_are_refused(engineer, maintainer):
    _, secret = make_token(engineer)
    response = get(**bearer(secret))
    assert response.status_code == 403 and b"modelport_" not in response.content
    client = Client()
    client.force_login(maintainer)
    assert client.get("/metrics").status_code == 403


def test_an_unset_metrics_token_never_matches_an_empty_bearer(settings):
    settings.MODELPORT_METRICS_TOKEN = ""
    assert get(HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert get(HTTP_AUTHORIZATION="Bearer").status_code == 401


def test_the_replicas_metrics_have_the_same_rule(settings, engineer):
    """``/metrics/replicas`` (the replicas' own metrics, gathered by the platform) names
    deployments too."""
    settings.MODELPORT_METRICS_TOKEN = "prom-secret-123"
    client = Client()
    assert client.get("/metrics/replicas").status_code == 401
    _, secret = make_token(engineer)
    assert client.get("/metrics/replicas", **bearer(secret)).status_code == 403
    response = client.get("/metrics/replicas", **bearer("prom-secret-123"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
