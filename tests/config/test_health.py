from __future__ import annotations

import subprocess

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
def test_readyz_checks_the_embedded_broker(settings, tmp_path_factory):
    """`make run`'s broker (config/embedded_broker.py): ready while its server answers on the
    data dir's socket, 503 naming the broker once it is gone."""
    from config import embedded_broker

    data_dir = tmp_path_factory.mktemp("rz") / "var"  # short: a socket path's limit
    settings.CELERY_BROKER_URL = embedded_broker.broker_url(data_dir)
    settings.CELERY_EMBEDDED_BROKER = True
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    server = embedded_broker.start(data_dir, stdout=subprocess.DEVNULL)
    try:
        assert Client().get("/readyz").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] != "ok"


@pytest.mark.django_db
def test_info_tells_clients_what_they_need(settings):
    body = Client().get("/api/v1/info/").json()
    assert body["version"] == settings.MODELPORT_VERSION
    assert body["mlflow_tracking_uri"] == "http://testserver/mlflow"  # where the client came
    assert body["runtime"] in {"docker", "local (unsandboxed)"}
    assert body["limits"]["max_upload_mb"] == settings.MODELPORT_MAX_UPLOAD_MB
