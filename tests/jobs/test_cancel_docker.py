"""Cancel mid-run: every container of the job is gone at once, the reservation released, the
partial outputs and work files deleted, the job cancelled; cancelling it again is a 409."""

from __future__ import annotations

import pytest

from core.errors import Conflict
from jobs import datasets, services
from quotas.models import Reservation
from tests.jobs.conftest import iris_frame, job_containers, parquet_upload, run_to_end

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def test_cancel_mid_run_leaves_no_container(docker_jobs, engineer, iris_version):
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(iris_frame(4_000)), parallelism=2,
                              chunk_rows=1_000)
    run_to_end(job, until=lambda j: j.status == "running" and job_containers(docker_jobs, j))
    containers = job_containers(docker_jobs, job)
    assert containers
    # Hardened like replicas, with no network at all.
    config = containers[0].attrs["HostConfig"]
    assert config["NetworkMode"] == "none" and config["ReadonlyRootfs"] is True
    assert config["CapDrop"] == ["ALL"] and "no-new-privileges" in config["SecurityOpt"]
    assert config["PidsLimit"] and config["Memory"] == 1024 * 1024 * 1024
    assert containers[0].attrs["Config"]["User"] == "10001:10001"
    assert not any("docker.sock" in m.get("Source", "") for m in containers[0].attrs["Mounts"])
    modes = {m["Destination"]: m["RW"] for m in containers[0].attrs["Mounts"]}
    assert modes == {"/model": False, "/job/input": False, "/job/output": True}

    services.cancel_job(actor=engineer, job=job)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.finished_at is not None
    assert job_containers(docker_jobs, job) == []
    assert not Reservation.objects.filter(owner=job.owner).exists()
    assert not datasets.work_dir(job.pk).exists()
    assert job.output_name == ""

    with pytest.raises(Conflict) as caught:
        services.cancel_job(actor=engineer, job=job)
    assert caught.value.status_code == 409
    # A later tick of the cancelled job starts nothing.
    from jobs.runner.reconciler import tick

    assert tick(job.pk) == "finished"
    assert job_containers(docker_jobs, job) == []
