"""Rollout strategies: one object per rollout type, chosen from ``STRATEGIES`` by the
deployment's ``strategy.type``.

Every type starts the new revision's replicas and then, once they are up, says what happens to
traffic (``Rollout.start`` and ``Rollout.switch``): rolling replaces one replica at a time,
blue/green switches at once, shadow mirrors requests to the new revision while the serving one
answers, canary and linear move traffic in steps. A stepped rollout keeps where it is on the
revision (``rollout_step``, ``step_started_at``, ``next_step_at``). Every reconcile pass asks it to
``advance``: start the first step, or judge a step whose time is up and start the next — then
it returns, and beat or a countdown task (``deployments.passes``) brings the next pass. Nothing
waits between steps holding the deployment's lock or a worker slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...models import RevisionState
from .all_at_once import AllAtOnce
from .base import SteppedRollout
from .canary import Canary
from .linear import Linear
from .rolling import Rolling
from .rollout import Rollout
from .shadow import Shadow, end_stale_shadows

if TYPE_CHECKING:
    from ...models import Deployment, Revision
    from ..reconciler import Reconciler

__all__ = [
    "STEPPED",
    "STRATEGIES",
    "AllAtOnce",
    "Canary",
    "Linear",
    "Rolling",
    "Rollout",
    "Shadow",
    "SteppedRollout",
    "describe",
    "end_stale_shadows",
    "for_revision",
    "in_progress",
]

# Keys are the names ``deployments.models.STRATEGIES`` validates.
STRATEGIES: dict[str, type[Rollout]] = {
    "rolling": Rolling,
    "blue_green": AllAtOnce,
    "canary": Canary,
    "linear": Linear,
    "shadow": Shadow,
}
STEPPED: dict[str, type[SteppedRollout]] = {
    name: kind for name, kind in STRATEGIES.items() if issubclass(kind, SteppedRollout)}


def _kind(d: Deployment, target: Revision) -> type[Rollout]:
    if (target.spec or {}).get("rollback_of"):  # a rollback switches at once, never in steps
        return AllAtOnce
    return STRATEGIES.get(d.strategy_type, AllAtOnce)


def for_revision(rec: Reconciler, target: Revision) -> Rollout:
    """The rollout that brings ``target`` up and moves traffic to it."""
    return _kind(rec.d, target)(rec, target)


def _stepped(d: Deployment, target: Revision) -> type[SteppedRollout] | None:
    kind = _kind(d, target)
    return kind if issubclass(kind, SteppedRollout) else None


def in_progress(rec: Reconciler, target: Revision) -> SteppedRollout | None:
    """The stepped rollout whose step runs now (its new replicas are guarded), if any."""
    kind = _stepped(rec.d, target)
    if kind is None or target.rollout_step is None or target.healthy_at is not None:
        return None
    rollout = kind(rec, target)
    return rollout if target.rollout_step < len(rollout.steps) else None


def describe(d: Deployment, revision: Revision | None) -> dict[str, Any] | None:
    """Where the current revision's stepped rollout is (for the API and the portal), or None
    when none runs."""
    if revision is None or revision.state not in (RevisionState.PENDING,
                                                      RevisionState.ROLLING_OUT):
        return None
    kind = _stepped(d, revision)
    index = revision.rollout_step
    if kind is None or index is None or revision.healthy_at is not None:
        return None
    steps = kind.steps_of(d)
    if index >= len(steps):
        return None
    return {"strategy": kind.kind, "step": index + 1, "steps": len(steps),
            "percent": steps[index], "step_started_at": revision.step_started_at,
            "next_step_at": revision.next_step_at}
