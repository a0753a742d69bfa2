"""Revisions: the immutable spec a deployment runs, written by the verbs and by the
reconciler's automatic rollback; the model files a revision's replicas mount come from
``registry.model_dirs.model_dir_for`` (re-exported here)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max

from registry.model_dirs import model_dir_for
from registry.models import ModelVersion
from teams import audit

from . import admission, passes
from .events import event
from .models import Deployment, DeploymentStatus, Revision, RevisionState

__all__ = ["model_dir_for"]  # re-exported: deployments.reconcile imports it from here

# What the audit log snapshots of a deployment before and after a verb.
DEPLOYMENT_FIELDS = ["name", "team", "model", "version", "alias", "replicas", "autoscaling", "cpu",
                     "memory_mb", "gpus", "strategy", "stopped", "revision", "target", "runtime",
                     "egress", "egress_reason"]

# A revision in these states is still on its way to taking the traffic.
UNFINISHED = (RevisionState.PENDING, RevisionState.ROLLING_OUT)


def locked(d: Deployment) -> Deployment:
    """The deployment's row, locked for the rest of the transaction."""
    return Deployment.objects.select_for_update(of=("self",)) \
        .select_related("team", "model", "version") \
        .get(pk=d.pk)


def spec_of(d: Deployment) -> dict[str, Any]:
    """What a revision records. An autoscaled deployment's count is the scaler's, not the
    revision's: left out, so scaling never makes a revision."""
    spec = {"model": d.model.name, "version": d.version.version if d.version else None,
            "alias": d.alias or None, "replicas": d.replicas,
            "resources": {"cpu": float(d.cpu), "memory_mb": d.memory_mb, "gpus": d.gpus},
            "strategy": d.strategy}
    if d.autoscaling:
        del spec["replicas"]
    if d.egress:  # only when granted: revisions made before egress existed compare equal
        spec["egress"] = True
    return spec


def new_revision(d: Deployment, target: ModelVersion, *, actor, reason: str,
                 rollback_of: int | None = None) -> Revision:
    number = (d.revisions.aggregate(top=Max("number"))["top"] or 0) + 1
    # The revision this one replaces never finishes its rollout: the reconciler only ever
    # rolls out the desired revision. Say so now, with its step state cleared, rather than
    # leave it "Rolling out" (or pending) for good.
    d.revisions.filter(number=d.revision, state__in=UNFINISHED).update(
        state=RevisionState.SUPERSEDED, next_step_at=None)
    spec = spec_of(d)
    spec["model_version"] = target.version
    if rollback_of is not None:
        # The reconciler switches a rollback's traffic at once (blue/green), whatever the
        # deployment's strategy: an incident rollback must not walk canary steps.
        spec["rollback_of"] = rollback_of
    revision = Revision.objects.create(deployment=d, number=number, model_version=target,
                                       spec=spec, reason=reason[:200], created_by=actor)
    d.revision = number
    d.status, d.progress = DeploymentStatus.PENDING, 0
    d.status_message = f"Revision {number}: {reason}"
    d.save()
    event(d, f"Revision {number} created ({reason}): {target}.", revision=number)
    return revision


@transaction.atomic
def rollback_revision(d: Deployment, source: Revision, *, actor) -> Deployment:
    """A new revision of the locked deployment ``d`` with the spec and model version of the
    earlier revision ``source``; audited, reconciled after commit. Used by the rollback verb
    (after its role check) and by the reconciler's automatic rollback (``actor`` None)."""
    before = audit.snapshot(d, DEPLOYMENT_FIELDS)
    spec = source.spec
    res = spec.get("resources") or {}
    d.alias = spec.get("alias") or ""
    d.version = None if d.alias else source.model_version
    d.replicas = int(spec.get("replicas") or d.replicas)
    d.cpu = Decimal(str(res.get("cpu", d.cpu)))
    d.memory_mb = int(res.get("memory_mb", d.memory_mb))
    d.gpus = int(res.get("gpus", d.gpus))
    d.strategy = spec.get("strategy") or d.strategy
    if (d.strategy or {}).get("type") == "shadow":  # a rollback takes the traffic, never shadows
        d.strategy = {"type": "rolling"}
    if not d.stopped:
        admission.admit_spec(team=d.team, owner=d.owner, replicas=d.replicas, cpu=d.cpu,
                             memory_mb=d.memory_mb, gpus=d.gpus, actor=actor)
    new_revision(d, source.model_version, actor=actor,
                 reason=f"rollback to revision {source.number}", rollback_of=source.number)
    audit.record(actor=actor, action="deployment.rolled_back", obj=d, team=d.team,
                 before=before, after=audit.snapshot(d, DEPLOYMENT_FIELDS))
    passes.reconcile_on_commit(d)
    return d
