"""Resource requests through the REST API: file, list, approve in full or in part, deny."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from notifications.models import Notification
from quotas import requests, services
from quotas.models import QuotaGrant, ResourceRequest
from teams.models import AuditEvent
from tests.factories import MembershipFactory, TeamFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/resource-requests/"


def _file(client, **body):
    return client.post(URL, {"team": "ml-search", "justification": "launch", **body},
                       format="json")


def test_a_viewer_files_a_request_and_admins_are_notified(api_as, quota, viewer, admin_user,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _file(api_as(viewer), cpu=2.5, memory_mb=4096, justification="Black Friday")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending" and body["cpu"] == 2.5 and body["requested_by"] == "vic"
    assert body["granted"] == {"cpu": 0.0, "memory_mb": 0, "gpus": 0}
    assert Notification.objects.get(user=admin_user).link.endswith(f"#request-{body['id']}")
    assert mail.outbox[0].to == [admin_user.email]
    assert "vic asks 2.5 CPU, 4096 MB memory more for team ml-search" in mail.outbox[0].body
    assert AuditEvent.objects.get(action="resource_request.created").source == "api"


def test_full_approval_raises_the_quota_at_once_and_tells_the_requester(
        api_as, quota, engineer, admin_user, django_capture_on_commit_callbacks):
    request_id = _file(api_as(engineer), cpu=4, gpus=0, memory_mb=1024).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(admin_user).post(f"{URL}{request_id}/approve/",
                                           {"comment": "go"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "approved"
    assert response.json()["decided_by"] == "root"
    limits = api_as(engineer).get("/api/v1/teams/ml-search/quota/").json()["limits"]
    assert limits["cpu"] == 12 and limits["memory_mb"] == 16384 + 1024
    note = Notification.objects.get(user=engineer)
    assert "was approved" in note.text and "Comment: go" in note.text
    assert [m.to for m in mail.outbox] == [[engineer.email]]
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"resource_request.approved", "quota.updated"} <= actions


def test_partial_approval_grants_less(api_as, quota, engineer, admin_user):
    request_id = _file(api_as(engineer), cpu=4, memory_mb=8192).json()["id"]
    response = api_as(admin_user).post(f"{URL}{request_id}/approve/",
                                       {"comment": "half for now", "cpu": 2}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "partially_approved"
    assert body["granted"] == {"cpu": 2.0, "memory_mb": 8192, "gpus": 0}
    assert services.usage(quota.team).limits.cpu == 10


def test_a_temporary_request_becomes_a_grant_that_expires(api_as, quota, engineer, admin_user):
    until = (timezone.now() + timedelta(days=3)).isoformat()
    request_id = _file(api_as(engineer), cpu=8, expires_at=until).json()["id"]
    api_as(admin_user).post(f"{URL}{request_id}/approve/", {}, format="json")
    grant = QuotaGrant.objects.get()
    assert grant.request_id == request_id and grant.cpu == 8
    body = api_as(engineer).get("/api/v1/teams/ml-search/quota/").json()
    assert body["base"]["cpu"] == 8 and body["granted"]["cpu"] == 8 and body["limits"]["cpu"] == 16
    assert body["grants"][0]["request"] == request_id


def test_deny_needs_a_comment_and_notifies(api_as, quota, engineer, admin_user):
    request_id = _file(api_as(engineer), gpus=0, cpu=1).json()["id"]
    client = api_as(admin_user)
    assert client.post(f"{URL}{request_id}/deny/", {}, format="json").status_code == 400
    response = client.post(f"{URL}{request_id}/deny/", {"comment": "use spot"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "denied"
    assert "denied: use spot" in Notification.objects.get(user=engineer).text
    assert services.usage(quota.team).limits.cpu == 8


def test_list_shows_only_visible_teams_and_filters(api_as, quota, engineer, admin_user):
    other = TeamFactory(slug="vision")
    MembershipFactory(team=other, user=admin_user)
    requests.file_request(actor=admin_user, team=other, cpu=1, justification="x")
    mine = requests.file_request(actor=engineer, team=quota.team, cpu=1, justification="y")
    denied = requests.file_request(actor=engineer, team=quota.team, cpu=2, justification="z")
    requests.deny_request(actor=admin_user, request=denied, comment="no")
    ids = [r["id"] for r in api_as(engineer).get(URL).json()["results"]]
    assert sorted(ids) == sorted([mine.pk, denied.pk])
    assert len(api_as(admin_user).get(URL).json()["results"]) == 3
    filtered = api_as(admin_user).get(URL, {"team": "ml-search", "status": "pending"}).json()
    assert [r["id"] for r in filtered["results"]] == [mine.pk]
    assert api_as(admin_user).get(URL, {"status": "bogus"}).status_code == 400


def test_quota_get_explains_usage(api_as, quota, viewer):
    services.admit(team=quota.team, owner="deployment:a", cpu=2, memory_mb=1024, deployments=1)
    services.mark_running(owner="deployment:a")
    services.admit(team=quota.team, owner="deployment:b", cpu="0.5", deployments=1)
    requests.file_request(actor=viewer, team=quota.team, cpu=3, justification="more")
    body = api_as(viewer).get("/api/v1/teams/ml-search/quota/").json()
    assert body["limits"] == {"cpu": 8.0, "memory_mb": 16384, "gpus": 0, "deployments": 5}
    assert body["used"]["cpu"] == 2.5 and body["reserved"]["cpu"] == 2.0
    assert body["pending"]["cpu"] == 0.5 and body["free"]["cpu"] == 5.5
    assert body["requested"]["cpu"] == 3.0
    assert [r["owner"] for r in body["reservations"]] == ["deployment:a", "deployment:b"]


def test_platform_admin_sets_a_quota(api_as, quota, admin_user):
    response = api_as(admin_user).put("/api/v1/teams/ml-search/quota/", {
        "cpu": 16.5, "memory_mb": 65536, "gpus": 2, "deployments": 10}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["limits"]["cpu"] == 16.5
    event = AuditEvent.objects.get(action="quota.updated")
    assert event.before["cpu"] == "8.000" and event.after["gpus"] == 2


def test_lowering_a_quota_below_usage_flags_deployments_and_notifies(api_as, quota, engineer,
                                                                     admin_user):
    services.admit(team=quota.team, owner="deployment:old", cpu=4, deployments=1)
    services.admit(team=quota.team, owner="deployment:new", cpu=4, deployments=1)
    services.set_quota(actor=admin_user, team=quota.team, cpu=5, memory_mb=16384, gpus=0,
                       deployments=5)
    flagged = api_as(engineer).get("/api/v1/teams/ml-search/quota/").json()["reservations"]
    assert [r["owner"] for r in flagged if r["over_limit_since"]] == ["deployment:new"]
    assert "deployment:new keep running but are flagged" in \
        Notification.objects.get(user=engineer).text
    assert services.usage(quota.team).free.cpu == Decimal("-3")


def test_conflict_body_carries_the_numbers(api_as, quota, admin_user, gpu_host):
    request = requests.file_request(actor=admin_user, team=quota.team, gpus=3, gpu_model="T4",
                                    justification="train")
    response = api_as(admin_user).post(f"{URL}{request.pk}/approve/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "exceeds_capacity"
    assert "3 GPUs but the platform has 2 T4" in response.json()["detail"]
    assert ResourceRequest.objects.get(pk=request.pk).is_pending
