"""The dashboard: my teams' models, deployment health, quota gauges, firing alerts, activity,
the live fragment htmx polls, and empty states that say what to do next."""

from __future__ import annotations

import pytest
from django.test import Client

from teams import services as team_services
from teams.roles import Role
from tests.factories import TeamFactory
from tests.fixtures import member

from .conftest import make_deployment, make_model

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_shows_my_models_deployment_health_gauges_and_alerts(team, engineer):
    model = make_model(team, "churn", versions=3)
    make_deployment(model, "churn-prod", replicas=3, ready=2, firing=True)
    page = logged_in(engineer).get("/").content.decode()
    assert "churn" in page and "v3" in page
    assert "churn-prod" in page and "healthy" in page
    assert "2/3" in page                      # replicas ready / desired
    assert "r1 100%" in page                  # traffic split
    assert "errors high" in page and "error rate 12.5 &gt; 5" in page
    assert 'id="dash-ml-search-cpu"' in page  # quota gauge of my team
    assert 'hx-get="/dashboard/live/"' in page
    assert 'hx-trigger="every 10s" data-poll-visible' in page  # paused in hidden tabs (portal.js)


def test_live_fragment_has_health_and_alerts_without_the_page_chrome(team, engineer):
    make_deployment(make_model(team, "churn"), "churn-prod", status="degraded", firing=True)
    response = logged_in(engineer).get("/dashboard/live/", HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in page
    assert "churn-prod" in page and "degraded" in page and "1 needs attention" in page
    assert "errors high" in page


def test_dashboard_only_shows_my_teams(team, engineer):
    other = TeamFactory(slug="secret-team")
    make_deployment(make_model(other, "hidden-model"), "hidden-deploy", firing=True)
    page = logged_in(engineer).get("/").content.decode()
    live = logged_in(engineer).get("/dashboard/live/").content.decode()
    for text in ("hidden-model", "hidden-deploy", "secret-team", "errors high"):
        assert text not in page and text not in live


def test_platform_admin_in_no_team_sees_every_team(team, admin_user):
    make_deployment(make_model(team, "churn"), "churn-prod")
    page = logged_in(admin_user).get("/").content.decode()
    assert "churn-prod" in page and "Platform admin: every team" in page


def test_empty_dashboard_says_what_to_do_next(team, engineer):
    page = logged_in(engineer).get("/").content.decode()
    assert "No models yet" in page and "modelport models register" in page
    assert 'href="/models/#register"' in page
    assert "No deployments yet" in page and "modelport deploy" in page
    assert "No alerts firing" in page


def test_viewer_is_not_told_to_register_models(team):
    viewer = member(team, Role.VIEWER, "vera")
    page = logged_in(viewer).get("/").content.decode()
    assert "ask a team maintainer to make you an engineer" in page.lower()
    assert "modelport models register" not in page


def test_recent_activity_includes_my_own_actions(team, engineer):
    team_services.create_token(actor=engineer, name="laptop")
    page = logged_in(engineer).get("/").content.decode()
    assert "token.created" in page


def test_deployments_needing_attention_come_first(team, engineer):
    model = make_model(team, "churn")
    make_deployment(model, "a-healthy")
    make_deployment(model, "b-starting", status="starting")
    make_deployment(model, "z-failed", status="failed")
    page = logged_in(engineer).get("/dashboard/live/").content.decode()
    assert page.index("z-failed") < page.index("b-starting") < page.index("a-healthy")
    assert "1 needs attention" in page
