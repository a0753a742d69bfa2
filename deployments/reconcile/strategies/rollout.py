"""What every rollout type shares: how the new revision's replicas are started (all at once,
then switched; or one at a time, each taking its share of traffic) and the hook that moves
traffic once they are all up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import retries
from ...events import event, set_status
from ...hosts_runtime import PlacementPending
from ...models import DeploymentEvent, DeploymentStatus, Revision
from ..outcomes import Outcome

if TYPE_CHECKING:
    from ..reconciler import Reconciler

Kind = DeploymentEvent.Kind


class Rollout:
    """Moves a deployment from its ``old`` replicas to the ``target`` revision's."""

    kind = ""
    # The revision that keeps all traffic while the target runs beside it (shadow), or None.
    serving: Revision | None = None

    def __init__(self, rec: Reconciler, target: Revision) -> None:
        self.rec, self.d, self.target = rec, rec.d, target

    def one_at_a_time(self, old: list[Any], *, first_rollout: bool) -> bool:
        """Whether the missing replicas start one at a time, each replacing an old one. GPU
        deployments hold exactly their reserved devices: no surge, replace in place."""
        return bool(self.d.gpus) and self.serving is None and bool(old) and first_rollout

    def start(self, model_dir: str, missing: list[int], ours: dict[int, Any], old: list[Any],
              *, first_rollout: bool) -> str | None:
        """Start the ``missing`` replicas; an outcome ends the pass, None goes on to traffic."""
        if self.one_at_a_time(old, first_rollout=first_rollout):
            return self.roll(model_dir, missing, ours, old)
        return self.rec.start_and_wait(self.target, model_dir, missing, ours,
                                       first_rollout=first_rollout)

    def switch(self, old: list[Any], states: list[Any], ready: int, *,
               first_rollout: bool) -> str | None:
        """Every new replica is up and ``ready`` answer: an outcome to end the pass here, or
        None for the reconciler to switch 100 % to the target and drain ``old``."""
        return None

    def roll(self, model_dir: str, missing: list[int], ours: dict[int, Any],
             old: list[Any]) -> str | None:
        """One new replica at a time: start, wait ready, shift its share of traffic, drain and
        remove one old replica."""
        rec, d, target = self.rec, self.d, self.target
        old_revision = rec.traffic_revision(old)
        remaining = sorted(old, key=lambda s: (s.revision, s.replica))
        for n, index in enumerate(missing, 1):
            if d.gpus and remaining:  # free this replica's devices first
                rec.remove([remaining.pop(0)], drain=True)
                rec.publish()
            try:
                state = rec.start(target, model_dir, index)
            except PlacementPending as exc:
                return rec.capacity_short(target, exc) or Outcome.NO_CAPACITY
            except Exception as exc:  # noqa: BLE001
                return rec.fail(target, f"Starting replica {index} failed: {exc}",
                                rec.old_alive(target), cause=retries.transient_cause(exc))
            if not rec.wait(target, state):
                if not rec.still_current():
                    return Outcome.SUPERSEDED
                return rec.not_ready(target, state)
            ready_new = len(ours) + n
            percent = min(100, round(100 * ready_new / d.replicas))
            traffic = [{"revision": target.number, "percent": percent}]
            if percent < 100:
                traffic.append({"revision": old_revision, "percent": 100 - percent})
            rec.publish(traffic=traffic)
            event(d, f"Traffic: {percent}% to revision {target.number}.", kind=Kind.TRAFFIC,
                  revision=target.number)
            set_status(d, DeploymentStatus.STARTING,
                       f"Rolling out revision {target.number}: {ready_new} of {d.replicas} "
                       "replicas ready.", 30 + int(60 * ready_new / d.replicas))
            if remaining and percent < 100:
                rec.remove([remaining.pop(0)], drain=True)
                rec.publish()
        return None
