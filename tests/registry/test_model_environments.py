"""A model's requirements never run anyone's code outside a sandbox (issue 24, finding 1).

Real Docker, a PEP 503 package index on loopback configured as the platform's package index,
and a loopback listener standing for everything a package must not reach (it records every
request; a test passes only if it got none where none is allowed). The index also serves the
serving stack's own wheels, fetched once from this host's usual package sources.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.models import ModelVersion, VersionStatus
from teams import services as team_services
from teams.installation import installation_id
from tests.factories import AdminFactory, make_token
from tests.fixtures import bearer_client
from tests.pkgindex import calls_home, listener, make_sdist, make_wheel, package_index

from .conftest import zip_dir

pytestmark = [pytest.mark.django_db]


def docker_test(test: Any) -> Any:
    """Real Docker: builds serving images (minutes on a busy 2-core machine)."""
    for mark in (pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500),
                 pytest.mark.usefixtures("platform_serving_image")):
        test = mark(test)
    return test


def model_zip(model_dir: Path, tmp_path: Path, requirements: list[str]) -> SimpleUploadedFile:
    """The iris MLflow model with `requirements` as its requirements.txt."""
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    (target / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return SimpleUploadedFile("iris.zip", zip_dir(target), "application/zip")


def register(user: Any, upload: SimpleUploadedFile, capture: Any) -> Any:
    with capture(execute=True):
        return bearer_client(user).post("/api/v1/models/iris/versions/",
                                        {"file": upload, "format": "mlflow"},
                                        format="multipart")


def staged(settings: Any) -> list[Path]:
    root = Path(settings.MODELPORT_DATA_DIR) / "staging"
    return list(root.iterdir()) if root.is_dir() else []


def kept_for_retry(version: ModelVersion) -> list[Path]:
    """A version whose validation could not run keeps only its staged upload, for Retry
    (registry/retries.py); nothing else is left behind."""
    version.refresh_from_db()
    assert version.staging_dir and (Path(version.staging_dir) / "input" / "job.json").is_file()
    return [Path(version.staging_dir)]


def sklearn_pin() -> str:
    import sklearn

    return f"scikit-learn=={sklearn.__version__}"


# --- Refused at upload: nothing is fetched, nothing is staged -----------------------------------
REFUSED_FORMS = [
    ("victim @ {home}/victim-1.0.tar.gz", "direct URL references"),
    ("victim @ git+{home}/victim.git", "VCS links"),
    ("git+{home}/victim.git#egg=victim", "VCS links"),
    ("file:///tmp/victim", "local files"),
    ("./victim", "local paths"),
    ("-e git+{home}/victim.git#egg=victim", "editable installs"),
    ("--index-url {home}/simple", "package indexes"),
    ("--extra-index-url {home}/simple", "package indexes"),
    ("--find-links {home}/", "package indexes"),
    ("--trusted-host 127.0.0.1", "package indexes"),
    ("-r other.txt", "references to other requirement or constraint files"),
    ("--no-binary :all:", "pip options"),
]


@pytest.mark.parametrize(("form", "reason"), REFUSED_FORMS)
def test_a_refused_requirement_form_is_a_400_naming_the_line_and_reaches_nothing(
        form: str, reason: str, iris, team_engineer, mlflow_model_dir, tmp_path, settings,
        django_capture_on_commit_callbacks) -> None:
    with listener() as (home, hits):
        line = form.format(home=home)
        upload = model_zip(mlflow_model_dir, tmp_path, [sklearn_pin(), line])
        response = register(team_engineer, upload, django_capture_on_commit_callbacks)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "requirements_refused"
    assert f"requirements.txt line 2 {line!r}: {reason}" in body["detail"]
    assert not ModelVersion.objects.exists()
    assert staged(settings) == []
    assert hits == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_mlflow_import_whose_requirements_are_refused_fails_naming_the_line(
        tracking, iris, team_engineer, settings) -> None:
    """A training script logs a model with a URL requirement through the platform's MLflow
    route; importing its run fails the version after the download, before any build."""
    with listener() as (home, hits):
        line = f"victim @ {home}/victim-1.0.tar.gz"
        env = {"PATH": os.environ["PATH"], "HOME": str(tracking.workdir),
               "MLFLOW_TRACKING_URI": tracking.uri,
               "MLFLOW_TRACKING_TOKEN": make_token(team_engineer, name="training")[1]}
        done = subprocess.run(
            [sys.executable, str(tracking.workdir / "train.py"), "",
             json.dumps([sklearn_pin(), line]), "{}"], cwd=tracking.workdir, env=env,
            capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        run_id = done.stdout.split("RUN_ID=")[1].strip()
        response = bearer_client(team_engineer).post(
            "/api/v1/models/iris/versions/", {"source": f"runs:/{run_id}/model"}, format="json")
    assert response.status_code == 202, response.content
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    assert version.status_message.startswith("Import failed: requirements.txt line ")
    assert f"{line!r}: direct URL references" in version.status_message
    assert hits == []
    assert staged(settings) == []


# --- Built from the configured index, wheels only, no network ----------------------------------
@pytest.fixture(scope="module")
def stack_wheels(docker_client, platform_serving_image) -> list[Path]:
    """The serving stack's wheels for the base image, from this host's usual sources (cached
    under ~/.cache/modelport/wheelhouses): the loopback index serves them beside the test's
    own packages."""
    from django.conf import settings

    from workers.runtimes.images import ImageBuilder
    from workers.runtimes.wheelhouse import fetch

    builder = ImageBuilder(docker_client, settings.MODELPORT_SERVING_BASE_IMAGE)
    house = fetch(platform_requirements=builder.platform_requirements(),
                  model_requirements=[sklearn_pin()], target=builder.target(),
                  policy=builder.policy(), cache_root=builder.wheel_cache, log=lambda _l: None)
    return house.wheels


@pytest.fixture
def index_files(tmp_path, stack_wheels) -> Path:
    files = tmp_path / "index-files"
    files.mkdir()
    for wheel in stack_wheels:
        (files / wheel.name).symlink_to(wheel)
    return files


@contextmanager
def platform_index(files: Path, allowed: list[str] | None = None) -> Iterator[str]:
    """`files` served on loopback and configured as the platform's package index."""
    admin = AdminFactory()
    with package_index(files) as url:
        team_services.update_platform_settings(actor=admin, package_index_url=url,
                                               package_extra_index_urls=[],
                                               allowed_packages=allowed or [])
        yield url


@contextmanager
def removed_afterwards(docker_client, requirements: list[str]) -> Iterator[str]:
    from workers.factory import get_runtime

    tag = get_runtime("docker").images.tag_for(requirements)
    try:
        yield tag
    finally:
        with contextlib.suppress(Exception):  # it may not exist
            docker_client.images.remove(tag, force=True)


@docker_test
def test_a_package_with_only_an_sdist_fails_the_version_by_name_and_its_setup_never_runs(
        iris, team_engineer, mlflow_model_dir, index_files, tmp_path, settings,
        django_capture_on_commit_callbacks) -> None:
    with listener() as (home, hits):
        make_sdist(index_files, "victim-sdist", "1.0",
                   calls_home(f"{home}/setup-py") + "from setuptools import setup\nsetup()\n")
        with platform_index(index_files) as index:
            upload = model_zip(mlflow_model_dir, tmp_path, [sklearn_pin(), "victim-sdist==1.0"])
            response = register(team_engineer, upload, django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.content
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    assert "no wheel of victim-sdist for CPython 3." in version.status_message
    assert f"on {index}" in version.status_message
    assert hits == []
    assert staged(settings) == kept_for_retry(version)


@docker_test
def test_a_wheel_from_the_index_builds_with_no_network_and_is_read_only_for_the_model(
        iris, team_engineer, mlflow_model_dir, index_files, tmp_path, settings,
        docker_client, django_capture_on_commit_callbacks) -> None:
    requirements = [sklearn_pin(), "victim-wheel==1.0"]
    with listener() as (home, hits):
        # The .pth file runs at every interpreter start: during the build (the import recording
        # step), in the validation sandbox and in replicas. It calls home if it can.
        make_wheel(index_files, "victim-wheel", "1.0", files={
            "victim_wheel/__init__.py": "VALUE = 42\n",
            "victim_wheel/_hook.py": calls_home(f"{home}/pth-hook"),
            "victim_wheel-hook.pth": "import victim_wheel._hook\n"})
        with platform_index(index_files), removed_afterwards(docker_client, requirements) as tag:
            upload = model_zip(mlflow_model_dir, tmp_path, requirements)
            response = register(team_engineer, upload, django_capture_on_commit_callbacks)
            version = ModelVersion.objects.get()
            assert response.status_code == 202, response.content
            assert version.status == VersionStatus.READY, version.status_message
            assert version.sandboxed is True
            assert hits == []  # neither the build nor the sandbox had a network

            image = docker_client.images.get(tag)
            assert image.labels["org.modelport.model-packages"] == "victim-wheel"
            probe = ("import json, os, pathlib, victim_wheel\n"
                     "p = pathlib.Path(victim_wheel.__file__)\n"
                     "try:\n    p.open('a').close(); wrote = True\n"
                     "except OSError:\n    wrote = False\n"
                     "site = p.parent.parent\n"
                     "print(json.dumps({'value': victim_wheel.VALUE, 'uid': os.getuid(),\n"
                     "    'owner': p.stat().st_uid, 'wrote': wrote,\n"
                     "    'site_writable': os.access(site, os.W_OK),\n"
                     "    'venv_owner': pathlib.Path('/opt/venv/bin/python').stat().st_uid,\n"
                     "    'serving_writable': os.access('/app/serving', os.W_OK),\n"
                     "    'serving_owner': pathlib.Path('/app/serving/app.py').stat().st_uid}))\n")
            # Host network on purpose, for this check only: the hook reaches the listener now,
            # which shows it did run in the build and the sandbox but had nowhere to go.
            out = docker_client.containers.run(tag, ["python", "-c", probe], entrypoint=[],
                                               network_mode="host", remove=True,
                                               labels={"modelport.test": "1"})
    found = json.loads(out.decode().strip().splitlines()[-1])
    assert found == {"value": 42, "uid": 10001, "owner": 0, "wrote": False,
                     "site_writable": False, "venv_owner": 0, "serving_writable": False,
                     "serving_owner": 0}
    assert hits == ["GET /pth-hook?uid=10001"]
    assert staged(settings) == []


@docker_test
def test_an_allow_list_that_excludes_a_dependency_fails_the_version_naming_it(
        iris, team_engineer, mlflow_model_dir, index_files, tmp_path, settings,
        django_capture_on_commit_callbacks) -> None:
    make_wheel(index_files, "victim-app", "1.0", requires=["victim-dep>=1"])
    make_wheel(index_files, "victim-dep", "1.0")
    with platform_index(index_files, allowed=["victim-app"]):
        upload = model_zip(mlflow_model_dir, tmp_path, [sklearn_pin(), "victim-app==1.0"])
        register(team_engineer, upload, django_capture_on_commit_callbacks)
    version = ModelVersion.objects.get()
    assert version.status == VersionStatus.FAILED
    assert "not in the platform's allowed packages: victim-dep (victim-app needs it)" in \
        version.status_message
    assert staged(settings) == kept_for_retry(version)


@docker_test
def test_a_failing_build_fails_the_version_with_the_reason_and_leaves_nothing_behind(
        iris, team_engineer, mlflow_model_dir, index_files, tmp_path, settings,
        docker_client, django_capture_on_commit_callbacks) -> None:
    # A wheel pip downloads but refuses to install: it would write outside site-packages.
    make_wheel(index_files, "victim-bad", "1.0", files={"../escape.py": "x = 1\n",
                                                      "victim_bad/__init__.py": ""})
    requirements = [sklearn_pin(), "victim-bad==1.0"]
    with platform_index(index_files), removed_afterwards(docker_client, requirements) as tag:
        upload = model_zip(mlflow_model_dir, tmp_path, requirements)
        register(team_engineer, upload, django_capture_on_commit_callbacks)
        version = ModelVersion.objects.get()
        assert version.status == VersionStatus.FAILED
        assert "the model's environment could not be built" in version.status_message
        assert "returned a non-zero code" in version.status_message
        assert "outside the target directory" in version.status_message
        assert staged(settings) == kept_for_retry(version)
        assert not docker_client.images.list(name=tag)
        leftovers = [c for c in docker_client.containers.list(all=True)
                     if "modelport-wheels" in " ".join(c.attrs["Config"].get("Cmd") or [])]
        assert leftovers == []


@docker_test
def test_a_validation_interrupted_by_a_killed_worker_finishes_when_the_task_runs_again(
        iris, team_engineer, mlflow_zip, settings, docker_client,
        django_capture_on_commit_callbacks) -> None:
    from registry.tasks import validate_version

    with django_capture_on_commit_callbacks(execute=False):  # the first run never happens...
        bearer_client(team_engineer).post("/api/v1/models/iris/versions/",
                                          {"file": mlflow_zip, "format": "mlflow"},
                                          format="multipart")
    version = ModelVersion.objects.get()
    # ...as if its worker was killed mid-run: status validating, a half-written output and its
    # sandbox container still there.
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.VALIDATING)
    job = Path(version.staging_dir)
    (job / "output").mkdir()
    (job / "output" / "result.json").write_text(json.dumps({"ok": False, "error": "stale"}))
    stale = docker_client.containers.create(
        settings.MODELPORT_SERVING_BASE_IMAGE, ["sleep", "600"],
        labels={"modelport.sandbox.job": job.name, "modelport.installation": installation_id(),
                "modelport.test": "1"})

    validate_version(version.pk)  # the broker redelivers the task (acks_late)

    version.refresh_from_db()
    assert version.status == VersionStatus.READY, version.status_message
    assert not job.exists()
    assert not docker_client.containers.list(all=True, filters={"id": stale.id})
    assert os.listdir(Path(settings.MODELPORT_DATA_DIR) / "staging") == []
