"""Capacity truth: total, allocated to quotas, used by deployments and free are one set of
numbers (``quotas.platform.platform_numbers``) on the capacity page, the quota page,
GET /capacity/ and GET /teams/{slug}/quota/; a request beyond what the platform has at all is
filed with a warning to the requester and a flag with the numbers in the approver's queue."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from compute import inventory
from quotas import services
from quotas.models import QuotaGrant, ResourceRequest
from quotas.platform import platform_numbers
from tests.factories import TeamFactory
from tests.fixtures import bearer_client

from .conftest import set_limits

pytestmark = pytest.mark.django_db
KINDS = ("total", "allocated", "used", "free")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_numbers(html: str) -> dict:
    """The platform table of a page: {kind: {"cpu", "memory_mb", "gpus"}} as strings."""
    table = html[html.index('class="platform-numbers"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<th scope="row">([^<]+)</th>((?:<td>[^<]*</td>)+)', table)
    names = {"CPU": "cpu", "Memory (MB)": "memory_mb", "GPUs": "gpus"}
    found: dict = {kind: {} for kind in KINDS}
    for label, cells in rows:
        for kind, value in zip(KINDS, re.findall(r"<td>([^<]*)</td>", cells), strict=True):
            found[kind][names[label]] = value
    return found


def as_text(numbers: dict) -> dict:
    return {kind: {name: format(Decimal(str(value)).normalize(), "f") if name == "cpu"
                   else str(value) for name, value in numbers[kind].items()} for kind in KINDS}


@pytest.fixture
def busy_platform(team, quota, admin_user, gpu_host):
    inventory.register_host(actor=admin_user, name="cpu-pool", kind="pool", cpu=32,
                            memory_mb=65536, cpu_overcommit=2)
    other = TeamFactory(slug="vision")
    set_limits(other, cpu="20.5", memory_mb=32768, gpus=2)
    QuotaGrant.objects.create(team=team, cpu=Decimal("1.5"), memory_mb=512, gpus=1,
                              expires_at=timezone.now() + timedelta(days=1))
    QuotaGrant.objects.create(team=team, cpu=100, memory_mb=1, gpus=0,  # lapsed: not counted
                              expires_at=timezone.now() - timedelta(days=1))
    services.admit(team=team, owner="deployment:a", cpu="2.25", memory_mb=4096, deployments=1)
    services.admit(team=other, owner="deployment:b", cpu=4, memory_mb=8192, gpus=1,
                   deployments=1)
    return other


def test_capacity_page_quota_page_and_api_agree(busy_platform, team, admin_user, engineer):
    expected = platform_numbers().as_dict()
    assert expected["total"] == {"cpu": Decimal("128.000"), "memory_mb": 262144 + 65536,
                                 "gpus": 4}
    assert expected["allocated"]["cpu"] == Decimal("8") + Decimal("1.5") + Decimal("20.5")
    assert expected["used"] == {"cpu": Decimal("6.25"), "memory_mb": 12288, "gpus": 1}
    want = as_text(expected)

    capacity_api = bearer_client(engineer).get("/api/v1/capacity/").json()["platform"]
    quota_api = bearer_client(engineer).get(f"/api/v1/teams/{team.slug}/quota/").json()
    assert as_text(capacity_api) == want
    assert as_text(quota_api["platform"]) == want
    for user in (engineer, admin_user):
        client = logged_in(user)
        assert page_numbers(client.get("/capacity/").content.decode()) == want
        assert page_numbers(client.get(f"/teams/{team.slug}/quota/").content.decode()) == want
    # The capacity page's older fields are the same numbers.
    body = bearer_client(engineer).get("/api/v1/capacity/").json()
    body["allocated"].pop("gpu_devices")  # devices held, counted per device, not per quota
    assert as_text({"used": body["allocated"], "allocated": body["committed"],
                    "total": capacity_api["total"], "free": capacity_api["free"]}) == want


def test_without_capacity_the_pages_say_so(team, quota, engineer):
    assert bearer_client(engineer).get(f"/api/v1/teams/{team.slug}/quota/").json()[
        "platform"] is None
    page = logged_in(engineer).get(f"/teams/{team.slug}/quota/").content.decode()
    assert "No host or pool registered yet" in page


def test_a_gpu_request_beyond_the_platform_warns_the_requester_and_flags_the_queue(
        team, quota, gpu_host, engineer, admin_user):
    response = logged_in(engineer).post(f"/teams/{team.slug}/quota/", {
        "intent": "request", "request-gpus": "8", "request-justification": "LLM fine-tuning"},
        follow=True)
    page = response.content.decode()
    assert "Request sent" in page
    assert "would have 8 GPUs, but the platform has 4 in all" in page
    assert ResourceRequest.objects.get().gpus == 8  # filed all the same

    queue = logged_in(admin_user).get("/resource-requests/").content.decode()
    assert "beyond capacity" in queue
    assert "team ml-search would have 8 GPUs, but the platform has 4 in all" in queue


def test_api_returns_the_warnings_with_the_filed_request(team, quota, gpu_host, engineer):
    client = bearer_client(engineer)
    response = client.post("/api/v1/resource-requests/", {
        "team": team.slug, "gpus": 3, "gpu_model": "T4", "justification": "x"}, format="json")
    assert response.status_code == 201
    assert response.json()["capacity_warnings"] == [
        "Granted in full, team ml-search would have 3 GPUs, but the platform has 2 T4 in all."]
    response = client.post("/api/v1/resource-requests/", {
        "team": team.slug, "cpu": 200, "justification": "x"}, format="json")
    assert response.json()["capacity_warnings"] == [
        "Granted in full, team ml-search would have 208 CPU, but the platform has 64 in all."]


def test_a_request_that_fits_is_not_flagged(team, quota, gpu_host, engineer, admin_user):
    response = bearer_client(engineer).post("/api/v1/resource-requests/", {
        "team": team.slug, "gpus": 2, "justification": "x"}, format="json")
    assert response.json()["capacity_warnings"] == []
    assert "beyond capacity" not in logged_in(admin_user).get(
        "/resource-requests/").content.decode()
