"""Django admin: approve/deny actions, quotas and hosts — all through services, audited."""

from __future__ import annotations

import pytest
from django.test import Client

from compute.models import GpuAllocation, GpuDevice, Host
from quotas import requests
from quotas.models import ResourceRequest
from teams.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _inline(prefix: str, total: int = 0, initial: int = 0) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def test_approve_action_grants_in_full_and_is_audited(console, quota, engineer):
    request = requests.file_request(actor=engineer, team=quota.team, cpu=2, justification="x")
    response = console.post("/admin/quotas/resourcerequest/", {
        "action": "approve", "_selected_action": [str(request.pk)]})
    assert response.status_code == 302
    assert ResourceRequest.objects.get(pk=request.pk).status == "approved"
    assert AuditEvent.objects.get(action="resource_request.approved").source == "admin"


def test_deny_action_asks_for_a_comment_first(console, quota, engineer):
    request = requests.file_request(actor=engineer, team=quota.team, cpu=2, justification="x")
    page = console.post("/admin/quotas/resourcerequest/", {
        "action": "deny", "_selected_action": [str(request.pk)]})
    assert page.status_code == 200 and "Deny these resource requests?" in page.content.decode()
    assert ResourceRequest.objects.get(pk=request.pk).is_pending
    response = console.post("/admin/quotas/resourcerequest/", {
        "action": "deny", "_selected_action": [str(request.pk)], "comment": "no"})
    assert response.status_code == 302
    assert ResourceRequest.objects.get(pk=request.pk).comment == "no"


def test_request_page_shows_team_usage_and_history(console, quota, engineer, admin_user):
    old = requests.file_request(actor=engineer, team=quota.team, cpu=1, justification="old")
    requests.deny_request(actor=admin_user, request=old, comment="nope")
    request = requests.file_request(actor=engineer, team=quota.team, cpu=2, justification="x")
    page = console.get(f"/admin/quotas/resourcerequest/{request.pk}/change/").content.decode()
    assert "CPU: 0 of 8 used" in page and f"#{old.pk}" in page and "nope" in page


def test_admin_edits_a_quota_through_the_service(console, quota):
    response = console.post(f"/admin/quotas/teamquota/{quota.pk}/change/", {
        "cpu": "20", "memory_mb": "1024", "gpus": "0", "deployments": "2"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert AuditEvent.objects.get(action="quota.updated").after["cpu"] == "20.000"


def test_admin_registers_a_host_with_gpus_inline(console):
    response = console.post("/admin/compute/host/add/", {
        "name": "gpu-9", "kind": "host", "cpu": "32", "memory_mb": "131072",
        "cpu_overcommit": "1.5", "memory_overcommit": "1", "active": "on",
        **_inline("gpus", total=2), "gpus-0-device_id": "0", "gpus-0-model": "L4",
        "gpus-1-device_id": "1", "gpus-1-model": "L4"})
    assert response.status_code == 302, response.content.decode()[:3000]
    host = Host.objects.get(name="gpu-9")
    assert sorted(host.gpus.values_list("device_id", flat=True)) == ["0", "1"]
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["host.created", "gpu.added", "gpu.added"]


def test_gpu_allocations_are_read_only_in_admin(console, team, gpu_host):
    allocation = GpuAllocation.objects.create(device=GpuDevice.objects.first(), team=team,
                                              owner="x")
    assert console.get("/admin/compute/gpuallocation/").status_code == 200
    assert console.post(f"/admin/compute/gpuallocation/{allocation.pk}/delete/",
                        {"post": "yes"}).status_code == 403
    assert console.get("/admin/compute/gpuallocation/add/").status_code == 403


def test_a_request_cannot_be_edited_in_admin_only_decided(console, quota, engineer):
    request = requests.file_request(actor=engineer, team=quota.team, cpu=2, justification="x")
    console.post(f"/admin/quotas/resourcerequest/{request.pk}/change/",
                 {"status": "approved", "granted_cpu": "2"})
    assert ResourceRequest.objects.get(pk=request.pk).is_pending


def test_admin_changes_overcommit_through_the_service(console, gpu_host):
    response = console.post(f"/admin/compute/host/{gpu_host.pk}/change/", {
        "kind": "host", "cpu": "64", "memory_mb": "262144", "cpu_overcommit": "2",
        "memory_overcommit": "1", "active": "on",
        **_inline("gpus", total=4, initial=4),
        **{f"gpus-{n}-id": str(d.pk) for n, d in enumerate(gpu_host.gpus.order_by("device_id"))},
        **{f"gpus-{n}-host": str(gpu_host.pk) for n in range(4)},
        **{f"gpus-{n}-device_id": str(n) for n in range(4)},
        **{f"gpus-{n}-model": m for n, m in enumerate(["A100-80GB", "A100-80GB", "T4", "T4"])},
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="host.updated")
    assert event.before["cpu_overcommit"] == "1.00" and event.after["cpu_overcommit"] == "2.00"


def test_engineers_cannot_register_capacity_in_the_portal(engineer):
    client = Client()
    client.force_login(engineer)
    client.post("/capacity/", {"name": "sneaky", "kind": "host", "cpu": "1", "memory_mb": "1",
                               "cpu_overcommit": "1", "memory_overcommit": "1"})
    assert not Host.objects.filter(name="sneaky").exists()
