"""The API's rules for input that no single serializer states: JSON as typed, strings the database
can store, each query parameter once, errors as JSON even before a view runs."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from django.test import Client
from rest_framework import serializers

from core.rest import CoresField
from tests.fixtures import bearer_client


@pytest.fixture
def admin_api(admin_user):
    return bearer_client(admin_user)


@pytest.mark.parametrize("body", [
    '{"name": "a\\u0000b"}', '{"name": "ok", "expires_in_days": 3, "x\\u0000": 1}',
    '{"name": "\\ud800"}', '{"name": ["fine", {"deep": "\\udfff"}]}'])
@pytest.mark.django_db
def test_nul_and_lone_surrogates_in_a_json_body_are_400_naming_where(admin_api, body):
    response = admin_api.post("/api/v1/tokens/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert "not allowed (at $" in response.json()["detail"]


@pytest.mark.django_db
def test_a_body_nested_too_deeply_is_400_not_500(admin_api):
    response = admin_api.post("/api/v1/tokens/", data="[" * 100_000 + "]" * 100_000,
                              content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.django_db
def test_nul_in_the_query_is_400_and_in_the_path_404(admin_api):
    query = admin_api.get("/api/v1/alerts/?deployment=a%00b")
    assert query.status_code == 400 and query.json()["code"] == "invalid"
    path = admin_api.get("/api/v1/models/a%00b/")
    assert path.status_code == 404 and path.json() == {"detail": "Not found.",
                                                       "code": "not_found"}


@pytest.mark.django_db
def test_a_query_parameter_given_twice_is_400(admin_api):
    response = admin_api.get("/api/v1/models/?team=a&team=b")
    assert response.status_code == 400
    assert "repeated: team" in response.json()["detail"]


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"name": 0}, "name", "Not a valid string."),
    ({"name": "ok", "expires_in_days": "3"}, "expires_in_days", "A valid integer is required."),
    ({"name": "ok", "expires_in_days": True}, "expires_in_days", "A valid integer is required."),
])
@pytest.mark.django_db
def test_json_values_of_the_wrong_type_are_400_not_coerced(admin_api, body, field, message):
    response = admin_api.post("/api/v1/tokens/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {field: [message]}


@pytest.mark.django_db
def test_a_whole_float_is_an_integer_as_in_json_schema(admin_api):
    response = admin_api.post("/api/v1/tokens/", {"name": "ok", "expires_in_days": 3.0},
                              format="json")
    assert response.status_code == 201


@pytest.mark.django_db
def test_only_json_bodies_are_parsed(admin_api):
    response = admin_api.post("/api/v1/tokens/", {"name": "form"}, format="multipart")
    assert response.status_code == 415


@pytest.mark.django_db
def test_a_path_no_api_route_matches_is_a_json_404(admin_api):
    response = admin_api.get("/api/v1/teams/UPPER-case/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


@pytest.mark.parametrize(("query", "status"), [
    ("page_size=0", 400), ("page_size=x", 400), ("page_size=501", 400), ("page=", 404),
    ("page=0", 404), ("page_size=2&page=1", 200)])
@pytest.mark.django_db
def test_pagination_parameters_are_checked_not_ignored(admin_api, query, status):
    assert admin_api.get(f"/api/v1/teams/?{query}").status_code == status


@pytest.mark.parametrize("query", ["since=", "until=", "since=yesterday"])
@pytest.mark.django_db
def test_an_empty_or_malformed_typed_filter_is_400(admin_api, query):
    response = admin_api.get(f"/api/v1/audit/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


@pytest.mark.django_db
def test_a_boolean_filter_takes_true_or_false_only(admin_api):
    assert admin_api.get("/api/v1/targets/?enabled=true").status_code == 200
    assert admin_api.get("/api/v1/targets/?enabled=yes").status_code == 400


@pytest.mark.parametrize(("value", "expected"), [
    (0.0001, Decimal("0.001")), (1.5, Decimal("1.500")), (8.009796567969496e-297,
                                                          Decimal("0.001")), (0, Decimal(0))])
def test_cores_are_rounded_up_to_millicores(value, expected):
    assert CoresField().run_validation(value) == expected


@pytest.mark.parametrize("value", [-0.001, 100000.0001, 1e300])
def test_cores_out_of_range_are_refused(value):
    with pytest.raises(serializers.ValidationError):
        CoresField().run_validation(value)


@pytest.mark.django_db
def test_every_operation_documents_its_errors_with_json_bodies():
    schema = yaml.safe_load(Client().get("/api/v1/schema/").content)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if {} not in operation.get("security", [{}]):
                assert {"401", "403"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "415"} <= codes, (method, path)
            for code, response in operation["responses"].items():
                if code >= "400":
                    assert "application/json" in response["content"], (method, path, code)
    assert "413" in schema["paths"]["/api/v1/models/{model_name}/versions/"]["post"]["responses"]
    assert "429" in schema["paths"]["/api/v1/tokens/"]["post"]["responses"]
