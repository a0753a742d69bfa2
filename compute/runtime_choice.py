"""Which runtime a deployment runs on: decided once, when it is created, and kept.

A target that follows ``MODELPORT_RUNTIME`` (none registered, or a ``docker`` target with no
endpoint and no settings — the migration's ``default``) used to re-decide "auto" on every
reconcile: Docker when it answered, else local processes. So a deployment started as local
processes before Docker came up was re-created on Docker a minute later, and its local replica
was left behind. Now "auto" is resolved when the deployment is created (``choose_runtime``),
stored on it (``Deployment.runtime``) and every reconcile uses that
(``deployments.runtime_health.deployment_runtime``). A runtime that stops answering makes the
deployment degraded (``deployments.runtime_health``); it is never moved. To move a deployment,
delete it and deploy again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from workers import factory
from workers.runtime_status import docker_answers

from .models import ExecutionTarget, RuntimeKind, TargetKind


def follows_settings(target: ExecutionTarget | None) -> bool:
    """Whether a target is this machine's Docker or local processes as MODELPORT_RUNTIME
    says (no endpoint, no settings), rather than a runtime of its own."""
    return target is None or (target.kind == TargetKind.DOCKER and not target.endpoint
                              and not (target.settings or {}))


def choose_runtime(target: ExecutionTarget | None) -> str:
    """The runtime a new deployment on ``target`` runs on, with "auto" resolved now: Docker if
    its daemon answers a fresh ping, else local processes."""
    if not follows_settings(target):
        assert target is not None
        if target.kind == TargetKind.DOCKER:
            hosts = (target.settings or {}).get("placement") == "hosts"
            return RuntimeKind.DOCKER_HOSTS if hosts else RuntimeKind.DOCKER
        return RuntimeKind(target.kind)
    configured = str(getattr(settings, "MODELPORT_RUNTIME", "auto") or "auto").lower()
    if configured in (RuntimeKind.DOCKER, RuntimeKind.LOCAL):
        return RuntimeKind(configured)
    return RuntimeKind.DOCKER if docker_answers(fresh=True) else RuntimeKind.LOCAL


def runtime_on(target: ExecutionTarget | None, kind: str) -> Any:
    """The runtime of that kind on that target (an empty kind: the target's own, "auto"
    resolved now — for what has no fixed kind)."""
    if kind == RuntimeKind.LOCAL:
        return factory.get_runtime("local")  # local processes stay local, whatever the target says
    if follows_settings(target) and kind == RuntimeKind.DOCKER:
        return factory.get_runtime("docker")
    return factory.runtime_for_target(target)


def runtime_label(kind: str) -> str:
    """What the portal shows for a runtime kind ("" before it is decided)."""
    try:
        return RuntimeKind(kind).label
    except ValueError:
        return kind or "not decided yet"
