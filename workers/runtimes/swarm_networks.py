"""How far a Swarm target's replicas reach, for its health (``SwarmRuntime.describe()``).

Host mode: as far as the node. Overlay mode: as far as the overlay network, which must be
*internal* (no gateway out of it); a replica granted egress also joins the egress network, which
must lead out. Read from ``docker network inspect`` on the manager; no Django.
"""

from __future__ import annotations

from typing import Any

from docker.errors import NotFound

OVERLAY = "overlay"
HOST = "host"


def network_attrs(client: Any, name: str) -> dict[str, Any] | None:
    """``docker network inspect`` of `name`; None when there is no such network."""
    try:
        return client.api.inspect_network(name)
    except NotFound:
        return None


def isolation_warnings(client: Any, *, network: str, overlay_network: str,
                       egress_network: str) -> list[str]:
    """The warnings a target's health shows (none for an internal overlay and an egress
    network that leads out)."""
    if network == HOST:
        return ["Replicas share the node's network: their code reaches what the node "
                "reaches; the replica key still keeps others from calling them. Use overlay "
                "mode with an internal overlay network to fence them in."]
    warnings = []
    overlay = network_attrs(client, overlay_network)
    if overlay is None:
        warnings.append(f"The overlay network {overlay_network!r} does not exist: replicas "
                        "cannot start (docker network create -d overlay --internal "
                        f"--attachable {overlay_network}).")
    elif overlay.get("Driver") != OVERLAY:
        warnings.append(f"{overlay_network!r} is a {overlay.get('Driver')} network, not an "
                        "overlay network: replicas on other nodes cannot join it.")
    elif not overlay.get("Internal"):
        warnings.append(f"The overlay network {overlay_network!r} is not internal: replicas' "
                        "code reaches the outside world and whatever the nodes route to. "
                        "Recreate it with --internal; grant egress per deployment with an "
                        "egress network instead.")
    if egress_network:
        egress = network_attrs(client, egress_network)
        if egress is None:
            warnings.append(f"The egress network {egress_network!r} does not exist: replicas "
                            "granted egress cannot start.")
        elif egress.get("Internal"):
            warnings.append(f"The egress network {egress_network!r} is internal: replicas "
                            "granted egress reach nothing outside.")
    return warnings
