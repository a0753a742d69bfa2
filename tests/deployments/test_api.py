"""Deployments API without containers: validation, roles, revisions, rollback, stop/start,
delete, audit and quota admission. The reconciler is not run here (see test_docker.py)."""

from __future__ import annotations

import pytest

from deployments.models import Deployment, Revision
from quotas.models import Reservation
from registry.models import ModelAlias, VersionStatus
from teams.models import AuditEvent
from tests.deployments.conftest import make_version
from tests.fixtures import bearer_client

URL = "/api/v1/deployments/"


def body(**extra):
    data = {"name": "iris-prod", "team": "ml-search", "model": "iris", "version": 1,
            "replicas": 2, "resources": {"cpu": 0.5, "memory_mb": 512}}
    data.update(extra)
    return data


@pytest.fixture
def api(engineer, no_enqueue):
    return bearer_client(engineer)


def test_create_answers_202_pending_and_enqueues_reconcile(api, v1, no_enqueue,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, body(), format="json")
    assert response.status_code == 202, response.json()
    data = response.json()
    assert data["status"] == "pending" and data["revision"] == 1
    assert data["version"] == 1 and data["desired_replicas"] == 2 and data["alias"] is None
    assert data["resources"] == {"cpu": 0.5, "memory_mb": 512, "gpus": 0}
    assert data["strategy"] == {"type": "rolling"}
    assert data["endpoint"].endswith("/serve/iris-prod/invocations")
    assert data["replicas"] == [] and data["traffic"] == []
    d = Deployment.objects.get(name="iris-prod")
    assert no_enqueue == [d.pk]
    revision = Revision.objects.get(deployment=d, number=1)
    assert revision.model_version == v1 and revision.spec["replicas"] == 2
    reservation = Reservation.objects.get(owner="deployment:iris-prod")
    assert (float(reservation.cpu), reservation.memory_mb, reservation.deployments) == \
        (1.0, 1024, 1)
    assert AuditEvent.objects.filter(action="deployment.created", object_repr="iris-prod").exists()
    events = api.get(f"{URL}iris-prod/events/").json()
    assert events["count"] == 1 and "Revision 1 created" in events["results"][0]["message"]


@pytest.mark.parametrize(("override", "field", "needle"), [
    ({"version": None}, "version", "version (a number) or an alias"),
    ({"alias": "x"}, "version", "either version or alias"),
    ({"replicas": 0}, "replicas", "greater than or equal to 1"),
    ({"replicas": 17}, "replicas", "less than or equal to 16"),
    ({"replicas": "many"}, "replicas", "valid integer"),
    ({"resources": {"cpu": -1}}, "resources", "greater than or equal to 0.01"),
    ({"resources": {"cpu": "lots"}}, "resources", "valid number"),
    ({"resources": {"memory_mb": 1}}, "resources", "greater than or equal to 64"),
    ({"resources": {"gpus": -2}}, "resources", "greater than or equal to 0"),
    ({"strategy": {"type": "yolo"}}, "strategy", "valid choice"),
    ({"strategy": {"type": "canary", "steps": [50, 10]}}, "strategy", "increasing"),
    ({"name": "Bad Name!"}, "name", "not a valid deployment name"),
])
def test_bad_specs_are_400_and_nothing_is_created(api, v1, override, field, needle):
    response = api.post(URL, body(**override), format="json")
    assert response.status_code == 400, response.json()
    text = str(response.json()[field])
    assert needle.lower() in text.lower(), text
    assert not Deployment.objects.exists()
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(("override", "field", "needle"), [
    ({"model": "nope"}, "model", "no model 'nope'"),
    ({"version": 9}, "version", "no version 9"),
    ({"version": None, "alias": "production"}, "alias", "no alias 'production'"),
])
def test_naming_a_missing_model_version_or_alias_is_404(api, v1, override, field, needle):
    response = api.post(URL, body(**override), format="json")
    assert response.status_code == 404, response.json()
    assert needle in response.json()["detail"] and response.json()["field"] == field
    assert not Deployment.objects.exists()


def test_version_not_ready_is_409(api, iris_model, iris_dir):
    make_version(iris_model, 1, iris_dir, status=VersionStatus.FAILED)
    response = api.post(URL, body(), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "version_not_ready"
    assert "is failed, not ready" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_name_taken_is_409(api, v1):
    assert api.post(URL, body(), format="json").status_code == 202
    response = api.post(URL, body(), format="json")
    assert response.status_code == 409 and response.json()["code"] == "name_taken"
    assert Deployment.objects.count() == 1


def test_quota_exceeded_is_409_with_numbers(api, v1):
    response = api.post(URL, body(replicas=16, resources={"cpu": 1}), format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "quota_exceeded"
    assert "needs 16 CPU" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_viewer_cannot_deploy_and_other_teams_see_404(viewer, stranger, v1, api):
    response = bearer_client(viewer).post(URL, body(), format="json")
    assert response.status_code == 403 and "engineer or higher" in response.json()["detail"]
    assert bearer_client(stranger).post(URL, body(), format="json").status_code == 404
    assert api.post(URL, body(), format="json").status_code == 202
    other = bearer_client(stranger)
    assert other.get(f"{URL}iris-prod/").status_code == 404
    assert other.get(URL).json()["count"] == 0
    assert other.post(f"{URL}iris-prod/stop/").status_code == 404
    assert bearer_client(viewer).get(f"{URL}iris-prod/").status_code == 200
    assert bearer_client(viewer).post(f"{URL}iris-prod/stop/").status_code == 403
    assert bearer_client(viewer).delete(f"{URL}iris-prod/").status_code == 403


def test_list_filters(api, v1):
    api.post(URL, body(), format="json")
    assert api.get(URL, {"team": "ml-search"}).json()["count"] == 1
    assert api.get(URL, {"model": "other"}).json()["count"] == 0


def test_patch_makes_a_new_revision_only_when_the_spec_changes(api, v1, v2):
    api.post(URL, body(), format="json")
    response = api.patch(f"{URL}iris-prod/", {"version": 2}, format="json")
    assert response.status_code == 202
    assert response.json()["revision"] == 2 and response.json()["version"] == 2
    response = api.patch(f"{URL}iris-prod/", {"replicas": 3}, format="json")
    assert response.json()["revision"] == 3
    assert float(Reservation.objects.get(owner="deployment:iris-prod").cpu) == 1.5
    response = api.patch(f"{URL}iris-prod/", {"replicas": 3}, format="json")
    assert response.json()["revision"] == 3  # nothing changed
    bad = api.patch(f"{URL}iris-prod/", {"replicas": 0}, format="json")
    assert bad.status_code == 400
    revisions = api.get(f"{URL}iris-prod/revisions/").json()
    assert [r["number"] for r in revisions["results"]] == [3, 2, 1]
    assert [r["model_version"] for r in revisions["results"]] == [2, 2, 1]


def test_following_an_alias_resolves_at_revision_time(api, v1, v2, engineer):
    ModelAlias.objects.create(model=v1.model, name="staging", version=v1)
    response = api.post(URL, body(version=None, alias="staging"), format="json")
    assert response.status_code == 202
    assert response.json()["alias"] == "staging"
    assert Revision.objects.get(number=1).model_version == v1
    ModelAlias.objects.filter(name="staging").update(version=v2)
    response = api.patch(f"{URL}iris-prod/", {}, format="json")
    assert response.json()["revision"] == 2
    assert Revision.objects.get(number=2).model_version == v2


def test_rollback(api, v1, v2):
    api.post(URL, body(), format="json")
    response = api.post(f"{URL}iris-prod/rollback/", {}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "no_previous_revision"
    api.patch(f"{URL}iris-prod/", {"version": 2, "replicas": 1}, format="json")
    Revision.objects.filter(number=1).update(healthy_at="2026-01-01T00:00:00Z")
    response = api.post(f"{URL}iris-prod/rollback/", {}, format="json")
    assert response.status_code == 202
    data = response.json()
    assert data["revision"] == 3 and data["version"] == 1 and data["desired_replicas"] == 2
    assert Revision.objects.get(number=3).reason == "rollback to revision 1"
    response = api.post(f"{URL}iris-prod/rollback/", {"revision": 2}, format="json")
    assert response.json()["revision"] == 4 and response.json()["version"] == 2
    assert api.post(f"{URL}iris-prod/rollback/", {"revision": 99},
                    format="json").status_code == 404
    assert AuditEvent.objects.filter(action="deployment.rolled_back").count() == 2


def test_stop_releases_quota_and_start_admits_again(api, v1):
    api.post(URL, body(), format="json")
    response = api.post(f"{URL}iris-prod/stop/")
    assert response.status_code == 202 and response.json()["stopped"] is True
    assert not Reservation.objects.filter(owner="deployment:iris-prod").exists()
    response = api.post(f"{URL}iris-prod/start/")
    assert response.status_code == 202 and response.json()["stopped"] is False
    assert Reservation.objects.filter(owner="deployment:iris-prod").exists()
    assert AuditEvent.objects.filter(action__in=["deployment.stopped",
                                                 "deployment.started"]).count() == 2


def test_delete_forgets_and_releases(api, v1, monkeypatch, django_capture_on_commit_callbacks):
    removed: list[tuple[str, int | None, str]] = []
    monkeypatch.setattr("deployments.passes.enqueue_remove",
                        lambda name, target_id=None, runtime="": removed.append(
                            (name, target_id, runtime)))
    api.post(URL, body(), format="json")
    d = Deployment.objects.get(name="iris-prod")
    assert d.runtime in ("docker", "local")
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"{URL}iris-prod/").status_code == 204
    # removed on the target and runtime it ran on
    assert removed == [("iris-prod", d.target_id, d.runtime)]
    assert not Deployment.objects.exists() and not Reservation.objects.exists()
    assert AuditEvent.objects.filter(action="deployment.deleted").exists()


def test_logs_of_unknown_replica_is_404(api, v1):
    api.post(URL, body(), format="json")
    response = api.get(f"{URL}iris-prod/logs/", {"replica": "mp-nope"})
    assert response.status_code == 404


def test_unauthenticated_is_401():
    from rest_framework.test import APIClient

    assert APIClient().get(URL).status_code == 401


def test_a_deployed_model_cannot_be_deleted(api, v1, maintainer):
    api.post(URL, body(), format="json")
    response = bearer_client(maintainer).delete("/api/v1/models/iris/")
    assert response.status_code == 409 and response.json()["code"] == "model_deployed"
    assert "iris-prod" in response.json()["detail"]


def test_moving_a_followed_alias_rolls_the_deployment_out(api, engineer, iris_model, v1, v2,
                                                          no_enqueue,
                                                          django_capture_on_commit_callbacks):
    from registry import services as registry_services

    registry_services.set_alias(actor=engineer, model=iris_model, alias="champion",
                                version_number=1)
    created = api.post("/api/v1/deployments/", {
        "name": "iris-champ", "team": iris_model.team.slug, "model": "iris",
        "alias": "champion", "replicas": 1,
        "resources": {"cpu": 0.5, "memory_mb": 512, "gpus": 0}}, format="json")
    assert created.status_code in (201, 202), created.content
    d = Deployment.objects.get(name="iris-champ")
    assert d.revisions.get(number=d.revision).model_version == v1

    with django_capture_on_commit_callbacks(execute=True):
        registry_services.set_alias(actor=engineer, model=iris_model, alias="champion",
                                    version_number=2)
    d.refresh_from_db()
    assert d.revision == 2
    assert d.revisions.get(number=2).model_version == v2
    assert d.pk in no_enqueue  # the move enqueued a reconcile

    registry_services.set_alias(actor=engineer, model=iris_model, alias="champion",
                                version_number=2)  # no move, no new revision
    d.refresh_from_db()
    assert d.revision == 2
