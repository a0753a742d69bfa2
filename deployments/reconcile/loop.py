"""The entry points the tasks call: one level-triggered pass for a deployment, and the removal
of a deleted deployment's replicas.

Level-triggered and idempotent: every pass looks at what the database wants and what the
runtime runs, and converges. Safe to run twice at once (per-deployment lock) and safe to kill
at any point: the next pass (beat, every few seconds) picks up from what it finds.
"""

from __future__ import annotations

import logging

from compute.models import ExecutionTarget
from compute.runtime_choice import runtime_on
from compute.targets import default_target
from workers.runtimes import Runtime

from .. import runtime_health
from ..events import event
from ..locks import deployment_lock
from ..models import Deployment, DeploymentEvent
from .outcomes import Outcome
from .reconciler import Reconciler

log = logging.getLogger(__name__)
Kind = DeploymentEvent.Kind


def reconcile_deployment(deployment_id: int, runtime: Runtime | None = None) -> str:
    """One level-triggered pass for one deployment; returns what happened."""
    with deployment_lock(deployment_id) as got:
        if not got:
            return Outcome.BUSY
        d = (Deployment.objects.select_related("team", "model").filter(pk=deployment_id)
             .first())
        if d is None:
            return Outcome.GONE
        if runtime is None:  # the deployment's target's, of the kind fixed at its creation
            runtime, why = runtime_health.runtime_of(d)
            if runtime is None:
                return runtime_health.mark_unreachable(d, why)
        why = runtime_health.unanswered(d, runtime)
        if why:  # degraded with the reason; never moved elsewhere
            return runtime_health.mark_unreachable(d, why)
        runtime_health.note_answering(d)
        name = d.name
        try:
            outcome = Reconciler(d, runtime).run()
            for _again in range(5):  # the spec changed mid-rollout: converge to the new one
                if outcome != Outcome.SUPERSEDED and not _count_moved(d):
                    break
                fresh = (Deployment.objects.select_related("team", "model")
                         .filter(pk=deployment_id).first())
                if fresh is None:  # deleted while we were starting replicas: clean up
                    remove_deployment_containers(name, runtime)
                    return Outcome.GONE
                d = fresh
                outcome = Reconciler(d, runtime).run()
            return outcome
        except Exception as exc:
            log.exception("reconcile of %s failed", d.name)
            event(d, f"Reconcile error: {exc.__class__.__name__}: {exc}", kind=Kind.ERROR,
                  revision=d.revision)
            raise


def _count_moved(d: Deployment) -> bool:
    """The scaler changed the replica count during the pass (a wake while a scale to zero
    drained): the waiting request must not wait for beat's next pass."""
    return Deployment.objects.filter(pk=d.pk).exclude(replicas=d.replicas).exists()


def remove_deployment_containers(name: str, runtime: Runtime | None = None,
                                 target_id: int | None = None, kind: str = "") -> int:
    """Remove every replica of this deployment name (after a delete) — this installation's —
    on the execution target it ran on (``target_id``; None: the default target), of the
    runtime kind fixed for it (``kind``; empty: the target's)."""
    if runtime is None:
        target = (ExecutionTarget.objects.filter(pk=target_id).first() if target_id
                  else default_target())
        runtime = runtime_on(target, kind)
    states = runtime.list_replicas(name)
    for s in states:
        runtime.remove_replica(s.id)
    return len(states)
