"""The ``autoscaling`` object in the deployments API: create, PATCH (bounds change in place, no
new revision; null turns it off), bad values refused naming the field with nothing written,
roles and teams, and what reads show (the count, ``scaled_at``, status ``idle``). No container
runs: the reconciler is not enqueued here (``no_enqueue``)."""

from __future__ import annotations

import pytest

from deployments.models import Deployment, DeploymentStatus, Revision
from quotas.models import Reservation
from teams.models import AuditEvent
from tests.fixtures import bearer_client

URL = "/api/v1/deployments/"
SCALING = {"min_replicas": 1, "max_replicas": 4, "metric": "concurrency", "target": 3,
           "scale_down_delay_s": 60, "idle_to_zero_after_s": 600}


def body(**extra):
    data = {"name": "iris-auto", "team": "ml-search", "model": "iris", "version": 1,
            "resources": {"cpu": 0.5, "memory_mb": 512}, "autoscaling": SCALING}
    data.update(extra)
    return data


@pytest.fixture
def api(engineer, no_enqueue):
    return bearer_client(engineer)


def test_create_with_autoscaling_shows_it_and_starts_within_bounds(api, v1):
    response = api.post(URL, body(replicas=9), format="json")
    assert response.status_code == 202, response.json()
    data = response.json()
    assert data["autoscaling"] == {**SCALING, "target": 3}
    assert data["desired_replicas"] == 4  # replicas=9 held within max_replicas
    assert data["scaled_at"] is not None  # the count set now: the scaler's window starts here
    d = Deployment.objects.get(name="iris-auto")
    assert d.autoscaling["max_replicas"] == 4 and d.replicas == 4
    assert "replicas" not in Revision.objects.get(deployment=d, number=1).spec
    assert float(Reservation.objects.get(owner="deployment:iris-auto").cpu) == 2.0


def test_create_without_replicas_starts_at_min_and_fixed_shows_null(api, v1):
    scaling = {"min_replicas": 2, "max_replicas": 3}
    data = api.post(URL, body(autoscaling=scaling), format="json").json()
    assert data["desired_replicas"] == 2
    assert data["autoscaling"] == {"min_replicas": 2, "max_replicas": 3,
                                   "metric": "concurrency", "target": 4,
                                   "scale_down_delay_s": 300, "idle_to_zero_after_s": None}
    fixed = api.post(URL, body(name="iris-fixed", autoscaling=None, replicas=2),
                     format="json").json()
    assert fixed["autoscaling"] is None and fixed["desired_replicas"] == 2
    assert Deployment.objects.get(name="iris-fixed").autoscaling == {}


def test_the_contract_spelling_of_the_target_is_taken(api, v1):
    scaling = {"max_replicas": 3, "target": {"type": "rps", "value": 20}}
    data = api.post(URL, body(autoscaling=scaling), format="json").json()
    assert data["autoscaling"]["metric"] == "rps" and data["autoscaling"]["target"] == 20
    scaling = {"max_replicas": 3, "target": {"type": "in_flight", "value": 2}}
    data = api.post(URL, body(name="iris-two", autoscaling=scaling), format="json").json()
    assert data["autoscaling"]["metric"] == "concurrency"


def test_patch_bounds_resizes_in_place_without_a_new_revision(api, v1):
    api.post(URL, body(), format="json")
    response = api.patch(f"{URL}iris-auto/", {"autoscaling": {**SCALING, "min_replicas": 2,
                                                               "max_replicas": 6}},
                         format="json")
    assert response.status_code == 202, response.json()
    data = response.json()
    assert data["revision"] == 1
    assert data["autoscaling"]["min_replicas"] == 2 and data["autoscaling"]["max_replicas"] == 6
    assert data["desired_replicas"] == 2  # started at min 1, now held at the new min
    assert Revision.objects.filter(deployment__name="iris-auto").count() == 1
    assert float(Reservation.objects.get(owner="deployment:iris-auto").cpu) == 1.0
    assert AuditEvent.objects.filter(action="deployment.updated",
                                     object_repr="iris-auto").exists()
    events = api.get(f"{URL}iris-auto/events/").json()["results"]
    assert "autoscaling 2 to 6 replicas" in events[0]["message"]
    # The count now, within the bounds: still no revision.
    data = api.patch(f"{URL}iris-auto/", {"replicas": 5}, format="json").json()
    assert data["revision"] == 1 and data["desired_replicas"] == 5


def test_patch_null_turns_autoscaling_off_and_keeps_the_count(api, v1):
    api.post(URL, body(replicas=3), format="json")
    response = api.patch(f"{URL}iris-auto/", {"autoscaling": None}, format="json")
    assert response.status_code == 202, response.json()
    data = response.json()
    assert data["autoscaling"] is None and data["desired_replicas"] == 3
    assert Deployment.objects.get(name="iris-auto").autoscaling == {}
    events = api.get(f"{URL}iris-auto/events/").json()["results"]
    assert "autoscaling off" in events[0]["message"]


def test_patch_turns_autoscaling_on_for_a_fixed_deployment(api, v1):
    api.post(URL, body(autoscaling=None, replicas=1), format="json")
    data = api.patch(f"{URL}iris-auto/", {"autoscaling": {"min_replicas": 2,
                                                          "max_replicas": 3}},
                     format="json").json()
    assert data["autoscaling"]["max_replicas"] == 3 and data["desired_replicas"] == 2


@pytest.mark.parametrize(("scaling", "needle"), [
    ({"min_replicas": 1}, "max_replicas is required"),
    ({"max_replicas": 2, "min_replicas": 3}, "must be at least min_replicas"),
    ({"max_replicas": 99}, "max_replicas must be a whole number from 1 to 16"),
    ({"max_replicas": 2, "min_replicas": 0}, "min_replicas must be a whole number from 1"),
    ({"max_replicas": "4"}, "max_replicas must be a whole number"),
    ({"max_replicas": True}, "max_replicas must be a whole number"),
    ({"max_replicas": 2, "metric": "gpu"}, "metric must be one of concurrency, rps, cpu"),
    ({"max_replicas": 2, "metric": "cpu", "target": 150}, "at most 100"),
    ({"max_replicas": 2, "target": 0}, "above 0"),
    ({"max_replicas": 2, "target": {"type": "qps", "value": 3}}, "target.type must be one of"),
    ({"max_replicas": 2, "target": {"type": [], "value": 3}}, "target.type must be one of"),
    ({"max_replicas": 2, "metric": {}, "target": {"value": 3}}, "target.type must be one of"),
    ({"max_replicas": 2, "metric": ["rps"]}, "metric must be one of"),
    ({"max_replicas": 2, "metric": "cpu", "target": {"type": "rps", "value": 3}}, "disagree"),
    ({"max_replicas": 2, "idle_to_zero_after_s": 3}, "idle_to_zero_after_s must be a whole"),
    ({"max_replicas": 2, "scale_down_delay_s": -1}, "scale_down_delay_s must be a whole"),
    ({"max_replicas": 2, "surge": 1}, "unknown key(s) surge"),
    ([1, 4], "must be an object"),
    ("on", "must be an object"),
])
def test_bad_autoscaling_is_400_naming_the_field_and_nothing_is_written(api, v1, scaling,
                                                                       needle):
    response = api.post(URL, body(autoscaling=scaling), format="json")
    assert response.status_code == 400, response.json()
    assert needle in str(response.json()["autoscaling"]), response.json()
    assert not Deployment.objects.exists() and not Reservation.objects.exists()


def test_bad_patch_is_400_and_changes_nothing(api, v1):
    api.post(URL, body(), format="json")
    before = Deployment.objects.values("autoscaling", "replicas").get(name="iris-auto")
    events = Deployment.objects.get(name="iris-auto").events.count()
    response = api.patch(f"{URL}iris-auto/", {"autoscaling": {"max_replicas": 0}},
                         format="json")
    assert response.status_code == 400 and "autoscaling" in response.json()
    assert Deployment.objects.values("autoscaling", "replicas").get(name="iris-auto") == before
    assert Deployment.objects.get(name="iris-auto").events.count() == events


def test_quota_caps_a_patch_that_raises_the_count(api, v1):
    api.post(URL, body(), format="json")
    response = api.patch(f"{URL}iris-auto/", {"autoscaling": {"min_replicas": 16,
                                                               "max_replicas": 16},
                                              "resources": {"cpu": 4}}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "quota_exceeded"
    assert Deployment.objects.get(name="iris-auto").autoscaling["max_replicas"] == 4


def test_roles_and_teams(api, v1, viewer, stranger):
    assert api.post(URL, body(), format="json").status_code == 202
    change = {"autoscaling": {"max_replicas": 2}}
    assert bearer_client(stranger).patch(f"{URL}iris-auto/", change,
                                         format="json").status_code == 404
    response = bearer_client(viewer).patch(f"{URL}iris-auto/", change, format="json")
    assert response.status_code == 403
    assert bearer_client(viewer).post(URL, body(name="iris-v"), format="json").status_code == 403
    assert bearer_client(viewer).get(f"{URL}iris-auto/").json()["autoscaling"]["max_replicas"] \
        == 4
    assert Deployment.objects.get(name="iris-auto").autoscaling["max_replicas"] == 4


def test_an_idle_deployment_reads_as_idle_with_zero_replicas(api, v1):
    api.post(URL, body(), format="json")
    d = Deployment.objects.get(name="iris-auto")
    Deployment.objects.filter(pk=d.pk).update(replicas=0, status=DeploymentStatus.IDLE,
                                              scaled_at="2026-01-01T00:00:00Z")
    data = api.get(f"{URL}iris-auto/").json()
    assert data["status"] == "idle" and data["desired_replicas"] == 0
    assert data["scaled_at"].startswith("2026-01-01T00:00:00")
    # Changing the bounds of a sleeping deployment does not wake it.
    data = api.patch(f"{URL}iris-auto/", {"autoscaling": {**SCALING, "max_replicas": 2}},
                     format="json").json()
    assert data["desired_replicas"] == 0 and data["autoscaling"]["max_replicas"] == 2


def test_schema_documents_the_autoscaling_object(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    parts = schema["components"]["schemas"]
    request = parts["AutoscalingInputRequest"]["properties"]
    assert {"min_replicas", "max_replicas", "metric", "target", "scale_down_delay_s",
            "idle_to_zero_after_s"} <= set(request)
    assert parts["ScaleMetricEnum"]["enum"] == ["concurrency", "rps", "cpu"]
    shown = parts["Deployment"]["properties"]
    assert "autoscaling" in shown and "scaled_at" in shown
    assert "autoscaling" in parts["DeploymentCreateRequest"]["properties"]
    assert "autoscaling" in parts["PatchedDeploymentUpdateRequest"]["properties"] or \
        "autoscaling" in parts["DeploymentUpdateRequest"]["properties"]
