"""Temporary grants are taken back by the beat task; running deployments are flagged, not
stopped; the team is told. Undecided requests whose period passed expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.utils import timezone

from core.errors import Conflict
from notifications.models import Notification
from quotas import requests, services, tasks
from quotas.models import QuotaGrant, Reservation, ResourceRequest
from teams.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def granted(quota, engineer, admin_user):
    request = requests.file_request(actor=engineer, team=quota.team, cpu=8, justification="peak",
                                    expires_at=timezone.now() + timedelta(hours=2))
    requests.approve_request(actor=admin_user, request=request)
    return QuotaGrant.objects.get(request=request)


def test_beat_schedules_the_expiry_and_drift_tasks():
    tasks_scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"quotas.tasks.expire_grants", "quotas.tasks.check_usage_drift"} <= tasks_scheduled


def test_grants_count_until_they_expire(granted, quota):
    assert services.usage(quota.team).limits.cpu == 16
    assert tasks.expire_grants.delay().get() == 0  # not due yet
    QuotaGrant.objects.filter(pk=granted.pk).update(expires_at=timezone.now())
    assert tasks.expire_grants.delay().get() == 1
    assert services.usage(quota.team).limits.cpu == 8
    assert QuotaGrant.objects.get(pk=granted.pk).expired_at is not None
    assert AuditEvent.objects.filter(action="quota.grant_expired").count() == 1
    assert tasks.expire_grants.delay().get() == 0  # idempotent


def test_expiry_flags_deployments_over_the_new_limit_and_notifies_the_team(
        granted, quota, engineer, maintainer, django_capture_on_commit_callbacks):
    services.admit(team=quota.team, owner="deployment:base", cpu=6, deployments=1)
    services.admit(team=quota.team, owner="deployment:burst", cpu=6, deployments=1)
    services.mark_running(owner="deployment:burst")
    with django_capture_on_commit_callbacks(execute=True):
        requests.expire_grants(now=granted.expires_at + timedelta(seconds=1))
    burst = Reservation.objects.get(owner="deployment:burst")
    assert burst.over_limit_since is not None and burst.state == "running"  # flagged, not killed
    assert Reservation.objects.get(owner="deployment:base").over_limit_since is None
    texts = list(Notification.objects.filter(user=maintainer).values_list("text", flat=True))
    assert any("deployment:burst keep running but are flagged" in t for t in texts)
    assert any("ended" in t for t in texts)
    assert {tuple(m.to) for m in mail.outbox} >= {(engineer.email,), (maintainer.email,)}
    event = AuditEvent.objects.get(action="quota.over_limit")
    assert event.after["flagged"] == ["deployment:burst"]
    # New deploys are refused while over; scaling down never is, and clears the flag.
    with pytest.raises(Conflict):
        services.admit(team=quota.team, owner="deployment:more", cpu="0.1")
    services.admit(team=quota.team, owner="deployment:burst", cpu=-4)
    assert Reservation.objects.get(owner="deployment:burst").over_limit_since is None
    assert Notification.objects.filter(user=maintainer, kind="quota.over_limit").count() == 1


def test_pending_requests_whose_period_passed_expire(quota, engineer):
    request = requests.file_request(actor=engineer, team=quota.team, cpu=1, justification="x",
                                    expires_at=timezone.now() + timedelta(minutes=5))
    requests.expire_grants(now=timezone.now() + timedelta(minutes=6))
    assert ResourceRequest.objects.get(pk=request.pk).status == "expired"
    assert "expired before anyone decided" in Notification.objects.get(user=engineer).text
