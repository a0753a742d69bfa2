"""Modelport answers MLflow's Model Registry REST API itself: a stock ``MlflowClient`` (and
``mlflow.pyfunc.load_model("models:/…")``) pointed at the live platform's ``/mlflow`` with a
platform token reads and changes Modelport's registry, under Modelport's rules.

Everything is real: the live Django server, the tracking server the Procfile starts (runs and
logged models are still proxied to it), PostgreSQL, and validation in the Docker sandbox. The
MLflow client runs in this process, configured only by the documented environment.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry import mlflow_upstream, services, storage
from registry.mlflow_registry_api import artifacts
from registry.models import (
    AliasTransitionRequest,
    MlflowTag,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)
from registry.signals import alias_moved
from teams.models import AuditEvent
from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory, make_token

from .conftest import COLUMNS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.usefixtures("sandbox_image", "mlflow_upstream")]


@pytest.fixture
def team(db):
    return TeamFactory(slug="team-a")


def member(team, name: str, role: Role):
    user = UserFactory(username=name)
    MembershipFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def platform(live_server, monkeypatch):
    """``as_user(user)``: the MLflow environment a user's script has, for the ``with`` block."""
    uri = f"{live_server.url}/mlflow"
    tokens: dict[str, str] = {}

    @contextlib.contextmanager
    def as_user(user):
        if user.username not in tokens:
            tokens[user.username] = make_token(user, name=f"mlflow-{user.username}")[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens[user.username])
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield MlflowClient()
        finally:
            monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")

    as_user.uri = uri
    return as_user


def log_iris(iris_estimator, name: str = "", step: int = 0) -> str:
    """A training step as a user writes it; returns the run id."""
    X = pd.DataFrame([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], columns=COLUMNS)
    mlflow.set_experiment("iris-registry")
    with mlflow.start_run() as run:
        mlflow.log_param("max_iter", 300)
        mlflow.sklearn.log_model(iris_estimator, name="model", input_example=X,
                                 registered_model_name=name or None,
                                 pip_requirements=_requirements(),
                                 serialization_format="cloudpickle", step=step)
    return run.info.run_id


def _requirements() -> list[str]:
    from registry.sandbox import sandbox_requirements

    return sandbox_requirements([])


def upstream_has_model(name: str) -> bool:
    answer = mlflow_upstream.client().get("/api/2.0/mlflow/registered-models/get",
                                          params={"name": name})
    return answer.status_code == 200


def frame() -> pd.DataFrame:
    return pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=COLUMNS)


# --- the core path: log → READY → aliases both ways → load_model --------------------------------
def test_log_model_registers_in_modelport_and_aliases_move_both_ways(
        platform, team, iris_estimator, mlflow_zip):
    alice = member(team, "alice", Role.ENGINEER)
    moves = []  # deployments following an alias roll out on this signal (deployments.services)
    receiver = lambda sender, **kwargs: moves.append((kwargs["alias"], kwargs["actor"]))  # noqa: E731
    alias_moved.connect(receiver, weak=False)
    with platform(alice) as client:
        run_id = log_iris(iris_estimator, "iris-live")
        version = client.get_model_version("iris-live", "1")
        assert version.status == "READY", version.status_message
        assert version.run_id == run_id
        client.set_registered_model_alias("iris-live", "champion", "1")

    model = RegisteredModel.objects.get(name="iris-live")
    assert model.team == team and model.created_by == alice
    stored = model.versions.get(version=1)
    assert stored.status == "ready" and stored.created_by == alice
    assert stored.lineage["mlflow_run_id"] == run_id
    assert stored.source.startswith("models:/m-")  # MLflow 3's logged model
    assert stored.lineage["mlflow_model_id"] == stored.source[len("models:/"):]
    assert ModelAlias.objects.get(model=model, name="champion").version == stored
    assert AuditEvent.objects.filter(action="alias.moved", actor=alice).exists()
    alias_moved.disconnect(receiver)
    assert moves == [("champion", alice)]
    assert not upstream_has_model("iris-live")  # the tracking server's registry is not written

    # A version uploaded to Modelport's own API is version 2 for MLflow clients too, and an
    # alias moved in Modelport is what MLflow's alias lookups and loads see.
    uploaded = services.register_upload(actor=alice, model=model, upload=mlflow_zip,
                                        fmt="mlflow")
    uploaded.refresh_from_db()
    assert uploaded.version == 2 and uploaded.status == "ready", uploaded.status_message
    services.set_alias(actor=alice, model=model, alias="champion", version_number=2)
    with platform(alice) as client:
        assert client.get_model_version_by_alias("iris-live", "champion").version == "2"
        assert [v.version for v in client.search_model_versions("name='iris-live'")] == \
            ["2", "1"]
        loaded = mlflow.pyfunc.load_model("models:/iris-live@champion")
        assert len(loaded.predict(frame())) == 1
        by_number = mlflow.pyfunc.load_model("models:/iris-live/1")
        assert list(by_number.predict(frame())) == list(loaded.predict(frame()))
        assert client.get_registered_model("iris-live").aliases == {"champion": "2"}


def test_runs_uri_and_register_model_resolve_mlflow3_logged_models(platform, team,
                                                                    iris_estimator):
    """``runs:/<run>/model``: MLflow 3 keeps the model under ``models/m-…``, not the run."""
    alice = member(team, "alice", Role.ENGINEER)
    with platform(alice) as client:
        run_id = log_iris(iris_estimator)
        client.create_registered_model("iris-runs", description="from a run")
        registered = mlflow.register_model(f"runs:/{run_id}/model", "iris-runs")
        assert registered.version == "1" and registered.status == "READY"
    model = RegisteredModel.objects.get(name="iris-runs")
    version = model.versions.get()
    assert version.status == "ready", version.status_message
    # Modelport's own import of the same source (the REST API's {"source": "runs:/…"}).
    direct = services.register_from_source(actor=alice, model=model,
                                           source=f"runs:/{run_id}/model")
    direct.refresh_from_db()
    assert direct.status == "ready", direct.status_message
    assert direct.lineage["mlflow_run_id"] == run_id


# --- rules: roles, protected aliases, audit ---------------------------------------------------
def test_roles_and_protected_aliases(platform, team, mlflow_zip, settings):
    alice = member(team, "alice", Role.ENGINEER)
    vera = member(team, "vera", Role.VIEWER)
    mona = member(team, "mona", Role.MAINTAINER)
    outsider = member(TeamFactory(slug="team-b"), "bob", Role.ENGINEER)
    model = services.create_model(actor=alice, team=team, name="iris-rules")
    services.register_upload(actor=alice, model=model, upload=mlflow_zip, fmt="mlflow")

    with platform(vera) as client:
        assert client.get_model_version("iris-rules", "1").status == "READY"
        with pytest.raises(MlflowException) as refused:
            client.set_registered_model_alias("iris-rules", "candidate", "1")
        assert refused.value.error_code == "PERMISSION_DENIED"
        assert "engineer" in refused.value.message
    with platform(outsider) as client:
        with pytest.raises(MlflowException) as hidden:
            client.get_registered_model("iris-rules")
        assert hidden.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert "iris-rules" not in [m.name for m in client.search_registered_models()]
    with platform(alice) as client:
        with pytest.raises(MlflowException) as pending:
            client.set_registered_model_alias("iris-rules", "production", "1")
        assert pending.value.error_code == "PERMISSION_DENIED"
        assert "pending approval" in pending.value.message
        assert not ModelAlias.objects.filter(model=model, name="production").exists()
        assert AliasTransitionRequest.objects.get(model=model, alias="production").status == \
            "pending"
        with pytest.raises(MlflowException) as not_maintainer:
            client.delete_model_version("iris-rules", "1")
        assert not_maintainer.value.error_code == "PERMISSION_DENIED"
    with platform(mona) as client:
        client.set_registered_model_alias("iris-rules", "production", "1")
        assert client.get_model_version_by_alias("iris-rules", "production").version == "1"
        with pytest.raises(MlflowException) as aliased:
            client.delete_model_version("iris-rules", "1")
        assert "carries the alias" in aliased.value.message
        client.delete_registered_model_alias("iris-rules", "production")
        client.delete_model_version("iris-rules", "1")
    assert not ModelVersion.objects.filter(model=model).exists()
    assert AuditEvent.objects.filter(action="version.deleted", actor=mona).exists()


# --- the rest of the registry calls MlflowClient makes ----------------------------------------
def test_models_tags_search_and_errors(platform, team, mlflow_zip):
    alice = member(team, "alice", Role.ENGINEER)
    mona = member(team, "mona", Role.MAINTAINER)
    with platform(alice) as client:
        for name in ("tagged-a", "tagged-b", "other-c"):
            client.create_registered_model(name, tags={"owner": "alice"}, description=name)
        with pytest.raises(MlflowException) as twice:
            client.create_registered_model("tagged-a")
        assert twice.value.error_code == "RESOURCE_ALREADY_EXISTS"
        client.set_registered_model_tag("tagged-b", "stage", "beta")
        client.update_registered_model("tagged-b", description="second")
        found = client.search_registered_models(filter_string="name LIKE 'tagged-%'")
        assert [m.name for m in found] == ["tagged-a", "tagged-b"]
        assert [m.name for m in client.search_registered_models("tags.stage = 'beta'")] == \
            ["tagged-b"]
        assert [m.name for m in client.search_registered_models(
            "name = 'other-c'")] == ["other-c"]
        newest = client.search_registered_models(order_by=["name DESC"], max_results=2)
        assert [m.name for m in newest] == ["tagged-b", "tagged-a"]
        assert newest.token
        rest = client.search_registered_models(order_by=["name DESC"], max_results=2,
                                               page_token=newest.token)
        assert [m.name for m in rest] == ["other-c"] and not rest.token
        model = client.get_registered_model("tagged-b")
        assert model.tags == {"owner": "alice", "stage": "beta"}
        assert model.description == "second"
        client.delete_registered_model_tag("tagged-b", "stage")
        assert client.get_registered_model("tagged-b").tags == {"owner": "alice"}
        with pytest.raises(MlflowException) as platform_tag:
            client.set_registered_model_tag("tagged-b", "modelport.owner", "x")
        assert platform_tag.value.error_code == "PERMISSION_DENIED"
        with pytest.raises(MlflowException) as renamed:
            client.rename_registered_model("tagged-b", "tagged-z")
        assert "not supported" in renamed.value.message
        with pytest.raises(MlflowException) as nothing:
            client.get_model_version("tagged-a", "7")
        assert nothing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(MlflowException) as bad_filter:
            client.search_registered_models("colour = 'red'")
        assert bad_filter.value.error_code == "INVALID_PARAMETER_VALUE"

    model = RegisteredModel.objects.get(name="tagged-a")
    services.register_upload(actor=alice, model=model, upload=mlflow_zip, fmt="mlflow")
    with platform(alice) as client:
        client.set_model_version_tag("tagged-a", "1", "validated_by", "ci")
        client.update_model_version("tagged-a", "1", description="first cut")
        version = client.get_model_version("tagged-a", "1")
        assert version.tags == {"validated_by": "ci"} and version.description == "first cut"
        assert [v.version for v in client.search_model_versions(
            "tags.validated_by = 'ci'")] == ["1"]
        latest = client.get_latest_versions("tagged-a")
        assert [v.version for v in latest] == ["1"]
        assert client.get_latest_versions("tagged-a", stages=["Production"]) == []
        assert [v.version for v in client.search_model_versions(
            "name = 'tagged-a' AND version_number >= 1", order_by=["version_number ASC"])] \
            == ["1"]
        with pytest.raises(MlflowException) as copied:
            client.copy_model_version("models:/tagged-a/1", "tagged-b")
        assert "copying" in copied.value.message
        uri = client.get_model_version_download_uri("tagged-a", "1")
        assert uri == "mlflow-artifacts:/modelport-registry/tagged-a/1"
        client.delete_model_version_tag("tagged-a", "1", "validated_by")
        assert client.get_model_version("tagged-a", "1").tags == {}
        with pytest.raises(MlflowException) as stages:
            client.transition_model_version_stage("tagged-a", "1", "Production")
        assert "alias" in stages.value.message
        with pytest.raises(MlflowException) as engineer_deletes:
            client.delete_registered_model("other-c")
        assert engineer_deletes.value.error_code == "PERMISSION_DENIED"
    with platform(mona) as client:
        client.delete_registered_model("other-c")
    assert not RegisteredModel.objects.filter(name="other-c").exists()
    assert MlflowTag.objects.filter(model__name="tagged-a", version__isnull=True).count() == 1
    assert AuditEvent.objects.filter(action="mlflow.tag_set", actor=alice).count() >= 4


def test_downloads_are_checked_and_confined(platform, team, mlflow_zip, live_server):
    import requests

    alice = member(team, "alice", Role.ENGINEER)
    model = services.create_model(actor=alice, team=team, name="iris-files")
    services.register_upload(actor=alice, model=model, upload=mlflow_zip, fmt="mlflow")
    token = make_token(alice, name="files")[1]
    base = f"{live_server.url}/mlflow/api/2.0/mlflow-artifacts/artifacts"
    auth = {"Authorization": f"Bearer {token}"}
    listed = requests.get(base, params={"path": "modelport-registry/iris-files/1"},
                          headers=auth, timeout=30).json()
    assert "MLmodel" in [f["path"] for f in listed["files"]]
    mlmodel = requests.get(f"{base}/modelport-registry/iris-files/1/MLmodel", headers=auth,
                           timeout=30)
    assert mlmodel.status_code == 200 and b"flavors" in mlmodel.content
    for path in ("modelport-registry/iris-files/1/../../x", "modelport-registry/iris-files/1/nope"):
        assert requests.get(f"{base}/{path}", headers=auth, timeout=30).status_code in (400, 404)
    assert requests.get(f"{base}/modelport-registry/iris-files/1/MLmodel",
                        timeout=30).status_code == 401
    # A stored artifact that no longer matches its checksum is not served: the check is
    # remembered between the files of one download only while the stored file is unchanged.
    version = model.versions.get()
    # live_server answers in this process: the check it made is remembered here.
    assert (version.artifact_name, version.artifact_sha256) in artifacts._checked
    stored = Path(storage.artifact_storage().path(version.artifact_name))
    data = bytearray(stored.read_bytes())
    data[-30] ^= 0xFF  # same size, other content (inside the zip's central directory)
    stored.write_bytes(bytes(data))
    os.utime(stored, (stored.stat().st_atime, stored.stat().st_mtime + 5))
    changed = requests.get(f"{base}/modelport-registry/iris-files/1/MLmodel", headers=auth,
                           timeout=30)
    assert changed.status_code == 500 and "checksum" in changed.json()["message"]
    ModelVersion.objects.filter(pk=version.pk).update(artifact_sha256="0" * 64)
    tampered = requests.get(f"{base}/modelport-registry/iris-files/1/MLmodel", headers=auth,
                            timeout=30)
    assert tampered.status_code == 500 and "checksum" in tampered.json()["message"]
    assert os.environ.get("MLFLOW_TRACKING_TOKEN") is None
