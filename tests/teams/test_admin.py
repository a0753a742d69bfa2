"""Django admin (the platform engineers' console): every change goes through services, audited."""

from __future__ import annotations

import pytest
from django.test import Client

from teams.models import ApiToken, AuditEvent, Membership, Team
from tests.factories import UserFactory, make_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _inline(prefix: str = "memberships", total: int = 0, initial: int = 0) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def test_admin_creates_team_with_a_member_and_both_are_audited(console):
    user = UserFactory(username="dana")
    response = console.post("/admin/teams/team/add/", {
        "slug": "risk", "name": "Risk", "description": "",
        **_inline(total=1), "memberships-0-user": user.pk, "memberships-0-role": "maintainer",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    team = Team.objects.get(slug="risk")
    assert Membership.objects.get(team=team, user=user).role == "maintainer"
    events = AuditEvent.objects.filter(team=team).order_by("id")
    assert [(e.action, e.source) for e in events] == [
        ("team.created", "admin"), ("membership.created", "admin")]


def test_admin_edits_team_name_through_the_service(console, team):
    response = console.post(f"/admin/teams/team/{team.pk}/change/", {
        "name": "Renamed", "description": "", **_inline()})
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="team.updated").after["name"] == "Renamed"


def test_admin_revokes_tokens_with_an_action(console):
    token, _ = make_token(UserFactory(username="leaver"))
    response = console.post("/admin/teams/apitoken/", {
        "action": "revoke", "_selected_action": [str(token.pk)]})
    assert response.status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert AuditEvent.objects.get(action="token.revoked").source == "admin"


def test_admin_user_changes_are_audited(console):
    user = UserFactory(username="promote-me")
    response = console.post(f"/admin/auth/user/{user.pk}/change/", {
        "username": "promote-me", "email": "p@example.com", "is_active": "on", "is_staff": "on",
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00"})
    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="user.updated")
    assert event.before["is_staff"] is False and event.after["is_staff"] is True


def test_audit_log_cannot_be_edited_or_deleted_in_admin(console, admin_user):
    from teams import services

    services.create_team(actor=admin_user, slug="x", name="X")
    event = AuditEvent.objects.first()
    assert console.post(f"/admin/teams/auditevent/{event.pk}/delete/", {"post": "yes"}) \
        .status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_non_staff_cannot_open_the_console(team, engineer):
    client = Client()
    client.force_login(engineer)
    assert client.get("/admin/teams/team/").status_code == 302  # to the admin login
