from __future__ import annotations

import pytest
from django.test import Client


def test_healthz_answers_without_touching_anything():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.redis
def test_readyz_is_ok_when_database_and_redis_answer(settings, redis_url):
    settings.CELERY_BROKER_URL = redis_url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_EMBEDDED_BROKER = False
    response = Client().get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_it_is_down(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    settings.CELERY_EMBEDDED_BROKER = False
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"


@pytest.mark.django_db
def test_readyz_checks_the_embedded_file_broker(settings, tmp_path):
    folders = {name: tmp_path / name for name in ("queue", "control", "processed")}
    for folder in folders.values():
        folder.mkdir()
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_EMBEDDED_BROKER = True
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),
        "processed_folder": str(folders["processed"])}
    assert Client().get("/readyz").status_code == 200
    folders["queue"].rmdir()
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert "queue" in response.json()["checks"]["broker"]


@pytest.mark.django_db
def test_info_tells_clients_what_they_need(settings):
    body = Client().get("/api/v1/info/").json()
    assert body["version"] == settings.MODELPORT_VERSION
    assert body["mlflow_tracking_uri"] == "http://testserver/mlflow"  # where the client came
    assert body["runtime"] in {"docker", "local (unsandboxed)"}
    assert body["limits"]["max_upload_mb"] == settings.MODELPORT_MAX_UPLOAD_MB
