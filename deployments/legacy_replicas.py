"""Whether an object a runtime found without an installation label is this installation's: only
when it carries the replica key of a revision this database knows (``workers.installation``
explains why). Registered with the runtimes in ``DeploymentsConfig.ready()``."""

from __future__ import annotations

import hmac

from .models import Revision


def owns_legacy_replica(deployment: str, revision: int, key: str) -> bool:
    """Whether this installation's database has that deployment's revision with that key."""
    if not key:
        return False
    known = (Revision.objects.filter(deployment__name=deployment, number=revision)
             .values_list("replica_key", flat=True).first())
    return bool(known and hmac.compare_digest(known, key))
