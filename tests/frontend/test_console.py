"""The console (Django admin): themed like the portal, with the actions platform engineers need
— set quotas, stop/start deployments (approve/deny requests and revoke tokens are tested in
tests/quotas/test_admin.py and tests/teams/test_admin.py). Every action goes through services,
so it is audited."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from quotas import services as quota_services
from quotas.models import TeamQuota
from teams.models import AuditEvent
from tests.factories import TeamFactory

from .conftest import make_deployment, make_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_console_wears_the_portal_theme_and_links_back(console):
    page = console.get("/admin/").content.decode()
    assert "frontend/admin/console.css" in page
    assert "Modelport console" in page and 'href="/"' in page and ">Portal<" in page
    css = console.get("/static/frontend/admin/console.css")
    assert css.status_code == 200


def test_set_quota_action_asks_for_limits_then_sets_them_for_every_selected_team(console,
                                                                                  team):
    other = TeamFactory(slug="vision")
    ids = [str(team.pk), str(other.pk)]
    ask = console.post("/admin/teams/team/", {"action": "set_quota", "_selected_action": ids})
    assert ask.status_code == 200
    assert "Set team quotas" in ask.content.decode() and "vision" in ask.content.decode()
    console.post("/admin/teams/team/", {
        "action": "set_quota", "_selected_action": ids, "apply": "1",
        "cpu": "12", "memory_mb": "32768", "gpus": "0", "deployments": "7"})
    for t in (team, other):
        quota = TeamQuota.objects.get(team=t)
        assert (quota.cpu, quota.memory_mb, quota.deployments) == (Decimal(12), 32768, 7)
    events = AuditEvent.objects.filter(action="quota.updated")
    assert sorted(e.team_slug for e in events) == ["ml-search", "vision"]


def test_set_quota_action_refuses_bad_numbers_and_changes_nothing(console, team):
    before = quota_services.get_quota(team).cpu
    response = console.post("/admin/teams/team/", {
        "action": "set_quota", "_selected_action": [str(team.pk)], "apply": "1",
        "cpu": "-1", "memory_mb": "lots", "gpus": "0", "deployments": "1"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 0" in page
    assert "Enter a whole number" in page
    assert TeamQuota.objects.get(team=team).cpu == before
    assert not AuditEvent.objects.filter(action="quota.updated").exists()


def test_stop_and_start_deployment_actions_are_audited(console, team):
    d = make_deployment(make_model(team, "churn"), "churn-prod", replicas=1, ready=1)
    console.post("/admin/deployments/deployment/", {
        "action": "stop_deployments", "_selected_action": [str(d.pk)]})
    d.refresh_from_db()
    assert d.stopped
    response = console.post("/admin/deployments/deployment/", {
        "action": "start_deployments", "_selected_action": [str(d.pk)]}, follow=True)
    d.refresh_from_db()
    assert not d.stopped
    assert "Starting 1 deployment(s)." in response.content.decode()
    actions = list(AuditEvent.objects.filter(object_repr="churn-prod")
                   .values_list("action", flat=True))
    assert "deployment.stopped" in actions and "deployment.started" in actions


def test_console_changelists_render_with_related_columns(console, team):
    make_deployment(make_model(team, "churn", versions=2), "churn-prod", firing=True)
    for path in ("/admin/registry/registeredmodel/", "/admin/registry/modelversion/",
                 "/admin/deployments/deployment/", "/admin/deployments/deploymentevent/",
                 "/admin/deployments/shadowsample/", "/admin/deployments/scalesample/",
                 "/admin/monitoring/alert/", "/admin/teams/team/",
                 "/admin/teams/installation/"):
        response = console.get(path)
        assert response.status_code == 200, path


def test_engineers_cannot_use_console_actions(team, engineer):
    client = Client()
    client.force_login(engineer)
    response = client.post("/admin/teams/team/", {
        "action": "set_quota", "_selected_action": [str(team.pk)], "apply": "1",
        "cpu": "99", "memory_mb": "1", "gpus": "0", "deployments": "1"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not AuditEvent.objects.filter(action="quota.updated").exists()
