from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from teams.models import AuditEvent, Membership, Team

pytestmark = pytest.mark.django_db


def run_bootstrap(*args: str) -> str:
    out = StringIO()
    call_command("bootstrap", *args, stdout=out)
    return out.getvalue()


def test_first_run_generates_and_prints_the_admin_password_once(settings):
    settings.MODELPORT_ADMIN_PASSWORD = ""
    first = run_bootstrap()
    password = first.split("password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    second = run_bootstrap()
    assert "password:" not in second
    assert get_user_model().objects.count() == 1


def test_configured_admin_password_is_used_and_not_printed(settings):
    settings.MODELPORT_ADMIN_USERNAME = "ops"
    settings.MODELPORT_ADMIN_PASSWORD = "s3cret-from-env"
    output = run_bootstrap()
    assert "s3cret-from-env" not in output
    assert get_user_model().objects.get(username="ops").check_password("s3cret-from-env")


def test_demo_team_is_seeded_once_with_admin_as_maintainer(settings):
    settings.MODELPORT_ADMIN_PASSWORD = "x-password"
    run_bootstrap()
    run_bootstrap()
    team = Team.objects.get(slug="demo")
    assert Membership.objects.get(team=team).role == "maintainer"
    assert AuditEvent.objects.filter(action="team.created").count() == 1
    assert AuditEvent.objects.filter(action="user.created").count() == 1


def test_demo_can_be_turned_off(settings):
    settings.MODELPORT_ADMIN_PASSWORD = "x-password"
    settings.MODELPORT_DEMO = False
    run_bootstrap()
    assert not Team.objects.exists()
