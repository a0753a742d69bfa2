"""Portal pages for quotas: gauges, the request form, the admin queue, capacity, notifications."""

from __future__ import annotations

import pytest
from django.test import Client

from compute.models import Host
from notifications.models import Notification
from quotas import requests, services
from quotas.models import ResourceRequest
from teams.models import AuditEvent

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_team_page_and_dashboard_show_accessible_gauges(team, quota, engineer):
    services.admit(team=team, owner="deployment:a", cpu="1.5", deployments=1)
    client = logged_in(engineer)
    for url in (f"/teams/{team.slug}/", "/"):
        page = client.get(url).content.decode()
        assert '<meter id="' in page, url
        assert 'value="1.5"' in page and 'max="8"' in page
        assert "1.5 of 8 used" in page
        assert '<label for="' in page


def test_member_files_a_request_from_the_quota_page(team, quota, viewer, admin_user):
    client = logged_in(viewer)
    page = client.get(f"/teams/{team.slug}/quota/").content.decode()
    assert "Request resources" in page and "Set quota" not in page
    response = client.post(f"/teams/{team.slug}/quota/", {
        "intent": "request", "request-cpu": "2", "request-memory_mb": "0", "request-gpus": "0",
        "request-justification": "new model", "request-expires_at": ""}, follow=True)
    assert "Request sent" in response.content.decode()
    request = ResourceRequest.objects.get()
    assert request.cpu == 2 and request.requested_by == viewer
    assert AuditEvent.objects.get(action="resource_request.created").source == "portal"
    assert Notification.objects.filter(user=admin_user).count() == 1


def test_request_form_errors_stay_on_the_page(team, quota, engineer):
    response = logged_in(engineer).post(f"/teams/{team.slug}/quota/", {
        "intent": "request", "request-cpu": "-1", "request-justification": "x"})
    assert response.status_code == 200
    assert "cpu cannot be negative" in response.content.decode()
    assert not ResourceRequest.objects.exists()


def test_outsiders_get_404_on_a_teams_quota_page(team, quota, outsider):
    assert logged_in(outsider).get(f"/teams/{team.slug}/quota/").status_code == 404


def test_admin_sets_the_quota_in_the_portal(team, quota, admin_user):
    response = logged_in(admin_user).post(f"/teams/{team.slug}/quota/", {
        "intent": "set", "quota-cpu": "12", "quota-memory_mb": "1024", "quota-gpus": "0",
        "quota-deployments": "3"},
        follow=True)
    assert "Quota of ml-search updated." in response.content.decode()
    assert services.usage(team).limits.cpu == 12


def test_admin_queue_shows_usage_and_history_and_approves_in_part(team, quota, engineer,
                                                                   admin_user):
    old = requests.file_request(actor=engineer, team=team, cpu=1, justification="earlier")
    requests.deny_request(actor=admin_user, request=old, comment="not now")
    request = requests.file_request(actor=engineer, team=team, cpu=4, memory_mb=2048,
                                    justification="launch day")
    client = logged_in(admin_user)
    page = client.get("/resource-requests/").content.decode()
    assert "launch day" in page and f"#{old.pk}" in page and "Denied" in page
    assert "<meter" in page and "Approve" in page
    response = client.post(f"/resource-requests/{request.pk}/decide", {
        "decision": "approve", f"r{request.pk}-cpu": "2", f"r{request.pk}-memory_mb": "2048",
        f"r{request.pk}-gpus": "0", f"r{request.pk}-comment": "half"}, follow=True)
    assert f"Request #{request.pk} approved." in response.content.decode()
    request.refresh_from_db()
    assert request.status == "partially_approved" and request.granted_cpu == 2


def test_admin_denies_from_the_queue_and_a_missing_comment_is_explained(team, quota, engineer,
                                                                        admin_user):
    request = requests.file_request(actor=engineer, team=team, cpu=4, justification="x")
    client = logged_in(admin_user)
    response = client.post(f"/resource-requests/{request.pk}/decide",
                           {"decision": "deny"}, follow=True)
    assert "Tell the team why" in response.content.decode()
    client.post(f"/resource-requests/{request.pk}/decide",
                {"decision": "deny", f"r{request.pk}-comment": "no budget"})
    assert ResourceRequest.objects.get(pk=request.pk).status == "denied"


def test_members_cannot_decide_in_the_portal(team, quota, maintainer):
    request = requests.file_request(actor=maintainer, team=team, cpu=4, justification="x")
    response = logged_in(maintainer).post(f"/resource-requests/{request.pk}/decide",
                                          {"decision": "approve"}, follow=True)
    assert "Only platform admins may approve" in response.content.decode()
    assert ResourceRequest.objects.get(pk=request.pk).is_pending


def test_capacity_page_lists_hosts_and_devices_and_admins_register_hosts(admin_user, engineer,
                                                                         gpu_host):
    page = logged_in(engineer).get("/capacity/").content.decode()
    assert "gpu-1" in page and "A100-80GB" in page and "Register a host" not in page
    response = logged_in(admin_user).post("/capacity/", {
        "name": "cpu-pool", "kind": "pool", "cpu": "32", "memory_mb": "65536",
        "cpu_overcommit": "2", "memory_overcommit": "1", "gpus": "a T4\nb T4"}, follow=True)
    assert "Registered cpu-pool." in response.content.decode()
    assert Host.objects.get(name="cpu-pool").gpus.count() == 2


def test_notifications_in_the_nav_and_marked_read(team, quota, engineer, admin_user):
    request = requests.file_request(actor=engineer, team=team, cpu=1, justification="x")
    requests.approve_request(actor=admin_user, request=request)
    client = logged_in(engineer)
    page = client.get("/").content.decode()
    assert "1 unread" in page
    page = client.get("/notifications/").content.decode()
    assert f"Your request #{request.pk} for team ml-search was approved" in page
    client.post("/notifications/")
    assert not Notification.objects.unread().filter(user=engineer).exists()
