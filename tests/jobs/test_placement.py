"""Chunks of a job on several plain Docker hosts are placed like replicas (``jobs.placement``):
on PostgreSQL, without containers — here is the choice of host and what it counts; starting
the chunks on the hosts is ``test_hosts_docker.py`` / ``test_host_workers_jobs.py``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from compute.models import ExecutionTarget, Host
from deployments.models import Deployment, Replica
from jobs.models import BatchJob, ChunkStatus, JobChunk
from jobs.placement import NoHostForChunk, place_chunk
from registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts_target(db):
    target = ExecutionTarget.objects.create(name="hosts", kind="docker",
                                            settings={"placement": "hosts"})
    now = timezone.now()
    for name, cpu in (("h-a", 4), ("h-b", 4)):
        Host.objects.create(name=name, queue=f"host.{name}", target=target, cpu=cpu,
                            memory_mb=8192, last_heartbeat=now)
    return target


def make_job(team, engineer, target, *, chunks: int, cpu: str = "1", memory_mb: int = 1024):
    model, _ = RegisteredModel.objects.get_or_create(name="iris", team=team,
                                                     defaults={"created_by": engineer})
    version, _ = ModelVersion.objects.get_or_create(model=model, version=1,
                                                    defaults={"source_format": "mlflow"})
    job = BatchJob.objects.create(team=team, model=model, version=version, target=target,
                                  cpu=Decimal(cpu), memory_mb=memory_mb, parallelism=chunks,
                                  chunks_total=chunks, rows_total=chunks * 10, chunk_rows=10)
    for i in range(chunks):
        JobChunk.objects.create(job=job, index=i, row_start=i * 10, rows=10)
    return job


def test_a_jobs_chunks_spread_over_hosts_and_count_against_their_room(
        hosts_target, team, engineer):
    job = make_job(team, engineer, hosts_target, chunks=4, cpu="2")
    placed = [place_chunk(job, i).name for i in range(4)]
    assert sorted(placed) == ["h-a", "h-a", "h-b", "h-b"]
    assert placed[0] != placed[1]  # spread first
    assert list(JobChunk.objects.filter(job=job).values_list("host", flat=True)) == placed
    # Idempotent while the chunk is in flight: it keeps its host.
    assert place_chunk(job, 0).name == placed[0]

    # Every host is full now (2 x 2 CPU of 4): a fifth chunk of another job does not fit,
    # and the refusal gives every host's numbers.
    other = make_job(team, engineer, hosts_target, chunks=1, cpu="1")
    with pytest.raises(NoHostForChunk) as refused:
        place_chunk(other, 0)
    assert "h-a: 0 CPU" in str(refused.value) and "h-b: 0 CPU" in str(refused.value)
    assert JobChunk.objects.get(job=other).host == ""

    # A finished chunk frees its room.
    JobChunk.objects.filter(job=job, index=0).update(status=ChunkStatus.SUCCEEDED)
    assert place_chunk(other, 0).name == placed[0]


def test_replicas_on_a_host_and_silent_hosts_are_taken_into_account(
        hosts_target, team, engineer):
    host_a = Host.objects.get(name="h-a")
    job = make_job(team, engineer, hosts_target, chunks=2, cpu="1")
    deployment = Deployment.objects.create(name="busy", team=team, target=hosts_target,
                                           model=job.model, version=job.version)
    Replica.objects.create(deployment=deployment, runtime_id="r0.h-a", revision=1, index=0,
                           host=host_a, cpu=Decimal("3.5"), memory_mb=1024)
    assert place_chunk(job, 0).name == "h-b"
    assert place_chunk(job, 1).name == "h-b"  # h-a has 0.5 CPU left

    Host.objects.filter(name="h-b").update(last_heartbeat=timezone.now() - timedelta(hours=1))
    late = make_job(team, engineer, hosts_target, chunks=1, cpu="0.5")
    assert place_chunk(late, 0).name == "h-a"
