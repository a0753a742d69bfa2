"""What scopes the runtimes to this installation (``teams.installation``): its id, and the
proof that an object made before installation ids existed is this installation's.

Such a legacy object carries no installation label, so a name alone cannot say whose it is —
that is how a fresh installation used to adopt another's container. It is this installation's
only when its environment holds the replica key of a revision this installation's database
knows for that deployment and revision number: 256 random bits no other installation has.
Objects of revisions without a key (made before replica keys), or on Kubernetes (whose keys
sit in Secrets), are left alone (docs/deployments.md says how to remove them).

Revisions are the deployments app's, which sits above this one: it registers the check
(``register_legacy_owner``) from ``DeploymentsConfig.ready()``. Until then nothing legacy is
this installation's, the safe answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from teams.installation import installation_id

__all__ = ["installation_id", "owns_legacy_replica", "register_legacy_owner", "runtime_scope"]

LegacyOwner = Callable[[str, int, str], bool]
_legacy_owner: LegacyOwner | None = None


def register_legacy_owner(check: LegacyOwner) -> None:
    """Set what says whether a legacy object (deployment, revision, replica key) is ours."""
    global _legacy_owner
    _legacy_owner = check


def owns_legacy_replica(deployment: str, revision: int, key: str) -> bool:
    """Whether this installation's database has that deployment's revision with that key
    (False while no check is registered)."""
    return _legacy_owner is not None and _legacy_owner(deployment, revision, key)


def runtime_scope() -> dict[str, Any]:
    """The keyword arguments that scope a runtime to this installation."""
    return {"installation": installation_id(), "legacy_owner": owns_legacy_replica}
