"""The real path a model of any flavor takes (issue 19), shared by the flavor tests.

A model saved with stock ``mlflow`` in this process (as its users do) is zipped and uploaded
through the API; validation runs in the Docker sandbox, in the image built from the model's own
``requirements.txt`` (wheels fetched on this host, a network-less build); the version is then
deployed on the Docker runtime (no network, a socket file) and called through the gateway in
both protocols. Images are keyed by requirements, so the tests of a flavor that save their
models with the same requirements share one image per run: keep models tiny, and pass the
same ``pip_requirements`` to every model of a test module.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from deployments.models import Deployment
from deployments.reconcile import reconcile_deployment
from registry import services as registry_services
from registry.models import ModelVersion, VersionStatus
from teams.roles import Role
from tests.deployments import conftest as deployments_conftest
from tests.factories import MembershipFactory, TeamFactory, UserFactory, make_token
from tests.fixtures import bearer_client

# The Docker runtime as `make run` has it (no network, socket files), shared with the deployment
# tests.
docker_env = deployments_conftest.docker_env
no_enqueue = deployments_conftest.no_enqueue

# Builds flavor images (minutes on a busy 2-core machine the first time in a run).
flavor_test = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800),
               pytest.mark.django_db(transaction=True)]


def zip_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


@dataclass
class Served:
    """A deployed version, called through the gateway as a consuming service would."""

    name: str  # the deployment
    model: str
    version: ModelVersion
    client: Client

    def invocations(self, payload: Any, *, status: int = 200) -> Any:
        """``POST /serve/<name>/invocations`` (the MLflow scoring protocol); the JSON answer."""
        body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        response = self.client.post(f"/serve/{self.name}/invocations", data=body,
                                    content_type="application/json")
        assert response.status_code == status, response.content[:2000]
        return response.json()

    def infer(self, inputs: list[dict[str, Any]], *, status: int = 200,
              outputs: list[dict[str, Any]] | None = None) -> Any:
        """Open Inference Protocol v2 ``infer``; the JSON answer."""
        body: dict[str, Any] = {"inputs": inputs}
        if outputs is not None:
            body["outputs"] = outputs
        response = self.client.post(
            f"/serve/{self.name}/v2/models/{self.model}/versions/{self.version.version}/infer",
            data=json.dumps(body), content_type="application/json")
        assert response.status_code == status, response.content[:2000]
        return response.json()

    def metadata(self) -> Any:
        response = self.client.get(f"/serve/{self.name}/v2/models/{self.model}")
        assert response.status_code == 200, response.content[:2000]
        return response.json()


@pytest.fixture
def flavor_team(db):
    return TeamFactory(slug="flavors")


@pytest.fixture
def flavor_engineer(flavor_team):
    user = UserFactory(username=f"fe-{uuid.uuid4().hex[:6]}")
    MembershipFactory(team=flavor_team, user=user, role=Role.ENGINEER)
    return user


def upload(user: Any, team: Any, model_dir: Path, capture: Any, *, model: str,
           input_example: Any = None) -> ModelVersion:
    """Register `model` (if new) and upload `model_dir` as a zip through the API; the
    validation task runs now (Docker sandbox). Returns the version, whatever its status."""
    if not team.models.filter(name=model).exists():
        registry_services.create_model(actor=user, team=team, name=model,
                                       description=f"{model} (flavor test)", tags=["flavor"])
    data: dict[str, Any] = {"file": SimpleUploadedFile(f"{model}.zip", zip_dir(model_dir),
                                                       "application/zip")}
    if input_example is not None:
        data["input_example"] = json.dumps(input_example)
    with capture(execute=True):
        response = bearer_client(user).post(f"/api/v1/models/{model}/versions/", data,
                                            format="multipart")
    assert response.status_code == 202, response.content[:2000]
    return ModelVersion.objects.filter(model__name=model).latest("version")


@pytest.fixture
def serve(flavor_team, flavor_engineer, docker_env, django_capture_on_commit_callbacks,
          platform_serving_image) -> Iterator[Any]:
    """``serve(model_dir, model="xgb", resources=...)``: upload → sandbox validation → deploy
    → healthy; returns a :class:`Served`. Fails with the version's or deployment's own message
    when a step does not get there."""

    def _serve(model_dir: Path, *, model: str, resources: dict[str, Any] | None = None,
               input_example: Any = None) -> Served:
        version = upload(flavor_engineer, flavor_team, model_dir,
                         django_capture_on_commit_callbacks, model=model,
                         input_example=input_example)
        assert version.status == VersionStatus.READY, (version.status, version.status_message)
        name = f"{model}-{uuid.uuid4().hex[:6]}"
        docker_env.append(name)
        api = bearer_client(flavor_engineer)
        response = api.post("/api/v1/deployments/", {
            "name": name, "team": flavor_team.slug, "model": model,
            "version": version.version, "replicas": 1,
            "resources": resources or {"cpu": 1, "memory_mb": 1024}}, format="json")
        assert response.status_code == 202, response.content[:2000]
        deployment = Deployment.objects.get(name=name)
        deadline = time.monotonic() + 300
        while True:
            outcome = reconcile_deployment(deployment.pk)
            deployment.refresh_from_db()
            if deployment.status == "healthy":
                break
            assert deployment.status not in ("failed", "degraded") \
                and time.monotonic() < deadline, (
                    outcome, deployment.status, deployment.status_message,
                    list(deployment.events.values_list("message", flat=True)[:8]))
            time.sleep(1)
        _, secret = make_token(flavor_engineer, name=f"gw-{name}")
        return Served(name=name, model=model, version=version,
                      client=Client(HTTP_AUTHORIZATION=f"Bearer {secret}"))

    yield _serve
