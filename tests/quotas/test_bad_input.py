"""Bad input is a clear 400/409 and changes nothing: no request, no quota change, no audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from compute import inventory
from core.errors import Conflict
from quotas import requests, services
from quotas.models import QuotaGrant, ResourceRequest, TeamQuota
from teams.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/api/v1/resource-requests/"


def _state() -> tuple:
    return (list(ResourceRequest.objects.values_list("status", "granted_cpu", "granted_gpus")),
            list(TeamQuota.objects.values_list("cpu", "memory_mb", "gpus", "deployments")),
            QuotaGrant.objects.count(), AuditEvent.objects.count())


PAST = (timezone.now() - timedelta(hours=1)).isoformat()

BAD_REQUESTS = [
    ({"cpu": -1}, "cpu", "greater than or equal to 0"),
    ({"memory_mb": -512}, "memory_mb", "greater than or equal to 0"),
    ({"gpus": -2}, "gpus", "greater than or equal to 0"),
    ({"cpu": 5_000_000}, "cpu", "less than or equal to 100000"),
    ({"memory_mb": 10**15}, "memory_mb", "less than or equal to 1073741824"),
    ({"gpus": 1_000_000}, "gpus", "less than or equal to 10000"),
    ({"cpu": "lots"}, "cpu", "valid number"),
    ({"gpus": 1, "gpu_model": "H100"}, "gpu_model", "Unknown GPU model 'H100'"),
    ({"cpu": 1, "expires_at": PAST}, "expires_at", "in the past"),
    ({"cpu": 1, "justification": ""}, "justification", "blank"),
    ({}, "detail", "Ask for some CPU, memory or GPUs"),
]


@pytest.mark.parametrize(("body", "field", "message"), BAD_REQUESTS,
                         ids=[f"{b}" for b, _, _ in BAD_REQUESTS])
def test_bad_resource_requests_are_400_and_change_nothing(api_as, quota, engineer, gpu_host,
                                                          body, field, message):
    before = _state()
    response = api_as(engineer).post(URL, {"team": "ml-search", "justification": "why",
                                           **body}, format="json")
    assert response.status_code == 400, response.json()
    text = str(response.json()[field])
    assert message in text, text
    assert _state() == before


def test_unknown_team_is_404(api_as, engineer):
    response = api_as(engineer).post(URL, {"team": "nope", "cpu": 1, "justification": "x"},
                                     format="json")
    assert response.status_code == 404


@pytest.fixture
def pending(engineer, quota, gpu_host):
    return requests.file_request(actor=engineer, team=quota.team, cpu=4, gpus=2,
                                 gpu_model="T4", justification="training run")


def _approve(api_as, admin_user, request, **body):
    return api_as(admin_user).post(f"{URL}{request.pk}/approve/", body, format="json")


def test_approving_twice_is_409_and_changes_nothing(api_as, admin_user, pending):
    assert _approve(api_as, admin_user, pending).status_code == 200
    before = _state()
    response = _approve(api_as, admin_user, pending)
    assert response.status_code == 409
    assert response.json() == {"detail": f"Request #{pending.pk} is already approved.",
                               "code": "already_decided"}
    deny = api_as(admin_user).post(f"{URL}{pending.pk}/deny/", {"comment": "x"}, format="json")
    assert deny.status_code == 409
    assert _state() == before


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"cpu": 5}, 400, "Cannot grant more cpu than asked"),
    ({"gpus": -1}, 400, "greater than or equal to 0"),
    ({"cpu": 0, "gpus": 0}, 400, "Granting nothing is a denial"),
])
def test_bad_approvals_change_nothing(api_as, admin_user, pending, body, status, needle):
    before = _state()
    response = _approve(api_as, admin_user, pending, **body)
    assert response.status_code == status
    assert needle in str(response.json())
    assert _state() == before


def test_approving_more_than_the_platforms_capacity_is_409(api_as, admin_user, engineer, quota,
                                                           gpu_host):
    # gpu-1 has 64 cores (no overcommit); the team has 8; asking 100 more cannot be promised.
    request = requests.file_request(actor=engineer, team=quota.team, cpu=100,
                                    justification="everything")
    before = _state()
    response = _approve(api_as, admin_user, request)
    assert response.status_code == 409
    assert response.json()["code"] == "exceeds_capacity"
    assert "limit of 108 CPU but the platform has 64" in response.json()["detail"]
    assert _state() == before
    # With overcommit 2.0 the same grant fits.
    inventory.update_host(actor=admin_user, host=gpu_host, cpu_overcommit=2)
    assert _approve(api_as, admin_user, request, cpu=100).status_code == 200


def test_a_request_whose_period_passed_cannot_be_approved(api_as, admin_user, engineer, quota):
    request = requests.file_request(actor=engineer, team=quota.team, cpu=1, justification="x",
                                    expires_at=timezone.now() + timedelta(hours=1))
    ResourceRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1))
    before = _state()
    response = _approve(api_as, admin_user, request)
    assert response.status_code == 409 and response.json()["code"] == "request_expired"
    assert _state() == before


@pytest.mark.parametrize("body", [
    {"cpu": -1, "memory_mb": 1, "gpus": 0, "deployments": 1},
    {"cpu": 1, "memory_mb": 1, "gpus": 0},
    {"cpu": 1, "memory_mb": 1, "gpus": 100_000, "deployments": 1},
    {"cpu": "x", "memory_mb": 1, "gpus": 0, "deployments": 1},
])
def test_bad_quota_updates_are_400(api_as, admin_user, quota, body):
    before = _state()
    response = api_as(admin_user).put("/api/v1/teams/ml-search/quota/", body, format="json")
    assert response.status_code == 400, response.json()
    assert _state() == before


def test_setting_a_quota_beyond_capacity_is_409(api_as, admin_user, quota, gpu_host):
    before = _state()
    response = api_as(admin_user).put("/api/v1/teams/ml-search/quota/", {
        "cpu": 8, "memory_mb": 1024, "gpus": 5, "deployments": 1}, format="json")
    assert response.status_code == 409
    assert "5 GPUs but the platform has 4" in response.json()["detail"]
    assert _state() == before


def test_malformed_json_is_400(api_as, engineer, quota):
    response = api_as(engineer).generic("POST", URL, "{not json",
                                        content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


def test_repeated_grants_cannot_push_a_limit_past_the_absurd_bound(admin_user, engineer, quota):
    services.set_quota(actor=admin_user, team=quota.team, cpu=99_000, memory_mb=1,
                       gpus=0, deployments=1)
    request = requests.file_request(actor=engineer, team=quota.team, cpu=2000,
                                    justification="x")
    before = _state()
    with pytest.raises(Conflict) as refused:
        requests.approve_request(actor=admin_user, request=request)
    assert refused.value.code == "exceeds_capacity"
    assert _state() == before
