"""A deployment whose runtime does not answer: degraded, with the reason, never moved.

Its runtime was fixed when it was created (``compute.runtime_choice``; ``fix_runtime`` here for
deployments made before runtimes were fixed). When that runtime stops
answering — the Docker daemon stopped, a Swarm manager or a Kubernetes API server out of reach
— a reconcile cannot see or change its replicas, so it changes nothing: the deployment reads
``degraded`` with the reason (one event when that starts, one when the runtime answers again),
no revision is failed and nothing is started anywhere else. Local processes always answer;
several Docker hosts report through the database and wait for a host with room instead.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from compute.models import RuntimeKind
from compute.runtime_choice import choose_runtime, runtime_label, runtime_on
from compute.targets import deployment_target

from .models import Deployment, DeploymentEvent, DeploymentStatus

log = logging.getLogger(__name__)
PREFIX = "Runtime unreachable: "
ALWAYS_ANSWER = (RuntimeKind.LOCAL, RuntimeKind.DOCKER_HOSTS)


def fix_runtime(deployment: Any) -> str:
    """A deployment's runtime; one made before runtimes were fixed (empty) gets it decided
    now, once, and recorded (with an event)."""
    if deployment.runtime:
        return deployment.runtime
    kind = choose_runtime(deployment_target(deployment))
    if Deployment.objects.filter(pk=deployment.pk, runtime="").update(runtime=kind):
        DeploymentEvent.objects.create(
            deployment=deployment, revision=deployment.revision or None,
            message=f"Runtime fixed: {RuntimeKind(kind).label}. Every reconcile uses it from "
                    "now on; it is never moved to another runtime.")
    deployment.runtime = Deployment.objects.filter(pk=deployment.pk) \
        .values_list("runtime", flat=True).first() or kind
    return deployment.runtime


def deployment_runtime(deployment: Any) -> Any:
    """The runtime that carries out this deployment: its target's, of the kind fixed when it
    was created (``compute.runtime_choice``)."""
    return runtime_on(deployment_target(deployment), fix_runtime(deployment))


def runtime_of(d: Deployment) -> tuple[Any, str]:
    """(the deployment's runtime, "") or (None, why it could not even be built)."""
    try:
        return deployment_runtime(d), ""
    except Exception as exc:  # no SDK, bad kubeconfig, unreadable settings: reported
        log.warning("runtime of %s could not be built", d.name, exc_info=True)
        return None, f"{exc.__class__.__name__}: {exc}"


def unanswered(d: Deployment, runtime: Any) -> str:
    """Why the deployment's runtime does not answer, or "" when it does."""
    if d.runtime in ALWAYS_ANSWER:
        return ""
    try:
        if runtime.ping():
            return ""
        health = runtime.describe()
    except Exception as exc:  # noqa: BLE001 - not answering is the answer
        return f"{exc.__class__.__name__}: {exc}"
    return health.message or "it does not answer"


def mark_unreachable(d: Deployment, why: str) -> str:
    """Record that the runtime does not answer (status and one event); change nothing else."""
    where = f" on target {d.target.name}" if d.target_id and d.target else ""
    message = (f"{PREFIX}the {runtime_label(d.runtime)} runtime{where} does not answer "
               f"({why.strip()[:500]}). The deployment stays on it — nothing is moved or "
               "restarted elsewhere — and recovers when it answers again.")
    if d.stopped:
        return "unreachable"  # nothing should run; its replicas go once the runtime answers
    if d.status != DeploymentStatus.DEGRADED or not d.status_message.startswith(PREFIX):
        DeploymentEvent.objects.create(deployment=d, kind=DeploymentEvent.Kind.WARNING,
                                       revision=d.revision or None, message=message)
    if d.status != DeploymentStatus.DEGRADED or d.status_message != message:
        Deployment.objects.filter(pk=d.pk).update(status=DeploymentStatus.DEGRADED,
                                                  status_message=message[:2000],
                                                  reconciled_at=timezone.now())
        d.status, d.status_message = DeploymentStatus.DEGRADED, message[:2000]
    return "unreachable"


def note_answering(d: Deployment) -> None:
    """An event when a runtime that did not answer answers again (the reconcile that follows
    sets the status from what it finds)."""
    if d.status == DeploymentStatus.DEGRADED and d.status_message.startswith(PREFIX):
        message = f"The {runtime_label(d.runtime)} runtime answers again; reconciling."
        DeploymentEvent.objects.create(deployment=d, revision=d.revision or None,
                                       message=message)
        Deployment.objects.filter(pk=d.pk).update(status_message=message)
        d.status_message = message
