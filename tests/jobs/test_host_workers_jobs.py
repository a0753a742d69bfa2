"""Batch chunks on several plain Docker hosts with real host workers: two Celery worker
processes started the documented way (``MODELPORT_HOST_NAME=<host>``, ``-Q host.<host>``, the
fixture of ``tests/deployments/test_host_workers.py``) against the test's PostgreSQL, Redis,
data dir and Docker Engine. The runner ticks in this process; the start/remove tasks go through
Redis to the chosen host's queue, and each worker's heartbeat step reports its chunks.

SIMULATED: only one Docker Engine runs here, so both "hosts" share it (they differ by host
name, queue, container names and the ``modelport.host`` label), and the job's work dir is on
this machine's disk (a real deployment mounts it on every host at the same path).
"""

from __future__ import annotations

import numpy as np
import pytest

from compute.models import ExecutionTarget, Host
from jobs.models import HostChunk
from tests.deployments.test_host_workers import wait_for, workers  # noqa: F401
from tests.jobs.conftest import iris_frame, local_predictions, run_to_end
from tests.jobs.test_hosts_docker import host_containers, make_job, output_of

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.django_db(transaction=True)]


@pytest.fixture
def docker_env(docker_jobs):
    """What the host workers' fixture asks for: here, the jobs' Docker setup."""
    return []


def test_real_host_workers_run_a_jobs_chunks_on_both_hosts(
        workers, docker_jobs, engineer, iris_version, iris_dir):  # noqa: F811
    a, b = workers.names
    workers.start(a)
    workers.start(b)
    wait_for("both hosts to register", lambda: Host.objects.filter(
        name__in=[a, b], state="alive", queue__startswith="host.").count() == 2, workers)
    target = ExecutionTarget.objects.get(name="hosts")
    frame = iris_frame(4_000, seed=11)
    job = make_job(engineer, iris_version, target, frame, chunk_rows=1_000)
    reported: set[str] = set()

    def heartbeat_reports(j):
        for row in HostChunk.objects.filter(job=j, reported_at__isnull=False) \
                .select_related("host"):
            reported.add(row.host.name)
        return False

    outcome = run_to_end(job, until=heartbeat_reports, limit_s=600)
    assert outcome == "succeeded", f"{job.status_message}\n{workers.output()}"
    assert {c.host for c in job.chunks.all()} == {a, b}
    assert reported, "no host worker reported a chunk"
    out = output_of(engineer, job)
    assert out["id"].tolist() == list(range(4_000))
    assert (out["prediction"].to_numpy()
            == np.asarray(local_predictions(iris_dir, frame))).all()
    # The removals travel through Redis to each host's worker.
    wait_for("every chunk container to be removed",
             lambda: host_containers(docker_jobs, job) == [], workers, timeout=60)
    assert not HostChunk.objects.filter(job=job).exists()
