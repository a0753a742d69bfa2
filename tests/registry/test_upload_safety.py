"""Refusals at upload time: a clear 4xx, and nothing stored — no row, no staged file."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import ModelVersion
from tests.fixtures import bearer_client

from .conftest import example_json, tar_with, zip_with

pytestmark = pytest.mark.django_db

MLMODEL = b"flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"


def upload(client, data: bytes, name: str = "model.zip", **fields):
    return client.post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile(name, data), "format": "mlflow", **fields},
        format="multipart")


def assert_nothing_stored(settings) -> None:
    assert not ModelVersion.objects.exists()
    staging = settings.MODELPORT_DATA_DIR / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    artifacts = settings.MODELPORT_DATA_DIR / "artifacts"
    assert not artifacts.exists() or not any(artifacts.rglob("*.zip"))


@pytest.mark.parametrize(("archive", "message"), [
    (zip_with({"MLmodel": MLMODEL, "../../evil.py": b"x"}), "escapes the archive"),
    (zip_with({"MLmodel": MLMODEL, "/etc/cron.d/evil": b"x"}), "absolute path"),
    (zip_with({"MLmodel": MLMODEL}, symlinks={"model.pkl": "/etc/passwd"}), "symbolic link"),
    (tar_with({"model/MLmodel": MLMODEL}, links={"model/model.pkl": "../../../etc/passwd"}),
     "links are not allowed"),
    (tar_with({"model/MLmodel": MLMODEL, "model/../../escape": b"x"}), "escapes the archive"),
    (zip_with({"model.pkl": b"x"}), "No MLmodel file"),
    (b"PK\x03\x04 this is not really a zip", "Not a readable zip archive"),
    (b"just some text", "Unknown archive type"),
])
def test_malicious_or_broken_archives_are_refused_and_leave_nothing(
        iris, team_engineer, settings, archive, message):
    response = upload(bearer_client(team_engineer), archive)
    assert response.status_code == 400, response.content
    assert message in str(response.json())
    assert_nothing_stored(settings)


def test_archive_with_too_many_members_is_refused(iris, team_engineer, settings):
    settings.MODELPORT_ARCHIVE_MAX_MEMBERS = 5
    archive = zip_with({"MLmodel": MLMODEL, **{f"f{i}": b"x" for i in range(10)}})
    response = upload(bearer_client(team_engineer), archive)
    assert response.status_code == 400
    assert "limit is 5" in str(response.json())
    assert_nothing_stored(settings)


def test_archive_bomb_is_refused_by_its_expanded_size(iris, team_engineer, settings):
    settings.MODELPORT_ARCHIVE_MAX_MB = 1
    bomb = zip_with({"MLmodel": MLMODEL, "zeros.bin": b"\0" * (5 * 1024 * 1024)})
    assert len(bomb) < 100_000  # compresses to almost nothing
    response = upload(bearer_client(team_engineer), bomb)
    assert response.status_code == 400
    assert "expands to more than 1 MB" in str(response.json())
    assert_nothing_stored(settings)


def test_upload_over_the_limit_is_413(iris, team_engineer, settings):
    settings.MODELPORT_MAX_UPLOAD_MB = 1
    response = upload(bearer_client(team_engineer), b"PK" + b"\0" * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert_nothing_stored(settings)


def test_unknown_format_is_400(iris, team_engineer, settings):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile("m.onnx", b"x"), "format": "onnx"}, format="multipart")
    assert response.status_code == 400
    assert "Unknown format 'onnx'" in response.json()["format"][0]
    assert_nothing_stored(settings)


def test_missing_file_is_400(iris, team_engineer):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/",
                                                 {"format": "mlflow"}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()


def test_sklearn_upload_without_input_example_is_400(iris, team_engineer, sklearn_pickle,
                                                     settings):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile("m.joblib", sklearn_pickle), "format": "sklearn"},
        format="multipart")
    assert response.status_code == 400
    assert "input_example" in response.json()
    assert_nothing_stored(settings)


def test_malformed_input_example_json_is_400(iris, team_engineer, sklearn_pickle, settings):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile("m.joblib", sklearn_pickle), "format": "sklearn",
        "input_example": "{not json"}, format="multipart")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["input_example"][0]
    assert_nothing_stored(settings)


def test_input_example_that_does_not_match_the_signature_is_400(iris, team_engineer,
                                                                mlflow_zip, settings):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "file": mlflow_zip, "format": "mlflow",
        "input_example": '{"columns": ["sepal_length"], "data": [[1.0]]}'}, format="multipart")
    assert response.status_code == 400
    assert "missing column(s) 'petal_length'" in response.json()["input_example"][0]
    assert_nothing_stored(settings)


def test_unreadable_reference_data_is_400(iris, team_engineer, sklearn_pickle, settings):
    response = bearer_client(team_engineer).post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile("m.joblib", sklearn_pickle), "format": "sklearn",
        "input_example": example_json(),
        "reference_data": SimpleUploadedFile("ref.parquet", b"PAR1garbage")},
        format="multipart")
    assert response.status_code == 400
    assert "reference_data" in response.json()
    assert_nothing_stored(settings)


def test_viewer_cannot_register_versions(iris, team_viewer, mlflow_zip, settings):
    response = bearer_client(team_viewer).post("/api/v1/models/iris/versions/", {
        "file": mlflow_zip, "format": "mlflow"}, format="multipart")
    assert response.status_code == 403
    assert_nothing_stored(settings)
