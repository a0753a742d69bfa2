"""The data dir is not readable by other users of the host (issue 24).

`make run` makes MODELPORT_DATA_DIR 0700 and starts every process with umask 077, so the SQLite
file, the secret key, the embedded broker's data, the MLflow store and the artifacts are private.
Containers still read what is mounted into them (uid 10001): the code that mounts a directory
opens that directory up — the last test registers and deploys a model in Docker under that umask.
(`tests/test_make_run.py` checks the modes of a whole `make run` data dir too.)
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.deployments.conftest import (  # noqa: F401 - fixtures
    COLUMNS,
    ROWS,
    docker_env,
    iris_dir,
    no_enqueue,
    unique_name,
)
from tests.fixtures import bearer_client
from tests.registry.conftest import zip_dir
from tests.test_make_run import CONTAINER_MOUNTS

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def shared_with_others(root: Path) -> list[str]:
    return [f"{oct(mode(p))} {p.relative_to(root)}" for p in [root, *root.rglob("*")]
            if not p.is_symlink() and mode(p) & 0o077]


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
           and not k.startswith("PYTEST")}
    env["MODELPORT_DATA_DIR"] = str(data_dir)
    return env


@pytest.mark.slow
def test_make_migrate_makes_an_existing_data_dir_private_and_writes_private_files(tmp_path):
    if subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("the venv is older than requirements/: run `make install` first")
    data = tmp_path / "var"
    data.mkdir()
    data.chmod(0o755)  # as an earlier `make run` left it
    done = subprocess.run(["make", "migrate"], cwd=ROOT, env=_clean_env(data),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert mode(data) == 0o700
    assert mode(data / "modelport.sqlite3") == 0o600
    assert mode(data / "secret_key") == 0o600
    assert not (data / "broker").exists()  # the embedded broker is a Redis server now
    assert shared_with_others(data) == []


def test_settings_create_a_missing_data_dir_private_even_under_a_lax_umask(tmp_path):
    data = tmp_path / "fresh" / "var"
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
        env={**_clean_env(data), "DJANGO_SETTINGS_MODULE": "config.settings.dev"},
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    assert mode(data) == 0o700
    assert mode(data / "secret_key") == 0o600
    assert not list(data.glob(".secret_key-*"))  # the temporary file is gone


@pytest.fixture
def make_run_umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_under_make_runs_umask_containers_still_read_the_model(
        docker_client, platform_serving_image, docker_env, iris_dir, team, engineer,  # noqa: F811
        make_run_umask, settings):
    from deployments.models import Deployment
    from deployments.reconcile import reconcile_deployment
    from registry.models import ModelVersion, RegisteredModel

    data = Path(settings.MODELPORT_DATA_DIR)
    data.chmod(0o700)  # as `make run` leaves it
    RegisteredModel.objects.create(name="iris", team=team, created_by=engineer)
    api = bearer_client(engineer)
    # Registration: the upload lands in a 0600 staging file; the sandbox container validates it.
    response = api.post("/api/v1/models/iris/versions/", {
        "file": SimpleUploadedFile("iris.zip", zip_dir(iris_dir)), "format": "mlflow"},
        format="multipart")
    assert response.status_code == 202, response.content
    version = ModelVersion.objects.get(model__name="iris", version=1)
    assert version.status == "ready", version.status_message
    assert version.sandboxed is True

    # Deployment: the model dir unpacked under the private data dir is mounted at /model.
    name = unique_name("private")
    docker_env.append(name)
    created = api.post("/api/v1/deployments/", {
        "name": name, "team": team.slug, "model": "iris", "version": 1, "replicas": 1,
        "resources": {"cpu": 0.5, "memory_mb": 768}}, format="json")
    assert created.status_code == 202, created.content
    deployment = Deployment.objects.get(name=name)
    reconcile_deployment(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "healthy", (deployment.status_message, list(
        deployment.events.values_list("message", flat=True)[:5]))
    prediction = api.post(f"/serve/{name}/invocations", {
        "dataframe_split": {"columns": COLUMNS, "data": ROWS}}, format="json")
    assert prediction.status_code == 200, prediction.content
    assert prediction.json()["predictions"] == [0, 2]

    models = data / "deployments" / "models"
    opened = [p for p in models.iterdir() if not p.name.startswith(".")]
    assert opened and all(mode(p) == 0o755 for p in opened)  # the mounted leaf only
    assert mode(models) == 0o700  # its parents stay private
    leaked = [p for p in shared_with_others(data)
              if not p.split(" ", 1)[1].startswith(CONTAINER_MOUNTS)]
    assert leaked == []
    assert mode(data / "run") == 0o700 and mode(data / "run" / "replicas") == 0o700
