"""Rows the consumer-key tests share: deployments made directly (no artifact, no rollout —
the keys only need them to exist) in the ``team`` fixture's team and in another team."""

from __future__ import annotations

from datetime import datetime

import pytest

from deployments.models import ConsumerKey, ConsumerTraffic, Deployment, Revision
from registry.models import ModelVersion, RegisteredModel
from tests.factories import TeamFactory


def make_deployment(team, name: str) -> Deployment:
    model = RegisteredModel.objects.create(name=f"{name}-model", team=team)
    version = ModelVersion.objects.create(model=model, version=1, status="ready",
                                          source_format="mlflow", flavor="sklearn")
    d = Deployment.objects.create(name=name, team=team, model=model, version=version,
                                  replicas=1, revision=1, status="healthy",
                                  traffic=[{"revision": 1, "percent": 100}])
    Revision.objects.create(deployment=d, number=1, model_version=version, state="active")
    return d


def traffic(key: ConsumerKey, d: Deployment, at: datetime, requests: int,
            limited: int = 0) -> ConsumerTraffic:
    """A row as the gateway's flush writes it."""
    return ConsumerTraffic.objects.create(key=key, deployment=d, at=at, requests=requests,
                                          limited=limited)


@pytest.fixture
def search(team):
    return make_deployment(team, "search-rank")


@pytest.fixture
def churn(team):
    return make_deployment(team, "churn")


@pytest.fixture
def foreign(db):
    return make_deployment(TeamFactory(slug="ml-ads"), "ads-ctr")
