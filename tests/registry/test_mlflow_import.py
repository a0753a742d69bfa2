"""Ingest paths 3 and 4 against a real MLflow tracking server started by the test.

A "training script" (stock ``mlflow`` in this process) logs a run and registers a model; the
platform imports ``runs:/`` and ``models:/`` URIs and its sync task picks up registered versions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings

from registry import services
from registry.models import ModelVersion, RegisteredModel
from tests.factories import TeamFactory
from tests.fixtures import bearer_client

from .conftest import COLUMNS, EXAMPLE

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.usefixtures("sandbox_image")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer within 120 s")
        yield uri
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def training_run(tracking_server, iris_estimator) -> dict:
    """What a user's training script does: log params/metrics and register the model."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd

    from registry.sandbox import sandbox_requirements

    mlflow.set_tracking_uri(tracking_server)
    mlflow.set_experiment("iris-training")
    frame = pd.DataFrame(EXAMPLE["data"], columns=COLUMNS)
    with mlflow.start_run() as run:
        mlflow.log_param("max_iter", 300)
        mlflow.log_metric("accuracy", 0.97)
        mlflow.set_tag("mlflow.source.git.commit", "deadbeef")
        mlflow.sklearn.log_model(iris_estimator, name="model", input_example=frame,
                                 registered_model_name="iris-tracked",
                                 pip_requirements=sandbox_requirements([]),
                                 serialization_format="cloudpickle")
    return {"run_id": run.info.run_id}


@pytest.fixture
def tracked(settings, tracking_server):
    settings.MLFLOW_TRACKING_URI = tracking_server
    return tracking_server


def test_import_from_a_run_records_params_metrics_and_lineage(
        tracked, training_run, iris, team_engineer, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/models/iris/versions/", {
            "source": f"runs:/{training_run['run_id']}/model"}, format="json")
    assert response.status_code == 202, response.content
    body = client.get("/api/v1/models/iris/versions/1/").json()
    assert body["status"] == "ready", body["status_message"]
    assert body["lineage"]["mlflow_run_id"] == training_run["run_id"]
    assert body["lineage"]["git_commit"] == "deadbeef"
    assert body["params"] == {"max_iter": "300"}
    assert body["metrics"] == {"accuracy": 0.97}
    assert [c["name"] for c in body["signature"]["inputs"]] == COLUMNS


def test_import_of_a_registered_model_version(tracked, training_run, iris, team_engineer,
                                              django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/v1/models/iris/versions/", {"source": "models:/iris-tracked/1"},
                    format="json")
    version = ModelVersion.objects.get()
    assert version.status == "ready", version.status_message
    assert version.lineage["mlflow_model_version"] == "1"


def test_unknown_run_fails_the_version_with_mlflows_reason(
        tracked, training_run, iris, team_engineer, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/api/v1/models/iris/versions/", {
            "source": "runs:/0123456789abcdef0123456789abcdef/model"}, format="json")
    version = ModelVersion.objects.get()
    assert version.status == "failed"
    assert version.status_message.startswith("Import failed:")


@pytest.mark.parametrize("source", ["s3://bucket/model", "runs:/short/model", "models:/",
                                    "file:///etc/passwd"])
def test_malformed_sources_are_400(iris, team_engineer, source):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/",
                                                 {"source": source}, format="json")
    assert response.status_code == 400
    assert "source" in response.json()
    assert not ModelVersion.objects.exists()


def test_sync_imports_what_a_training_script_registered(tracked, training_run,
                                                        django_capture_on_commit_callbacks):
    TeamFactory(slug="demo")
    with django_capture_on_commit_callbacks(execute=True):
        imported = services.sync_from_mlflow()
    assert [v.source for v in imported] == ["models:/iris-tracked/1"]
    model = RegisteredModel.objects.get(name="iris-tracked")
    assert model.team.slug == "demo"
    version = model.versions.get()
    assert version.status == "ready", version.status_message
    assert version.lineage["mlflow_run_id"] == training_run["run_id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert services.sync_from_mlflow() == []  # idempotent


def test_sync_runs_on_beat_every_half_minute():
    entry = django_settings.CELERY_BEAT_SCHEDULE["registry-mlflow-sync"]
    assert entry["task"] == "registry.tasks.sync_mlflow"
    assert entry["schedule"].total_seconds() <= 60


def test_models_path_is_resolved_relative_to_the_tracking_server(tmp_path: Path):
    from registry.mlflow_import import check_source

    assert check_source(" models:/iris/3 ") == "models:/iris/3"


def test_sync_returns_at_once_when_no_tracking_server_answers(settings):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:1"  # nothing listens on port 1
    import time

    started = time.monotonic()
    assert services.sync_from_mlflow() == []
    assert time.monotonic() - started < 5
