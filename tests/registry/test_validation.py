"""Registration end to end: upload → 202 pending → sandbox validation → ready/failed.

Validation runs in the real sandbox: a hardened, network-less Docker container when Docker
answers (CI), else a resource-limited subprocess (reported as unsandboxed).
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import ModelVersion
from teams.models import AuditEvent
from tests.conftest import REQUIRE_SERVICES
from tests.fixtures import bearer_client
from tests.registry.test_portal_pages import logged_in

from .conftest import COLUMNS, example_json, malicious_pickle, tar_dir, zip_dir

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.usefixtures("sandbox_image")]


def register(client, capture, **fields):
    with capture(execute=True):
        response = client.post("/api/v1/models/iris/versions/", fields, format="multipart")
    return response


def test_mlflow_zip_becomes_ready_with_its_metadata(iris, team_engineer, mlflow_model_dir,
                                                    django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    response = register(client, django_capture_on_commit_callbacks,
                        file=SimpleUploadedFile("iris.zip", zip_dir(mlflow_model_dir)),
                        format="mlflow", description="first", git_commit="abc123",
                        dataset_name="iris.csv", metrics='{"accuracy": 0.97}')
    assert response.status_code == 202, response.content
    assert response.json() == {"version": 1, "status": "pending"}

    body = client.get("/api/v1/models/iris/versions/1/").json()
    assert body["status"] == "ready", body["status_message"]
    assert body["flavor"] == "sklearn"
    assert [c["name"] for c in body["signature"]["inputs"]] == COLUMNS
    assert body["input_example"]["dataframe_split"]["columns"] == COLUMNS
    assert any(r.startswith("scikit-learn==") for r in body["requirements"])
    assert body["lineage"] == {"git_commit": "abc123", "dataset_name": "iris.csv"}
    assert body["metrics"] == {"accuracy": 0.97}
    assert body["created_by"] == "eve"
    assert body["reference_stats"]["features"]["petal_length"]["kind"] == "numeric"
    if REQUIRE_SERVICES:
        assert body["sandboxed"] is True
        # The serving image it ran in, recorded on the version: the suite's shared image, so
        # reused here; its size as the engine reports it.
        image = body["image"]
        assert image["tag"].startswith("modelport/serving:"), image
        assert isinstance(image["reused"], bool) and image["build_seconds"] >= 0
        assert image["size_bytes"] > 50_000_000, image
        page = logged_in(team_engineer).get("/models/iris/versions/1/").content.decode()
        assert "Serving image" in page and image["tag"][:30] in page
        assert ("reused (same requirements)" if image["reused"] else "built in") in page

    download = client.get("/api/v1/models/iris/versions/1/artifact/")
    content = b"".join(download.streaming_content)
    assert hashlib.sha256(content).hexdigest() == body["artifact"]["sha256"]
    assert "MLmodel" in zipfile.ZipFile(io.BytesIO(content)).namelist()
    assert AuditEvent.objects.filter(action="version.ready").exists()


def test_tar_gz_upload_and_identical_content_is_stored_once(
        iris, team_engineer, mlflow_model_dir, settings, django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("iris.zip", zip_dir(mlflow_model_dir)), format="mlflow")
    register(client, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("iris.tar.gz", tar_dir(mlflow_model_dir)), format="mlflow")
    first, second = ModelVersion.objects.order_by("version")
    assert (first.status, second.status) == ("ready", "ready"), second.status_message
    assert first.artifact_sha256 == second.artifact_sha256
    stored = list((settings.MODELPORT_DATA_DIR / "artifacts").rglob("*.zip"))
    assert len(stored) == 1


def test_sklearn_pickle_is_converted_to_an_mlflow_model(iris, team_engineer, sklearn_pickle,
                                                         django_capture_on_commit_callbacks):
    import sklearn

    client = bearer_client(team_engineer)
    response = register(client, django_capture_on_commit_callbacks,
                        file=SimpleUploadedFile("iris.joblib", sklearn_pickle),
                        format="sklearn", input_example=example_json())
    assert response.status_code == 202
    body = client.get("/api/v1/models/iris/versions/1/").json()
    assert body["status"] == "ready", body["status_message"]
    assert body["flavor"] == "sklearn"
    assert [c["name"] for c in body["signature"]["inputs"]] == COLUMNS
    assert body["signature"]["outputs"]
    assert f"scikit-learn=={sklearn.__version__}" in body["requirements"]
    assert body["input_example"] == {"dataframe_split": {
        "columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}


def test_a_model_that_fails_to_load_is_failed_with_the_loaders_error(
        iris, team_engineer, mlflow_model_dir, tmp_path, django_capture_on_commit_callbacks):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in mlflow_model_dir.iterdir():
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.pkl").write_bytes(b"this is not a pickle")
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("broken.zip", zip_dir(broken)), format="mlflow")
    version = ModelVersion.objects.get()
    assert version.status == "failed"
    assert version.status_message.startswith("The model failed to load:")
    assert not version.artifact_name


def test_a_pickle_that_is_not_an_estimator_fails_validation(
        iris, team_engineer, django_capture_on_commit_callbacks):
    import pickle

    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("dict.pkl", pickle.dumps({"not": "a model"})),
             format="sklearn", input_example=example_json())
    version = ModelVersion.objects.get()
    assert version.status == "failed"
    assert "not a scikit-learn estimator" in version.status_message


@pytest.mark.docker
def test_a_malicious_pickle_never_executes_outside_the_sandbox(
        iris, team_engineer, tmp_path, docker_client, settings,
        django_capture_on_commit_callbacks):
    settings.MODELPORT_RUNTIME = "docker"
    marker = tmp_path / "pwned"
    client = bearer_client(team_engineer)
    response = register(client, django_capture_on_commit_callbacks,
                        file=SimpleUploadedFile("evil.pkl", malicious_pickle(marker)),
                        format="sklearn", input_example=example_json())
    assert response.status_code == 202  # the web process stored it without unpickling
    version = ModelVersion.objects.get()
    assert version.status == "failed"
    assert version.sandboxed is True
    assert not marker.exists(), "the pickle's code ran on the host"
    # This installation's sandbox is gone (other installations on the engine have their own).
    from teams.installation import installation_id

    ours = ["modelport.sandbox", f"modelport.installation={installation_id()}"]
    assert not docker_client.containers.list(all=True, filters={"label": ours})


def test_reference_data_replaces_the_baseline(iris, team_engineer, sklearn_pickle,
                                              django_capture_on_commit_callbacks):
    client = bearer_client(team_engineer)
    register(client, django_capture_on_commit_callbacks,
             file=SimpleUploadedFile("iris.joblib", sklearn_pickle), format="sklearn",
             input_example=example_json())
    csv = "sepal_length,sepal_width,petal_length,petal_width,kind\n" + "\n".join(
        f"{5 + i / 10},{3 + i / 20},{1 + i / 5},{i / 10},{'a' if i % 2 else 'b'}"
        for i in range(40))
    with django_capture_on_commit_callbacks(execute=True):  # the profiling task, eagerly
        response = client.put("/api/v1/models/iris/versions/1/reference/",
                              {"file": SimpleUploadedFile("ref.csv", csv.encode())},
                              format="multipart")
    assert response.status_code == 202, response.content
    assert response.json()["reference"]["status"] == "pending"
    body = client.get("/api/v1/models/iris/versions/1/").json()
    assert body["reference"]["status"] == "ready", body["reference"]
    stats = body["reference_stats"]
    assert stats["source"] == "reference_data" and stats["rows"] == 40
    assert stats["features"]["kind"] == {"kind": "categorical", "count": 40,
                                         "frequencies": {"a": 20, "b": 20}, "other": 0}
    assert len(stats["features"]["petal_length"]["bin_edges"]) == 11
