"""Batch drift: a succeeded job's staged input against its version's reference, recorded when
``jobs.signals.job_finished`` is sent, shown on the model's monitoring page and in the API.

The job row is made directly and its input staged with the core stream's staging function
(``jobs.datasets.stage``: Parquet, one row group per chunk) and saved to artifact storage as
``jobs.services.create_job`` does; no container runs (the drift reads only the staged input).
The runner's ``job_finished`` send is done here by hand (``finish``). Celery runs eagerly in
tests, so the receiver's task runs on the signal's commit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files import File
from django.test import Client
from django.utils import timezone

from jobs import datasets
from jobs.models import BatchJob, JobStatus
from jobs.signals import job_finished
from monitoring import batch
from monitoring.models import BatchDrift
from registry import storage
from registry.models import RegisteredModel
from teams.models import AuditEvent
from tests.fixtures import bearer_client

from .conftest import COLOR_P, COLORS, make_version

pytestmark = pytest.mark.django_db


def job_input(n: int = 20000, *, shift: float = 0.0, seed: int = 11) -> pd.DataFrame:
    """Rows like the reference (``conftest.reference_frame``), x1 shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "x1": rng.normal(shift, 1, n),
                         "x2": rng.exponential(2.0, n),
                         "color": rng.choice(COLORS, n, p=COLOR_P)})


def make_job(team, model, version, user, frame: pd.DataFrame, *, name: str,
             status: str = JobStatus.SUCCEEDED, chunk_rows: int = 5000) -> BatchJob:
    job = BatchJob.objects.create(
        team=team, model=model, version=version, status=status, created_by=user,
        input_filename=f"{name}.csv", input_format="csv", columns=list(frame.columns),
        rows_total=len(frame), chunk_rows=chunk_rows,
        chunks_total=-(-len(frame) // chunk_rows), finished_at=timezone.now())
    path = datasets.stage(pa.Table.from_pandas(frame, preserve_index=False), job.pk,
                          chunk_rows)
    with path.open("rb") as f:
        job.input_name = storage.artifact_storage().save(f"jobs/{job.pk}/input.parquet",
                                                         File(f))
    job.save(update_fields=["input_name"])
    assert pq.ParquetFile(path).num_row_groups == job.chunks_total
    return job


def finish(job: BatchJob, django_capture_on_commit_callbacks) -> None:
    """What the runner does once the job's final status is committed."""
    with django_capture_on_commit_callbacks(execute=True):
        job_finished.send(sender=BatchJob, job_id=job.pk, status=job.status)


@pytest.fixture
def setup(team, engineer):
    model = RegisteredModel.objects.create(name="churn", team=team, created_by=engineer)
    return model, make_version(model, 1)


def test_a_shifted_feature_drifts_and_the_others_do_not(setup, team, engineer,
                                                        django_capture_on_commit_callbacks):
    model, version = setup
    job = make_job(team, model, version, engineer, job_input(shift=0.8), name="shifted")
    finish(job, django_capture_on_commit_callbacks)
    row = BatchDrift.objects.get(job=job)
    assert row.drifted == ["x1"]
    by = {f["feature"]: f for f in row.features}
    assert set(by) == {"x1", "x2", "color"}  # the reference's features; "id" is not one
    assert by["x1"]["psi"] > 0.2 and by["x1"]["p_value"] < 0.01
    assert not by["x2"]["drifted"] and not by["color"]["drifted"]
    assert by["color"]["test"] == "chi2" and by["x1"]["test"] == "ks"
    assert by["x1"]["n"] == 20000  # bin counts over every row read
    assert row.rows == row.profiled_rows == 20000
    assert row.thresholds["psi"] == 0.2 and row.rules["numeric"] == "ks and psi"
    assert AuditEvent.objects.filter(action="batch_drift.recorded",
                                     object_id=str(row.pk)).exists()


def test_an_unshifted_input_drifts_nowhere_and_recording_again_replaces(
        setup, team, engineer, django_capture_on_commit_callbacks):
    model, version = setup
    job = make_job(team, model, version, engineer, job_input(), name="same")
    finish(job, django_capture_on_commit_callbacks)
    finish(job, django_capture_on_commit_callbacks)
    assert BatchDrift.objects.filter(job=job).count() == 1
    assert BatchDrift.objects.get(job=job).drifted == []


def test_failed_or_cancelled_jobs_are_not_profiled(setup, team, engineer,
                                                   django_capture_on_commit_callbacks):
    model, version = setup
    for status in (JobStatus.FAILED, JobStatus.CANCELLED):
        job = make_job(team, model, version, engineer, job_input(), name=status, status=status)
        finish(job, django_capture_on_commit_callbacks)
        assert batch.record_job_input(job_id=job.pk) is None
    assert not BatchDrift.objects.exists()


def test_a_version_without_reference_says_so(team, engineer,
                                             django_capture_on_commit_callbacks):
    model = RegisteredModel.objects.create(name="bare", team=team, created_by=engineer)
    version = make_version(model, 1, stats={})
    job = make_job(team, model, version, engineer, job_input(), name="bare")
    finish(job, django_capture_on_commit_callbacks)
    row = BatchDrift.objects.get(job=job)
    assert row.features == [] and row.drifted == []
    assert "no reference data" in row.message


def test_the_model_page_shows_batch_jobs_marked_batch(setup, team, engineer, viewer, outsider,
                                                      django_capture_on_commit_callbacks):
    model, version = setup
    job = make_job(team, model, version, engineer, job_input(shift=0.8), name="page")
    finish(job, django_capture_on_commit_callbacks)
    client = Client()
    client.force_login(viewer)
    html = client.get(f"/monitoring/models/{model.name}/").content.decode()
    assert 'id="batch-jobs"' in html and f'data-batch-job="{job.pk}"' in html
    section = html.split('id="batch-jobs"', 1)[1].split("</article>", 1)[0]
    assert ">batch<" in section and f"job {job.pk}" in section
    assert f"/jobs/{job.pk}/" in section and "x1" in section and "20000" in section
    client.force_login(outsider)
    assert client.get(f"/monitoring/models/{model.name}/").status_code == 404


def test_the_api_lists_batch_drift_per_job(setup, team, engineer, viewer, outsider,
                                           django_capture_on_commit_callbacks):
    model, version = setup
    old = make_job(team, model, version, engineer, job_input(), name="old")
    new = make_job(team, model, version, engineer, job_input(shift=0.8), name="new")
    finish(old, django_capture_on_commit_callbacks)
    finish(new, django_capture_on_commit_callbacks)
    url = f"/api/v1/models/{model.name}/drift/batch/"
    body = bearer_client(viewer).get(url).json()
    assert body["model"] == model.name
    assert [r["job"] for r in body["results"]] == [new.pk, old.pk]
    first = body["results"][0]
    assert first["kind"] == "batch" and first["drifted"] == ["x1"]
    assert first["model_version"] == 1 and first["rows"] == 20000
    assert first["created_by"] == engineer.username
    assert {f["feature"] for f in first["features"]} == {"x1", "x2", "color"}
    assert len(bearer_client(viewer).get(url + "?limit=1").json()["results"]) == 1
    bad = bearer_client(viewer).get(url + "?limit=abc")
    assert bad.status_code == 400 and "limit" in bad.json()
    assert bearer_client(outsider).get(url).status_code == 404


def test_a_bounded_read_of_a_large_input(setup, team, engineer, monkeypatch,
                                         django_capture_on_commit_callbacks):
    """Past ``reference.MAX_ROWS`` rows the input is not read further (here 6,000 of 20,000);
    the row count shown is still the job's."""
    from registry import reference

    monkeypatch.setattr(reference, "MAX_ROWS", 6000)
    model, version = setup
    job = make_job(team, model, version, engineer, job_input(shift=0.8), name="large")
    finish(job, django_capture_on_commit_callbacks)
    row = BatchDrift.objects.get(job=job)
    assert row.rows == 20000 and row.profiled_rows == 6000
    assert {f["feature"]: f["n"] for f in row.features}["x1"] == 6000
    assert row.drifted == ["x1"]
