"""Fixtures for batch jobs: a team, an engineer, a ready iris version (stored artifact, the
platform's own requirements, so Docker tests share the one serving image), inputs."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import RegisteredModel
from teams.roles import Role
from tests.deployments.conftest import COLUMNS, iris_dir, make_version  # noqa: F401
from tests.factories import MembershipFactory, TeamFactory, UserFactory

TEST_LABELS = {"modelport.test": "1"}


@pytest.fixture
def team():
    return TeamFactory(slug=f"jobs-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def engineer(team):
    user = UserFactory()
    MembershipFactory(team=team, user=user, role=Role.ENGINEER)
    return user


@pytest.fixture
def iris_version(team, iris_dir):  # noqa: F811
    model = RegisteredModel.objects.create(name=f"iris-{uuid.uuid4().hex[:6]}", team=team)
    version = make_version(model, 1, iris_dir)
    from registry import mlmodel

    version.signature = mlmodel.read_metadata(iris_dir).signature
    version.save()
    return version


def iris_frame(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(0.1, 7.9, size=(rows, 4)).round(2), columns=COLUMNS)
    frame.insert(0, "id", np.arange(rows))
    return frame


def csv_upload(frame, name: str = "input.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, frame.to_csv(index=False).encode(), "text/csv")


def parquet_upload(frame, name: str = "input.parquet") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return SimpleUploadedFile(name, buffer.getvalue(), "application/octet-stream")
