"""Real scikit-learn models and hand-made malicious archives for the registry tests."""

from __future__ import annotations

import io
import json
import pickle
import stat
import tarfile
import zipfile
from pathlib import Path

import joblib
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from teams.roles import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
EXAMPLE = {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


@pytest.fixture(scope="session")
def iris_estimator():
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=COLUMNS)
    return LogisticRegression(max_iter=300).fit(frame, data.target)


@pytest.fixture(scope="session")
def mlflow_model_dir(tmp_path_factory, iris_estimator) -> Path:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    from registry.sandbox import sandbox_requirements

    frame = pd.DataFrame(EXAMPLE["data"], columns=COLUMNS)
    target = tmp_path_factory.mktemp("mlflow") / "iris"
    mlflow.sklearn.save_model(
        iris_estimator, str(target),
        signature=infer_signature(frame, iris_estimator.predict(frame)),
        input_example=frame, pip_requirements=sandbox_requirements([]),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    return target


def zip_dir(directory: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                bundle.write(path, prefix + path.relative_to(directory).as_posix())
    return buffer.getvalue()


def tar_dir(directory: Path, prefix: str = "model/") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                bundle.add(path, prefix + path.relative_to(directory).as_posix())
    return buffer.getvalue()


@pytest.fixture
def mlflow_zip(mlflow_model_dir) -> SimpleUploadedFile:
    return SimpleUploadedFile("iris.zip", zip_dir(mlflow_model_dir), "application/zip")


@pytest.fixture(scope="session")
def sklearn_pickle(iris_estimator) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(iris_estimator, buffer)
    return buffer.getvalue()


class _WritesAFile:
    """Unpickling this runs ``open(path, 'w')`` — proof of code execution if the file appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').write('pwned')",))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_WritesAFile(str(marker)))


def zip_with(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(info, target)
    return buffer.getvalue()


def tar_with(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            bundle.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def ml_team(db):
    return TeamFactory(slug="ml-search")


@pytest.fixture
def team_engineer(ml_team):
    user = UserFactory(username="eve")
    MembershipFactory(team=ml_team, user=user, role=Role.ENGINEER)
    return user


@pytest.fixture
def team_maintainer(ml_team):
    user = UserFactory(username="mia")
    MembershipFactory(team=ml_team, user=user, role=Role.MAINTAINER)
    return user


@pytest.fixture
def team_viewer(ml_team):
    user = UserFactory(username="vic")
    MembershipFactory(team=ml_team, user=user, role=Role.VIEWER)
    return user


@pytest.fixture
def iris(ml_team, team_engineer):
    from registry import services

    return services.create_model(actor=team_engineer, team=ml_team, name="iris",
                                 description="Iris classifier", tags=["tabular", "demo"])


def example_json() -> str:
    return json.dumps(EXAMPLE)


@pytest.fixture
def sandbox_image(request):
    """Validation uses Docker when it answers: make sure its image exists first."""
    from tests.conftest import REQUIRE_SERVICES
    from workers.runtime_status import docker_answers

    if docker_answers() or REQUIRE_SERVICES:
        return request.getfixturevalue("platform_serving_image")
    return None
