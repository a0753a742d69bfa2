"""Ingest path 3: ``runs:/`` and ``models:/`` imports from the real tracking server.

A training script in its own process logs through the platform's MLflow route with a token (the
``tracking`` fixture); the import then reads the server over its socket — MLflow's own registry,
never one resolved from the worker's working directory (issue 24's stray ``./mlflow.db``), and
artifacts only from the server's artifact store.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from registry import mlflow_services, mlflow_upstream
from registry.mlflow_import import check_source
from registry.models import ModelVersion
from tests.factories import make_token
from tests.fixtures import bearer_client

from .conftest import COLUMNS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.usefixtures("sandbox_image")]


def trained(tracking, user, name: str = "") -> str:
    done = tracking(make_token(user, name="training")[1], name)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("RUN_ID=")[1].strip()


def test_import_from_a_run_records_params_metrics_and_lineage(tracking, iris, team_engineer):
    run_id = trained(tracking, team_engineer)
    client = bearer_client(team_engineer)
    response = client.post("/api/v1/models/iris/versions/", {
        "source": f"runs:/{run_id}/model"}, format="json")
    assert response.status_code == 202, response.content
    body = client.get("/api/v1/models/iris/versions/1/").json()
    assert body["status"] == "ready", body["status_message"]
    assert body["lineage"]["mlflow_run_id"] == run_id
    assert body["lineage"]["git_commit"] == "deadbeef"
    assert body["params"] == {"max_iter": "300"}
    assert body["metrics"] == {"accuracy": 0.97}
    assert [c["name"] for c in body["signature"]["inputs"]] == COLUMNS
    assert body["created_by"] == team_engineer.username


def legacy_version(run_id: str, name: str) -> None:
    """A version in the tracking server's own registry, as registered before Modelport answered
    MLflow's registry API itself (written straight to the server: nothing else can now)."""
    found = mlflow_upstream.call("POST", "/api/2.0/mlflow/logged-models/search", json={
        "experiment_ids": [mlflow_upstream.call("GET", "/api/2.0/mlflow/runs/get", params={
            "run_id": run_id})["run"]["info"]["experiment_id"]]})["models"]
    model_id = next(m["info"]["model_id"] for m in found
                    if m["info"]["source_run_id"] == run_id)
    mlflow_upstream.call("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})
    mlflow_upstream.call("POST", "/api/2.0/mlflow/model-versions/create", json={
        "name": name, "source": f"models:/{model_id}", "run_id": run_id, "model_id": model_id})


def test_import_of_a_registered_model_version_reads_mlflows_own_registry(
        tracking, iris, team_engineer):
    name = f"iris-registered-{uuid.uuid4().hex[:6]}"
    existed = Path("mlflow.db").exists()
    legacy_version(trained(tracking, team_engineer), name)
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "source": f"models:/{name}/1"}, format="json")
    assert response.status_code == 202, response.content
    version = ModelVersion.objects.get(model=iris)
    assert version.status == "ready", version.status_message
    assert version.lineage["mlflow_model"] == name
    assert version.lineage["mlflow_model_version"] == "1"
    assert Path("mlflow.db").exists() == existed  # no registry made up in the working dir


def test_import_of_a_logged_model_and_of_a_store_path(tracking, iris, team_engineer):
    """MLflow 3's sources: ``models:/m-…`` (what ``log_model`` returns) and the artifact-store
    folder it lives in (``mlflow-artifacts:/…``)."""
    run_id = trained(tracking, team_engineer)
    found = mlflow_upstream.call("POST", "/api/2.0/mlflow/logged-models/search", json={
        "experiment_ids": [mlflow_upstream.call("GET", "/api/2.0/mlflow/runs/get", params={
            "run_id": run_id})["run"]["info"]["experiment_id"]]})["models"]
    info = next(m["info"] for m in found if m["info"]["source_run_id"] == run_id)
    client = bearer_client(team_engineer)
    for source in (f"models:/{info['model_id']}", info["artifact_uri"]):
        assert client.post("/api/v1/models/iris/versions/", {"source": source},
                           format="json").status_code == 202
    first, second = ModelVersion.objects.filter(model=iris).order_by("version")
    assert first.status == "ready", first.status_message
    assert first.lineage["mlflow_model_id"] == info["model_id"]
    assert first.lineage["mlflow_run_id"] == run_id
    assert second.status == "ready", second.status_message
    assert second.artifact_sha256 == first.artifact_sha256


def test_unknown_run_fails_the_version_with_mlflows_reason(tracking, iris, team_engineer):
    bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "source": "runs:/0123456789abcdef0123456789abcdef/model"}, format="json")
    version = ModelVersion.objects.get()
    assert version.status == "failed"
    assert version.status_message.startswith("Import failed: MLflow refused")


@pytest.mark.usefixtures("mlflow_upstream")
def test_artifacts_outside_the_servers_store_are_never_read(iris, team_engineer, tmp_path):
    """A run whose experiment keeps artifacts in a local folder (possible only with direct
    access to the server; the route refuses ``artifact_location``): the worker reads nothing
    from its own disk."""
    elsewhere = tmp_path / "elsewhere"
    experiment = mlflow_upstream_call("experiments/create", {
        "name": f"local-{uuid.uuid4().hex[:6]}", "artifact_location": f"file://{elsewhere}"})
    run = mlflow_upstream_call("runs/create", {"experiment_id": experiment["experiment_id"]})
    run_id = run["run"]["info"]["run_id"]
    model = elsewhere / run_id / "artifacts" / "model"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "source": f"runs:/{run_id}/model"}, format="json")
    version = ModelVersion.objects.get()
    assert version.status == "failed"
    assert "outside the tracking server's artifact store" in version.status_message


@pytest.mark.usefixtures("mlflow_upstream")
def test_a_run_path_climbing_out_of_the_run_is_refused(iris, team_engineer):
    experiment = mlflow_upstream_call("experiments/create",
                                      {"name": f"climb-{uuid.uuid4().hex[:6]}"})
    run = mlflow_upstream_call("runs/create", {"experiment_id": experiment["experiment_id"]})
    bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "source": f"runs:/{run['run']['info']['run_id']}/../../model"}, format="json")
    version = ModelVersion.objects.get()
    assert version.status == "failed" and "unsafe artifact path" in version.status_message


def mlflow_upstream_call(endpoint: str, body: dict) -> dict:
    return mlflow_upstream.call("POST", f"/api/2.0/mlflow/{endpoint}", json=body)


@pytest.mark.parametrize("source", ["s3://bucket/model", "runs:/short/model", "models:/",
                                    "file:///etc/passwd"])
def test_malformed_sources_are_400(iris, team_engineer, source):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/",
                                                 {"source": source}, format="json")
    assert response.status_code == 400
    assert "source" in response.json()
    assert not ModelVersion.objects.exists()


def test_no_periodic_sync_remains():
    """Nothing writes the tracking server's registry any more: beat imports nothing from it."""
    assert not [entry for entry in django_settings.CELERY_BEAT_SCHEDULE.values()
                if "mlflow" in entry["task"]]


def test_sources_are_trimmed():
    assert check_source(" models:/iris/3 ") == "models:/iris/3"


def test_sync_skips_when_no_tracking_server_answers(settings, tmp_path):
    settings.MODELPORT_MLFLOW_UPSTREAM = f"unix:{tmp_path / 'no-server.sock'}"
    assert not mlflow_upstream.answers()
    assert mlflow_services.sync_from_mlflow() == []
