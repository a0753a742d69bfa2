"""get_runtime() reads Django settings lazily and honours the runtime choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from teams.installation import installation_id
from workers.factory import get_runtime
from workers.runtimes.local import LocalRuntime

pytest.importorskip("pytest_django")
# Runtimes built from settings carry this installation's id, read from the database.
pytestmark = pytest.mark.django_db


def test_local_runtime_from_settings(settings: Any, tmp_path: Path) -> None:
    settings.MODELPORT_RUNTIME = "local"
    settings.MODELPORT_DATA_DIR = tmp_path
    rt = get_runtime()
    assert isinstance(rt, LocalRuntime)
    assert rt.name == "local" and rt.sandboxed is False
    assert rt.installation == installation_id() and rt.legacy_owner is not None
    assert rt.state_dir == tmp_path / "runtime"
    assert rt.socket_dir == tmp_path / "runtime" / "local-sockets"


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


@pytest.mark.docker
def test_docker_runtime_defaults_to_replicas_without_a_network(settings: Any, tmp_path: Path,
                                                               docker_client: Any) -> None:
    settings.MODELPORT_RUNTIME = "docker"
    settings.MODELPORT_DATA_DIR = tmp_path
    del settings.MODELPORT_DOCKER_NETWORK  # the default, as `make run` has it
    settings.MODELPORT_INGEST_SOCKET = ""
    rt = get_runtime()
    assert rt.network == "none"
    assert rt.socket_dir == tmp_path / "run" / "replicas"
    assert rt.ingest_socket == tmp_path / "run" / "ingest" / "ingest.sock"
    assert rt.egress_network == "host"


def test_a_remote_docker_engine_gets_replicas_on_the_host_network(settings: Any) -> None:
    """Socket files exist only on the platform's own machine: an engine elsewhere runs its
    replicas on a network, where they demand their replica key."""
    from workers.factory import replica_network

    settings.MODELPORT_DOCKER_NETWORK = "none"
    assert replica_network(settings, "tcp://docker-2.internal:2376") == "host"
    assert replica_network(settings, "ssh://ops@docker-2.internal") == "host"
    assert replica_network(settings, "unix:///var/run/docker.sock") == "none"
    assert replica_network(settings, None) == "none"
