"""A worker killed mid-job: its containers keep running; the next tick, from a fresh state,
adopts them by their labels. A chunk's container killed mid-run is retried. Either way the
output has every input row exactly once, in input order."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from django.db import transaction

from jobs import services
from jobs.models import JobChunk
from jobs.runner import reconciler
from tests.jobs.conftest import (
    iris_frame,
    job_containers,
    local_predictions,
    parquet_upload,
    run_to_end,
)

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


class WorkerKilled(Exception):
    pass


def output_of(engineer, job) -> pd.DataFrame:
    handle, _name, _type = services.open_output(actor=engineer, job=job)
    with handle:
        return pd.read_parquet(io.BytesIO(handle.read()))


def test_killed_worker_resumes_without_duplicates(docker_jobs, engineer, iris_version,
                                                  iris_dir, monkeypatch):
    frame = iris_frame(20_000, seed=7)
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=2,
                              chunk_rows=5_000, output_columns=["id"])
    # The worker dies right after starting the chunks: its transaction never commits, so the
    # database still says every chunk is pending with no attempt.
    real_progress = reconciler._progress

    def die(job_, chunks):
        raise WorkerKilled

    monkeypatch.setattr(reconciler, "_progress", die)
    with pytest.raises(WorkerKilled), transaction.atomic():
        reconciler.tick(job.pk)
    monkeypatch.setattr(reconciler, "_progress", real_progress)
    assert set(JobChunk.objects.filter(job=job).values_list("status", "attempts")) == \
        {("pending", 0)}
    started = job_containers(docker_jobs, job)
    assert len(started) == 2  # still running (or done) without a worker

    # A fresh worker: adopts the two, starts nothing twice, finishes.
    assert run_to_end(job) == "succeeded", job.status_message
    attempts = dict(JobChunk.objects.filter(job=job).values_list("index", "attempts"))
    assert attempts == {0: 1, 1: 1, 2: 1, 3: 1}
    out = output_of(engineer, job)
    assert out["id"].tolist() == list(range(20_000))
    assert (out["prediction"].to_numpy() == np.asarray(local_predictions(iris_dir, frame))).all()
    assert job_containers(docker_jobs, job) == []


def test_killed_chunk_container_is_retried(docker_jobs, engineer, iris_version, iris_dir):
    frame = iris_frame(8_000, seed=8)
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=2,
                              chunk_rows=2_000, output_columns=["id"])
    run_to_end(job, until=lambda j: bool(job_containers(docker_jobs, j)))
    victim = job_containers(docker_jobs, job)[0]
    index = int(victim.labels["modelport.chunk"])
    try:
        victim.kill()
    except Exception:  # it finished first; the run must still be exact
        index = -1
    assert run_to_end(job) == "succeeded", job.status_message
    if index >= 0:  # killed while running: a second attempt (unless its file was complete)
        assert JobChunk.objects.get(job=job, index=index).attempts in (1, 2)
    out = output_of(engineer, job)
    assert out["id"].tolist() == list(range(8_000))
    assert (out["prediction"].to_numpy() == np.asarray(local_predictions(iris_dir, frame))).all()
