"""Fixtures for the container-runtime tests (no database needed).

`docker_client` skips with a reason when no Docker Engine answers, unless
MODELPORT_REQUIRE_SERVICES=1, where a missing service fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = "modelport.test"
BASE_IMAGE = os.environ.get("MODELPORT_TEST_BASE_IMAGE", "modelport/base:bookworm")
# Ports for test replicas: away from the default range so a dev server's replicas never clash.
TEST_PORT_RANGE = (21000, 21499)


require_service = missing_service


def remove_test_containers(client: Any, label: str = f"{TEST_LABEL}=1") -> None:
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)


@pytest.fixture(scope="session")
def base_image(platform_serving_image: str) -> str:
    """Built (once, offline) by the suite-wide ``platform_serving_image`` fixture."""
    return BASE_IMAGE


def _iris_requirements() -> list[str]:
    """Pinned to this interpreter's versions, like MLflow would infer (without the 20 s probe):
    the platform's own set, so the suite shares one serving image."""
    from registry.sandbox import platform_requirements

    return platform_requirements()


@pytest.fixture(scope="session")
def iris_requirements() -> list[str]:
    return _iris_requirements()


@pytest.fixture(scope="session")
def image_builder(docker_client: Any, base_image: str) -> Any:
    from workers.runtimes.images import ImageBuilder

    return ImageBuilder(docker_client, base_image)


@pytest.fixture(scope="session")
def serving_image(image_builder: Any) -> str:
    """The serving image for the iris model's requirements (built once per requirement set)."""
    lines: list[str] = []
    try:
        return image_builder.ensure_image(_iris_requirements(), lines.append)
    except Exception as exc:
        pytest.fail(f"serving image build failed: {exc}\n" + "\n".join(lines[-40:]))


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MLflow sklearn model, world-readable so uid 10001 can read the mount."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    root = tmp_path_factory.mktemp("iris")
    path = root / "model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(x, model.predict(x)),
                              input_example=x.head(2), pip_requirements=_iris_requirements())
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


@pytest.fixture
def deployment_name(docker_client: Any) -> Iterator[str]:
    """A unique deployment name; every container of it is removed after the test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    remove_test_containers(docker_client, f"modelport.deployment={name}")


@pytest.fixture
def docker_runtime(docker_client: Any, base_image: str, tmp_path: Path) -> Any:
    from workers.runtimes.docker import DockerRuntime

    return DockerRuntime(docker_client, port_range=TEST_PORT_RANGE,
                         base_image=base_image, state_dir=tmp_path / "runtime",
                         extra_labels={TEST_LABEL: "1"})

