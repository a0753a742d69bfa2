"""A real single-node Docker Swarm for the Swarm runtime's tests.

``swarm`` runs ``docker swarm init --advertise-addr 127.0.0.1`` (listening on 127.0.0.1 only)
when this engine is not in a swarm yet, and ``docker swarm leave --force`` at the end of the
session — only if it was the one that joined. Networks it makes take their addresses from
198.19.0.0/16 (RFC 2544's benchmarking range), never 10/8 or 172.16/12: the swarm's address pool
(the ``ingress`` overlay) and ``docker_gwbridge``, created beforehand with such a subnet (Docker
would otherwise take a 172.x one). An engine that already is a manager is used as it
is (and left as it is). Services the tests created are removed either way, and so is the
``docker_gwbridge`` network a swarm leaves behind, when the tests joined. Import the fixture
into a test module: ``from tests.swarm_fixtures import swarm  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import missing_service

ADDRESS_POOL = "198.19.0.0/16"  # overlay networks of a swarm the tests create
GWBRIDGE_SUBNET = "198.19.255.0/24"


def remove_services(client: Any, label: str) -> None:
    for service in client.services.list(filters={"label": label}):
        with contextlib.suppress(Exception):
            service.remove()


@pytest.fixture(scope="session")
def swarm(docker_client: Any) -> Iterator[Any]:
    from docker.errors import APIError

    state = docker_client.info().get("Swarm") or {}
    # Swarm creates the docker_gwbridge bridge network on first use and keeps it after leaving.
    had_gwbridge = bool(docker_client.networks.list(names=["docker_gwbridge"]))
    joined = False
    if state.get("LocalNodeState") != "active":
        try:
            if not had_gwbridge:
                _create_gwbridge(docker_client)
            docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377",
                                     default_addr_pool=[ADDRESS_POOL], subnet_size=24)
        except APIError as exc:
            if not had_gwbridge:
                _remove_gwbridge(docker_client)
            missing_service(f"needs a Docker Swarm: docker swarm init failed: {exc}")
        joined = True
    elif not state.get("ControlAvailable"):
        missing_service("this Docker Engine is a swarm worker; the tests need a manager")
    try:
        yield docker_client
    finally:
        remove_services(docker_client, "modelport.test=1")
        if joined:
            with contextlib.suppress(APIError):
                docker_client.swarm.leave(force=True)
            if not had_gwbridge:
                _remove_gwbridge(docker_client)


def _create_gwbridge(client: Any) -> None:
    """docker_gwbridge as Docker would create it, on a benchmarking-range subnet."""
    from docker.types import IPAMConfig, IPAMPool

    client.networks.create(
        "docker_gwbridge", driver="bridge",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=GWBRIDGE_SUBNET)]),
        options={"com.docker.network.bridge.name": "docker_gwbridge",
                 "com.docker.network.bridge.enable_icc": "false",
                 "com.docker.network.bridge.enable_ip_masquerade": "true"})


def _remove_gwbridge(client: Any) -> None:
    from docker.errors import APIError

    for network in client.networks.list(names=["docker_gwbridge"]):
        with contextlib.suppress(APIError):
            network.remove()
