"""The deployment page's Edit form, the confirmation of Stop and Delete, the alias banner, the
logs panel's views and "Deploy version N" from a version's page — through the portal's views
and the same service verbs as the API (the reconciler is not run here: ``no_enqueue``)."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from deployments import services
from deployments.models import Deployment, Replica, Revision
from quotas.models import TeamQuota
from registry import services as registry_services
from teams.models import AuditEvent


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def deployment(engineer, team, v1, v2, no_enqueue):
    d = services.create_deployment(actor=engineer, team=team, name="iris-web", model="iris",
                                   version=1, replicas=1, resources={"cpu": 0.5,
                                                                     "memory_mb": 256})
    Replica.objects.create(deployment=d, runtime_id="mp-iris-web-r1-0", revision=1,
                           status="ready", ready=True, url="http://127.0.0.1:21999")
    return d


EDIT = {"runs": "version:2", "replicas": "1", "cpu": "0.5", "memory_mb": "256", "gpus": "0",
        "strategy": "canary", "canary_steps": "20", "canary_interval_s": "30"}


def test_the_page_shows_status_then_history_then_logs_snippets_and_settings(deployment,
                                                                           engineer):
    page = logged_in(engineer).get("/deployments/iris-web/").content.decode()
    order = [page.index(marker) for marker in (
        'id="deployment-status"', 'id="traffic"', 'id="health"', 'id="revisions"',
        'id="events"', 'id="logs"', 'id="call"', 'id="settings"', 'id="edit"')]
    assert order == sorted(order), order
    edit = page[page.index('id="edit"'):]
    assert '<option value="version:1" selected>' in edit  # the form shows what runs now
    assert 'value="0.50"' in edit and 'value="256"' in edit


def text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_editing_switches_to_a_canary_through_the_service(deployment, engineer, no_enqueue,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in(engineer).post("/deployments/iris-web/edit/", EDIT, follow=True)
    assert "revision 2 of &#x27;iris-web&#x27; is rolling out (canary)" in \
        response.content.decode()
    d = Deployment.objects.get(name="iris-web")
    assert d.revision == 2 and d.version.version == 2
    assert d.strategy == {"type": "canary", "steps": [20, 100], "interval_s": 30}
    assert Revision.objects.get(deployment=d, number=2).spec["strategy"]["steps"] == [20, 100]
    assert AuditEvent.objects.filter(action="deployment.updated").count() == 1
    assert no_enqueue[-1] == d.pk  # the rollout starts like the API's PATCH starts it
    # Saving the same again changes nothing.
    response = logged_in(engineer).post("/deployments/iris-web/edit/", EDIT, follow=True)
    assert "Nothing changed" in response.content.decode()
    assert Deployment.objects.get(name="iris-web").revision == 2


def test_following_an_alias_from_the_form(deployment, engineer, maintainer, iris_model):
    registry_services.set_alias(actor=maintainer, model=iris_model, alias="staging",
                                version_number=2)
    page = logged_in(engineer).get("/deployments/iris-web/").content.decode()
    assert "follow alias staging (now v2)" in page
    logged_in(engineer).post("/deployments/iris-web/edit/",
                             {**EDIT, "runs": "alias:staging", "strategy": "blue_green"})
    d = Deployment.objects.get(name="iris-web")
    assert (d.alias, d.version, d.strategy) == ("staging", None, {"type": "blue_green"})


def test_over_quota_is_shown_at_the_top_and_next_to_the_field(deployment, engineer, team):
    TeamQuota.objects.filter(team=team).update(cpu=2)
    response = logged_in(engineer).post("/deployments/iris-web/edit/",
                                        {**EDIT, "cpu": "8", "strategy": "rolling"})
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    form = page[page.index('id="edit"'):]
    top = form[:form.index('<label')]
    assert "needs 7.5 CPU; team ml-search has 1.5 of 2 free" in top  # the 409's numbers
    assert 'id="edit_cpu-error"' in form and "Over quota: 7.5 more needed, 1.5 of 2 free." \
        in form
    d = Deployment.objects.get(name="iris-web")
    assert d.revision == 1 and float(d.cpu) == 0.5  # nothing half-written


def test_bad_values_are_named_next_to_their_field(deployment, engineer):
    response = logged_in(engineer).post("/deployments/iris-web/edit/",
                                        {**EDIT, "canary_steps": "50,10"})
    page = html.unescape(response.content.decode())
    assert response.status_code == 400 and "strategy.steps must be increasing" in page
    assert 'id="edit_strategy-error"' in page
    response = logged_in(engineer).post("/deployments/iris-web/edit/", {**EDIT, "replicas": "0"})
    assert "replicas must be between 1 and" in html.unescape(response.content.decode())
    assert Deployment.objects.get(name="iris-web").revision == 1


def test_a_viewer_cannot_edit(deployment, viewer, outsider):
    response = logged_in(viewer).post("/deployments/iris-web/edit/", EDIT, follow=True)
    assert "engineer or higher" in response.content.decode()
    assert Deployment.objects.get(name="iris-web").revision == 1
    assert logged_in(outsider).post("/deployments/iris-web/edit/", EDIT).status_code == 404


def test_stop_and_delete_ask_first_and_say_what_happens(deployment, engineer, viewer):
    client = logged_in(engineer)
    page = html.unescape(client.get("/deployments/iris-web/delete/").content.decode())
    assert "Delete iris-web?" in page and "stop and remove its 1 replica" in page
    assert "/serve/iris-web/invocations" in page and "release its quota" in page
    assert Deployment.objects.filter(name="iris-web").exists()
    assert "can delete it" in logged_in(viewer).get("/deployments/iris-web/delete/") \
        .content.decode()
    assert client.get("/deployments/iris-web/retry/").status_code == 405
    response = client.post("/deployments/iris-web/delete/", follow=True)
    assert "its quota is released" in html.unescape(response.content.decode())
    assert not Deployment.objects.filter(name="iris-web").exists()


def test_a_banner_when_the_alias_moved_on_and_a_button_rolls_it_out(
        deployment, engineer, maintainer, iris_model, no_enqueue):
    registry_services.set_alias(actor=maintainer, model=iris_model, alias="staging",
                                version_number=1)
    services.update_deployment(actor=engineer, deployment=deployment, alias="staging")
    d = Deployment.objects.get(name="iris-web")
    assert services.alias_drift(d) is None
    # The alias moves while the deployment cannot follow (here: its rollout is undone by a
    # rollback to the revision that ran v1, as an automatic rollback does).
    registry_services.set_alias(actor=maintainer, model=iris_model, alias="staging",
                                version_number=2)
    d.refresh_from_db()
    services.rollback(actor=engineer, deployment=d, revision=2)
    d.refresh_from_db()
    assert d.alias == "staging"
    page = text(logged_in(engineer).get("/deployments/iris-web/").content.decode())
    assert "Following alias staging → v2, but running v1" in page and "Roll out v2" in page
    response = logged_in(engineer).post("/deployments/iris-web/follow/", follow=True)
    assert "Rolling out what alias" in html.unescape(response.content.decode())
    d.refresh_from_db()
    current = d.revisions.get(number=d.revision)
    assert current.model_version.version == 2 and services.alias_drift(d) is None


def test_logs_panel_and_its_no_javascript_page(deployment, engineer):
    client = logged_in(engineer)
    panel = client.get("/deployments/iris-web/logs/?replica=mp-iris-web-r1-0",
                       HTTP_HX_REQUEST="true").content.decode()
    assert panel.startswith('<article class="logs"') and "Logs of mp-iris-web-r1-0" in panel
    gone = client.get("/deployments/iris-web/logs/?replica=mp-gone", HTTP_HX_REQUEST="true")
    assert gone.status_code == 200 and "has no replica" in gone.content.decode()
    page = client.get("/deployments/iris-web/logs/?replica=mp-iris-web-r1-0").content.decode()
    assert "<h1>Logs of iris-web</h1>" in page and "<!doctype html>" in page
    assert client.get("/deployments/iris-web/logs/?replica=mp-gone").status_code == 404
    detail = client.get("/deployments/iris-web/").content.decode()
    assert 'hx-target="#logs-panel" hx-swap="innerHTML"' in detail


def test_deploy_a_version_from_its_page(deployment, engineer, viewer, outsider, no_enqueue):
    version_page = logged_in(engineer).get("/models/iris/versions/2/").content.decode()
    assert 'href="/deployments/deploy/iris/2/"' in version_page
    page = html.unescape(logged_in(engineer).get("/deployments/deploy/iris/2/")
                         .content.decode())
    assert "Deploy iris v2" in page and "runs v1" in page
    assert "Deploy v2 to iris-web" in page
    assert "/deployments/?model=iris&version=2#deploy" in page  # a new one, prefilled
    new = logged_in(engineer).get("/deployments/?model=iris&version=2").content.decode()
    assert 'name="version" value="2"' in new
    assert "Deploy v2 to iris-web" not in logged_in(viewer).get(
        "/deployments/deploy/iris/2/").content.decode()
    assert logged_in(outsider).get("/deployments/deploy/iris/2/").status_code == 404

    form = {"iris-web-strategy": "canary", "iris-web-canary_percent": "20",
            "iris-web-canary_interval_s": "60"}
    response = logged_in(viewer).post("/deployments/deploy/iris/2/iris-web/", form,
                                      follow=True)
    assert "engineer or higher" in response.content.decode()
    response = logged_in(engineer).post("/deployments/deploy/iris/2/iris-web/", form)
    assert response.status_code == 302 and response["Location"] == "/deployments/iris-web/"
    d = Deployment.objects.get(name="iris-web")
    assert d.version.version == 2 and d.revision == 2
    assert d.strategy == {"type": "canary", "steps": [20, 100], "interval_s": 60}
    assert "It runs v2 already." in logged_in(engineer).get(
        "/deployments/deploy/iris/2/").content.decode()
