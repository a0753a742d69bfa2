"""The reconciler's decisions against an in-memory runtime whose replicas are tiny HTTP servers:
convergence, a failing revision leaves the old one serving, canary steps, stop, the lock."""

from __future__ import annotations

import pytest

from deployments import services
from deployments.locks import deployment_lock
from deployments.models import Deployment, Revision
from deployments.reconcile import reconcile_deployment
from quotas.models import Reservation
from tests.deployments.conftest import dead_url
from workers.runtimes import ReplicaState, ReplicaStatus


class FakeRuntime:
    def __init__(self, make_url, broken: set[int] | None = None) -> None:
        self.make_url, self.broken = make_url, broken or set()
        self.replicas: dict[str, ReplicaState] = {}
        self.started: list[str] = []

    def ensure_image(self, requirements, on_log=None) -> str:
        if on_log:
            on_log("Step 1/1 : RUN pip install ...")
        return "modelport/serving:fake"

    def start_replica(self, spec) -> ReplicaState:
        broken = spec.revision in self.broken
        state = ReplicaState(id=spec.name, deployment=spec.deployment, revision=spec.revision,
                             replica=spec.replica,
                             status=ReplicaStatus.EXITED if broken else ReplicaStatus.RUNNING,
                             url=dead_url() if broken else self.make_url(spec.name),
                             exit_code=1 if broken else None)
        self.replicas[state.id] = state
        self.started.append(state.id)
        return state

    def list_replicas(self, deployment=None):
        return sorted((s for s in self.replicas.values()
                       if deployment is None or s.deployment == deployment),
                      key=lambda s: (s.revision, s.replica))

    def get_replica(self, replica_id):
        return self.replicas.get(replica_id) or ReplicaState(
            id=replica_id, deployment="", revision=0, replica=0, status=ReplicaStatus.MISSING)

    def remove_replica(self, replica_id) -> None:
        self.replicas.pop(replica_id, None)

    def logs(self, replica_id, tail=200) -> str:
        return "Traceback (most recent call last):\nModuleNotFoundError: No module named 'boom'"

    def ping(self) -> bool:
        return True


@pytest.fixture
def fast(settings, no_enqueue):
    settings.MODELPORT_DRAIN_SECONDS = 0
    settings.MODELPORT_READY_TIMEOUT_S = 5


def create(engineer, team, **extra):
    args = {"name": "iris-rc", "model": "iris", "version": 1, "replicas": 2,
            "resources": {"cpu": 0.5, "memory_mb": 256}}
    args.update(extra)
    return services.create_deployment(actor=engineer, team=team, **args)


def test_converges_and_is_idempotent(fast, engineer, team, v1, upstreams):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.status == "healthy" and d.progress == 100
    assert d.traffic == [{"revision": 1, "percent": 100}]
    assert d.replica_set.filter(ready=True).count() == 2
    assert Reservation.objects.get(owner=d.owner).state == "running"
    assert d.events.filter(kind="build").exists()
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert len(runtime.started) == 2  # nothing restarted

    # A replica vanishes: it is started again.
    runtime.replicas.pop("mp-iris-rc-r1-0")
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert len(runtime.started) == 3


def test_a_failing_revision_leaves_the_old_one_serving(fast, engineer, team, v1, v2,
                                                       upstreams):
    runtime = FakeRuntime(upstreams, broken={2})
    d = create(engineer, team)
    reconcile_deployment(d.pk, runtime)
    services.update_deployment(actor=engineer, deployment=d, version=2)
    assert reconcile_deployment(d.pk, runtime) == "failed"
    d.refresh_from_db()
    assert d.status == "failed" and "revision 1 keeps serving" in d.status_message
    assert d.traffic == [{"revision": 1, "percent": 100}]
    assert {s.revision for s in runtime.list_replicas("iris-rc")} == {1}
    error = d.events.filter(kind="error").first()
    assert "No module named 'boom'" in error.message
    assert Revision.objects.get(deployment=d, number=2).state == "failed"
    assert reconcile_deployment(d.pk, runtime) == "failed"  # not retried until changed
    assert not [s for s in runtime.list_replicas("iris-rc") if s.revision == 2]
    # ... but the revision still serving is kept whole.
    runtime.replicas.pop("mp-iris-rc-r1-1")
    assert reconcile_deployment(d.pk, runtime) == "failed"
    assert sorted(s.id for s in runtime.list_replicas("iris-rc")) == ["mp-iris-rc-r1-0",
                                                                     "mp-iris-rc-r1-1"]
    services.rollback(actor=engineer, deployment=d)
    assert reconcile_deployment(d.pk, runtime) == "healthy"


def test_canary_steps_traffic(fast, engineer, team, v1, v2, upstreams):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team, replicas=1,
               strategy={"type": "canary", "steps": [10, 50, 100], "interval_s": 0})
    reconcile_deployment(d.pk, runtime)
    services.update_deployment(actor=engineer, deployment=d, version=2)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    messages = list(d.events.filter(kind="traffic").order_by("id")
                    .values_list("message", flat=True))
    assert any("Canary: 10%" in m for m in messages)
    assert any("Canary: 50%" in m for m in messages)
    d.refresh_from_db()
    assert d.traffic == [{"revision": 2, "percent": 100}]


def test_a_rollback_of_a_canary_deployment_switches_at_once(fast, engineer, team, v1, v2,
                                                           upstreams):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team, replicas=1,
               strategy={"type": "canary", "steps": [10, 50, 100], "interval_s": 0})
    reconcile_deployment(d.pk, runtime)
    services.update_deployment(actor=engineer, deployment=d, version=2)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    services.rollback(actor=engineer, deployment=d)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.strategy_type == "canary"  # kept for the next change
    assert d.traffic == [{"revision": 3, "percent": 100}]
    rollback_traffic = list(d.events.filter(kind="traffic", revision=3)
                            .values_list("message", flat=True))
    assert rollback_traffic and not any("Canary" in m for m in rollback_traffic)
    # The next version change walks the canary steps again.
    services.update_deployment(actor=engineer, deployment=d, version=2)
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert d.events.filter(kind="traffic", revision=4, message__contains="Canary").exists()


def test_stop_removes_replicas(fast, engineer, team, v1, upstreams):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team)
    reconcile_deployment(d.pk, runtime)
    services.stop(actor=engineer, deployment=d)
    assert reconcile_deployment(d.pk, runtime) == "stopped"
    d.refresh_from_db()
    assert d.status == "stopped" and runtime.replicas == {} and d.traffic == []
    assert not d.replica_set.exists()


def test_a_second_reconcile_at_once_steps_aside(fast, engineer, team, v1, upstreams):
    d = create(engineer, team)
    with deployment_lock(d.pk) as got:
        assert got
        assert reconcile_deployment(d.pk, FakeRuntime(upstreams)) == "busy"
    assert Deployment.objects.get(pk=d.pk).status == "pending"



def test_canary_rolls_back_when_the_new_revision_errs_more(fast, engineer, team, v1, v2,
                                                           upstreams):
    from deployments.models import TrafficSample

    runtime = FakeRuntime(upstreams)
    d = create(engineer, team, replicas=1,
               strategy={"type": "canary", "steps": [10, 100], "interval_s": 0})
    reconcile_deployment(d.pk, runtime)
    services.update_deployment(actor=engineer, deployment=d, version=2)
    now = Revision.objects.get(deployment=d, number=2).created_at
    TrafficSample.objects.create(deployment=d, revision=2, at=now, requests=40, errors=12,
                                 p95_ms=9)
    TrafficSample.objects.create(deployment=d, revision=1, at=now, requests=360, errors=0,
                                 p95_ms=8)
    assert reconcile_deployment(d.pk, runtime) == "rolled-back"
    d.refresh_from_db()
    assert d.revision == 3 and d.version.version == 1
    reason = d.events.filter(kind="error").first().message
    assert "Canary failed at 10%: error rate 30.0% vs 0.0% on revision 1" in reason
    assert Revision.objects.get(deployment=d, number=2).state == "failed"
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    d.refresh_from_db()
    assert d.traffic == [{"revision": 3, "percent": 100}]


def test_gpu_replicas_get_their_own_devices_and_give_them_back(fast, engineer, team, v1, v2,
                                                               upstreams):
    from compute.models import GpuAllocation, GpuDevice, Host
    from quotas.models import TeamQuota
    from quotas.services import get_quota

    get_quota(team)
    TeamQuota.objects.filter(team=team).update(gpus=2)
    host = Host.objects.create(name="gpu-1", cpu=32, memory_mb=65536)
    for device in ("0", "1"):
        GpuDevice.objects.create(host=host, device_id=device, model="A100")
    runtime = FakeRuntime(upstreams)
    seen: list[list[str]] = []
    original = runtime.start_replica

    def start(spec):
        seen.append(list(spec.gpu_device_ids))
        return original(spec)

    runtime.start_replica = start
    d = create(engineer, team, resources={"cpu": 0.5, "memory_mb": 256, "gpus": 1})
    assert reconcile_deployment(d.pk, runtime) == "healthy"
    assert sorted(seen) == [["0"], ["1"]]
    services.update_deployment(actor=engineer, deployment=d, version=2)
    assert reconcile_deployment(d.pk, runtime) == "healthy"  # in place: no surge needed
    assert {s.revision for s in runtime.list_replicas("iris-rc")} == {2}
    assert GpuAllocation.objects.active().count() == 2
    services.stop(actor=engineer, deployment=d)
    reconcile_deployment(d.pk, runtime)
    assert GpuAllocation.objects.active().count() == 0


def test_a_failing_replacement_degrades_but_never_fails_a_healthy_revision(
        fast, engineer, team, v1, upstreams):
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team)
    reconcile_deployment(d.pk, runtime)
    runtime.broken.add(1)
    runtime.replicas.pop("mp-iris-rc-r1-1")
    assert reconcile_deployment(d.pk, runtime) == "degraded"
    d.refresh_from_db()
    assert d.status == "degraded"
    assert Revision.objects.get(deployment=d, number=1).state == "active"
    assert [s.id for s in runtime.list_replicas("iris-rc")] == ["mp-iris-rc-r1-0"]
    assert d.traffic == [{"revision": 1, "percent": 100}]
    runtime.broken.clear()
    assert reconcile_deployment(d.pk, runtime) == "healthy"


def test_crash_loop_stops_restarting_and_says_why(fast, settings, engineer, team, v1,
                                                  upstreams):
    settings.MODELPORT_CRASH_LOOP_RESTARTS = 1
    runtime = FakeRuntime(upstreams)
    d = create(engineer, team)
    reconcile_deployment(d.pk, runtime)
    outcomes = []
    for _ in range(3):
        victim = runtime.replicas.get("mp-iris-rc-r1-1", None)
        if victim is not None:
            victim.status, victim.exit_code = ReplicaStatus.EXITED, 137
        outcomes.append(reconcile_deployment(d.pk, runtime))
    assert outcomes[-1] == "crash-loop", outcomes
    d.refresh_from_db()
    assert d.status == "degraded" and "keeps crashing" in d.status_message
    warning = d.events.filter(kind="warning").first()
    assert "exit code 137" in warning.message and "No module named 'boom'" in warning.message


@pytest.mark.redis
def test_redis_lock_is_exclusive(settings, redis_url, engineer, team, v1, no_enqueue):
    settings.REDIS_URL = redis_url
    d = create(engineer, team)
    with deployment_lock(d.pk) as first, deployment_lock(d.pk) as second:
        assert first and not second
    with deployment_lock(d.pk) as again:
        assert again


@pytest.mark.redis
def test_redis_lock_is_renewed_while_held_and_expires_when_the_holder_dies(
        settings, redis_url, monkeypatch, engineer, team, v1, no_enqueue):
    import time

    import redis

    from deployments import locks

    monkeypatch.setattr(locks, "LOCK_TTL_S", 1.5)
    settings.REDIS_URL = redis_url
    d = create(engineer, team)
    with deployment_lock(d.pk) as held:
        assert held
        time.sleep(2.5)  # longer than the TTL: renewed meanwhile
        with deployment_lock(d.pk) as second:
            assert not second
    # A holder that died without releasing: the key simply expires.
    client = redis.Redis.from_url(redis_url)
    client.set(f"modelport:deployment:{d.pk}:reconcile", "dead-worker", px=500)
    with deployment_lock(d.pk) as blocked:
        assert not blocked
    time.sleep(0.7)
    with deployment_lock(d.pk) as free:
        assert free


def test_replicas_get_an_ingest_token_for_monitoring_revoked_on_stop(fast, engineer, team, v1,
                                                                     upstreams):
    from monitoring.models import IngestToken

    runtime = FakeRuntime(upstreams)
    envs: list[dict] = []
    original = runtime.start_replica

    def start(spec):
        envs.append(dict(spec.env))
        return original(spec)

    runtime.start_replica = start
    d = create(engineer, team)
    reconcile_deployment(d.pk, runtime)
    assert len(envs) == 2 and envs[0]["MODELPORT_INGEST_TOKEN"]
    assert envs[0]["MODELPORT_INGEST_URL"].endswith("/api/v1/ingest/predictions/")
    assert IngestToken.objects.filter(deployment=d, revoked=False).count() == 1
    services.stop(actor=engineer, deployment=d)
    reconcile_deployment(d.pk, runtime)
    assert IngestToken.objects.filter(deployment=d, revoked=False).count() == 0
