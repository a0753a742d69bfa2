"""A 100,000-row job on real Docker, split into chunks run two at a time, gives exactly the
local model's predictions row for row, in input order, with the kept id column; at the end no
container, no work file and no reservation is left, and the output is in artifact storage."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from django.conf import settings

from jobs import datasets, services
from jobs.models import JobEvent
from quotas.models import Reservation
from teams.models import AuditEvent
from tests.jobs.conftest import (
    iris_frame,
    job_containers,
    local_predictions,
    parquet_upload,
    run_to_end,
)

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def test_100k_rows_match_the_local_model(docker_jobs, engineer, iris_version, iris_dir):
    frame = iris_frame(100_000, seed=20)
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=2,
                              chunk_rows=25_000, output_columns=["id"],
                              resources={"cpu": 1, "memory_mb": 1024})
    assert job.chunks_total == 4
    seen_running = []

    def two_at_most(j):
        running = len(job_containers(docker_jobs, j, None))
        seen_running.append(running)
        assert running <= 2
        return False

    assert run_to_end(job, until=two_at_most) == "succeeded", job.status_message
    assert max(seen_running) >= 1
    assert job.rows_done == 100_000 and job.rows_per_s and job.rows_per_s > 0
    assert job.status_message.startswith("Succeeded in")

    handle, filename, _content_type = services.open_output(actor=engineer, job=job)
    with handle:
        out = pd.read_parquet(io.BytesIO(handle.read()))
    assert filename == f"job-{job.pk}-output.parquet"
    assert list(out.columns) == ["id", "prediction"]
    assert len(out) == 100_000 and (out["id"].to_numpy() == np.arange(100_000)).all()
    expected = np.asarray(local_predictions(iris_dir, frame))
    assert (out["prediction"].to_numpy() == expected).all()

    assert job_containers(docker_jobs, job) == []
    assert not datasets.work_dir(job.pk).exists()
    assert not Reservation.objects.filter(owner=job.owner).exists()
    assert JobEvent.objects.filter(job=job, message__startswith="Succeeded in").exists()
    assert AuditEvent.objects.filter(action="job.created", object_id=str(job.pk)).exists()
    assert settings.MODELPORT_DATA_DIR


def test_csv_output_in_input_order(docker_jobs, engineer, iris_version, iris_dir):
    frame = iris_frame(3_000, seed=3)
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=2,
                              output_format="csv", output_columns=["id"])
    assert run_to_end(job) == "succeeded", job.status_message
    handle, filename, content_type = services.open_output(actor=engineer, job=job)
    with handle:
        out = pd.read_csv(handle)
    assert content_type == "text/csv" and filename.endswith(".csv")
    assert out["id"].tolist() == list(range(3_000))
    assert (out["prediction"].to_numpy() == np.asarray(local_predictions(iris_dir, frame))).all()
