from __future__ import annotations

import pytest

from teams.models import AuditEvent, Membership
from tests.factories import UserFactory
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


def test_maintainer_adds_lists_changes_and_removes_a_member(team, maintainer):
    UserFactory(username="newbie")
    client = bearer_client(maintainer)
    url = f"/api/v1/teams/{team.slug}/members/"

    added = client.post(url, {"username": "newbie", "role": "viewer"}, format="json")
    assert added.status_code == 201, added.content
    assert added.json()["role"] == "viewer"
    assert [m["username"] for m in client.get(url).json()] == ["mia", "newbie"]

    changed = client.patch(f"{url}newbie/", {"role": "engineer"}, format="json")
    assert changed.status_code == 200
    assert Membership.objects.get(user__username="newbie").role == "engineer"

    removed = client.delete(f"{url}newbie/")
    assert removed.status_code == 204
    assert not Membership.objects.filter(user__username="newbie").exists()
    assert list(AuditEvent.objects.filter(object_type="membership").order_by("id")
                .values_list("action", flat=True)) == [
        "membership.created", "membership.updated", "membership.deleted"]


def test_adding_an_unknown_user_is_404_naming_the_username(team, maintainer):
    response = bearer_client(maintainer).post(f"/api/v1/teams/{team.slug}/members/",
                                              {"username": "ghost", "role": "viewer"},
                                              format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "No user named 'ghost'.", "code": "not_found",
                               "field": "username"}


def test_adding_an_existing_member_is_409(team, maintainer, engineer):
    response = bearer_client(maintainer).post(f"/api/v1/teams/{team.slug}/members/",
                                              {"username": engineer.username, "role": "viewer"},
                                              format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "already_member"
    assert Membership.objects.get(user=engineer).role == "engineer"


def test_unknown_role_is_400(team, maintainer):
    UserFactory(username="newbie")
    response = bearer_client(maintainer).post(f"/api/v1/teams/{team.slug}/members/",
                                              {"username": "newbie", "role": "owner"},
                                              format="json")
    assert response.status_code == 400
    assert "role" in response.json()


def test_last_maintainer_cannot_leave_or_be_demoted(team, maintainer):
    client = bearer_client(maintainer)
    url = f"/api/v1/teams/{team.slug}/members/mia/"
    demote = client.patch(url, {"role": "viewer"}, format="json")
    assert demote.status_code == 409
    assert demote.json()["code"] == "last_maintainer"
    assert client.delete(url).status_code == 409
    assert Membership.objects.get(user=maintainer).role == "maintainer"


def test_removing_a_non_member_is_404(team, maintainer, outsider):
    response = bearer_client(maintainer).delete(
        f"/api/v1/teams/{team.slug}/members/{outsider.username}/")
    assert response.status_code == 404


def test_platform_admin_manages_members_of_any_team(team, admin_user):
    UserFactory(username="newbie")
    response = bearer_client(admin_user).post(f"/api/v1/teams/{team.slug}/members/",
                                              {"username": "newbie", "role": "maintainer"},
                                              format="json")
    assert response.status_code == 201
