"""The key a replica demands of every request but its health checks (``X-Modelport-Replica-Key``).

Replicas on a network — several Docker hosts, Swarm, Kubernetes, a named Docker network — can be
reached by whatever else sits on that network, another team's model code included. The key makes
them answer only the platform: the edge, shadowing and the Django gateway send it; the replica
compares it (``serving.app``). Each revision gets its own random key, kept with the revision in
the database (which the platform's processes, host workers included, already share): one
revision's key opens no other replica, and rotating the platform's secret key breaks nothing. A
replica sees only its own key (in its environment): its model code could call itself with it,
nothing else.
"""

from __future__ import annotations

import secrets

HEADER = "X-Modelport-Replica-Key"
ENV = "MODELPORT_REPLICA_KEY"


def new_key() -> str:
    return secrets.token_hex(32)
