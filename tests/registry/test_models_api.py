from __future__ import annotations

import pytest

from registry import services
from registry.models import ModelVersion, RegisteredModel
from teams.models import AuditEvent
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


def test_engineer_creates_a_model_with_card_and_tags(ml_team, team_engineer):
    response = bearer_client(team_engineer).post("/api/v1/models/", {
        "name": "fraud-detector", "team": "ml-search", "description": "Flags fraud",
        "card": "# Fraud\nTrained on 2026 data.", "tags": ["tabular", "risk"]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["team"], body["tags"], body["latest_version"]) == (
        "ml-search", ["risk", "tabular"], None)
    assert AuditEvent.objects.get(action="model.created").team == ml_team


def test_duplicate_model_name_is_409(iris, team_engineer):
    response = bearer_client(team_engineer).post("/api/v1/models/", {
        "name": "iris", "team": "ml-search"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "name_taken"


@pytest.mark.parametrize("name", ["Iris", "-iris", "iris model", "a" * 101])
def test_bad_model_name_is_400(ml_team, team_engineer, name):
    response = bearer_client(team_engineer).post("/api/v1/models/", {
        "name": name, "team": "ml-search"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()
    assert not RegisteredModel.objects.exists()


def test_viewers_read_but_cannot_register(iris, team_viewer):
    client = bearer_client(team_viewer)
    assert client.get("/api/v1/models/iris/").status_code == 200
    response = client.post("/api/v1/models/", {"name": "new", "team": "ml-search"},
                           format="json")
    assert response.status_code == 403


def test_other_teams_models_are_invisible(iris):
    stranger = UserFactory(username="stranger")
    MembershipFactory(team=TeamFactory(slug="other"), user=stranger, role=Role.MAINTAINER)
    client = bearer_client(stranger)
    assert client.get("/api/v1/models/").json()["count"] == 0
    assert client.get("/api/v1/models/iris/").status_code == 404
    assert client.get("/api/v1/models/iris/versions/").status_code == 404
    response = client.post("/api/v1/models/", {"name": "x", "team": "ml-search"}, format="json")
    assert response.status_code == 404


def test_list_filters_by_team_tag_alias_and_search(iris, ml_team, team_engineer):
    services.create_model(actor=team_engineer, team=ml_team, name="churn", tags=["marketing"])
    client = bearer_client(team_engineer)

    def names(query: str) -> list[str]:
        return [m["name"] for m in client.get(f"/api/v1/models/?{query}").json()["results"]]

    assert names("team=ml-search") == ["churn", "iris"]
    assert names("tag=demo") == ["iris"]
    assert names("search=classifier") == ["iris"]
    assert names("alias=production") == []


def test_model_edit_is_audited_with_before_and_after(iris, team_engineer):
    response = bearer_client(team_engineer).patch("/api/v1/models/iris/",
                                                  {"card": "## Card"}, format="json")
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="model.updated")
    assert (event.before["card"], event.after["card"]) == ("", "## Card")


def test_only_maintainers_delete_models(iris, team_engineer, team_maintainer):
    assert bearer_client(team_engineer).delete("/api/v1/models/iris/").status_code == 403
    assert bearer_client(team_maintainer).delete("/api/v1/models/iris/").status_code == 204
    assert not RegisteredModel.objects.exists()


def _seed(team, user, count: int) -> None:
    for i in range(count):
        model = RegisteredModel.objects.create(name=f"m{i:03d}", team=team, created_by=user)
        for n in (1, 2):
            ModelVersion.objects.create(model=model, version=n, source_format="mlflow",
                                        status="ready")


def test_model_list_runs_a_constant_number_of_queries(ml_team, team_engineer,
                                                      django_assert_max_num_queries):
    _seed(ml_team, team_engineer, 30)
    client = bearer_client(team_engineer)
    client.get("/api/v1/models/?page_size=1")  # warm up auth/session caches
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (2, 30):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/api/v1/models/?page_size={size}")
        assert len(response.json()["results"]) == size
        counts.append(len(captured))
    assert counts[0] == counts[1], counts


def test_version_list_runs_a_constant_number_of_queries(ml_team, team_engineer):
    _seed(ml_team, team_engineer, 1)
    model = RegisteredModel.objects.get()
    for n in range(3, 25):
        ModelVersion.objects.create(model=model, version=n, source_format="mlflow")
    client = bearer_client(team_engineer)
    client.get(f"/api/v1/models/{model.name}/versions/?page_size=1")  # warm-up: token last-used
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (2, 20):
        with CaptureQueriesContext(connection) as captured:
            client.get(f"/api/v1/models/{model.name}/versions/?page_size={size}")
        counts.append(len(captured))
    assert counts[0] == counts[1], counts
