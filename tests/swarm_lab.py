"""A real three-node Docker Swarm for tests: one manager and two workers, each a network
namespace with its own Docker Engine (``tests/netlab.py``), joined over the lab's bridge, and
the lab's TLS registry the nodes pull from. Once per session (``swarm_lab``, shared by every
module that imports it: ``from tests.swarm_lab import swarm_lab  # noqa: F401``).

``swarm init --advertise-addr <manager> --listen-addr <manager>:2377`` with the dispatcher
heartbeat shortened to ``HEARTBEAT_S`` (default 5 s: a cut-off node is declared down after a
few missed beats), overlay subnets from 198.18.0.0/16 (RFC 2544 benchmarking: never routed)
and each node's ``docker_gwbridge`` made beforehand on such a subnet too. The workers join with
the manager's worker token. Teardown stops the engines and removes the namespaces (the lab's
``close``) and the registry tags pushes left on this machine's engine.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import missing_service
from tests.registry_fixture import free_port

ADDRESS_POOL = "198.18.0.0/16"  # the overlays of the lab swarm
GWBRIDGE_SUBNET = "198.18.255.0/24"  # each node's docker_gwbridge (in its own namespace)
HEARTBEAT_S = 2  # docker swarm update --dispatcher-heartbeat 2s
FIGURES: dict[str, float] = {}  # measured times, printed at the end (never asserted)


@dataclass
class SwarmLab:
    net: Any  # tests.netlab.NetLab
    registry: str  # address:port of the lab registry
    manager: Any  # docker client of the manager's own engine
    manager_endpoint: str  # unix:// socket of the manager's engine
    clients: dict[str, Any]  # node id -> docker client of that node's engine
    hosts: dict[str, Any]  # node id -> tests.netlab.LabHost
    workers: list[str]  # node ids of the two workers
    manager_id: str

    def address(self, node_id: str) -> str:
        return self.hosts[node_id].address


def _gwbridge(client: Any) -> None:
    """docker_gwbridge on a benchmarking-range subnet, before Swarm makes one of its own."""
    from docker.types import IPAMConfig, IPAMPool

    client.networks.create(
        "docker_gwbridge", driver="bridge",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=GWBRIDGE_SUBNET)]),
        options={"com.docker.network.bridge.name": "docker_gwbridge",
                 "com.docker.network.bridge.enable_icc": "false",
                 "com.docker.network.bridge.enable_ip_masquerade": "false"})


def _wait_for(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


_SHARED: dict[str, Any] = {"users": 0}


@pytest.fixture(scope="session")
def swarm_lab(docker_client: Any) -> Iterator[SwarmLab]:
    """One lab for the whole session. Each test module that imports this fixture gets its own
    definition of it (fixtures defined in a module are that module's), so the lab itself is
    shared here and closed when the last of them is torn down."""
    if "lab" not in _SHARED:
        stack = contextlib.ExitStack()
        _SHARED["lab"] = stack.enter_context(contextlib.contextmanager(_lab)(docker_client))
        _SHARED["stack"] = stack
    _SHARED["users"] += 1
    try:
        yield _SHARED["lab"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            _SHARED.pop("lab")
            _SHARED.pop("stack").close()


def _lab(docker_client: Any) -> Iterator[SwarmLab]:
    from tests.netlab import LabUnavailable, NetLab

    try:
        net = NetLab()
    except LabUnavailable as exc:
        missing_service(f"needs network namespaces for the swarm's nodes: {exc}")
    try:
        started = time.monotonic()
        registry = net.start_registry(free_port())
        lab_hosts = [net.add_host(name) for name in ("sw-manager", "sw-worker1", "sw-worker2")]
        engines = [host.start_docker() for host in lab_hosts]
        for engine in engines:
            _gwbridge(engine)
        manager, manager_host = engines[0], lab_hosts[0]
        manager.swarm.init(advertise_addr=manager_host.address,
                           listen_addr=f"{manager_host.address}:2377",
                           default_addr_pool=[ADDRESS_POOL], subnet_size=24,
                           dispatcher_heartbeat_period=HEARTBEAT_S * 10**9)
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for host, engine in zip(lab_hosts[1:], engines[1:], strict=True):
            engine.swarm.join(remote_addrs=[f"{manager_host.address}:2377"], join_token=token,
                              advertise_addr=host.address, listen_addr=f"{host.address}:2377")
        ids = {engine.info()["Swarm"]["NodeID"]: (host, engine)
               for host, engine in zip(lab_hosts, engines, strict=True)}
        if not _wait_for(lambda: sum(n.attrs["Status"]["State"] == "ready"
                                     for n in manager.nodes.list()) == 3, timeout=60):
            states = [n.attrs["Status"] for n in manager.nodes.list()]
            pytest.fail(f"the lab swarm's nodes did not all become ready: {states}")
        FIGURES["swarm up (3 engines, init, 2 joins) s"] = time.monotonic() - started
        manager_id = manager.info()["Swarm"]["NodeID"]
        yield SwarmLab(net=net, registry=registry, manager=manager,
                       manager_endpoint=manager_host.docker_host,
                       clients={i: e for i, (_, e) in ids.items()},
                       hosts={i: h for i, (h, _) in ids.items()},
                       workers=[i for i in ids if i != manager_id], manager_id=manager_id)
    finally:
        closing = time.monotonic()
        _stop_nodes(net)
        net.close()
        FIGURES["lab teardown s"] = time.monotonic() - closing
        for image in docker_client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{net.platform_address}:"):  # the lab registry's tags
                    with contextlib.suppress(Exception):
                        docker_client.images.remove(tag, noprune=True)
        print("\nswarm lab figures:", json.dumps(FIGURES, indent=1))


def _stop_nodes(net: Any) -> None:
    """Services removed first (their tasks stop on every node at once), then the workers'
    engines, then the manager's: a worker stopping after its manager waits for it in vain."""
    hosts = list(net.hosts.values())
    if hosts and hosts[0].dockerd is not None:
        with contextlib.suppress(Exception):
            import docker

            manager = docker.DockerClient(base_url=hosts[0].docker_host, timeout=30)
            for service in manager.services.list():
                service.remove()
    for host in reversed(hosts):
        with contextlib.suppress(Exception):
            host.stop()


def running_task(lab: SwarmLab, service: str) -> dict[str, Any] | None:
    """The service's task that runs now (None while Swarm places, pulls, starts or moves it)."""
    tasks = lab.manager.api.tasks(filters={"service": service, "desired-state": "running"})
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    return running[0] if running else None


def set_availability(lab: SwarmLab, node_id: str, availability: str) -> None:
    """``docker node update --availability <active|drain|pause> <node>``."""
    node = lab.manager.nodes.get(node_id)
    node.update({**node.attrs["Spec"], "Availability": availability})
