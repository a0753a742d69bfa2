"""End to end on real Docker: a job submitted through ``jobs.services.create_job`` and run by
the real runner (``jobs.runner.reconciler.tick``, driven by the test as core's job tests do)
ends with ``jobs.signals.job_finished``; monitoring's receiver records the batch drift of its
input — the feature shifted in the input drifted, the others not — and the model's page shows
it. Celery runs eagerly in tests: the task runs when the tick's commit callbacks run."""

from __future__ import annotations

import pytest
from django.test import Client

from jobs import services
from monitoring.models import BatchDrift
from registry import reference
from tests.jobs.conftest import (  # noqa: F401 - fixtures
    docker_jobs,
    engineer,
    iris_frame,
    iris_version,
    parquet_upload,
    run_to_end,
    team,
)

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def test_a_finished_job_feeds_the_models_drift_page(docker_jobs, engineer, iris_version,  # noqa: F811
                                                    django_capture_on_commit_callbacks):
    baseline = iris_frame(4000, seed=1).drop(columns=["id"])
    iris_version.reference_stats = reference.compute(baseline, source="reference_data")
    iris_version.save(update_fields=["reference_stats"])
    frame = iris_frame(6000, seed=2)
    frame["petal_length"] = frame["petal_length"] + 4.0  # the one shifted feature
    job = services.create_job(actor=engineer, team=iris_version.model.team,
                              model=iris_version.model.name, version=1,
                              input_file=parquet_upload(frame), parallelism=1,
                              chunk_rows=3000, output_columns=["id"],
                              resources={"cpu": 1, "memory_mb": 1024})
    with django_capture_on_commit_callbacks(execute=True):
        assert run_to_end(job) == "succeeded", job.status_message
    row = BatchDrift.objects.get(job=job)
    assert row.drifted == ["petal_length"]
    assert row.rows == row.profiled_rows == 6000
    assert {f["feature"] for f in row.features} == {"sepal_length", "sepal_width",
                                                    "petal_length", "petal_width"}
    client = Client()
    client.force_login(engineer)
    html = client.get(f"/monitoring/models/{iris_version.model.name}/").content.decode()
    section = html.split('id="batch-jobs"', 1)[1].split("</article>", 1)[0]
    assert f'data-batch-job="{job.pk}"' in section and "petal_length" in section
