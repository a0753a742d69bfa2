"""A deployment of a model whose version carries reference statistics, made directly (no
sandbox, no containers): monitoring only needs the rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from deployments.models import Deployment, Revision
from monitoring import ingest, rollups
from registry import reference
from registry.models import ModelVersion, RegisteredModel
from tests.deployments.conftest import iris_dir, no_enqueue  # noqa: F401 - fixtures for replicas
from tests.factories import TeamFactory

FEATURES = ["x1", "x2", "color"]
COLORS = ["red", "green", "blue"]
COLOR_P = [0.5, 0.3, 0.2]


def reference_frame(seed: int = 0, n: int = 5000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.normal(0, 1, n), "x2": rng.exponential(2.0, n),
                         "color": rng.choice(COLORS, n, p=COLOR_P)})


def live_rows(seed: int, n: int, *, shift: float = 0.0, colors=COLOR_P) -> list[list]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1, n)
    x2 = rng.exponential(2.0, n) + shift
    color = rng.choice(COLORS, n, p=colors)
    return [[float(a), float(b), str(c)] for a, b, c in zip(x1, x2, color, strict=True)]


def make_version(model, number: int, stats: dict | None = None) -> ModelVersion:
    return ModelVersion.objects.create(
        model=model, version=number, status="ready", source_format="mlflow", flavor="sklearn",
        reference_stats=stats if stats is not None else reference.compute(reference_frame(),
                                                                          source="reference_data"))


def make_deployment(team, model, version, name: str = "churn-prod") -> Deployment:
    deployment = Deployment.objects.create(name=name, team=team, model=model, version=version,
                                           revision=1, status="healthy")
    Revision.objects.create(deployment=deployment, number=1, model_version=version)
    return deployment


@pytest.fixture(autouse=True)
def _fresh_rate_cache():
    ingest._RATE_CACHE.clear()


@pytest.fixture
def ml_model(team, engineer):
    return RegisteredModel.objects.create(name="churn", team=team, created_by=engineer)


@pytest.fixture
def version(ml_model):
    return make_version(ml_model, 1)


@pytest.fixture
def deployment(team, ml_model, version):
    return make_deployment(team, ml_model, version)


@pytest.fixture
def other_deployment(db):
    team = TeamFactory(slug="other-team")
    model = RegisteredModel.objects.create(name="other-model", team=team)
    return make_deployment(team, model, make_version(model, 1, stats={}), name="other-dep")


@pytest.fixture
def ingest_token(deployment):
    return ingest.issue_ingest_token(deployment=deployment)


def record(i: int, ts: datetime, *, latency: float = 10.0, status: int = 200, row=None,
           prediction=1, request_id: str | None = None) -> dict:
    return {"request_id": request_id or f"req-{i}-{uuid.uuid4().hex[:8]}",
            "timestamp": ts.isoformat(timespec="milliseconds"), "latency_ms": latency,
            "status": status, "endpoint": "invocations",
            "inputs": {"columns": FEATURES, "data": [row or [0.1, 1.0, "red"]]},
            "outputs": [prediction] if status < 400 else None,
            "error": None if status < 400 else "boom"}


def batch(records: list[dict], deployment: str = "churn-prod", revision: str = "1") -> dict:
    return {"deployment": deployment, "revision": revision, "replica": "churn-prod-r1-0",
            "records": records}


def minutes_ago(n: float) -> datetime:
    return datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=n)


def ingest_direct(deployment, records: list[dict], revision: str = "1") -> dict:
    """Store records through the service (no HTTP), then roll them up."""
    import orjson

    from monitoring.models import IngestToken

    token = ingest.issue_ingest_token(deployment=deployment)
    row = ingest.authenticate_ingest(f"Bearer {token}")
    assert isinstance(row, IngestToken)
    return ingest.ingest_predictions(token=row, body=orjson.dumps(
        batch(records, deployment.name, revision)))


def roll(now: datetime | None = None) -> int:
    later = (now or datetime.now(UTC)) + timedelta(minutes=1)
    total = 0
    while n := rollups.rollup(now=later):
        total += n
    return total
