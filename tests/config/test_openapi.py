from __future__ import annotations

from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.test import Client


@pytest.mark.django_db
def test_schema_is_openapi_3_generated_from_the_code():
    response = Client().get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    for path in ["/api/v1/teams/", "/api/v1/teams/{slug}/", "/api/v1/teams/{team_slug}/members/",
                 "/api/v1/tokens/", "/api/v1/audit/", "/api/v1/info/"]:
        assert path in schema["paths"], path
    assert {"bearerAuth", "basicAuth"} <= set(schema["components"]["securitySchemes"])


def test_schema_generates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=StringIO())


@pytest.mark.django_db
def test_swagger_ui_is_served():
    response = Client().get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
