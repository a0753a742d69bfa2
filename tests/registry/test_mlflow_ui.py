"""MLflow's own UI through the portal's session: a member signed in to the portal browses the
experiments a training script logged, at /mlflow/ (real Chromium, real tracking server)."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client

from teams.roles import Role
from tests.e2e.conftest import browser, page  # noqa: F401 - fixtures
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory, make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow,
              pytest.mark.usefixtures("mlflow_upstream")]


def test_a_signed_in_member_browses_mlflows_ui(live_server, page):  # noqa: F811
    team = TeamFactory(slug="team-a")
    alice = UserFactory(username="alice")
    MembershipFactory(team=team, user=alice, role=Role.ENGINEER)
    viewer = UserFactory(username="vera")
    MembershipFactory(team=team, user=viewer, role=Role.VIEWER)
    name = f"ui-visible-{uuid.uuid4().hex[:6]}"
    created = Client().post("/mlflow/api/2.0/mlflow/experiments/create", json.dumps(
        {"name": name}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {make_token(alice)[1]}")
    assert created.status_code == 200, created.content

    blocked = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text
            else None)
    page.goto(f"{live_server.url}/mlflow/")
    assert "/login/" in page.url  # signed out: the portal's login first
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/mlflow/**")
    page.get_by_text(name).first.wait_for(timeout=30000)
    assert blocked == []  # the portal's CSP lets MLflow's UI style itself
