"""get_runtime() reads Django settings lazily and honours the runtime choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers.runtimes import get_runtime
from workers.runtimes.local import LocalRuntime

pytest.importorskip("pytest_django")


def test_local_runtime_from_settings(settings: Any, tmp_path: Path) -> None:
    settings.MODELPORT_RUNTIME = "local"
    settings.MODELPORT_DATA_DIR = tmp_path
    settings.MODELPORT_PORT_RANGE = (21700, 21710)
    rt = get_runtime()
    assert isinstance(rt, LocalRuntime)
    assert rt.name == "local" and rt.sandboxed is False
    assert (rt.ports.start, rt.ports.end) == (21700, 21710)
    assert rt.state_dir == tmp_path / "runtime"


def test_explicit_name_wins_and_unknown_is_rejected(settings: Any, tmp_path: Path) -> None:
    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DATA_DIR = tmp_path
    assert get_runtime("local").name == "local"
    with pytest.raises(ValueError):
        get_runtime("kubernetes-someday")


@pytest.mark.docker
def test_docker_runtime_from_settings(settings: Any, tmp_path: Path, docker_client: Any) -> None:
    settings.MODELPORT_RUNTIME = "auto"
    settings.MODELPORT_DATA_DIR = tmp_path
    settings.MODELPORT_DOCKER_NETWORK = "host"
    settings.MODELPORT_PORT_RANGE = (21800, 21810)
    settings.MODELPORT_SERVING_BASE_IMAGE = "modelport/base:bookworm"
    rt = get_runtime()
    assert rt.name == "docker" and rt.sandboxed is True
    assert rt.ping()
    assert rt.images.base_image == "modelport/base:bookworm"
    assert rt.network == "host"
