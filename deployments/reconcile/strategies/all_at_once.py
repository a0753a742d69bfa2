"""Blue/green: every new replica starts and is ready first, then traffic switches at once and
the old replicas are drained. Rollbacks use it whatever the deployment's strategy: an incident
rollback must not walk canary steps or roll one replica at a time (GPU deployments still
replace in place: they hold exactly their reserved devices)."""

from __future__ import annotations

from .rollout import Rollout


class AllAtOnce(Rollout):
    kind = "blue_green"
