"""Portal fixtures: catalogue rows made directly (the services that make them are tested in their
own apps; here only the pages reading them are under test)."""

from __future__ import annotations

from django.utils import timezone

from deployments.models import Deployment, Replica, Revision
from monitoring.models import Alert, AlertRule
from registry.models import ModelAlias, ModelVersion, RegisteredModel

EXAMPLE = {"dataframe_split": {"columns": ["x1", "x2"], "data": [[1.5, 2.0]]}}


def make_model(team, name: str, *, versions: int = 1, description: str = "") -> RegisteredModel:
    model = RegisteredModel.objects.create(name=name, team=team, description=description)
    for number in range(1, versions + 1):
        ModelVersion.objects.create(model=model, version=number, status="ready",
                                    source_format="mlflow", flavor="sklearn",
                                    input_example=EXAMPLE)
    return model


def make_deployment(model: RegisteredModel, name: str, *, status: str = "healthy",
                    replicas: int = 2, ready: int = 2, firing: bool = False) -> Deployment:
    version = model.versions.order_by("-version").first()
    d = Deployment.objects.create(name=name, team=model.team, model=model, version=version,
                                  replicas=replicas, revision=1, status=status,
                                  traffic=[{"revision": 1, "percent": 100}])
    Revision.objects.create(deployment=d, number=1, model_version=version, state="active")
    for index in range(replicas):
        Replica.objects.create(deployment=d, runtime_id=f"{name}-{index}", revision=1,
                               index=index, status="running", ready=index < ready)
    if firing:
        rule = AlertRule.objects.create(deployment=d, name="errors high", metric="error_rate",
                                        threshold=5)
        Alert.objects.create(rule=rule, state="firing", value=12.5,
                             message="error rate 12.5 > 5", started_at=timezone.now())
    return d


def make_alias(model: RegisteredModel, name: str, number: int) -> ModelAlias:
    return ModelAlias.objects.create(model=model, name=name,
                                     version=model.versions.get(version=number))


# Chromium fixtures shared with the journey tests (module-scoped browser, a page per test).
from tests.e2e.conftest import browser, page, screenshot  # noqa: E402, F401
