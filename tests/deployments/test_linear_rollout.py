"""A linear rollout: equal traffic steps (25, 50, 75 %, then 100), each held for interval_s.
Like canary's, its steps live on the revision and each pass does what is due and returns; the
passes are driven one by one here against test_reconcile's in-memory runtime, and "time passes"
by moving the step's due time into the past."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import InvalidInput
from deployments import services
from deployments.models import Deployment, Revision
from deployments.reconcile import reconcile_deployment
from tests.deployments.test_reconcile import FakeRuntime, create, fast  # noqa: F401

pytestmark = pytest.mark.usefixtures("fast")  # no drain, a short ready timeout, no enqueue
LINEAR = {"type": "linear", "step_percent": 25, "interval_s": 600}


@pytest.fixture
def linear(engineer, team, v1, v2, upstreams):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team, replicas=1, strategy=LINEAR)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    services.update_deployment(actor=engineer, deployment=d, version=2)
    return d, runtime


def time_passes(d: Deployment) -> None:
    Revision.objects.filter(deployment=d, number=2).update(
        next_step_at=timezone.now() - timedelta(seconds=1))


def new_share(d: Deployment) -> int:
    d.refresh_from_db()
    return next(t["percent"] for t in d.traffic if t["revision"] == 2)


def test_a_linear_rollout_steps_25_50_75_then_100_one_pass_at_a_time(linear, monkeypatch):
    d, runtime = linear
    assert reconcile_deployment(d.pk, runtime) == "linear"  # started r2, waited for it: 25 %
    slept: list[float] = []  # from here on, only steps: no pass waits for anything
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s))
    assert new_share(d) == 25
    revision = Revision.objects.get(deployment=d, number=2)
    assert revision.rollout_step == 0 and revision.next_step_at > timezone.now()
    assert "Linear rollout at 25% for revision 2 (step 1 of 3)" in d.status_message

    assert reconcile_deployment(d.pk, runtime) == "linear"  # not due yet: nothing moves
    assert new_share(d) == 25

    for share in (50, 75):
        time_passes(d)
        assert reconcile_deployment(d.pk, runtime) == "linear"
        assert new_share(d) == share
    time_passes(d)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.traffic == [{"revision": 2, "percent": 100}]
    assert sorted(runtime.replicas) == ["mp-iris-rc-r2-0"]
    assert [s for s in slept if s > 0] == []


def test_a_linear_rollout_validates_its_step(engineer, team, v1):
    with pytest.raises(InvalidInput, match=r"step_percent .* from 1 to 99"):
        create(engineer, team, strategy={"type": "linear", "step_percent": 100})
    with pytest.raises(InvalidInput, match="step_percent applies only to linear"):
        create(engineer, team, strategy={"type": "canary", "step_percent": 25})
    d = create(engineer, team, strategy={"type": "linear"})
    assert d.strategy == {"type": "linear", "step_percent": 25, "interval_s": 60}
