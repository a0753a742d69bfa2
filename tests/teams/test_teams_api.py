from __future__ import annotations

import pytest

from teams.models import AuditEvent, Team
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


def test_platform_admin_creates_team_and_becomes_audited(admin_user):
    response = bearer_client(admin_user).post("/api/v1/teams/",
                                              {"slug": "fraud", "name": "Fraud"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "fraud"
    event = AuditEvent.objects.get(action="team.created", object_repr="fraud")
    assert event.actor == admin_user
    assert event.after == {"slug": "fraud", "name": "Fraud", "description": ""}
    assert event.source == "api"


def test_duplicate_slug_is_409_and_changes_nothing(admin_user, team):
    response = bearer_client(admin_user).post("/api/v1/teams/",
                                              {"slug": team.slug, "name": "Again"}, format="json")
    assert response.status_code == 409
    assert response.json() == {"detail": "A team with slug 'ml-search' already exists.",
                               "code": "slug_taken"}
    assert Team.objects.get(slug=team.slug).name == "ML Search"


@pytest.mark.parametrize("slug", ["Upper", "-lead", "trail-", "with space", "a" * 51, ""])
def test_invalid_slug_is_400_naming_the_field(admin_user, slug):
    response = bearer_client(admin_user).post("/api/v1/teams/", {"slug": slug, "name": "X"},
                                              format="json")
    assert response.status_code == 400
    assert "slug" in response.json()
    assert not Team.objects.exists()


def test_missing_name_is_400(admin_user):
    response = bearer_client(admin_user).post("/api/v1/teams/", {"slug": "ok"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


def test_malformed_json_is_400_with_a_reason(admin_user):
    response = bearer_client(admin_user).post("/api/v1/teams/", data='{"slug": ',
                                              content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert "Malformed request body" in response.json()["detail"]


def test_members_see_only_their_teams(team, engineer, admin_user):
    other = Team.objects.create(slug="other", name="Other")
    listed = bearer_client(engineer).get("/api/v1/teams/").json()
    assert [t["slug"] for t in listed["results"]] == [team.slug]
    assert listed["results"][0]["my_role"] == "engineer"
    assert bearer_client(engineer).get(f"/api/v1/teams/{other.slug}/").status_code == 404
    everything = bearer_client(admin_user).get("/api/v1/teams/").json()
    assert {t["slug"] for t in everything["results"]} == {"ml-search", "other"}


def test_unknown_team_is_404(admin_user):
    response = bearer_client(admin_user).get("/api/v1/teams/nope/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No team 'nope'.", "code": "not_found"}


def test_search_filters_the_list(admin_user, team):
    Team.objects.create(slug="vision", name="Computer Vision")
    response = bearer_client(admin_user).get("/api/v1/teams/?search=vision").json()
    assert [t["slug"] for t in response["results"]] == ["vision"]


def test_maintainer_edits_team_with_before_and_after_in_audit(team, maintainer):
    response = bearer_client(maintainer).patch(f"/api/v1/teams/{team.slug}/",
                                               {"name": "Search ML"}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "Search ML"
    event = AuditEvent.objects.get(action="team.updated")
    assert event.before["name"] == "ML Search"
    assert event.after["name"] == "Search ML"
    assert event.team == team


def test_engineer_cannot_edit_team(team, engineer):
    response = bearer_client(engineer).patch(f"/api/v1/teams/{team.slug}/", {"name": "Mine"},
                                             format="json")
    assert response.status_code == 403
    assert "maintainer" in response.json()["detail"]
    assert Team.objects.get(pk=team.pk).name == "ML Search"


def test_team_list_is_paginated(admin_user):
    for i in range(3):
        Team.objects.create(slug=f"t{i}", name=f"T{i}")
    body = bearer_client(admin_user).get("/api/v1/teams/?page_size=2").json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"]
