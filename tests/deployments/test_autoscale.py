"""The scaler's decisions (``deployments.autoscale``) against the reconciler and an in-memory
runtime whose replicas are tiny HTTP servers: load from the gateways' samples, up at once, down
after the stabilisation window, the quota capping a scale-up with one event, idle to zero with
the quota given back, and waking (concurrent wakes raise the count once)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from deployments import autoscale, services
from deployments.models import Deployment, Revision, ScaleSample, TrafficSample
from deployments.reconcile import reconcile_deployment
from deployments.spec import Autoscaling
from quotas.models import Reservation, TeamQuota
from quotas.services import get_quota
from teams.models import AuditEvent
from tests.deployments.test_reconcile import FakeRuntime

AUTO = {"min_replicas": 1, "max_replicas": 4, "metric": "concurrency", "target": 2,
        "scale_down_delay_s": 60}


@pytest.fixture
def fast(settings, no_enqueue, monkeypatch):
    settings.MODELPORT_DRAIN_SECONDS = 0
    settings.MODELPORT_READY_TIMEOUT_S = 5
    settings.MODELPORT_AUTOSCALE_WINDOW_S = 10
    woken: list[int] = []
    monkeypatch.setattr(autoscale, "task", lambda name: type(
        "T", (), {"delay": staticmethod(woken.append)}))
    return woken


def running(engineer, team, upstreams, **auto):
    runtime = FakeRuntime(upstreams)
    d = services.create_deployment(actor=engineer, team=team, name="iris-auto", model="iris",
                                   version=1, resources={"cpu": 0.5, "memory_mb": 256},
                                   autoscaling={**AUTO, **auto})
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    return d, runtime


def traffic(d, *, in_flight: float, at=None, seconds: int = 10) -> None:
    """What the gateways would have written: ``in_flight`` requests in flight on average."""
    at = at or timezone.now()
    for s in range(seconds):
        TrafficSample.objects.create(deployment=d, revision=d.revision,
                                     at=at - timedelta(seconds=s), requests=50,
                                     gateway_requests=50, busy_ms=in_flight * 1000)


def test_autoscaling_settings_are_checked_and_named():
    with pytest.raises(InvalidInput, match="max_replicas is required"):
        Autoscaling.parse({"min_replicas": 1})
    with pytest.raises(InvalidInput, match=r"max_replicas \(1\) must be at least min_replicas"):
        Autoscaling.parse({"min_replicas": 2, "max_replicas": 1})
    with pytest.raises(InvalidInput, match="metric must be one of concurrency, rps, cpu"):
        Autoscaling.parse({"max_replicas": 2, "metric": "memory"})
    with pytest.raises(InvalidInput, match=r"target .* at most 100"):
        Autoscaling.parse({"max_replicas": 2, "metric": "cpu", "target": 150})
    with pytest.raises(InvalidInput, match="idle_to_zero_after_s must be a whole number from 10"):
        Autoscaling.parse({"max_replicas": 2, "idle_to_zero_after_s": 1})
    with pytest.raises(InvalidInput, match="unknown key"):
        Autoscaling.parse({"max_replicas": 2, "cooldown": 5})
    a = Autoscaling.parse({"max_replicas": 3, "metric": "rps"})
    assert a is not None and a.as_dict()["target"] == 50 and a.clamp(9) == 3


def test_a_burst_scales_up_at_once_and_down_only_after_the_delay(fast, engineer, team, v1,
                                                                 upstreams):
    d, runtime = running(engineer, team, upstreams)
    assert d.replicas == 1 and "replicas" not in Revision.objects.get(deployment=d).spec
    now = timezone.now()
    traffic(d, in_flight=7.0, at=now)
    decision = autoscale.autoscale(d.pk, now=now)
    assert decision is not None and decision.wanted == 4
    d.refresh_from_db()
    assert d.replicas == 4
    assert Reservation.objects.get(owner=d.owner).cpu == 2  # 4 x 0.5 admitted
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert d.replica_set.filter(ready=True).count() == 4
    assert d.revisions.count() == 1  # scaling makes no revision, nothing restarted
    assert d.events.filter(message__startswith="Scaling up 1 → 4").exists()
    assert AuditEvent.objects.filter(action="deployment.scaled").exists()

    # The load drops: nothing is removed before the scale-down delay has passed...
    later = now + timedelta(seconds=30)
    traffic(d, in_flight=1.0, at=later)
    assert autoscale.autoscale(d.pk, now=later) is None
    d.refresh_from_db()
    assert d.replicas == 4
    # ... after it, the count follows the load (1 in flight at 2 per replica: one replica).
    latest = now + timedelta(seconds=75)
    traffic(d, in_flight=1.0, at=latest)
    assert autoscale.autoscale(d.pk, now=latest).wanted == 1
    d.refresh_from_db()
    assert d.replicas == 1
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert len(runtime.list_replicas("iris-auto")) == 1
    assert Reservation.objects.get(owner=d.owner).cpu == 0.5
    samples = list(ScaleSample.objects.filter(deployment=d).order_by("at")
                   .values_list("desired", flat=True))
    assert 4 in samples and samples[-1] == 1


def test_load_within_the_tolerance_changes_nothing(fast, engineer, team, v1, upstreams):
    d, _ = running(engineer, team, upstreams, min_replicas=2)
    traffic(d, in_flight=4.2)  # 2.1 per replica against 2: within 10 %
    assert autoscale.autoscale(d.pk) is None
    d.refresh_from_db()
    assert d.replicas == 2


def test_the_quota_caps_a_scale_up_with_one_event(fast, engineer, team, v1, upstreams):
    get_quota(team)
    TeamQuota.objects.filter(team=team).update(cpu=1.5)
    d, runtime = running(engineer, team, upstreams)
    traffic(d, in_flight=8.0)
    autoscale.autoscale(d.pk)
    d.refresh_from_db()
    assert d.replicas == 3  # 3 x 0.5 CPU is all the quota holds
    capped = d.events.filter(message__startswith="Scale-up capped at 3 of the 4")
    assert capped.count() == 1 and "team ml-search has" in capped.first().message
    autoscale.autoscale(d.pk)
    assert capped.count() == 1  # the same reason is not repeated
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert len(runtime.list_replicas("iris-auto")) == 3


def test_idle_goes_to_zero_gives_the_quota_back_and_a_request_wakes_it(
        fast, engineer, team, v1, upstreams, django_capture_on_commit_callbacks):
    d, runtime = running(engineer, team, upstreams, idle_to_zero_after_s=60)
    past = timezone.now() - timedelta(seconds=120)
    Deployment.objects.filter(pk=d.pk).update(created_at=past, scaled_at=None)
    decision = autoscale.autoscale(d.pk)
    assert decision is not None and decision.wanted == 0
    assert reconcile_deployment(d.pk, runtime) == "idle"
    d.refresh_from_db()
    assert d.replicas == 0 and d.status == "idle"
    assert d.traffic == [{"revision": 1, "percent": 100}]  # the route stays
    assert runtime.list_replicas("iris-auto") == []
    reservation = Reservation.objects.get(owner=d.owner)
    assert reservation.cpu == 0 and reservation.memory_mb == 0
    assert autoscale.autoscale(d.pk) is None  # asleep: nothing for the scaler

    with django_capture_on_commit_callbacks(execute=True):
        assert autoscale.wake(d.pk) is True
    assert fast == [d.pk]  # the wake pass was enqueued
    assert autoscale.wake(d.pk) is False  # already woken: nothing more
    d.refresh_from_db()
    assert d.replicas == 1 and Reservation.objects.get(owner=d.owner).cpu == 0.5
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert d.revisions.count() == 1
    assert AuditEvent.objects.filter(action="deployment.woken").count() == 1


def test_a_recent_request_keeps_it_awake(fast, engineer, team, v1, upstreams):
    d, _ = running(engineer, team, upstreams, idle_to_zero_after_s=60)
    Deployment.objects.filter(pk=d.pk).update(created_at=timezone.now() - timedelta(hours=1),
                                              scaled_at=None)
    traffic(d, in_flight=0.5, seconds=1, at=timezone.now() - timedelta(seconds=30))
    autoscale.autoscale(d.pk)
    d.refresh_from_db()
    assert d.replicas == 1


def test_a_wake_over_the_quota_is_refused_with_the_numbers(fast, engineer, team, v1,
                                                          upstreams):
    d, runtime = running(engineer, team, upstreams, idle_to_zero_after_s=60)
    Deployment.objects.filter(pk=d.pk).update(created_at=timezone.now() - timedelta(hours=1),
                                              scaled_at=None)
    autoscale.autoscale(d.pk)
    reconcile_deployment(d.pk, runtime)
    get_quota(team)
    TeamQuota.objects.filter(team=team).update(cpu=0.25)
    with pytest.raises(Conflict, match=r"needs 0\.5 CPU; team ml-search has 0\.25 of 0\.25"):
        autoscale.wake(d.pk)
    d.refresh_from_db()
    assert d.replicas == 0


def test_changing_the_bounds_resizes_in_place(fast, engineer, team, v1, upstreams):
    d, _ = running(engineer, team, upstreams)
    services.update_deployment(actor=engineer, deployment=d,
                               autoscaling={**AUTO, "min_replicas": 2})
    d.refresh_from_db()
    assert d.replicas == 2 and d.revisions.count() == 1
    services.update_deployment(actor=engineer, deployment=d, autoscaling=None)
    d.refresh_from_db()
    assert d.autoscaling == {} and d.replicas == 2 and d.revisions.count() == 1
    services.update_deployment(actor=engineer, deployment=d, replicas=3)
    d.refresh_from_db()  # its revision has no count: resized in place too
    assert d.replicas == 3 and d.revisions.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_wakes_raise_the_count_once(fast, engineer, team, v1, upstreams):
    d, runtime = running(engineer, team, upstreams, idle_to_zero_after_s=60)
    Deployment.objects.filter(pk=d.pk).update(created_at=timezone.now() - timedelta(hours=1),
                                              scaled_at=None)
    autoscale.autoscale(d.pk)
    reconcile_deployment(d.pk, runtime)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def wake() -> None:
        barrier.wait()
        try:
            results.append(autoscale.wake(d.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=wake) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    d.refresh_from_db()
    assert d.replicas == 1
    assert AuditEvent.objects.filter(action="deployment.woken").count() == 1


def test_a_count_a_user_sets_is_not_undone_at_the_next_look(fast, engineer, team, v1,
                                                           upstreams):
    d, _ = running(engineer, team, upstreams)
    services.update_deployment(actor=engineer, deployment=d, replicas=3)
    traffic(d, in_flight=0.5)  # light load: alone it would want 1 replica
    assert autoscale.autoscale(d.pk) is None
    d.refresh_from_db()
    assert d.replicas == 3  # held for scale_down_delay_s like any count the scaler set


def test_only_a_deployment_asleep_or_waking_holds_requests(fast, engineer, team, v1,
                                                          upstreams):
    from gateway import routes

    d, _ = running(engineer, team, upstreams, idle_to_zero_after_s=60)
    for status, count, held in (("healthy", 1, False), ("degraded", 1, False),
                                ("building", 1, False), ("idle", 0, True),
                                ("starting", 1, True), ("failed", 0, False)):
        Deployment.objects.filter(pk=d.pk).update(status=status, replicas=count)
        routes.invalidate()
        assert routes.route_for(d.name).wakes is held, status


def test_stored_bounds_above_a_lowered_replica_limit_still_wake(fast, engineer, team, v1,
                                                               upstreams, settings):
    d, runtime = running(engineer, team, upstreams, max_replicas=4, idle_to_zero_after_s=60)
    Deployment.objects.filter(pk=d.pk).update(created_at=timezone.now() - timedelta(hours=1),
                                              scaled_at=None)
    autoscale.autoscale(d.pk)
    reconcile_deployment(d.pk, runtime)
    settings.MODELPORT_MAX_REPLICAS = 2  # an operator lowered it below the stored max of 4
    assert autoscale.wake(d.pk) is True
    d.refresh_from_db()
    assert d.replicas == 1
