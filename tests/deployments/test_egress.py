"""A deployment's network access: none unless a platform admin grants it, with a reason, in the
audit log; granting or withdrawing rolls out a new revision whose replicas get (or lose) the
network, and every replica is started with its revision's replica key."""

from __future__ import annotations

import pytest

from deployments import services
from deployments.models import Revision
from deployments.reconcile import reconcile_deployment
from teams.models import AuditEvent
from tests.deployments.conftest import key_of
from tests.deployments.test_reconcile import FakeRuntime, create

pytestmark = pytest.mark.django_db


class RecordingRuntime(FakeRuntime):
    def __init__(self, make_url) -> None:
        super().__init__(make_url)
        self.specs: list = []

    def start_replica(self, spec):
        self.specs.append(spec)
        return super().start_replica(spec)


def test_replicas_have_no_network_and_get_their_revisions_key(settings, no_enqueue, engineer,
                                                               team, v1, upstreams):
    settings.MODELPORT_DRAIN_SECONDS = 0
    runtime = RecordingRuntime(upstreams)
    d = create(engineer, team, replicas=1)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    (spec,) = runtime.specs
    assert spec.egress is False
    assert spec.env["MODELPORT_REPLICA_KEY"] == key_of(d, 1)


def test_a_platform_admin_grants_egress_with_a_reason_and_it_rolls_out(
        settings, no_enqueue, api_as, admin_user, engineer, team, v1, upstreams):
    settings.MODELPORT_DRAIN_SECONDS = 0
    runtime = RecordingRuntime(upstreams)
    d = create(engineer, team, replicas=1)
    reconcile_deployment(d.pk, runtime)
    url = f"/api/v1/deployments/{d.name}/egress/"
    no_reason = api_as(admin_user).post(url, {"allowed": True}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    granted = api_as(admin_user).post(url, {"allowed": True,
                                            "reason": "calls the geocoding API"},
                                      format="json")
    assert granted.status_code == 202, granted.content
    body = granted.json()
    assert body["egress"] is True and body["egress_reason"] == "calls the geocoding API"
    assert body["revision"] == 2
    assert Revision.objects.get(deployment=d, number=2).spec["egress"] is True
    event = AuditEvent.objects.get(action="deployment.egress_granted")
    assert event.actor == admin_user and event.after["egress_reason"] == "calls the geocoding API"
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert runtime.specs[-1].egress is True and runtime.specs[-1].revision == 2
    assert runtime.specs[-1].env["MODELPORT_REPLICA_KEY"] == key_of(d, 2)
    # Granting again changes nothing; withdrawing rolls out a revision without the network.
    assert api_as(admin_user).post(url, {"allowed": True, "reason": "again"},
                                   format="json").json()["revision"] == 2
    withdrawn = api_as(admin_user).post(url, {"allowed": False}, format="json").json()
    assert withdrawn["egress"] is False and withdrawn["revision"] == 3
    assert "egress" not in Revision.objects.get(deployment=d, number=3).spec
    assert AuditEvent.objects.filter(action="deployment.egress_withdrawn").count() == 1
    reconcile_deployment(d.pk, runtime)
    assert runtime.specs[-1].egress is False


@pytest.mark.parametrize("role", ["maintainer", "engineer", "viewer"])
def test_team_members_cannot_grant_their_own_model_network_access(no_enqueue, api_as, request,
                                                                   engineer, team, v1, role):
    d = create(engineer, team, replicas=1)
    answer = api_as(request.getfixturevalue(role)).post(
        f"/api/v1/deployments/{d.name}/egress/", {"allowed": True, "reason": "please"},
        format="json")
    assert answer.status_code == 403
    d.refresh_from_db()
    assert d.egress is False and d.revision == 1
    assert not AuditEvent.objects.filter(action__startswith="deployment.egress").exists()


def test_a_rollback_keeps_the_network_decision(settings, no_enqueue, admin_user, engineer, team,
                                               v1, v2, upstreams):
    settings.MODELPORT_DRAIN_SECONDS = 0
    runtime = RecordingRuntime(upstreams)
    d = create(engineer, team, replicas=1)
    reconcile_deployment(d.pk, runtime)
    services.update_deployment(actor=engineer, deployment=d, version=2)
    reconcile_deployment(d.pk, runtime)
    services.set_egress(actor=admin_user, deployment=d, allowed=True, reason="needs S3")
    services.rollback(actor=engineer, deployment=d, revision=1)
    d.refresh_from_db()
    assert d.egress is True
    assert Revision.objects.get(deployment=d, number=d.revision).spec["egress"] is True


def test_the_deployment_page_shows_the_network_and_admins_can_change_it(
        client, no_enqueue, admin_user, engineer, team, v1):
    d = create(engineer, team, replicas=1)
    client.force_login(engineer)
    page = client.get(f"/deployments/{d.name}/").content.decode()
    assert "reaches nothing" in page and "Grant network access" not in page
    assert client.post(f"/deployments/{d.name}/egress/", {"allowed": "true",
                                                          "reason": "x"}).status_code == 302
    d.refresh_from_db()
    assert d.egress is False
    client.force_login(admin_user)
    assert "Grant network access" in client.get(f"/deployments/{d.name}/").content.decode()
    client.post(f"/deployments/{d.name}/egress/", {"allowed": "true", "reason": "pulls weather"})
    d.refresh_from_db()
    assert d.egress is True and d.egress_reason == "pulls weather"
    assert "outbound access granted" in client.get(f"/deployments/{d.name}/").content.decode()
