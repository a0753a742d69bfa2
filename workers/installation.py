"""What scopes the runtimes to this installation (``teams.installation``): its id, and the
proof that an object made before installation ids existed is this installation's.

Such a legacy object carries no installation label, so a name alone cannot say whose it is —
that is how a fresh installation used to adopt another's container. It is this installation's
only when its environment holds the replica key of a revision this installation's database
knows for that deployment and revision number: 256 random bits no other installation has.
Objects of revisions without a key (made before replica keys), or on Kubernetes (whose keys
sit in Secrets), are left alone (docs/deployments.md says how to remove them).
"""

from __future__ import annotations

import hmac
from typing import Any

from teams.installation import installation_id

__all__ = ["installation_id", "owns_legacy_replica", "runtime_scope"]


def owns_legacy_replica(deployment: str, revision: int, key: str) -> bool:
    """Whether this installation's database has that deployment's revision with that key."""
    from deployments.models import Revision

    if not key:
        return False
    known = (Revision.objects.filter(deployment__name=deployment, number=revision)
             .values_list("replica_key", flat=True).first())
    if not known:
        return False
    return hmac.compare_digest(known, key)


def runtime_scope() -> dict[str, Any]:
    """The keyword arguments that scope a runtime to this installation."""
    return {"installation": installation_id(), "legacy_owner": owns_legacy_replica}
