"""The orphan sweep (beat, every MODELPORT_ORPHAN_SWEEP_SECONDS): replicas of this installation
that its database no longer knows are removed, each with an audit record (and an event on
its deployment when that still exists).

Orphans, on every runtime this installation uses (each enabled target's; on a target that
follows MODELPORT_RUNTIME both local processes and this machine's Docker when it answers):

- a replica of a deployment name the database does not have (deleted while the removal after
  the delete was interrupted);
- a replica of a revision its deployment does not have;
- on a target that follows MODELPORT_RUNTIME, a replica on the other of Docker and local
  processes than the one fixed for its deployment (what re-deciding "auto" used to leave
  behind: a local replica still running after its deployment was re-created on Docker).

Runtimes are scoped to this installation, so they never list another installation's replicas
(nor legacy ones it cannot prove are its own): those are left alone. Validation sandbox
containers of this installation older than the sandbox time limit (their worker was killed)
are removed too. Several Docker hosts are swept by their host workers (``report_host``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from compute.models import ExecutionTarget, RuntimeKind
from compute.runtime_choice import follows_settings, runtime_label
from compute.targets import deployment_target
from registry.sandbox import LABEL, LABEL_JOB
from teams import audit
from workers import factory
from workers.runtime_status import docker_answers
from workers.runtimes.base import LABEL_INSTALLATION

from . import admission
from .models import Deployment, DeploymentEvent, Revision

log = logging.getLogger(__name__)


@dataclass
class Place:
    """One runtime to sweep: which target it serves (None: the settings' runtime), its kind,
    and whether it is this machine's Docker or local processes as MODELPORT_RUNTIME says."""

    target: ExecutionTarget | None
    kind: str
    runtime: Any
    plain: bool


def places() -> list[Place]:
    """Every runtime this installation's deployments may run on (one that cannot be built is
    skipped and logged; several Docker hosts are their host workers' to sweep)."""
    found: list[Place] = []
    targets: list[ExecutionTarget | None] = list(ExecutionTarget.objects.enabled()) or [None]
    plain_done = False
    for target in targets:
        try:
            if follows_settings(target):
                if plain_done:
                    continue
                plain_done = True
                found.append(Place(target, RuntimeKind.LOCAL, factory.get_runtime("local"), True))
                if docker_answers(fresh=True):
                    found.append(Place(target, RuntimeKind.DOCKER, factory.get_runtime("docker"),
                                        True))
            elif target is not None and (target.settings or {}).get("placement") != "hosts":
                found.append(Place(target, target.kind, factory.runtime_for_target(target),
                                    False))
        except Exception:  # one target's trouble never stops the sweep
            log.warning("orphan sweep skipped %s: its runtime cannot be built",
                        target or "the runtime", exc_info=True)
    return found


def why_orphan(state: Any, place: Place, deployments: dict[str, Deployment],
               revisions: dict[int, set[int]]) -> str:
    """Why this installation's replica is an orphan, or "" when its deployment wants it."""
    d = deployments.get(state.deployment)
    if d is None:
        return f"its deployment {state.deployment!r} is not in this installation's database"
    if state.revision not in revisions.get(d.pk, set()):
        return f"deployment {d.name} has no revision {state.revision}"
    if place.plain and d.runtime in (RuntimeKind.DOCKER, RuntimeKind.LOCAL) \
            and d.runtime != place.kind and follows_settings(_target_of(d)):
        return (f"deployment {d.name} is fixed on {runtime_label(d.runtime)}; this replica "
                f"runs on {runtime_label(place.kind)}")
    return ""


def _target_of(d: Deployment) -> ExecutionTarget | None:
    return deployment_target(d)


def sweep() -> list[str]:
    """Remove this installation's orphans; returns the ids of what was removed."""
    removed: list[str] = []
    for place in places():
        try:
            states = place.runtime.list_replicas()  # first: what is listed was made before
        except Exception:  # a runtime that does not answer is swept later
            log.warning("orphan sweep skipped %s: the runtime does not answer",
                        place.target or place.kind, exc_info=True)
            continue
        names = {s.deployment for s in states}
        deployments = {d.name: d for d in Deployment.objects.filter(name__in=names)
                       .select_related("team", "target")}
        revisions: dict[int, set[int]] = {}
        for pk, number in Revision.objects.filter(deployment__in=deployments.values()) \
                .values_list("deployment_id", "number"):
            revisions.setdefault(pk, set()).add(number)
        for state in states:
            why = why_orphan(state, place, deployments, revisions)
            if why and state.id not in removed:
                _remove(place, state, why, deployments.get(state.deployment))
                removed.append(state.id)
        if place.kind == RuntimeKind.DOCKER and place.plain:
            removed += sweep_sandboxes(place.runtime)
    return removed


def _remove(place: Place, state: Any, why: str, d: Deployment | None) -> None:
    where = runtime_label(place.kind) + (f" on target {place.target.name}" if place.target
                                         else "")
    try:
        place.runtime.remove_replica(state.id)
    except Exception:  # tried again on the next sweep
        log.warning("could not remove orphan %s", state.id, exc_info=True)
        return
    admission.release_gpus(owner=f"deployment:{state.deployment}/{state.id}")
    message = f"Removed orphan replica {state.id} ({where}): {why}."
    log.info(message)
    audit.record(actor=None, action="deployment.orphan_removed", obj=d,
                 object_type=None if d else "deployment",
                 object_repr=None if d else state.deployment, team=d.team if d else None,
                 before={"replica": state.id, "deployment": state.deployment,
                         "revision": state.revision, "runtime": place.kind,
                         "target": place.target.name if place.target else None},
                 after={"reason": why})
    if d is not None:
        DeploymentEvent.objects.create(deployment=d, kind=DeploymentEvent.Kind.WARNING,
                                       revision=state.revision, message=message)


def sweep_sandboxes(runtime: Any) -> list[str]:
    """Validation sandboxes of this installation that outlived the sandbox time limit (their
    worker was killed mid-run): removed, with an audit record."""
    limit = timedelta(seconds=settings.MODELPORT_SANDBOX_TIMEOUT_S + 120)
    now = datetime.now(UTC)
    removed = []
    filters = [f"{LABEL}=1", f"{LABEL_INSTALLATION}={runtime.installation}"]
    for summary in runtime.client.api.containers(all=True, filters={"label": filters}):
        created = datetime.fromtimestamp(int(summary.get("Created") or 0), UTC)
        if now - created < limit:
            continue
        name = (summary.get("Names") or [summary["Id"]])[0].lstrip("/")
        try:
            runtime.client.api.remove_container(summary["Id"], force=True)
        except Exception:  # tried again on the next sweep
            log.warning("could not remove sandbox %s", name, exc_info=True)
            continue
        job = (summary.get("Labels") or {}).get(LABEL_JOB, "")
        audit.record(actor=None, action="sandbox.orphan_removed", object_type="container",
                     object_repr=name, after={"job": job, "created": created.isoformat(),
                                              "reason": "older than the sandbox time limit"})
        removed.append(name)
    return removed
