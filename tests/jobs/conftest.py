"""Fixtures for batch jobs: a team, an engineer, a ready iris version (stored artifact, the
platform's own requirements, so Docker tests share the one serving image), inputs."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import RegisteredModel
from teams.roles import Role
from tests.deployments.conftest import COLUMNS, iris_dir, make_version  # noqa: F401
from tests.factories import MembershipFactory, TeamFactory, UserFactory

TEST_LABELS = {"modelport.test": "1"}


@pytest.fixture
def team():
    return TeamFactory(slug=f"jobs-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def engineer(team):
    user = UserFactory()
    MembershipFactory(team=team, user=user, role=Role.ENGINEER)
    return user


@pytest.fixture
def iris_version(team, iris_dir):  # noqa: F811
    model = RegisteredModel.objects.create(name=f"iris-{uuid.uuid4().hex[:6]}", team=team)
    version = make_version(model, 1, iris_dir)
    from registry import mlmodel

    version.signature = mlmodel.read_metadata(iris_dir).signature
    version.save()
    return version


def iris_frame(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(0.1, 7.9, size=(rows, 4)).round(2), columns=COLUMNS)
    frame.insert(0, "id", np.arange(rows))
    return frame


def csv_upload(frame, name: str = "input.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, frame.to_csv(index=False).encode(), "text/csv")


def parquet_upload(frame, name: str = "input.parquet") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return SimpleUploadedFile(name, buffer.getvalue(), "application/octet-stream")


@pytest.fixture
def docker_jobs(docker_client, platform_serving_image, settings, monkeypatch):
    """The Docker runtime as ``make run`` has it; ticks are driven by the test (nothing is
    enqueued); every job container of this installation is removed afterwards."""
    from teams.installation import installation_id

    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DOCKER_NETWORK = "none"
    monkeypatch.setattr("jobs.passes.enqueue", lambda job_id: None)
    yield docker_client
    remove_job_containers(docker_client, installation_id())


def job_containers(client, job=None, installation: str | None = None) -> list:
    from teams.installation import installation_id

    labels = ["modelport.job" if job is None else f"modelport.job={job.name}",
              f"modelport.installation={installation or installation_id()}"]
    return client.containers.list(all=True, filters={"label": labels})


def remove_job_containers(client, installation: str) -> None:
    import contextlib

    for container in job_containers(client, installation=installation):
        with contextlib.suppress(Exception):
            container.remove(force=True)


def run_to_end(job, *, limit_s: float = 900, until=None) -> str:
    """Tick until the job finishes (or ``until(job)`` holds); a bound, not a timing check."""
    import time

    from jobs.runner.reconciler import tick

    deadline = time.monotonic() + limit_s
    outcome = ""
    while time.monotonic() < deadline:
        outcome = tick(job.pk)
        job.refresh_from_db()
        if job.finished or (until is not None and until(job)):
            return outcome
        time.sleep(0.5)
    raise AssertionError(f"job {job.pk} still {job.status} after {limit_s}s: "
                         f"{job.status_message}")


def local_predictions(model_dir, frame):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dir)).predict(frame[COLUMNS])
