"""Portal pages through Django's test client: forms call services, errors stay on the page."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from teams.models import ApiToken, AuditEvent, Membership, Team
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_visitors_are_sent_to_login():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_with_password_lands_on_the_dashboard(team, engineer):
    client = Client()
    response = client.post("/login/", {"username": engineer.username, "password": PASSWORD},
                           follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Dashboard" in page and team.slug in page


def test_wrong_password_shows_an_error_on_the_login_page(engineer):
    response = Client().post("/login/", {"username": engineer.username, "password": "nope"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_platform_admin_creates_a_team_in_the_portal(admin_user):
    response = logged_in(admin_user).post("/teams/", {"slug": "vision", "name": "Vision"},
                                          follow=True)
    assert response.status_code == 200
    assert "Team &#x27;vision&#x27; created." in response.content.decode()
    assert AuditEvent.objects.get(action="team.created").source == "portal"


def test_duplicate_team_slug_shows_the_reason_on_the_form(admin_user, team):
    response = logged_in(admin_user).post("/teams/", {"slug": team.slug, "name": "Again"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Team.objects.count() == 1


def test_engineers_do_not_get_the_create_team_form(engineer):
    client = logged_in(engineer)
    assert "Create a team" not in client.get("/teams/").content.decode()
    client.post("/teams/", {"slug": "sneaky", "name": "Sneaky"})
    assert not Team.objects.filter(slug="sneaky").exists()


def test_maintainer_adds_changes_and_removes_members_in_the_portal(team, maintainer):
    UserFactory(username="newbie")
    client = logged_in(maintainer)
    client.post(f"/teams/{team.slug}/", {"intent": "add", "username": "newbie",
                                        "role": "viewer"})
    assert Membership.objects.get(user__username="newbie").role == "viewer"
    client.post(f"/teams/{team.slug}/members/newbie/role", {"role": "engineer"})
    assert Membership.objects.get(user__username="newbie").role == "engineer"
    client.post(f"/teams/{team.slug}/members/newbie/remove")
    assert not Membership.objects.filter(user__username="newbie").exists()


def test_unknown_username_is_shown_next_to_the_field(team, maintainer):
    response = logged_in(maintainer).post(f"/teams/{team.slug}/", {
        "intent": "add", "username": "ghost", "role": "viewer"})
    assert response.status_code == 200
    assert "No user named &#x27;ghost&#x27;." in response.content.decode()


def test_viewer_sees_members_but_no_management_forms(team, viewer):
    page = logged_in(viewer).get(f"/teams/{team.slug}/").content.decode()
    assert viewer.username in page
    assert "Add a member" not in page


def test_other_teams_are_404_in_the_portal(team, outsider):
    assert logged_in(outsider).get(f"/teams/{team.slug}/").status_code == 404


def test_token_secret_is_shown_once_and_works(engineer):
    client = logged_in(engineer)
    response = client.post("/tokens/", {"name": "laptop", "expires_in_days": 7})
    page = response.content.decode()
    secret = re.search(r"(mpt_[0-9a-f]{12}_[\w-]+)", page).group(1)
    assert response["Cache-Control"] == "no-store"
    assert secret not in client.get("/tokens/").content.decode()
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/teams/").status_code == 200


def test_token_expiry_over_the_limit_is_refused_on_the_form(engineer, settings):
    settings.MODELPORT_TOKEN_MAX_DAYS = 30
    response = logged_in(engineer).post("/tokens/", {"name": "long", "expires_in_days": 90})
    assert response.status_code == 200
    assert "less than or equal to 30" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_a_token_in_the_portal(engineer):
    client = logged_in(engineer)
    client.post("/tokens/", {"name": "laptop", "expires_in_days": 7})
    token = ApiToken.objects.get()
    client.post(f"/tokens/{token.pk}/revoke")
    token.refresh_from_db()
    assert token.status == "revoked"


def test_audit_page_filters_for_admins_and_is_forbidden_to_engineers(admin_user, team,
                                                                     engineer):
    logged_in(admin_user).post("/teams/", {"slug": "vision", "name": "Vision"})
    page = logged_in(admin_user).get("/audit/?action=team").content.decode()
    assert "team.created" in page and "vision" in page
    assert logged_in(engineer).get("/audit/").status_code == 403


def test_dashboard_shows_an_empty_state_for_users_without_teams(outsider):
    page = logged_in(outsider).get("/").content.decode()
    assert "You are not in any team yet." in page
