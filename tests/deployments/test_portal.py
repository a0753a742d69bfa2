"""Portal pages and the console's stop action."""

from __future__ import annotations

import pytest
from django.test import Client

from deployments import services
from deployments.models import Deployment, Replica


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def deployment(engineer, team, v1, no_enqueue):
    d = services.create_deployment(actor=engineer, team=team, name="iris-web", model="iris",
                                   version=1, replicas=1)
    Replica.objects.create(deployment=d, runtime_id="mp-iris-web-r1-0", revision=1,
                           status="ready", ready=True, url="http://127.0.0.1:21999")
    return d


def test_list_and_detail_pages(deployment, engineer):
    client = logged_in(engineer)
    page = client.get("/deployments/").content.decode()
    assert "iris-web" in page and "pending" in page
    page = client.get("/deployments/iris-web/").content.decode()
    assert "/serve/iris-web/invocations" in page
    assert "mp-iris-web-r1-0" in page and "Revision 1 created" in page
    assert 'hx-trigger="every 2s"' in page and "<progress" in page
    assert "Stop…</a>" in page and "Roll back" in page
    fragment = client.get("/deployments/iris-web/status/").content.decode()
    assert fragment.startswith("<section") and "Replicas" in fragment
    assert "Deployments of this model" in client.get("/models/iris/").content.decode()


def test_viewer_sees_no_buttons_and_outsiders_get_404(deployment, viewer, outsider):
    page = logged_in(viewer).get("/deployments/iris-web/").content.decode()
    assert "Stop…" not in page and "Save and roll out" not in page
    assert logged_in(viewer).post("/deployments/iris-web/stop/").status_code == 302
    assert not Deployment.objects.get(name="iris-web").stopped
    assert logged_in(outsider).get("/deployments/iris-web/").status_code == 404
    assert "iris-web" not in logged_in(outsider).get("/deployments/").content.decode()


def test_stop_start_rollback_buttons(deployment, engineer):
    client = logged_in(engineer)
    confirm = client.get("/deployments/iris-web/stop/").content.decode()
    assert "Stop iris-web?" in confirm and "quota reservation" in confirm
    assert not Deployment.objects.get(name="iris-web").stopped  # asking changes nothing
    response = client.post("/deployments/iris-web/stop/", follow=True)
    assert "Stopping" in response.content.decode()
    assert Deployment.objects.get(name="iris-web").stopped
    client.post("/deployments/iris-web/start/")
    assert not Deployment.objects.get(name="iris-web").stopped
    response = client.post("/deployments/iris-web/rollback/", follow=True)
    assert "no earlier healthy revision" in response.content.decode()


def test_admin_stop_action(deployment, admin_user):
    client = logged_in(admin_user)
    response = client.post("/admin/deployments/deployment/",
                           {"action": "stop_deployments",
                            "_selected_action": [deployment.pk]}, follow=True)
    assert response.status_code == 200
    assert Deployment.objects.get(name="iris-web").stopped
    assert client.get(f"/admin/deployments/deployment/{deployment.pk}/change/").status_code == 200


def test_deploy_form(engineer, viewer, v1, no_enqueue):
    client = logged_in(engineer)
    page = client.get("/deployments/?model=iris").content.decode()
    assert "Deploy a model" in page and 'value="iris"' in page
    form = {"name": "iris-form", "team": "ml-search", "model": "iris", "version": "9",
            "replicas": "1", "cpu": "0.5", "memory_mb": "512", "strategy": "blue_green"}
    page = client.post("/deployments/", form).content.decode()
    assert "has no version 9" in page and not Deployment.objects.exists()
    response = client.post("/deployments/", {**form, "version": "1"})
    assert response.status_code == 302 and response["Location"] == "/deployments/iris-form/"
    d = Deployment.objects.get(name="iris-form")
    assert d.strategy == {"type": "blue_green"} and float(d.cpu) == 0.5
    assert "Deploy a model" not in logged_in(viewer).get("/deployments/").content.decode()


def test_deploy_form_follows_an_alias_with_a_canary_schedule(engineer, maintainer, iris_model,
                                                              v1, no_enqueue):
    from registry import services as registry_services

    registry_services.set_alias(actor=maintainer, model=iris_model, alias="production",
                                version_number=1)
    client = logged_in(engineer)
    page = client.get("/deployments/?model=iris").content.decode()
    assert '<option value="ml-search" selected>' in page  # the model's team, prefilled
    assert "Seconds per canary step" in page
    form = {"name": "iris-canary", "team": "ml-search", "model": "iris", "alias": "production",
            "replicas": "1", "cpu": "0.5", "memory_mb": "512", "strategy": "canary",
            "canary_steps": "50, 10, 100", "canary_interval_s": "2"}
    page = client.post("/deployments/", form).content.decode()
    assert "strategy.steps must be increasing" in page and not Deployment.objects.exists()
    page = client.post("/deployments/", {**form, "canary_steps": "ten"}).content.decode()
    assert "whole percentages" in page and not Deployment.objects.exists()
    response = client.post("/deployments/", {**form, "canary_steps": "25,50,100"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    d = Deployment.objects.get(name="iris-canary")
    assert d.alias == "production" and d.version is None
    assert d.strategy == {"type": "canary", "steps": [25, 50, 100], "interval_s": 2}
