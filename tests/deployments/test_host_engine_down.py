"""A host whose Docker Engine does not answer is lost at once (``host_side.mark_engine_down``),
not after MODELPORT_HOST_LOST_SECONDS (600 s in these tests) of silence: its replicas leave
routing and are rescheduled; neither a late heartbeat nor a reconcile that observed the host
before the loss brings them back; when its engine answers again it comes back and its stale
containers are removed.

Real PostgreSQL, Redis and Docker Engine, host-worker tasks run eagerly as in
``test_docker_hosts.py`` (both simulated hosts share this machine's one engine). The dead
engine is real too: host b's heartbeat runs with ``DOCKER_HOST`` at a socket path where
nothing listens — the factory's own client, whose ``info`` call then fails as it does when
dockerd is killed.
"""

from __future__ import annotations

import uuid

import pytest

from compute import inventory
from compute.models import Host
from deployments import host_tasks as tasks
from deployments.models import Deployment, Replica
from deployments.reconcile.reconciler import Reconciler
from teams.models import AuditEvent
from tests.deployments.test_docker import converge, deploy, gateway_client, invoke
from tests.deployments.test_docker_hosts import hosts  # noqa: F401 - the fixture
from tests.fixtures import bearer_client
from workers.factory import runtime_for_target

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_host_whose_engine_is_dead_is_lost_at_once_and_comes_back(
        hosts, docker_client, engineer, v1, monkeypatch, tmp_path):  # noqa: F811
    name = f"ed-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=2, target="hosts")
    converge(name)
    before = hosts.of(name)
    assert len(before[hosts.a]) == 1 and len(before[hosts.b]) == 1  # spread
    [on_b] = before[hosts.b]
    d = Deployment.objects.get(name=name)
    version = d.routing_version
    runtime = runtime_for_target(hosts.target)
    observed = runtime.list_replicas(name)  # a reconcile that looked before the loss
    info = docker_client.info()

    # b's engine stops answering; its worker's heartbeat finds out.
    with monkeypatch.context() as m:
        m.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing-listens.sock")
        assert tasks.host_heartbeat(hosts.b) is None
        assert tasks.host_heartbeat(hosts.b) is None  # still dead: lost once
    b = hosts.host(hosts.b)
    assert b.state == "lost" and b.lost_at is not None
    lost = Replica.objects.get(runtime_id=on_b)
    assert (lost.status, lost.ready, lost.host_status) == ("lost", False, "lost")
    d.refresh_from_db()
    assert d.routing_version > version  # the gateways reload their routes
    [audit] = AuditEvent.objects.filter(action="host.lost", object_repr=hosts.b)
    assert audit.after["reason"].startswith("engine not answering")
    assert audit.after["replicas"] == [on_b]
    assert d.events.filter(kind="warning",
                           message__contains=f"Host {hosts.b} lost (engine not answering"
                           ).exists()

    # Neither a heartbeat whose engine answered before the loss nor a reconcile that observed
    # the replica alive before it (b's container still runs: the probe answers) makes it ready.
    inventory.record_host_heartbeat(name=hosts.b, info=info, lost_seen=None)
    assert hosts.host(hosts.b).state == "lost"
    Reconciler(d, runtime).publish(observed)
    lost = Replica.objects.get(runtime_id=on_b)
    assert (lost.status, lost.ready) == ("lost", False)
    ready = set(Replica.objects.filter(deployment=d, ready=True).values_list("url", flat=True))
    assert ready and lost.url not in ready

    # The reconciler reschedules b's replica on a; the gateway answers meanwhile.
    converge(name)
    after = hosts.of(name)
    assert len(after[hosts.a]) == 2 and after[hosts.b] == []
    assert invoke(gateway_client(engineer), name).status_code == 200
    assert docker_client.containers.get(on_b).status == "running"  # nobody could remove it

    # b's engine answers again: b comes back and its worker removes the stale container.
    report = tasks.host_heartbeat(hosts.b)
    assert report is not None and report["stale_removed"] == [on_b]
    assert hosts.host(hosts.b).state == "alive"
    assert AuditEvent.objects.filter(action="host.recovered", object_repr=hosts.b).exists()
    assert not docker_client.containers.list(all=True, filters={"name": on_b})
    assert hosts.of(name) == after


def test_an_unknown_or_lost_host_with_a_dead_engine_changes_nothing(
        hosts, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing-listens.sock")
    never = f"t-x-{uuid.uuid4().hex[:6]}"
    assert tasks.host_heartbeat(never) is None
    assert not Host.objects.filter(name=never).exists()  # nothing registered, nothing lost
    Host.objects.filter(name=hosts.a).update(state="lost")
    assert tasks.host_heartbeat(hosts.a) is None
    assert not AuditEvent.objects.filter(action="host.lost", object_repr=hosts.a).exists()
