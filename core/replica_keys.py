"""The key a replica demands of every request but its health checks (``X-Modelport-Replica-Key``).

Replicas on a network — several Docker hosts, Swarm, Kubernetes, a named Docker network — can be
reached by whatever else sits on that network, another team's model code included. The key makes
them answer only the platform: the edge, shadowing and the Django gateway send it; the replica
compares it (``serving.app``). It is derived from the platform's secret, the deployment and the
revision, so nothing is stored and one revision's key opens no other replica. A replica sees only
its own key (in its environment): its model code could call itself with it, nothing else.
Django-free: callers pass the secret (``settings.SECRET_KEY``).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Modelport-Replica-Key"
ENV = "MODELPORT_REPLICA_KEY"


def replica_key(secret: str, deployment_id: int, revision: int) -> str:
    message = f"modelport-replica-key:{int(deployment_id)}:{int(revision)}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
