"""A chunk that fails on every attempt fails the job with the reason (its last log lines in
the events) and keeps the finished chunks; ``retry_job`` then runs only the missing chunk and
the job completes with every row."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from core.errors import Conflict
from jobs import services
from jobs.models import JobChunk, JobEvent
from jobs.runner import output
from quotas.models import Reservation
from tests.jobs.conftest import (
    iris_frame,
    job_containers,
    local_predictions,
    parquet_upload,
    run_to_end,
)

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def test_failing_chunk_fails_the_job_then_retry_completes(docker_jobs, engineer, iris_version,
                                                          iris_dir):
    frame = iris_frame(6_000, seed=5)
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=2,
                              chunk_rows=2_000, output_columns=["id"], max_retries=1)
    # Chunk 1 cannot write its file (a directory sits where it goes): every attempt fails.
    blocker = output.chunk_file(job, 1)
    blocker.mkdir()
    assert run_to_end(job) == "failed"
    assert "Chunk 1 failed 2 time(s)" in job.status_message, job.status_message
    chunks = dict(JobChunk.objects.filter(job=job).values_list("index", "status"))
    # The job fails at once: a chunk still running then is stopped and pending again.
    assert chunks[0] == "succeeded" and chunks[1] == "failed" and chunks[2] in ("succeeded",
                                                                               "pending")
    kept = {i for i, s in chunks.items() if s == "succeeded"}
    warnings = JobEvent.objects.filter(job=job, chunk=1, kind__in=["warning", "error"])
    assert warnings.count() >= 2
    assert any("Traceback" in e.message or "Error" in e.message for e in warnings)
    assert job_containers(docker_jobs, job) == []
    assert not Reservation.objects.filter(owner=job.owner).exists()
    with pytest.raises(Conflict):
        services.open_output(actor=engineer, job=job)
    # The failed chunk's last lines stay readable once its container is gone.
    assert "attempt 2" in services.job_logs(actor=engineer, job=job, chunk=1)
    assert services.job_logs(actor=engineer, job=job).startswith("attempt 2")

    blocker.rmdir()
    services.retry_job(actor=engineer, job=job)
    job.refresh_from_db()
    assert job.status == "queued"
    assert run_to_end(job) == "succeeded", job.status_message
    attempts = dict(JobChunk.objects.filter(job=job).values_list("index", "attempts"))
    assert all(attempts[i] == 1 for i in kept)  # the kept chunks did not run again
    assert attempts[1] == 1  # attempts count again from the retry
    handle, _name, _type = services.open_output(actor=engineer, job=job)
    with handle:
        out = pd.read_parquet(io.BytesIO(handle.read()))
    assert out["id"].tolist() == list(range(6_000))
    assert (out["prediction"].to_numpy() == np.asarray(local_predictions(iris_dir, frame))).all()
