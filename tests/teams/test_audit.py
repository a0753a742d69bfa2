from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from teams import services
from teams.models import AuditEvent
from tests.factories import TeamFactory, UserFactory
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


def test_audit_record_carries_actor_object_team_request_id_and_source(admin_user):
    client = bearer_client(admin_user)
    client.post("/api/v1/teams/", {"slug": "fraud", "name": "Fraud"}, format="json",
                HTTP_X_REQUEST_ID="req-1234")
    event = AuditEvent.objects.get(action="team.created")
    assert (event.actor_username, event.object_type, event.object_repr, event.team_slug,
            event.request_id, event.source, event.ip) == (
        "root", "team", "fraud", "fraud", "req-1234", "api", "127.0.0.1")


def test_response_echoes_the_request_id(admin_user):
    response = bearer_client(admin_user).get("/api/v1/teams/", HTTP_X_REQUEST_ID="abc-42")
    assert response["X-Request-ID"] == "abc-42"
    generated = bearer_client(admin_user).get("/api/v1/teams/")["X-Request-ID"]
    assert len(generated) == 32


def test_a_refused_mutation_writes_no_audit_record(team, engineer):
    bearer_client(engineer).patch(f"/api/v1/teams/{team.slug}/", {"name": "X"}, format="json")
    assert not AuditEvent.objects.filter(action="team.updated").exists()


def test_an_edit_that_changes_nothing_is_not_recorded(team, maintainer):
    services.update_team(actor=maintainer, team=team, name=team.name)
    assert not AuditEvent.objects.filter(action="team.updated").exists()


def _seed_events(admin_user):
    alice = UserFactory(username="alice")
    a = services.create_team(actor=admin_user, slug="team-a", name="A")
    services.create_team(actor=admin_user, slug="team-b", name="B")
    services.add_member(actor=admin_user, team=a, username="alice", role="maintainer")
    services.create_token(actor=alice, name="alice-ci")
    return alice


def test_platform_admin_filters_audit_by_actor_team_action_and_since(admin_user):
    _seed_events(admin_user)
    client = bearer_client(admin_user)

    def actions(query: str) -> list[str]:
        response = client.get(f"/api/v1/audit/?{query}")
        assert response.status_code == 200, response.content
        return sorted(e["action"] for e in response.json()["results"])

    assert actions("actor=alice") == ["token.created"]
    assert actions("team=team-a") == ["membership.created", "team.created"]
    assert actions("action=team") == ["team.created", "team.created"]
    assert actions("action=membership.created") == ["membership.created"]
    future = (timezone.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert actions(f"since={future}") == []


def test_bad_since_is_400(admin_user):
    response = bearer_client(admin_user).get("/api/v1/audit/?since=yesterday")
    assert response.status_code == 400
    assert "since" in response.json()


def test_maintainer_sees_only_own_team_events(admin_user):
    alice = _seed_events(admin_user)
    results = bearer_client(alice).get("/api/v1/audit/").json()["results"]
    assert results and {e["team"] for e in results} == {"team-a"}


def test_audit_events_are_read_only_through_the_api(admin_user):
    TeamFactory()
    services.create_team(actor=admin_user, slug="x", name="X")
    event = AuditEvent.objects.first()
    client = bearer_client(admin_user)
    assert client.delete(f"/api/v1/audit/{event.pk}/").status_code == 405
    assert client.patch(f"/api/v1/audit/{event.pk}/", {"action": "x"},
                        format="json").status_code == 405
