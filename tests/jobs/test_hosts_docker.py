"""Batch chunks on several plain Docker hosts, end to end on the real Docker Engine, PostgreSQL
and Redis: a job on a two-host target spreads its chunks over both hosts and gives the local
model's predictions row for row, with nothing left; a host that goes silent has its running
chunk retried on the other, and removes its stale container when it comes back.

SIMULATED, as in ``tests/deployments/test_docker_hosts.py``: only one Docker Engine runs here,
so BOTH "hosts" SHARE ONE ENGINE — each is a host name whose chunk containers are named
``…<chunk>.<host>`` and labelled ``modelport.host=<host>`` (what a real host worker does),
and the host workers' tasks (``start_host_chunk``, ``remove_host_chunks``) run in this process
through Celery's eager mode, dispatched by name to the host's queue as in production. The
heartbeats (``host_heartbeat``, ``report_host_chunks``) are called by the test, where a host
worker's heartbeat step would send them. The work dir is on this machine's disk, which a real
deployment would mount on every host at the same path.
"""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import docker
import numpy as np
import pandas as pd
import pytest
from django.utils import timezone

from compute.models import ExecutionTarget, Host
from deployments import host_tasks as deployment_host_tasks
from jobs import host_tasks, hosts_batch, services
from jobs.models import BatchJob, HostChunk, JobEvent
from tests.jobs.conftest import iris_frame, local_predictions, parquet_upload, run_to_end

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_hosts(docker_jobs, settings):
    """A multi-host docker target and two hosts registered by their own heartbeat."""
    settings.MODELPORT_HOST_LOST_SECONDS = 600
    target = ExecutionTarget.objects.create(name=f"hosts-{uuid.uuid4().hex[:4]}",
                                            kind="docker", settings={"placement": "hosts"})
    suffix = uuid.uuid4().hex[:6]
    names = [f"j-a-{suffix}", f"j-b-{suffix}"]
    for name in names:
        deployment_host_tasks.host_heartbeat(name)
    Host.objects.filter(name__in=names).update(target=target)
    yield target, names
    for name in names:  # containers of a test that failed half-way
        for c in docker_jobs.containers.list(all=True,
                                             filters={"label": f"modelport.host={name}"}):
            c.remove(force=True, v=True)


def host_containers(client, job: BatchJob, host: str | None = None) -> list:
    labels = [f"modelport.job={job.name}"]
    if host:
        labels.append(f"modelport.host={host}")
    for _ in range(10):
        try:
            return client.containers.list(all=True, filters={"label": labels})
        except docker.errors.NotFound:  # removed by a host worker between listing and inspect
            continue
    return client.containers.list(all=True, filters={"label": labels})


def make_job(engineer, version, target, frame, *, chunk_rows: int, parallelism: int = 2):
    job = services.create_job(actor=engineer, team=version.model.team,
                              model=version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=parallelism,
                              chunk_rows=chunk_rows, output_columns=["id"],
                              resources={"cpu": 0.5, "memory_mb": 512}, target=target.name)
    assert job.target == target
    return job


def output_of(engineer, job) -> pd.DataFrame:
    handle, _filename, _content_type = services.open_output(actor=engineer, job=job)
    with handle:
        return pd.read_parquet(io.BytesIO(handle.read()))


def test_chunks_spread_over_two_hosts_and_match_the_local_model(
        two_hosts, docker_jobs, engineer, iris_version, iris_dir):
    target, (a, b) = two_hosts
    frame = iris_frame(4_000, seed=7)
    job = make_job(engineer, iris_version, target, frame, chunk_rows=1_000)
    assert job.chunks_total == 4
    placed: dict[int, set[str]] = {}

    def heartbeats(j):  # what each host worker's heartbeat step sends
        for name in (a, b):
            host_tasks.report_host_chunks(name)
        for row in HostChunk.objects.filter(job=j).select_related("host"):
            placed.setdefault(row.index, set()).add(row.host.name)
            assert len(host_containers(docker_jobs, j, row.host.name)) <= 2
        return False

    assert run_to_end(job, until=heartbeats, limit_s=600) == "succeeded", job.status_message
    hosts_used = {c.host for c in job.chunks.all()}
    assert hosts_used == {a, b}, hosts_used  # spread, like a revision's replicas
    assert all(c.attempts == 1 for c in job.chunks.all())

    out = output_of(engineer, job)
    assert len(out) == 4_000 and out["id"].tolist() == list(range(4_000))
    expected = np.asarray(local_predictions(iris_dir, frame))
    assert (out["prediction"].to_numpy() == expected).all()

    assert host_containers(docker_jobs, job) == []  # nothing left on either host
    assert not HostChunk.objects.filter(job=job).exists()


def test_a_silent_host_has_its_chunk_retried_on_the_other(
        two_hosts, docker_jobs, engineer, iris_version, iris_dir, monkeypatch):
    target, (a, b) = two_hosts
    frame = iris_frame(2_000, seed=8)
    job = make_job(engineer, iris_version, target, frame, chunk_rows=1_000)
    assert job.chunks_total == 2

    # Host b's chunk container is frozen as soon as b starts it (it "runs" but never ends),
    # so the chunk is in flight on b when b goes silent.
    send = hosts_batch.send_to_host

    def dispatch(task, args, queue):
        send(task, args, queue)
        if queue == f"host.{b}" and task == hosts_batch.START:
            for c in host_containers(docker_jobs, job, b):
                if c.status == "running":
                    c.pause()

    monkeypatch.setattr(hosts_batch, "send_to_host", dispatch)

    from jobs.runner.reconciler import tick

    assert tick(job.pk) == "running"
    on_b = job.chunks.get(host=b)
    [frozen] = host_containers(docker_jobs, job, b)
    assert frozen.status == "paused"

    # b's worker stops answering (a partition: its container stays); beat marks it lost.
    Host.objects.filter(name=b).update(last_heartbeat=timezone.now() - timedelta(seconds=700))
    assert deployment_host_tasks.check_hosts() == [b]

    def heartbeat_a(j):
        host_tasks.report_host_chunks(a)
        return False

    assert run_to_end(job, until=heartbeat_a, limit_s=600) == "succeeded", job.status_message
    retried = job.chunks.get(index=on_b.index)
    assert retried.host == a and retried.attempts == 2
    events = list(JobEvent.objects.filter(job=job).values_list("chunk", "message"))
    assert JobEvent.objects.filter(job=job, chunk=on_b.index,
                                   message__contains=f"host {b} stopped answering").exists(), \
        events
    out = output_of(engineer, job)
    assert out["id"].tolist() == list(range(2_000))
    assert (out["prediction"].to_numpy()
            == np.asarray(local_predictions(iris_dir, frame))).all()
    assert host_containers(docker_jobs, job, a) == []
    assert len(host_containers(docker_jobs, job, b)) == 1  # nobody could reach b

    # b comes back: its own worker removes the stale container.
    deployment_host_tasks.host_heartbeat(b)
    report = host_tasks.report_host_chunks(b)
    assert report is not None and report["stale_removed"] == [frozen.name]
    assert host_containers(docker_jobs, job) == []



def test_no_host_with_room_keeps_the_chunk_pending_with_the_reason(
        two_hosts, docker_jobs, engineer, iris_version, iris_dir):
    from decimal import Decimal

    from jobs.runner.reconciler import tick

    target, (a, b) = two_hosts
    frame = iris_frame(500, seed=9)
    job = make_job(engineer, iris_version, target, frame, chunk_rows=500, parallelism=1)
    Host.objects.filter(name__in=[a, b]).update(cpu=Decimal("0.25"))  # the job needs 0.5

    assert tick(job.pk) == "running"
    job.refresh_from_db()
    chunk = job.chunks.get()
    assert job.status == "running" and job.status_message.startswith("Waiting for a host: ")
    assert f"No host of target '{target.name}' has room" in job.status_message
    assert chunk.status == "pending" and chunk.attempts == 0 and chunk.host == ""
    assert host_containers(docker_jobs, job) == []

    Host.objects.filter(name=b).update(cpu=Decimal("2"))  # room frees up: the next tick
    assert run_to_end(job, limit_s=300) == "succeeded", job.status_message
    chunk.refresh_from_db()
    assert chunk.host == b and chunk.attempts == 1
    out = output_of(engineer, job)
    assert (out["prediction"].to_numpy()
            == np.asarray(local_predictions(iris_dir, frame))).all()
    assert host_containers(docker_jobs, job) == []


def test_cancel_mid_run_removes_the_chunks_on_both_hosts(
        two_hosts, docker_jobs, engineer, iris_version, monkeypatch):
    from jobs.runner.reconciler import tick

    target, (a, b) = two_hosts
    job = make_job(engineer, iris_version, target, iris_frame(2_000, seed=10),
                   chunk_rows=1_000)
    send = hosts_batch.send_to_host

    def freeze(task, args, queue):  # the chunks stay running until the cancel
        send(task, args, queue)
        for c in host_containers(docker_jobs, job):
            if c.status == "running":
                c.pause()

    monkeypatch.setattr(hosts_batch, "send_to_host", freeze)
    assert tick(job.pk) == "running"
    assert {c.host for c in job.chunks.all()} == {a, b}
    assert len(host_containers(docker_jobs, job)) == 2

    services.cancel_job(actor=engineer, job=job)
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert host_containers(docker_jobs, job) == []  # each host's worker removed its own
    assert not HostChunk.objects.filter(job=job).exists()
