from __future__ import annotations

import pytest

from registry.models import AliasTransitionRequest, ModelAlias, ModelVersion
from teams.models import AuditEvent
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(iris):
    ready = [ModelVersion.objects.create(model=iris, version=n, source_format="mlflow",
                                         status="ready") for n in (1, 2)]
    ModelVersion.objects.create(model=iris, version=3, source_format="mlflow", status="failed")
    return ready


def test_engineer_moves_an_ordinary_alias_and_the_move_is_audited(versions, team_engineer):
    client = bearer_client(team_engineer)
    assert client.put("/api/v1/models/iris/aliases/champion/", {"version": 1},
                      format="json").status_code == 200
    response = client.put("/api/v1/models/iris/aliases/champion/", {"version": 2}, format="json")
    assert response.json()["version"] == 2
    moves = AuditEvent.objects.filter(action="alias.moved").order_by("id")
    assert [(e.before, e.after) for e in moves] == [
        (None, {"version": 1}), ({"version": 1}, {"version": 2})]
    detail = client.get("/api/v1/models/iris/versions/2/").json()
    assert detail["aliases"] == ["champion"]


def test_engineers_move_of_production_becomes_a_request_a_maintainer_approves(
        versions, team_engineer, team_maintainer):
    response = bearer_client(team_engineer).put("/api/v1/models/iris/aliases/production/",
                                                {"version": 2, "comment": "better F1"},
                                                format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert not ModelAlias.objects.exists()

    request_id = response.json()["id"]
    assert bearer_client(team_engineer).post(
        f"/api/v1/models/iris/transition-requests/{request_id}/approve/").status_code == 403
    approved = bearer_client(team_maintainer).post(
        f"/api/v1/models/iris/transition-requests/{request_id}/approve/",
        {"comment": "ok"}, format="json")
    assert approved.status_code == 200
    assert ModelAlias.objects.get(name="production").version.version == 2
    again = bearer_client(team_maintainer).post(
        f"/api/v1/models/iris/transition-requests/{request_id}/reject/")
    assert again.status_code == 409


def test_maintainer_rejects_a_request_and_nothing_moves(versions, team_engineer,
                                                       team_maintainer):
    response = bearer_client(team_engineer).put("/api/v1/models/iris/aliases/production/",
                                                {"version": 1}, format="json")
    rejected = bearer_client(team_maintainer).post(
        f"/api/v1/models/iris/transition-requests/{response.json()['id']}/reject/")
    assert rejected.json()["status"] == "rejected"
    assert not ModelAlias.objects.exists()


def test_maintainer_moves_production_directly(versions, team_maintainer):
    response = bearer_client(team_maintainer).put("/api/v1/models/iris/aliases/production/",
                                                  {"version": 1}, format="json")
    assert response.status_code == 200
    assert not AliasTransitionRequest.objects.exists()


@pytest.mark.parametrize(("version", "status", "message"), [
    (3, 409, "only ready versions"), (9, 404, "has no version 9")])
def test_alias_on_a_version_that_is_not_ready_is_409_and_on_a_missing_one_404(
        versions, team_engineer, version, status, message):
    response = bearer_client(team_engineer).put("/api/v1/models/iris/aliases/champion/",
                                                {"version": version}, format="json")
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert response.json()["field"] == "version"


def test_invalid_alias_name_is_400(versions, team_engineer):
    response = bearer_client(team_engineer).put("/api/v1/models/iris/aliases/9lives/",
                                                {"version": 1}, format="json")
    assert response.status_code == 400


def test_viewer_cannot_move_aliases(versions, team_viewer):
    response = bearer_client(team_viewer).put("/api/v1/models/iris/aliases/champion/",
                                              {"version": 1}, format="json")
    assert response.status_code == 403


def test_deleting_production_needs_a_maintainer(versions, team_engineer, team_maintainer):
    bearer_client(team_maintainer).put("/api/v1/models/iris/aliases/production/",
                                       {"version": 1}, format="json")
    assert bearer_client(team_engineer).delete(
        "/api/v1/models/iris/aliases/production/").status_code == 403
    assert bearer_client(team_maintainer).delete(
        "/api/v1/models/iris/aliases/production/").status_code == 204
