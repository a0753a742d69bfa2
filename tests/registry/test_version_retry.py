"""A failed version validated again: one whose validation could not run keeps its upload and
Retry validates it (real Docker sandbox); one whose model failed says to register it again; a
failed import is downloaded again; kept uploads are pruned after their time; the version page
has the button."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from registry import retries
from registry.models import ModelVersion, VersionStatus
from teams.models import AuditEvent
from tests.fixtures import bearer_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("sandbox_image")]
VERSIONS = "/api/v1/models/iris/versions/"


def failed_version(iris, *, number: int = 1, staging: Path | None = None,
                   **fields) -> ModelVersion:
    return ModelVersion.objects.create(
        model=iris, version=number, status=VersionStatus.FAILED, source_format="mlflow",
        status_message="The model failed to load: No module named 'boom'",
        staging_dir=str(staging or ""), validated_at=timezone.now(), **fields)


def kept_staging(settings, name: str = "kept") -> Path:
    staging = Path(settings.MODELPORT_DATA_DIR) / "staging" / name
    (staging / "input").mkdir(parents=True)
    (staging / "input" / "job.json").write_text("{}")
    return staging


@pytest.mark.docker
def test_a_validation_that_could_not_run_keeps_the_upload_and_retry_validates_it(
        iris, team_engineer, mlflow_zip, settings, monkeypatch,
        django_capture_on_commit_callbacks):
    """Docker does not answer while the version is validated (DOCKER_HOST names no socket):
    the version fails saying so and keeps its upload; Docker is back, Retry → ready."""
    settings.MODELPORT_RUNTIME = "docker"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{settings.MODELPORT_DATA_DIR}/no-docker.sock")
    api = bearer_client(team_engineer)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(VERSIONS, {"file": mlflow_zip, "format": "mlflow"},
                        format="multipart").status_code == 202
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    message = version.status_message
    assert message.startswith("Validation could not run: the Docker Engine failed or did not "
                              "answer"), message
    assert (Path(version.staging_dir) / "input" / "job.json").is_file()
    assert api.get(f"{VERSIONS}1/").json()["retryable"] is True

    monkeypatch.delenv("DOCKER_HOST")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{VERSIONS}1/retry/")
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "pending"
    version.refresh_from_db()
    assert version.status == VersionStatus.READY, version.status_message
    assert version.artifact_sha256 and version.staging_dir == ""
    assert not any((Path(settings.MODELPORT_DATA_DIR) / "staging").iterdir())
    audit = AuditEvent.objects.get(action="version.retried")
    assert audit.actor == team_engineer and audit.before["status"] == "failed"


def test_a_version_whose_model_failed_says_to_register_it_again(iris, team_engineer):
    failed_version(iris)
    api = bearer_client(team_engineer)
    assert api.get(f"{VERSIONS}1/").json()["retryable"] is False
    response = api.post(f"{VERSIONS}1/retry/")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "upload_gone"
    assert "'iris' v1 cannot be validated again: its upload is not kept" in body["detail"]
    assert "Register the model again with the file: POST /api/v1/models/iris/versions/" in \
        body["detail"]
    assert ModelVersion.objects.get().status == VersionStatus.FAILED
    assert not AuditEvent.objects.filter(action="version.retried").exists()


def test_only_failed_versions_are_retried_and_only_by_engineers(iris, team_engineer,
                                                                team_viewer, settings):
    failed_version(iris, staging=kept_staging(settings))
    ModelVersion.objects.create(model=iris, version=2, status=VersionStatus.READY,
                                source_format="mlflow")
    assert bearer_client(team_viewer).post(f"{VERSIONS}1/retry/").status_code == 403
    response = bearer_client(team_engineer).post(f"{VERSIONS}2/retry/")
    assert response.status_code == 409 and response.json()["code"] == "not_failed"
    assert bearer_client(team_engineer).post(f"{VERSIONS}9/retry/").status_code == 404
    assert ModelVersion.objects.get(version=1).status == VersionStatus.FAILED


def test_a_failed_import_is_downloaded_again(iris, team_engineer, monkeypatch,
                                            django_capture_on_commit_callbacks):
    queued: list[int] = []
    monkeypatch.setattr("registry.services._enqueue_validation", queued.append)
    version = failed_version(iris, source="runs:/0a1b2c/model")
    ModelVersion.objects.filter(pk=version.pk).update(
        source_format="import", status_message="Import failed: the tracking server did not "
                                               "answer")
    with django_capture_on_commit_callbacks(execute=True):
        response = bearer_client(team_engineer).post(f"{VERSIONS}1/retry/")
    assert response.status_code == 202, response.json()
    version.refresh_from_db()
    assert version.status == VersionStatus.PENDING and queued == [version.pk]
    staging = Path(version.staging_dir)
    assert (staging / "input").is_dir() and not (staging / "input" / "job.json").exists()


def test_kept_uploads_are_pruned_after_their_time_and_unreferenced_staging_after_a_day(
        iris, settings):
    settings.MODELPORT_FAILED_UPLOAD_KEEP_DAYS = 7
    old = failed_version(iris, staging=kept_staging(settings, "old"))
    ModelVersion.objects.filter(pk=old.pk).update(
        validated_at=timezone.now() - timedelta(days=8))
    recent = failed_version(iris, number=2, staging=kept_staging(settings, "recent"))
    orphan = kept_staging(settings, "orphan")  # its model was deleted
    day_ago = time.time() - 2 * 86400
    os.utime(orphan, (day_ago, day_ago))
    uploading = kept_staging(settings, "uploading")  # its version row comes in a moment

    assert retries.prune_staging() == 2
    assert not Path(old.staging_dir).exists() and not orphan.exists()
    assert Path(recent.staging_dir).exists() and uploading.exists()
    old.refresh_from_db()
    assert old.staging_dir == "" and not retries.retryable(old)
    assert retries.retryable(recent)


def test_the_version_page_offers_retry_only_when_it_can(iris, team_engineer, team_viewer,
                                                        settings, monkeypatch):
    monkeypatch.setattr("registry.services._enqueue_validation", lambda pk: None)
    failed_version(iris, staging=kept_staging(settings))
    failed_version(iris, number=2)
    browser = Client()
    browser.force_login(team_engineer)
    page = browser.get("/models/iris/versions/1/").content.decode()
    assert "Retry: validate it again" in page
    page = browser.get("/models/iris/versions/2/").content.decode()
    assert "Retry: validate it again" not in page and "register the model again" in page

    viewer = Client()
    viewer.force_login(team_viewer)
    assert "Retry: validate it again" not in viewer.get("/models/iris/versions/1/").content \
        .decode()
    response = browser.post("/models/iris/versions/1/retry/")
    assert response.status_code == 302
    assert ModelVersion.objects.get(version=1).status == VersionStatus.PENDING
    response = browser.post("/models/iris/versions/2/retry/", follow=True)
    assert "its upload is not kept" in response.content.decode()
