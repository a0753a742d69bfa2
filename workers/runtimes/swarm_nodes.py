"""What the Swarm runtime reads about a swarm's nodes and a service's tasks: where a task runs
(its node's address, for host-mode URLs on a multi-node swarm), which task is current, and a
node as ``NodeInfo``. No Django.

Why node addresses: in host mode a replica listens on its node's network, and which node runs
it is Swarm's choice, made after the service exists (and made again when the node is drained or
lost). So the URL is read from the current task's ``NodeID`` → the node's ``Status.Addr`` (the
address it advertised when it joined), one ``docker node ls`` per listing, cached briefly.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .base import NodeInfo

WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - names, not binds
NODE_CACHE_S = 3.0


class NodeAddresses:
    """``NodeID`` → the address the node advertised, from one node listing, kept for
    ``ttl`` seconds (a node that joined meanwhile triggers a new listing)."""

    def __init__(self, client: Any, ttl: float = NODE_CACHE_S) -> None:
        self.client = client
        self.ttl = ttl
        self._lock = threading.Lock()
        self._addresses: dict[str, str] = {}
        self._read_at = float("-inf")

    def address(self, node_id: str) -> str:
        if not node_id:
            return ""
        with self._lock:
            stale = time.monotonic() - self._read_at > self.ttl
            if stale or node_id not in self._addresses:
                self._addresses = {n.get("ID", ""): node_address(n)
                                   for n in self.client.api.nodes()}
                self._read_at = time.monotonic()
            return self._addresses.get(node_id, "")


def node_address(attrs: dict[str, Any]) -> str:
    """The address a node advertised. A manager initialised without ``--advertise-addr`` may
    report ``0.0.0.0`` there; its manager address (``host:2377``) names it then."""
    address = str((attrs.get("Status") or {}).get("Addr") or "")
    if address in ("", *WILDCARDS):
        manager = str((attrs.get("ManagerStatus") or {}).get("Addr") or "")
        address = manager.rsplit(":", 1)[0] if manager else ""
    return address


def current_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task Swarm wants running (the newest, if a replacement overlaps), else the newest
    (Swarm gave up: max restart attempts reached)."""
    if not tasks:
        return None
    newest = sorted(tasks, key=lambda t: (t.get("CreatedAt") or "",
                                          (t.get("Version") or {}).get("Index", 0)),
                    reverse=True)
    for task in newest:
        # A replacement waiting out the restart delay is desired "ready", then "running".
        if task.get("DesiredState") in ("running", "ready"):
            return task
    return newest[0]


def node_info(attrs: dict[str, Any]) -> NodeInfo:
    description = attrs.get("Description") or {}
    resources = description.get("Resources") or {}
    gpus = 0
    for item in resources.get("GenericResources") or []:
        discrete = item.get("DiscreteResourceSpec") or {}
        named = item.get("NamedResourceSpec") or {}
        if "GPU" in str(discrete.get("Kind", "")).upper():
            gpus += int(discrete.get("Value") or 0)
        elif "GPU" in str(named.get("Kind", "")).upper():
            gpus += 1
    spec = attrs.get("Spec") or {}
    status = attrs.get("Status") or {}
    return NodeInfo(
        name=str(description.get("Hostname") or attrs.get("ID", "")[:12]),
        role=str(spec.get("Role") or ""),
        state=str(status.get("State") or ""),
        available=spec.get("Availability") == "active" and status.get("State") == "ready",
        cpu=int(resources.get("NanoCPUs") or 0) / 1e9,
        memory_mb=int(resources.get("MemoryBytes") or 0) // (1024 * 1024),
        gpus=gpus,
    )
