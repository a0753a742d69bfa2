"""Per-replica CPU and memory: sampled from the runtime (real Docker containers and local
processes) into ReplicaStat rows, served per step by the metrics API and charted on the
deployment's monitoring page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from deployments import services as deployment_services
from deployments.models import Deployment, Replica
from deployments.reconcile import reconcile_deployment
from gateway import routes
from monitoring import rollups
from monitoring.models import ReplicaStat
from tests.deployments.conftest import (
    COLUMNS,
    ROWS,
    make_version,
    remove_containers,
    unique_name,
)
from tests.factories import make_token
from tests.fixtures import bearer_client

METRICS = "/api/v1/deployments/{}/metrics/"


def stat(deployment, rid: str, at: datetime, cpu: float, mem: float, revision: int = 1,
         index: int = 0) -> ReplicaStat:
    return ReplicaStat.objects.create(deployment=deployment, runtime_id=rid, revision=revision,
                                      index=index, at=at, cpu_percent=cpu, memory_mb=mem,
                                      memory_limit_mb=1024)


def test_metrics_api_gives_mean_cpu_and_peak_memory_per_replica_and_step(deployment,
                                                                         engineer):
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    for k, (cpu, mem) in enumerate([(10, 100), (30, 140), (50, 120)]):
        stat(deployment, "mp-churn-prod-r1-0", start + timedelta(seconds=15 * k), cpu, mem)
    stat(deployment, "mp-churn-prod-r1-0", start + timedelta(minutes=5), 80, 200)
    stat(deployment, "mp-churn-prod-r2-0", start + timedelta(minutes=1), 5, 90, revision=2)
    body = bearer_client(engineer).get(METRICS.format(deployment.name), {
        "start": start.isoformat(), "end": (start + timedelta(minutes=10)).isoformat(),
        "step": 300}).json()
    assert body["timestamps"] == [start.isoformat(), (start + timedelta(minutes=5)).isoformat()]
    assert [r["replica"] for r in body["replicas"]] == ["mp-churn-prod-r2-0",
                                                        "mp-churn-prod-r1-0"]
    assert body["replicas"][1]["memory_limit_mb"] == 1024
    assert body["replica_cpu"]["mp-churn-prod-r1-0"] == [30.0, 80.0]
    assert body["replica_memory"]["mp-churn-prod-r1-0"] == [140.0, 200.0]
    assert body["replica_cpu"]["mp-churn-prod-r2-0"] == [5.0, None]

    only_r2 = bearer_client(engineer).get(METRICS.format(deployment.name), {
        "start": start.isoformat(), "end": (start + timedelta(minutes=10)).isoformat(),
        "step": 300, "revision": 2}).json()
    assert list(only_r2["replica_cpu"]) == ["mp-churn-prod-r2-0"]


def test_replica_samples_age_out_with_raw_records(deployment, settings):
    now = datetime.now(UTC)
    old = stat(deployment, "mp-a", now - timedelta(days=settings.
                                                   MODELPORT_MONITORING_RAW_RETENTION_DAYS + 1),
               1, 1)
    fresh = stat(deployment, "mp-a", now - timedelta(hours=1), 1, 1)
    assert rollups.prune(now=now)["replica_stats"] == 1
    assert not ReplicaStat.objects.filter(pk=old.pk).exists()
    assert ReplicaStat.objects.filter(pk=fresh.pk).exists()


def test_page_draws_one_chart_per_replica_and_says_so_when_there_are_none(deployment,
                                                                           engineer):
    client = Client()
    client.force_login(engineer)
    empty = client.get(f"/monitoring/deployments/{deployment.name}/").content.decode()
    assert "No CPU or memory samples of replicas in this range" in empty
    stat(deployment, "mp-churn-prod-r1-0", datetime.now(UTC) - timedelta(minutes=3), 12, 150)
    stat(deployment, "mp-churn-prod-r1-1", datetime.now(UTC) - timedelta(minutes=3), 14, 160,
         index=1)
    page = client.get(f"/monitoring/deployments/{deployment.name}/").content.decode()
    assert page.count('data-chart="replica"') == 2
    assert 'data-replica="mp-churn-prod-r1-1"' in page


# --- Sampling real replicas ------------------------------------------------------------------
def _deploy_and_sample(engineer, team, name: str) -> tuple[Deployment, list[ReplicaStat]]:
    d = deployment_services.create_deployment(actor=engineer, team=team, name=name,
                                              model="iris", version=1, replicas=1,
                                              resources={"cpu": 0.5, "memory_mb": 768})
    assert reconcile_deployment(d.pk) == "healthy"
    replica = Replica.objects.get(deployment=d)
    # Some work for the replica between two samples.
    _, secret = make_token(engineer, name=f"stats-{name}")
    gateway_client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert rollups.collect_replica_stats() == 1
    for _ in range(20):
        response = gateway_client.post(f"/serve/{name}/invocations",
                                       content_type="application/json",
                                       data={"dataframe_split": {"columns": COLUMNS,
                                                                 "data": ROWS}})
        assert response.status_code == 200, response.content
    # A replica row whose process vanished meanwhile is skipped, not an error.
    Replica.objects.create(deployment=d, runtime_id=f"mp-{name}-r1-9", revision=1, index=9,
                           status="ready", ready=True)
    assert rollups.collect_replica_stats() == 1
    rows = list(ReplicaStat.objects.filter(deployment=d).order_by("at"))
    assert [r.runtime_id for r in rows] == [replica.runtime_id] * 2
    assert all(r.revision == 1 and r.index == 0 for r in rows)
    # A Python model server with scikit-learn loaded: tens of MB at least, under its limit.
    assert all(30 < r.memory_mb < 768 for r in rows), [r.memory_mb for r in rows]
    assert all(r.memory_limit_mb == pytest.approx(768, rel=0.01) for r in rows)
    assert all(r.cpu_percent >= 0 for r in rows)

    body = bearer_client(engineer).get(METRICS.format(name), {"step": 60}).json()
    assert [r["replica"] for r in body["replicas"]] == [replica.runtime_id]
    assert any(v for v in body["replica_memory"][replica.runtime_id] if v)
    page = Client()
    page.force_login(engineer)
    html = page.get(f"/monitoring/deployments/{name}/").content.decode()
    assert f'data-replica="{replica.runtime_id}"' in html
    return d, rows


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_docker_replicas_are_sampled_and_charted(docker_client, settings, no_enqueue, engineer,
                                                 team, iris_dir):
    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DOCKER_NETWORK = "host"
    settings.MODELPORT_PORT_RANGE = (24000, 24499)
    settings.MODELPORT_READY_TIMEOUT_S = 120
    from registry.models import RegisteredModel

    model = RegisteredModel.objects.create(name="iris", team=team, created_by=engineer)
    make_version(model, 1, iris_dir)
    name = unique_name("stats")
    routes.invalidate()
    try:
        _deploy_and_sample(engineer, team, name)
    finally:
        remove_containers(docker_client, [name])
        routes.invalidate()


@pytest.mark.django_db(transaction=True)
def test_local_process_replicas_are_sampled_and_charted(settings, no_enqueue, engineer, team,
                                                        iris_dir):
    from registry.models import RegisteredModel
    from workers.factory import get_runtime

    settings.MODELPORT_RUNTIME = "local"
    settings.MODELPORT_PORT_RANGE = (24500, 24999)
    settings.MODELPORT_DRAIN_SECONDS = 0
    model = RegisteredModel.objects.create(name="iris", team=team, created_by=engineer)
    make_version(model, 1, iris_dir)
    routes.invalidate()
    runtime = get_runtime()
    try:
        _deploy_and_sample(engineer, team, "iris-stats-local")
    finally:
        for replica in runtime.list_replicas():
            runtime.remove_replica(replica.id)
        routes.invalidate()


class _DeletingRuntime:
    """Stands in for a runtime whose stats call is slow (Docker's takes about a second): the
    user deletes a deployment during it. A stand-in because that interleaving cannot be
    timed with a real one; sampling and storing are the real code."""

    def __init__(self, victim: Deployment) -> None:
        self.victim = victim

    def stats(self, runtime_id: str) -> dict[str, float]:
        from django.db import connection

        if runtime_id.startswith(self.victim.name):
            Deployment.objects.filter(pk=self.victim.pk).delete()
            connection.close()  # this runs in the sampler's thread
        return {"cpu_percent": 1.0, "memory_bytes": 100 * 2**20,
                "memory_limit_bytes": 768 * 2**20}


@pytest.mark.django_db(transaction=True)
def test_a_deployment_deleted_while_sampling_costs_only_its_own_samples(deployment,
                                                                        other_deployment):
    """Found by bench/soak.py: the deleted deployment's row failed the insert's foreign key at
    commit (transaction=True: a real one) and every replica's sample of that pass was lost."""
    for d in (deployment, other_deployment):
        Replica.objects.create(deployment=d, runtime_id=f"{d.name}-r1-0", revision=1, index=0,
                               status="ready", ready=True)
    assert rollups.collect_replica_stats(runtime=_DeletingRuntime(other_deployment)) == 1
    assert list(ReplicaStat.objects.values_list("deployment_id", "runtime_id")) == [
        (deployment.pk, f"{deployment.name}-r1-0")]
