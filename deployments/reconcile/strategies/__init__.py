"""Rollout strategies that move traffic in steps over time: one object per rollout type.

A stepped rollout keeps where it is on the revision (``rollout_step``, ``step_started_at``,
``next_step_at``). Every reconcile pass asks it to ``advance``: start the first step, or judge a
step whose time is up and start the next — then it returns, and beat or a countdown task
(``deployments.passes``) brings the next pass. Nothing waits between steps holding the
deployment's lock or a worker slot. ``canary`` is the one stepped type today; rolling,
blue/green and shadow rollouts finish within a pass (they wait only for their own new replicas
to be ready) and stay in the reconciler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...models import RevisionState
from .base import SteppedRollout
from .canary import Canary

if TYPE_CHECKING:
    from ...models import Deployment, Revision
    from ..reconciler import Reconciler

__all__ = ["STEPPED", "Canary", "SteppedRollout", "describe", "for_rollout", "in_progress"]

STEPPED: dict[str, type[SteppedRollout]] = {"canary": Canary}


def _kind(d: Deployment, target: Revision) -> type[SteppedRollout] | None:
    if (target.spec or {}).get("rollback_of"):  # a rollback switches at once, never in steps
        return None
    return STEPPED.get(d.strategy_type)


def for_rollout(rec: Reconciler, target: Revision, old: list[Any], *,
                first_rollout: bool) -> SteppedRollout | None:
    """The stepped rollout that moves traffic from the ``old`` replicas to ``target``, if the
    deployment's strategy is one and there is traffic to move."""
    kind = _kind(rec.d, target)
    if kind is None or not old or not first_rollout:
        return None
    return kind(rec, target)


def in_progress(rec: Reconciler, target: Revision) -> SteppedRollout | None:
    """The stepped rollout whose step runs now (its new replicas are guarded), if any."""
    kind = _kind(rec.d, target)
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
    kind = _kind(d, revision)
    index = revision.rollout_step
    if kind is None or index is None or revision.healthy_at is not None:
        return None
    steps = kind.steps_of(d)
    if index >= len(steps):
        return None
    return {"strategy": kind.kind, "step": index + 1, "steps": len(steps),
            "percent": steps[index], "step_started_at": revision.step_started_at,
            "next_step_at": revision.next_step_at}
