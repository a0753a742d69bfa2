"""The nightly check compares reservations (desired state) with what runs, and reports drift."""

from __future__ import annotations

import pytest

from compute import inventory, tasks
from notifications.models import Notification
from quotas import services
from teams.models import AuditEvent
from tests.quotas.conftest import set_limits
from workers.runtimes import ReplicaState, ReplicaStatus

pytestmark = pytest.mark.django_db


def test_no_drift_when_reservations_match_what_runs(team, quota):
    services.admit(team=team, owner="deployment:a", cpu=1)
    services.mark_running(owner="deployment:a")
    report = services.check_usage_drift(running_owners=["deployment:a"])
    assert not report.has_drift
    assert not AuditEvent.objects.filter(action="quota.drift_detected").exists()


def test_drift_is_reported_to_admins_and_the_audit_log(team, admin_user, gpu_host):
    set_limits(team, gpus=1)
    services.admit(team=team, owner="deployment:gone", cpu=1, gpus=1)
    services.mark_running(owner="deployment:gone")
    services.admit(team=team, owner="deployment:starting", cpu=1)  # pending: not drift
    inventory.allocate_gpus(team=team, count=1, owner="deployment:gone/r0")
    report = services.check_usage_drift(
        running_owners=["deployment:rogue"],
        stale_gpus=inventory.stale_gpu_owners(["deployment:rogue/r0"]))
    assert report.as_dict() == {"missing": ["deployment:gone"],
                                "unreserved": ["deployment:rogue"],
                                "stale_gpus": ["deployment:gone/r0"]}
    assert AuditEvent.objects.get(action="quota.drift_detected").after == report.as_dict()
    assert "1 reserved but not running" in Notification.objects.get(user=admin_user).text


def test_the_task_reads_running_owners_from_runtime_labels(team, quota, monkeypatch):
    services.admit(team=team, owner="deployment:a", cpu=1)
    services.mark_running(owner="deployment:a")

    class FakeRuntime:
        def list_replicas(self):
            return [ReplicaState(id="c1", deployment="a", revision=1, replica=0,
                                 status=ReplicaStatus.RUNNING),
                    ReplicaState(id="c2", deployment="b", revision=1, replica=0,
                                 status=ReplicaStatus.RUNNING)]

    monkeypatch.setattr("workers.factory.get_runtime", lambda: FakeRuntime())
    assert tasks.check_usage_drift.delay().get() == {
        "missing": [], "unreserved": ["deployment:b"], "stale_gpus": []}


def test_the_task_skips_when_no_runtime_answers(team, quota, monkeypatch):
    def broken():
        raise RuntimeError("docker socket gone")

    monkeypatch.setattr("workers.factory.get_runtime", broken)
    assert tasks.check_usage_drift.delay().get() is None
