"""Canary steps persisted on the revision: a reconcile pass does what is due and returns, the
next pass (beat, or a countdown task when that comes sooner) resumes. Passes are driven here one
by one against the in-memory runtime of test_reconcile; "time passes" by moving the step's due
time into the past, as the clock would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments import services
from deployments.models import Deployment, Revision, TrafficSample
from deployments.reconcile import reconcile_deployment
from tests.deployments.test_reconcile import FakeRuntime, create, fast  # noqa: F401
from workers.runtimes import ReplicaStatus

pytestmark = pytest.mark.usefixtures("fast")  # no drain, a short ready timeout, no enqueue
CANARY = {"type": "canary", "steps": [10, 50, 100], "interval_s": 600}


@pytest.fixture
def canary(engineer, team, v1, v2, upstreams):
    """iris-rc healthy on revision 1, then version 2 as a canary of two 10-minute steps."""
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team, replicas=1, strategy=CANARY)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    services.update_deployment(actor=engineer, deployment=d, version=2)
    return d, runtime


def revision(d: Deployment, number: int = 2) -> Revision:
    return Revision.objects.get(deployment=d, number=number)


def time_passes(d: Deployment, number: int = 2) -> None:
    """The current step's interval is over."""
    Revision.objects.filter(deployment=d, number=number).update(
        next_step_at=timezone.now() - timedelta(seconds=1))


def traffic_events(d: Deployment) -> list[str]:
    return list(d.events.filter(kind="traffic").order_by("id").values_list("message", flat=True))


def test_a_canary_step_is_persisted_and_the_pass_returns_at_once(canary):
    d, runtime = canary
    assert reconcile_deployment(d.pk, runtime) == "canary"
    r2 = revision(d)
    assert r2.rollout_step == 0 and r2.state == "rolling_out"
    assert r2.next_step_at - r2.step_started_at == timedelta(seconds=600)
    assert r2.next_step_at > timezone.now()  # returned long before the step is over
    d.refresh_from_db()
    assert d.traffic == [{"revision": 2, "percent": 10}, {"revision": 1, "percent": 90}]
    assert d.status == "starting"
    assert "Canary at 10% for revision 2 (step 1 of 2); next step at" in d.status_message

    # Beat's next passes find the step not due: nothing moves, nothing is said twice.
    assert reconcile_deployment(d.pk, runtime) == "canary"
    assert reconcile_deployment(d.pk, runtime) == "canary"
    assert revision(d).rollout_step == 0
    assert traffic_events(d).count("Canary: 10% of traffic to revision 2.") == 1
    assert sorted(runtime.replicas) == ["mp-iris-rc-r1-0", "mp-iris-rc-r2-0"]


def test_the_next_pass_after_the_interval_judges_the_step_and_starts_the_next(canary):
    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "canary"
    assert revision(d).rollout_step == 1
    d.refresh_from_db()
    assert d.traffic == [{"revision": 2, "percent": 50}, {"revision": 1, "percent": 50}]
    assert any(m.startswith("Canary at 10% looks fine") for m in traffic_events(d))

    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.traffic == [{"revision": 2, "percent": 100}]
    assert revision(d).rollout_step == 2 and revision(d).state == "active"
    assert sorted(runtime.replicas) == ["mp-iris-rc-r2-0"]


def test_a_step_is_judged_on_the_traffic_since_it_began(canary):
    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    time_passes(d)
    reconcile_deployment(d.pk, runtime)  # step 2 (50 %) begins
    began = revision(d).step_started_at
    # Errors of the new revision before this step began (during the 10 % step) do not count.
    TrafficSample.objects.create(deployment=d, revision=2, at=began - timedelta(seconds=5),
                                 requests=100, errors=60, p95_ms=9)
    TrafficSample.objects.create(deployment=d, revision=1, at=began - timedelta(seconds=5),
                                 requests=100, errors=0, p95_ms=8)
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "healthy"


def test_errors_during_a_step_roll_the_canary_back_when_it_ends(canary):
    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    began = revision(d).step_started_at
    TrafficSample.objects.create(deployment=d, revision=2, at=began, requests=40, errors=12,
                                 p95_ms=9)
    TrafficSample.objects.create(deployment=d, revision=1, at=began, requests=360, errors=0,
                                 p95_ms=8)
    assert reconcile_deployment(d.pk, runtime) == "canary"  # judged when the step ends
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "rolled-back"
    d.refresh_from_db()
    assert d.revision == 3 and revision(d).state == "failed"
    assert "Canary failed at 10%: error rate 30.0% vs 0.0% on revision 1" in \
        d.events.filter(kind="error").first().message
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.traffic == [{"revision": 3, "percent": 100}]


def test_a_canary_replica_that_dies_between_passes_rolls_back(canary):
    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    runtime.replicas["mp-iris-rc-r2-0"].status = ReplicaStatus.EXITED
    runtime.replicas["mp-iris-rc-r2-0"].exit_code = 137
    assert reconcile_deployment(d.pk, runtime) == "rolled-back"
    error = d.events.filter(kind="error").first().message
    assert error.startswith("Canary failed at 10%: replica mp-iris-rc-r2-0 exited (code 137).")
    assert "mp-iris-rc-r2-0" not in runtime.replicas  # not replaced: removed
    assert revision(d).state == "failed"


def test_the_deployment_api_shows_the_step(canary, api_as, engineer):
    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    body = api_as(engineer).get(f"/api/v1/deployments/{d.name}/").json()
    r2 = revision(d)
    assert body["rollout"]["strategy"] == "canary"
    assert (body["rollout"]["step"], body["rollout"]["steps"], body["rollout"]["percent"]) \
        == (1, 2, 10)
    assert body["rollout"]["next_step_at"].startswith(r2.next_step_at.strftime("%Y-%m-%dT%H:%M"))
    assert body["retry"] is None


@pytest.mark.parametrize("interval, countdown", [(3, True), (600, False)])
def test_a_countdown_task_brings_a_step_due_before_beats_next_tick(
        canary, settings, monkeypatch, django_capture_on_commit_callbacks, interval,
        countdown):
    """With a broker (not eager), a step that ends before beat's next tick
    (MODELPORT_RECONCILE_SECONDS) gets a reconcile sent with that countdown; a longer one is
    left to beat. apply_async is recorded instead of sent: no broker in this test."""
    d, runtime = canary
    Deployment.objects.filter(pk=d.pk).update(strategy={**CANARY, "interval_s": interval})
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.MODELPORT_RECONCILE_SECONDS = 10
    sent: list[tuple] = []
    monkeypatch.setattr("deployments.tasks.reconcile.apply_async",
                        lambda args, countdown: sent.append((args, countdown)))
    with django_capture_on_commit_callbacks(execute=True):
        assert reconcile_deployment(d.pk, runtime) == "canary"
    if countdown:
        assert len(sent) == 1 and sent[0][0] == (d.pk,) and 0 < sent[0][1] <= interval
    else:
        assert sent == []


def test_the_deployment_page_shows_the_step(canary, engineer):
    from django.test import Client

    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    browser = Client()
    browser.force_login(engineer)
    page = browser.get(f"/deployments/{d.name}/status/").content.decode()
    assert "Canary step 1 of 2: 10% of traffic to revision 2; next step in " in page


def test_a_canary_interrupted_by_a_change_is_never_left_rolling_out(canary, engineer, v1):
    """Revision 2 is mid-canary (step persisted, a next step due) when the deployment is
    changed again: revision 3 rolls out and settles; revision 2's rollout never finishes, so
    it is superseded, its step state cleared — not "Rolling out" for good."""
    d, runtime = canary
    assert reconcile_deployment(d.pk, runtime) == "canary"
    assert revision(d).state == "rolling_out" and revision(d).next_step_at is not None
    d.refresh_from_db()
    services.update_deployment(actor=engineer, deployment=d, version=1,
                               strategy={"type": "blue_green"})
    r2 = revision(d)
    assert (r2.state, r2.next_step_at) == ("superseded", None)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    states = dict(Revision.objects.filter(deployment=d).values_list("number", "state"))
    assert states == {1: "superseded", 2: "superseded", 3: "active"}
    d.refresh_from_db()
    assert d.traffic == [{"revision": 3, "percent": 100}]
    assert sorted(runtime.replicas) == ["mp-iris-rc-r3-0"]


def test_settling_supersedes_a_revision_left_rolling_out_before_this_fix(canary, engineer,
                                                                          v1):
    """A revision written "Rolling out" by an earlier release (not superseded when it was
    replaced) is superseded when the revision after it settles."""
    d, runtime = canary
    reconcile_deployment(d.pk, runtime)
    d.refresh_from_db()
    services.update_deployment(actor=engineer, deployment=d, version=1)
    Revision.objects.filter(deployment=d, number=2).update(state="rolling_out")  # as before
    time_passes(d, 3)
    for _ in range(3):
        if reconcile_deployment(d.pk, runtime) == "healthy":
            break
        time_passes(d, 3)
    assert revision(d, 2).state == "superseded" and revision(d, 3).state == "active"
