"""Autoscaling in the portal: the "Autoscaling" fieldset of the create and edit forms (off by
default; refusals from ``Autoscaling.parse`` next to their field, nothing written), and what
the deployment page says — the bounds, the count wanted and ready, "Idle (scaled to zero)" and
that the next request wakes it. The reconciler is not run (``no_enqueue``)."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from deployments import services
from deployments.models import Deployment, DeploymentStatus, Replica, Revision
from quotas.models import Reservation


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


CREATE = {"name": "iris-auto", "team": "ml-search", "model": "iris", "version": "1",
          "replicas": "1", "cpu": "0.5", "memory_mb": "512", "strategy": "rolling"}
ON = {"autoscaling-enabled": "on", "autoscaling-min_replicas": "1",
      "autoscaling-max_replicas": "3", "autoscaling-metric": "rps",
      "autoscaling-target": "25", "autoscaling-scale_down_delay_s": "120",
      "autoscaling-idle_to_zero_after_s": "600"}
EDIT = {"runs": "version:1", "replicas": "1", "cpu": "0.5", "memory_mb": "256", "gpus": "0",
        "strategy": "rolling"}


@pytest.fixture
def deployment(engineer, team, v1, no_enqueue):
    d = services.create_deployment(actor=engineer, team=team, name="iris-web", model="iris",
                                   version=1, replicas=1,
                                   resources={"cpu": 0.5, "memory_mb": 256})
    Replica.objects.create(deployment=d, runtime_id="mp-iris-web-r1-0", revision=1,
                           status="ready", ready=True, url="http://127.0.0.1:21999")
    return d


def test_the_create_form_has_an_autoscaling_fieldset_off_by_default(engineer, v1, no_enqueue):
    client = logged_in(engineer)
    page = client.get("/deployments/?model=iris").content.decode()
    fieldset = page[page.index('<fieldset id="autoscaling"'):]
    fieldset = fieldset[:fieldset.index("</fieldset>")]
    assert "<legend>Autoscaling" in fieldset
    assert 'name="autoscaling-enabled"' in fieldset and "checked" not in fieldset
    for name in ("min_replicas", "max_replicas", "metric", "target", "scale_down_delay_s",
                 "idle_to_zero_after_s"):
        assert f'name="autoscaling-{name}"' in fieldset
    # Off: the values typed below the box are not used.
    response = client.post("/deployments/", {**CREATE, **ON, "autoscaling-enabled": ""})
    assert response.status_code == 302
    assert Deployment.objects.get(name="iris-auto").autoscaling == {}


def test_creating_with_autoscaling(engineer, v1, no_enqueue):
    response = logged_in(engineer).post("/deployments/", {**CREATE, **ON})
    assert response.status_code == 302, text(response.content.decode())[-1500:]
    d = Deployment.objects.get(name="iris-auto")
    assert d.autoscaling == {"min_replicas": 1, "max_replicas": 3, "metric": "rps",
                             "target": 25.0, "scale_down_delay_s": 120,
                             "idle_to_zero_after_s": 600}
    assert d.replicas == 1


@pytest.mark.parametrize(("change", "field", "needle"), [
    ({"autoscaling-min_replicas": "3", "autoscaling-max_replicas": "2"}, "max_replicas",
     "must be at least min_replicas"),
    ({"autoscaling-metric": "cpu", "autoscaling-target": "150"}, "target", "at most 100"),
    ({"autoscaling-idle_to_zero_after_s": "5"}, "idle_to_zero_after_s", "from 10"),
    ({"autoscaling-max_replicas": ""}, None, "max_replicas is required"),
])
def test_refusals_show_next_to_their_field_and_nothing_is_written(engineer, v1, no_enqueue,
                                                                  change, field, needle):
    response = logged_in(engineer).post("/deployments/", {**CREATE, **ON, **change})
    assert response.status_code == 200
    page = response.content.decode()
    assert needle in text(page)
    if field:
        assert f'id="id_autoscaling-{field}-error"' in page
    assert not Deployment.objects.exists() and not Reservation.objects.exists()


def test_editing_turns_autoscaling_on_and_off_without_a_new_revision(deployment, engineer):
    client = logged_in(engineer)
    page = client.get("/deployments/iris-web/").content.decode()
    assert '<fieldset id="edit-autoscaling"' in page
    response = client.post("/deployments/iris-web/edit/", {**EDIT, **ON}, follow=True)
    assert "no new revision, nothing restarts" in text(response.content.decode())
    d = Deployment.objects.get(name="iris-web")
    assert d.autoscaling["max_replicas"] == 3 and d.revision == 1
    assert Revision.objects.filter(deployment=d).count() == 1
    # The form shows the settings now; the page shows the bounds and the count.
    page = client.get("/deployments/iris-web/").content.decode()
    edit = page[page.index('<fieldset id="edit-autoscaling"'):]
    assert "checked" in edit[:edit.index("</fieldset>")]
    shown = text(page)
    assert "Autoscaling: 1\N{EN DASH}3 replicas at 25 requests/s per replica" in shown
    assert "to zero after 600 s without a request" in shown
    assert "Now 1 wanted, 1 ready" in shown
    # The scaler moves the count: the form's (perhaps stale) count never moves it back.
    Deployment.objects.filter(pk=d.pk).update(replicas=3)
    client.post("/deployments/iris-web/edit/", {**EDIT, **ON, "replicas": "1",
                                                "autoscaling-target": "30"})
    assert Deployment.objects.get(pk=d.pk).replicas == 3
    # Off: the count stays, as a fixed one.
    response = client.post("/deployments/iris-web/edit/", {**EDIT, "replicas": "3"},
                           follow=True)
    d = Deployment.objects.get(pk=d.pk)
    assert d.autoscaling == {} and d.replicas == 3 and d.revision == 1


def test_an_edit_refusal_shows_in_the_fieldset(deployment, engineer):
    response = logged_in(engineer).post("/deployments/iris-web/edit/",
                                        {**EDIT, **ON, "autoscaling-min_replicas": "5"})
    assert response.status_code == 400
    assert 'id="edit_autoscaling-max_replicas-error"' in response.content.decode()
    assert Deployment.objects.get(name="iris-web").autoscaling == {}


def test_an_idle_deployment_says_so_and_that_the_next_request_wakes_it(deployment, engineer,
                                                                       viewer):
    Replica.objects.all().delete()
    Deployment.objects.filter(pk=deployment.pk).update(
        autoscaling={"min_replicas": 1, "max_replicas": 2, "metric": "concurrency",
                     "target": 4, "scale_down_delay_s": 300, "idle_to_zero_after_s": 60},
        replicas=0, status=DeploymentStatus.IDLE,
        status_message="Idle (scaled to zero): the next request starts a replica.")
    for user in (engineer, viewer):
        shown = text(logged_in(user).get("/deployments/iris-web/").content.decode())
        assert "idle (scaled to zero) revision 1" in shown
        assert "Idle (scaled to zero): no replica runs, and it holds none of the team's CPU" \
            in shown
        assert "the next request wakes it" in shown and "Now 0 wanted, 0 ready" in shown
        assert "No replicas running (idle: the next request starts one)" in shown
    listing = text(logged_in(viewer).get("/deployments/").content.decode())
    assert "idle (scaled to zero)" in listing
    fragment = text(logged_in(viewer).get("/deployments/iris-web/status/").content.decode())
    assert "Idle (scaled to zero): no replica runs" in fragment


def test_a_capped_scale_up_shows_why(deployment, engineer):
    Deployment.objects.filter(pk=deployment.pk).update(
        autoscaling={"min_replicas": 1, "max_replicas": 8, "metric": "concurrency",
                     "target": 4, "scale_down_delay_s": 300, "idle_to_zero_after_s": None},
        scale_state={"capped": "Scale-up capped at 2 of the 8 replicas wanted: quota"})
    shown = text(logged_in(engineer).get("/deployments/iris-web/").content.decode())
    assert "scale-up capped Scale-up capped at 2 of the 8 replicas wanted" in shown
    assert "never to zero" in shown
