"""Several plain Docker hosts, end to end on the real Docker Engine, PostgreSQL and Redis:
placement by free capacity, replicas of a revision spread over hosts, no capacity (pending,
not failed), a lost host's replicas rescheduled, and the host coming back removing its stale
containers.

Only one Docker Engine runs here, so BOTH "hosts" SHARE ONE ENGINE: each simulated host is a
host name whose containers are named ``<replica>.<host>`` and labelled ``modelport.host=<host>``
(exactly what a real host worker does), and the host-worker tasks (``host_heartbeat``,
``start_host_replica``, ``remove_host_replica``) run in this process through Celery's eager
mode, routed by the host's queue name as in production. ``test_host_workers.py`` runs them as
two real Celery worker processes, one per host queue.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from compute.models import ExecutionTarget, Host
from deployments import host_tasks as tasks
from deployments.models import Deployment, Replica, Revision
from deployments.reconcile import reconcile_deployment
from teams.models import AuditEvent
from tests.deployments.test_docker import converge, deploy, gateway_client, invoke
from tests.fixtures import bearer_client
from tests.frontend.test_dashboard import logged_in

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class Hosts:
    def __init__(self, target: ExecutionTarget, names: list[str]) -> None:
        self.target, self.names = target, names
        self.a, self.b = names

    def host(self, name: str) -> Host:
        return Host.objects.get(name=name)

    def set_cpu(self, name: str, cpu: str) -> None:
        Host.objects.filter(name=name).update(cpu=Decimal(cpu))

    def of(self, deployment: str) -> dict[str, list[str]]:
        placed: dict[str, list[str]] = {n: [] for n in self.names}
        for row in Replica.objects.filter(deployment__name=deployment).select_related("host"):
            placed[row.host.name].append(row.runtime_id)
        return placed


@pytest.fixture
def hosts(docker_client, docker_env, settings, live_server):
    """A multi-host docker target and two hosts registered by their own heartbeat. The host
    workers fetch their models from the live platform over HTTP, as remote hosts do
    (MODELPORT_HOST_MODEL_SOURCE=fetch), into the host cache they bind-mount."""
    settings.MODELPORT_HOST_LOST_SECONDS = 600
    settings.MODELPORT_HOST_MODEL_SOURCE = "fetch"
    settings.MODELPORT_PLATFORM_URL = live_server.url
    target = ExecutionTarget.objects.create(name="hosts", kind="docker",
                                            settings={"placement": "hosts"})
    suffix = uuid.uuid4().hex[:6]
    names = [f"t-a-{suffix}", f"t-b-{suffix}"]
    for name in names:
        tasks.host_heartbeat(name)
    yield Hosts(target, names)
    for name in names:  # containers of a test that failed half-way
        for c in docker_client.containers.list(all=True,
                                               filters={"label": f"modelport.host={name}"}):
            c.remove(force=True, v=True)


def test_hosts_register_themselves_from_docker_info(hosts, docker_client, admin_user, engineer):
    info = docker_client.info()
    a = hosts.host(hosts.a)
    assert a.queue == f"host.{hosts.a}" and a.target == hosts.target
    assert a.state == "alive" and a.last_heartbeat is not None
    assert a.cpu == Decimal(info["NCPU"]) and a.memory_mb == info["MemTotal"] // 2**20
    assert a.docker_version == info["ServerVersion"]
    assert AuditEvent.objects.filter(action="host.registered", object_repr=hosts.a).exists()
    tasks.host_heartbeat(hosts.a)  # a second heartbeat refreshes, registers nothing new
    assert Host.objects.filter(name=hosts.a).count() == 1
    assert AuditEvent.objects.filter(action="host.registered", object_repr=hosts.a).count() == 1

    health = bearer_client(engineer).get("/api/v1/targets/hosts/health/").json()
    assert health["reachable"] is True
    assert {n["name"] for n in health["nodes"]} == set(hosts.names)
    api = bearer_client(engineer).get("/api/v1/capacity/").json()
    docker = {h["name"]: h["docker"] for h in api["hosts"]}
    assert docker[hosts.a]["state"] == "alive" and docker[hosts.a]["replicas"] == 0
    page = logged_in(admin_user).get("/capacity/").content.decode()
    assert f'id="host-{hosts.a}"' in page and "queue <code>host." in page


def test_replicas_are_placed_by_free_capacity_and_spread_over_hosts(hosts, docker_client,
                                                                    engineer, v1):
    """Host a has room for one 1-CPU replica, host b for four: of three replicas, a takes one
    (spreading beats b's larger free capacity) and b the other two."""
    hosts.set_cpu(hosts.a, "1")
    hosts.set_cpu(hosts.b, "4")
    name = f"mh-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=3, target="hosts",
           resources={"cpu": 1, "memory_mb": 512})
    converge(name)
    placed = hosts.of(name)
    assert len(placed[hosts.a]) == 1 and len(placed[hosts.b]) == 2, placed
    for host, ids in placed.items():
        assert all(i.endswith(f".{host}") for i in ids)
        running = docker_client.containers.list(filters={"label": [
            f"modelport.deployment={name}", f"modelport.host={host}"]})
        assert sorted(c.name for c in running) == sorted(ids)
        for c in running:  # the model fetched over HTTP into the host cache, mounted read-only
            [mount] = [m for m in c.attrs["Mounts"] if m["Destination"] == "/model"]
            assert mount["Source"].endswith(f"/host-cache/models/{v1.artifact_sha256}")
            assert mount["RW"] is False
    for host in hosts.names:  # each host reports what runs there
        assert tasks.host_heartbeat(host)["stale_removed"] == []
    rows = Replica.objects.filter(deployment__name=name)
    # "starting" until Docker's first health check passes (5 s), though /ready answers.
    assert {(r.ready, r.host_status in ("running", "starting"), r.cpu) for r in rows} == {
        (True, True, 1)}, [(r.ready, r.host_status, r.cpu) for r in rows]
    assert all(r.host_logs and r.reported_at for r in rows)
    assert invoke(gateway_client(engineer), name).status_code == 200
    # A single-host runtime on the same engine leaves host workers' containers alone.
    from workers.factory import get_runtime

    assert get_runtime("docker").list_replicas(name) == []

    api = bearer_client(engineer).get(f"/api/v1/deployments/{name}/").json()
    assert sorted(r["host"] for r in api["replicas"]) == sorted([hosts.a, hosts.b, hosts.b])
    free = {h["name"]: h["docker"]["free"] for h in
            bearer_client(engineer).get("/api/v1/capacity/").json()["hosts"]}
    assert free[hosts.a]["cpu"] == 0 and free[hosts.b]["cpu"] == 2

    # Removing the deployment's containers goes through each host's queue.
    reconcile_deployment(Deployment.objects.get(name=name).pk)  # converged: nothing moves
    assert hosts.of(name) == placed


def test_no_host_with_room_leaves_the_deployment_pending_not_failed(hosts, engineer, v1):
    hosts.set_cpu(hosts.a, "0.5")
    hosts.set_cpu(hosts.b, "0.5")
    name = f"mh-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=1, target="hosts",
           resources={"cpu": 1, "memory_mb": 512})
    d = Deployment.objects.get(name=name)
    assert reconcile_deployment(d.pk) == "no-capacity"
    assert reconcile_deployment(d.pk) == "no-capacity"  # retried by beat; one event, no crash
    d.refresh_from_db()
    assert d.status == "pending" and d.status_message.startswith("Waiting for capacity")
    warnings = list(d.events.filter(kind="warning").values_list("message", flat=True))
    assert len(warnings) == 1
    assert "No host of target 'hosts' has room for a replica needing 1 CPU, 512 MB" in \
        warnings[0] and f"{hosts.a}: 0.5 CPU" in warnings[0]
    assert Revision.objects.get(deployment=d, number=1).state != "failed"
    assert not Replica.objects.filter(deployment=d).exists()

    hosts.set_cpu(hosts.b, "2")  # capacity frees up: the next pass places it
    converge(name)
    assert len(hosts.of(name)[hosts.b]) == 1


def test_a_lost_host_is_rescheduled_and_cleans_up_when_it_comes_back(hosts, docker_client,
                                                                      engineer, v1):
    name = f"mh-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=2, target="hosts")
    converge(name)
    before = hosts.of(name)
    assert len(before[hosts.a]) == 1 and len(before[hosts.b]) == 1  # spread
    [on_b] = before[hosts.b]
    d = Deployment.objects.get(name=name)

    # Host b's worker stops answering (its containers keep running: a network partition).
    Host.objects.filter(name=hosts.b).update(
        last_heartbeat=timezone.now() - timedelta(seconds=700))
    assert tasks.check_hosts() == [hosts.b]
    assert tasks.check_hosts() == []  # marked once
    b = hosts.host(hosts.b)
    assert b.state == "lost" and b.lost_at is not None
    lost = Replica.objects.get(runtime_id=on_b)
    assert lost.status == "lost" and not lost.ready
    assert d.events.filter(kind="warning", message__contains=f"Host {hosts.b} lost").exists()
    audit = AuditEvent.objects.get(action="host.lost", object_repr=hosts.b)
    assert audit.after["replicas"] == [on_b] and audit.before["state"] == "alive"

    # The reconciler reschedules the lost replica on the host that is left.
    converge(name)
    after = hosts.of(name)
    assert len(after[hosts.a]) == 2 and after[hosts.b] == []
    assert d.events.filter(message__startswith="Rescheduling replica").exists()
    moved = AuditEvent.objects.get(action="deployment.replica_rescheduled", object_repr=name)
    assert moved.before["host"] == hosts.b and moved.after["host"] == hosts.a
    assert invoke(gateway_client(engineer), name).status_code == 200
    # b's container still runs: nobody could reach b to remove it.
    assert docker_client.containers.get(on_b).status == "running"

    # b comes back: its own worker removes the stale container; a's replicas are untouched.
    report = tasks.host_heartbeat(hosts.b)
    assert report["stale_removed"] == [on_b]
    assert not docker_client.containers.list(all=True, filters={"name": on_b})
    assert hosts.host(hosts.b).state == "alive"
    assert AuditEvent.objects.filter(action="host.recovered", object_repr=hosts.b).exists()
    assert AuditEvent.objects.filter(action="host.stale_removed", object_repr=hosts.b).exists()
    assert d.events.filter(message__contains=f"removed stale container {on_b}").exists()
    assert hosts.of(name) == after
    assert len(docker_client.containers.list(filters={
        "label": [f"modelport.deployment={name}", f"modelport.host={hosts.a}"]})) == 2


def test_stopping_a_deployment_removes_its_containers_on_every_host(hosts, docker_client,
                                                                    engineer, v1):
    name = f"mh-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=2, target="hosts")
    converge(name)
    d = Deployment.objects.get(name=name)
    from deployments import services

    services.stop(actor=engineer, deployment=d)
    assert reconcile_deployment(d.pk) == "stopped"
    assert not docker_client.containers.list(all=True,
                                             filters={"label": f"modelport.deployment={name}"})
    assert not Replica.objects.filter(deployment=d).exists()


def test_a_host_that_cannot_fetch_the_model_fails_the_start_with_the_reason(hosts, settings,
                                                                           docker_client,
                                                                           engineer, v1):
    """The platform unreachable from the hosts: no container starts, the deployment's events
    say why, and the hosts' model caches hold nothing."""
    settings.MODELPORT_PLATFORM_URL = "http://127.0.0.1:9"  # nothing listens there
    name = f"mh-{uuid.uuid4().hex[:6]}"
    deploy(bearer_client(engineer), name, replicas=1, target="hosts")
    d = Deployment.objects.get(name=name)
    reconcile_deployment(d.pk)
    d.refresh_from_db()
    messages = list(d.events.values_list("message", flat=True))
    assert any("ModelFetchFailed: model iris v1: the platform is unreachable at "
               "http://127.0.0.1:9/api/v1/hosts/" in m for m in messages), messages
    assert d.status != "healthy"
    assert not docker_client.containers.list(all=True,
                                             filters={"label": f"modelport.deployment={name}"})
    from deployments import host_models

    root = host_models.cache_root()
    assert not root.exists() or [p.name for p in root.iterdir()] in ([], [".locks"])
