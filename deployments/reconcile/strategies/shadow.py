"""Shadow: the new revision runs beside the one that serves; the gateways mirror a share of
requests to it and compare its answers, while every caller is answered by the serving revision.
With nothing serving yet, the new revision simply takes the traffic. A shadow ends (its
replicas removed, its numbers in an event) when it stops being the desired revision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils import timezone

from ... import admission
from ...events import event, set_status
from ...models import (
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Revision,
    RevisionState,
    ShadowSample,
)
from ..outcomes import Outcome
from ..replicas import probe
from .rollout import Rollout

if TYPE_CHECKING:
    from ..reconciler import Reconciler

Kind = DeploymentEvent.Kind


class Shadow(Rollout):
    kind = "shadow"

    def __init__(self, rec: Reconciler, target: Revision) -> None:
        super().__init__(rec, target)
        # The revision that serves now is the one the target shadows (healed if it died).
        self.serving = rec.serving_revision(target)

    def switch(self, old: list[Any], states: list[Any], ready: int, *,
               first_rollout: bool) -> str | None:
        if self.serving is None:  # nothing serves yet: the new revision takes the traffic
            return None
        return self.mirror(self.target, self.serving, ready)

    def mirror(self, target: Revision, serving: Revision, ready: int) -> str:
        """The target revision's replicas are up: keep 100% of traffic on the serving revision
        and let the gateways mirror the configured share of requests to the target."""
        d, rec = self.d, self.rec
        rec.heal(serving, rec.observe())
        percent = int((d.strategy or {}).get("percent", 100))
        config = {"revision": target.number, "percent": percent,
                  "tolerance": (d.strategy or {}).get("tolerance", 1e-6)}
        states = rec.publish(traffic=[{"revision": serving.number, "percent": 100}],
                             shadow=config)
        if target.state != RevisionState.SHADOW:
            Revision.objects.filter(pk=target.pk).update(state=RevisionState.SHADOW)
            target.state = RevisionState.SHADOW
            event(d, f"Shadow: mirroring {percent}% of requests to revision {target.number}; "
                     f"revision {serving.number} keeps 100% of traffic and answers every "
                     "caller.", kind=Kind.TRAFFIC, revision=target.number)
        admission.mark_running(owner=d.owner, running=True)
        want = int((serving.spec or {}).get("replicas") or d.replicas)
        stable = sum(1 for s in states if s.revision == serving.number and s.alive
                     and probe(s.url))
        message = (f"Revision {serving.number} serves ({stable} of {want} replica(s) ready); "
                   f"revision {target.number} shadows {percent}% of requests ({ready} of "
                   f"{d.replicas} replica(s) ready).")
        whole = stable >= want and ready >= d.replicas
        status = DeploymentStatus.HEALTHY if whole else DeploymentStatus.DEGRADED
        if d.status != status or d.status_message != message:
            set_status(d, status, message, 100)
        else:
            Deployment.objects.filter(pk=d.pk).update(reconciled_at=timezone.now())
        return Outcome.SHADOWING


def end_stale_shadows(rec: Reconciler, target: Revision, states: list[Any]) -> list[Any]:
    """Stop mirroring to, and remove, shadow revisions that are no longer the desired one
    (promoted, rolled back or replaced by a newer shadow). They carry no traffic: no drain."""
    d = rec.d
    stale = Revision.objects.filter(deployment=d, state=RevisionState.SHADOW) \
        .exclude(pk=target.pk)
    numbers = set(stale.values_list("number", flat=True))
    mirrored = (d.shadow or {}).get("revision")
    if mirrored is not None and mirrored != target.number:
        numbers.add(int(mirrored))
    if not numbers:
        return states
    if d.shadow:
        rec.publish(states, shadow={})
    for number in sorted(numbers):
        gone = [s for s in states if s.revision == number]
        summary = ShadowSample.objects.summary(d.pk, number)
        agreement = ("n/a" if summary["agreement"] is None
                     else f"{summary['agreement']:.1%}")
        event(d, f"Shadow revision {number} ended: {summary['requests']} mirrored "
                 f"request(s), {summary['errors']} error(s), p95 "
                 f"{summary['p95_ms'] or 0:.1f} ms, prediction agreement {agreement}; "
                 f"removing its {len(gone)} replica(s).", kind=Kind.TRAFFIC, revision=number)
        for s in gone:
            rec.remove_container(s.id)
    Revision.objects.filter(deployment=d, state=RevisionState.SHADOW,
                            number__in=numbers).update(state=RevisionState.SUPERSEDED)
    states = [s for s in states if s.revision not in numbers]
    rec.publish(states)
    return states
