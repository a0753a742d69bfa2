"""API routes answer a 4xx, never a 500, for OPTIONS and for malformed ids (issue 24).

The causes were shared, so the fixes are: DRF's OPTIONS metadata probed ``get_object()`` (an
``AssertionError`` on the quota route, a ``FieldError`` on the alias route) —
``core.rest.Metadata`` no longer does; DRF's default lookup pattern let ``null,null`` reach a
view filtering an integer pk — ``core.rest.Router`` matches only well-formed keys. The sweep
at the end sends OPTIONS and GET to every API route with plausible and malformed path values.
"""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from teams.roles import Role
from tests.fixtures import bearer_client, member

pytestmark = pytest.mark.django_db


def _json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_options_on_the_alias_route_describes_the_put_body(admin_user, team, who):
    user = admin_user if who == "admin" else member(team, Role.VIEWER, "vera")
    response = bearer_client(user).options("/api/v1/models/any-model/aliases/production/")
    assert response.status_code == 200, response.content[:500]
    assert response.json()["name"] == "Alias"


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_options_on_the_quota_route_answers(admin_user, team, who):
    user = admin_user if who == "admin" else member(team, Role.VIEWER, "vera")
    response = bearer_client(user).options(f"/api/v1/teams/{team.slug}/quota/")
    assert response.status_code == 200, response.content[:500]
    assert "PUT" in response.json()["actions"]


def test_options_without_credentials_is_still_not_a_500(team):
    response = bearer_client(None).options(f"/api/v1/teams/{team.slug}/quota/")
    assert response.status_code in (200, 401)
    assert "actions" not in response.json()


@pytest.mark.parametrize("path", ["/api/v1/alert-rules/null,null/", "/api/v1/alert-rules/1.5/",
                                  "/api/v1/alerts/null/", "/api/v1/resource-requests/NaN/",
                                  "/api/v1/audit/null,null/", "/api/v1/tokens/not-a-uuid/"])
def test_a_malformed_id_is_a_json_404(admin_user, path):
    _json_error(bearer_client(admin_user).get(path), 404, "not_found")


def test_a_well_formed_unknown_alert_rule_is_still_a_404(admin_user):
    _json_error(bearer_client(admin_user).get("/api/v1/alert-rules/987654/"), 404, "not_found")


def test_an_unknown_api_path_is_json_not_an_html_page(admin_user):
    _json_error(bearer_client(admin_user).get("/api/v1/no-such-collection/"), 404, "not_found")


def _api_routes() -> list[str]:
    """Every route under /api/v1/ as a template with ``{name}`` placeholders."""
    routes: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            text = str(p.pattern)
            text = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", text)              # path converters
            text = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", text)           # router regexes
            text = text.replace("^", "").replace("$", "").replace("\\", "")
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + text)
            elif isinstance(p, URLPattern):
                routes.append(prefix + text)

    walk(get_resolver().url_patterns, "/")
    return sorted({r for r in routes if r.startswith("/api/v1/") and "(" not in r})


@pytest.mark.parametrize("value", ["1", "null,null", "x"])
def test_no_api_route_answers_500_to_options_or_get(admin_user, team, value):
    routes = _api_routes()
    assert len(routes) > 30, routes
    client = bearer_client(admin_user)
    client.raise_request_exception = False
    failures = []
    for route in routes:
        path = re.sub(r"\{(\w+)\}", lambda m: team.slug if "slug" in m[1] else value, route)
        for method in ("options", "get"):
            response = getattr(client, method)(path)
            if response.status_code >= 500:
                failures.append(f"{method.upper()} {path} → {response.status_code}")
    assert failures == []
