"""Shared fixtures: real services or an honest skip.

A test that needs PostgreSQL, Redis, Docker or Chromium asks for it through a fixture or marker
here. Without the service the test is skipped with the reason — except under
``MODELPORT_REQUIRE_SERVICES=1`` (CI), where every skip is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.fixtures", "tests.hosts_lab", "tests.oidc_provider"]

REQUIRE_SERVICES = os.environ.get("MODELPORT_REQUIRE_SERVICES") == "1"


def missing_service(reason: str) -> None:
    """Skip (on a laptop) or fail (in CI) because a real service is not available."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} — MODELPORT_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"skipped under MODELPORT_REQUIRE_SERVICES=1: {report.longrepr}")


def pytest_sessionstart(session) -> None:
    if REQUIRE_SERVICES and not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.exit("MODELPORT_REQUIRE_SERVICES=1 needs DATABASE_URL=postgres://…", returncode=3)


@pytest.fixture(autouse=True)
def _service_markers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres"):
        from django.db import connection

        if connection.vendor != "postgresql":
            missing_service("needs PostgreSQL: set DATABASE_URL=postgres://…")
    if request.node.get_closest_marker("browser") and not shutil.which("chromium"):
        missing_service("needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        missing_service("needs Redis: set REDIS_URL=redis://…")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        missing_service(f"Redis at {url} does not answer: {exc}")
    return url


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        missing_service(f"needs a Docker Engine (../shared/scripts/start-dockerd): {exc}")
    _remove_test_containers(client)
    yield client
    _remove_test_containers(client)
    client.close()


STALE_TEST_CONTAINER_S = 3600


def _remove_test_containers(client) -> None:
    """Containers tests label ``modelport.test=1`` that a crashed earlier run left: those over
    an hour old. Younger ones may belong to another test session on the same Docker host (a
    colleague's, a second checkout's), whose tests are still using them; each test removes its
    own, and CI's services_stop removes whatever is left."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for container in client.containers.list(all=True, filters={"label": "modelport.test=1"}):
        created = container.attrs.get("Created", "")
        try:
            age = (now - datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00"))
        except ValueError:
            continue
        if age.total_seconds() > STALE_TEST_CONTAINER_S:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


@pytest.fixture(autouse=True)
def _isolated_data_dir(settings, tmp_path) -> None:
    """Each test writes artifacts and state under its own temporary data dir."""
    settings.MODELPORT_DATA_DIR = tmp_path / "data"
    settings.MODELPORT_DATA_DIR.mkdir()
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "data" / "artifacts")}}}


@pytest.fixture(scope="session")
def platform_serving_image(docker_client) -> str:
    """The offline base image and the one serving image the suite shares, built once.

    The base comes from Debian packages (``platform/images/build-base.sh``: debootstrap +
    docker import, no registry pull); the serving image holds this platform's scikit-learn
    stack, so every test model saved with ``registry.sandbox.platform_requirements()`` uses it.
    """
    import subprocess
    from pathlib import Path

    from django.conf import settings

    from registry.sandbox import platform_requirements
    from workers.runtimes.images import ImageBuilder

    base = settings.MODELPORT_SERVING_BASE_IMAGE
    script = Path(__file__).resolve().parent.parent / "platform" / "images" / "build-base.sh"
    built = subprocess.run(["bash", str(script), "--tag", base], capture_output=True, text=True,
                           timeout=1200, check=False)
    if built.returncode != 0:
        pytest.fail(f"building {base} failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    lines: list[str] = []
    try:
        return ImageBuilder(docker_client, base).ensure_image(platform_requirements(),
                                                              lines.append)
    except Exception as exc:
        pytest.fail(f"serving image build failed: {exc}\n" + "\n".join(lines[-40:]))
