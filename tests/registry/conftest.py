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


# --- MLflow behind the platform (tests/registry/test_mlflow_*.py) ------------------------------
ROOT = Path(__file__).resolve().parents[2]


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} process in the Procfile")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """The tracking server started exactly as `make run` starts it (the Procfile's line, in a
    shell, with only MODELPORT_DATA_DIR set): a unix socket in a 0700 folder, no TCP port."""
    import os
    import signal
    import subprocess
    import time

    import httpx

    data = tmp_path_factory.mktemp("mlflow-data")
    (data / "mlflow").mkdir()
    socket_path = data / "run" / "mlflow" / "mlflow.sock"
    log = (data / "mlflow.log").open("w")
    env = {"PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "HOME": str(data),
           "MODELPORT_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}  # config.mlflow_server
    process = subprocess.Popen(["sh", "-c", procfile_command("mlflow")], cwd=data, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if socket_path.exists():
                try:
                    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as c:
                        if c.get("http://localhost/health", timeout=2).status_code == 200:
                            break
                except httpx.HTTPError:
                    pass
            if process.poll() is not None:
                pytest.fail("mlflow exited: " + (data / "mlflow.log").read_text()[-3000:])
            time.sleep(0.5)
        else:
            pytest.fail("mlflow did not answer within 180 s: "
                        + (data / "mlflow.log").read_text()[-3000:])
        yield {"data": data, "socket": socket_path, "pid": process.pid}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture
def mlflow_upstream(settings, mlflow_server) -> str:
    settings.MODELPORT_MLFLOW_UPSTREAM = f"unix:{mlflow_server['socket']}"
    return settings.MODELPORT_MLFLOW_UPSTREAM




@pytest.fixture
def tracking(live_server, mlflow_upstream, tmp_path):
    """Run the training script in a separate process with only the documented environment:
    ``MLFLOW_TRACKING_URI`` from ``GET /api/v1/info/`` and ``MLFLOW_TRACKING_TOKEN``."""
    import os
    import subprocess
    import sys

    import requests

    from registry.sandbox import sandbox_requirements
    from tests.mlflow_training import TRAINING_SCRIPT

    uri = requests.get(f"{live_server.url}/api/v1/info/", timeout=10).json()[
        "mlflow_tracking_uri"]
    assert uri == f"{live_server.url}/mlflow"
    workdir = tmp_path / "training"
    workdir.mkdir()
    script = workdir / "train.py"
    script.write_text(TRAINING_SCRIPT)

    def train(token: str | None, name: str = "", *, tags: dict | None = None
              ) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "MLFLOW_TRACKING_URI": uri}
        if token:
            env["MLFLOW_TRACKING_TOKEN"] = token
        return subprocess.run(
            [sys.executable, str(script), name, json.dumps(sandbox_requirements([])),
             json.dumps(tags or {})], cwd=workdir, env=env, capture_output=True, text=True,
            timeout=600, check=False)

    train.uri = uri
    train.workdir = workdir
    return train
