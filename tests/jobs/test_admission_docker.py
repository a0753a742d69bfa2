"""Admission: a job over the team's quota is refused with 409 and the numbers, leaving
nothing; a job over the team's job-concurrency limit stays queued (saying why) and starts when
the running one finishes; the reservation is released at the end."""

from __future__ import annotations

import pytest

from core.errors import Conflict
from jobs import services
from jobs.models import BatchJob
from jobs.runner.reconciler import tick
from quotas import services as quotas
from quotas.models import Reservation
from tests.factories import AdminFactory
from tests.jobs.conftest import iris_frame, parquet_upload, run_to_end

pytestmark = pytest.mark.django_db


def create(engineer, version, **kwargs):
    return services.create_job(actor=engineer, team=version.model.team,
                               model=version.model.name, version=1,
                               input_file=parquet_upload(iris_frame(2_000)), **kwargs)


def test_over_quota_is_refused_with_the_numbers(engineer, iris_version):
    team = iris_version.model.team
    quotas.set_quota(actor=AdminFactory(), team=team, cpu=2, memory_mb=4096, gpus=0,
                     deployments=5)
    with pytest.raises(Conflict) as caught:
        create(engineer, iris_version, parallelism=3, resources={"cpu": 1, "memory_mb": 512})
    assert caught.value.code == "quota_exceeded" and caught.value.status_code == 409
    assert "CPU" in caught.value.message or "cpu" in caught.value.message
    assert not BatchJob.objects.exists()
    assert not Reservation.objects.filter(owner__startswith="job:").exists()
    # Within the quota it is admitted: parallelism x the per-container resources.
    job = create(engineer, iris_version, parallelism=2, resources={"cpu": 1, "memory_mb": 512})
    reservation = Reservation.objects.get(owner=job.owner)
    assert (reservation.cpu, reservation.memory_mb, reservation.deployments) == (2, 1024, 0)


@pytest.mark.docker
def test_concurrency_limit_queues_then_starts(docker_jobs, engineer, iris_version, settings):
    settings.MODELPORT_TEAM_MAX_RUNNING_JOBS = 1
    first = create(engineer, iris_version)
    second = create(engineer, iris_version)
    assert tick(first.pk) == "running"
    assert tick(second.pk) == "queued"
    second.refresh_from_db()
    assert second.status == "queued" and "limit is 1" in second.status_message
    assert run_to_end(first) == "succeeded"
    assert not Reservation.objects.filter(owner=first.owner).exists()
    assert run_to_end(second) == "succeeded", second.status_message
    assert not Reservation.objects.filter(owner=second.owner).exists()


def test_target_capacity_counts_jobs(engineer, iris_version):
    from compute import targets

    default = targets.default_target()
    assert default is not None  # the installation's own Docker, made by a data migration
    default.cpu, default.memory_mb = 2, 8192
    default.save()
    first = create(engineer, iris_version, parallelism=2, resources={"cpu": 1})
    assert first.target == default
    with pytest.raises(Conflict) as caught:
        create(engineer, iris_version, parallelism=1, resources={"cpu": 1})
    assert caught.value.code == "target_capacity_exceeded"
    assert "CPU needed" in caught.value.message
    assert BatchJob.objects.count() == 1
