"""Key portal and console list pages run a fixed number of SQL queries whatever the number of
rows (no N+1): counted with CaptureQueriesContext, never timed (timings live in bench/pages.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from quotas import services as quota_services
from quotas.models import QuotaGrant, Reservation, ResourceRequest
from teams import audit
from tests.factories import TeamFactory, UserFactory

from .conftest import make_alias, make_deployment, make_model

pytestmark = pytest.mark.django_db

USER_PAGES = ["/", "/dashboard/live/", "/search/?q=m", "/models/", "/deployments/",
              "/monitoring/", "/resource-requests/", "/audit/"]
ADMIN_PAGES = ["/", "/resource-requests/", "/monitoring/", "/deployments/",
               "/admin/registry/registeredmodel/", "/admin/registry/modelversion/",
               "/admin/deployments/deployment/", "/admin/deployments/deploymentevent/",
               "/admin/quotas/resourcerequest/", "/admin/quotas/teamquota/",
               "/admin/monitoring/alert/", "/admin/monitoring/alertrule/",
               "/admin/teams/team/", "/admin/teams/apitoken/", "/admin/teams/auditevent/"]


def _add_rows(start: int, count: int, owner) -> None:
    """Models, versions, aliases, deployments with replicas and firing alerts, pending resource
    requests and audit events, spread over new teams the user maintains."""
    for i in range(start, start + count):
        team = TeamFactory(slug=f"qc-team-{i}")
        team.memberships.create(user=owner, role="maintainer")
        model = make_model(team, f"m-{i}", versions=2, description=f"model {i}")
        make_alias(model, "production", 2)
        make_deployment(model, f"m-{i}-prod", replicas=2, ready=1, firing=True)
        ResourceRequest.objects.create(team=team, requested_by=owner, cpu=Decimal(2),
                                       memory_mb=1024, justification="load test")
        Reservation.objects.create(team=team, owner=f"deployment:m-{i}-prod", state="running",
                                   cpu=Decimal(1), memory_mb=512, deployments=1)
        audit.record(actor=owner, action="model.created", obj=model, team=team)


def _count(client: Client, path: str) -> int:
    client.get(path)  # first views create rows made lazily (a team's default quota)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return len(ctx.captured_queries)


@pytest.mark.parametrize("persona", ["maintainer", "admin"])
def test_list_pages_do_not_run_more_queries_with_more_rows(persona, admin_user):
    owner = UserFactory(username="owner")
    client = Client()
    client.force_login(admin_user if persona == "admin" else owner)
    pages = ADMIN_PAGES if persona == "admin" else USER_PAGES
    _add_rows(0, 2, owner)
    few = {path: _count(client, path) for path in pages}
    _add_rows(2, 8, owner)
    many = {path: _count(client, path) for path in pages}
    grown = {path: (few[path], many[path]) for path in pages if many[path] > few[path]}
    assert not grown, f"queries grew with rows (2 → 10 of each): {grown}"


def test_bulk_usages_match_the_per_team_usage(admin_user):
    teams = [TeamFactory(slug=f"u-{i}") for i in range(3)]
    quota_services.set_quota(actor=admin_user, team=teams[0], cpu=8, memory_mb=16384, gpus=0,
                             deployments=5)
    Reservation.objects.create(team=teams[0], owner="deployment:a", state="running",
                               cpu=Decimal("1.5"), memory_mb=512, deployments=1)
    Reservation.objects.create(team=teams[0], owner="deployment:b", state="pending",
                               cpu=Decimal(1), memory_mb=256, deployments=1)
    QuotaGrant.objects.create(team=teams[1], cpu=Decimal(2), memory_mb=1024, gpus=0,
                              expires_at=timezone.now() + timedelta(days=1))
    ResourceRequest.objects.create(team=teams[1], requested_by=admin_user, cpu=Decimal(3),
                                   memory_mb=0, justification="more")
    bulk = quota_services.usages(teams)
    for team in teams:
        one, many = quota_services.usage(team), bulk[team.pk]
        for field in ("base", "granted", "limits", "reserved", "pending", "used", "free",
                      "requested"):
            assert getattr(many, field) == getattr(one, field), (team.slug, field)
        assert [g.pk for g in many.grants] == [g.pk for g in one.grants]
        assert many.gauges == one.gauges
