"""How a reconcile pass ends: the outcomes it returns, and the steps that end a pass (a failed
revision, an automatic rollback, a settled one, a stopped deployment).

``Outcome`` is a ``StrEnum``: task results, logs and tests compare outcomes with plain strings.
``Outcomes`` is a part of ``Reconciler`` (mixed in); it uses the reconciler's ``d``,
``runtime``, ``observe``, ``publish`` and ``remove_container``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from workers.runtimes import Runtime

from .. import admission, retries, revisions
from ..events import event, set_status
from ..models import Deployment, DeploymentEvent, DeploymentStatus, Revision, RevisionState

Kind = DeploymentEvent.Kind


class Outcome(StrEnum):
    """What one reconcile pass did (``deployments.tasks.reconcile``'s result)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    STARTING = "starting"
    SHADOWING = "shadowing"
    CANARY = "canary"
    LINEAR = "linear"
    CRASH_LOOP = "crash-loop"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled-back"
    NO_CAPACITY = "no-capacity"
    RETRY_SCHEDULED = "retry-scheduled"
    FAILED = "failed"
    STOPPED = "stopped"
    IDLE = "idle"
    UNREACHABLE = "unreachable"
    BUSY = "busy"
    GONE = "gone"


class Outcomes:
    d: Deployment
    runtime: Runtime
    no_room: str
    load_error: str
    observe: Callable[[], list[Any]]
    publish: Callable[..., list[Any]]
    remove_container: Callable[[str], None]
    remove: Callable[..., None]
    last_logs: Callable[..., str]
    revoke_ingest: Callable[[], None]

    def old_alive(self, target: Revision) -> list[Any]:
        return [s for s in self.observe() if s.revision != target.number and s.alive]

    def crash_looping(self, target: Revision) -> bool:
        since = timezone.now() - timedelta(minutes=10)
        if target.retried_at is not None and target.retried_at > since:
            since = target.retried_at  # a user's Retry starts the count again
        replaced = DeploymentEvent.objects.filter(
            deployment=self.d, revision=target.number, kind=Kind.WARNING,
            message__startswith="Replica ", created_at__gte=since).count()
        return replaced > settings.MODELPORT_CRASH_LOOP_RESTARTS

    def not_ready(self, target: Revision, state: Any) -> str:
        current = self.runtime.get_replica(state.id)
        logs = self.last_logs(state.id)
        cause = None  # the model's fault: it does not load, or its process exits
        if self.load_error:
            why = f"could not load the model ({self.load_error})"
        elif not current.alive:
            why = "exited"
        else:
            why = f"was not ready after {settings.MODELPORT_READY_TIMEOUT_S} s"
            cause = retries.NOT_READY_IN_TIME
        return self.fail(target, f"Replica {state.id} of revision {target.number} {why} "
                                 f"(exit code {current.exit_code}).\nLast log lines:\n{logs}",
                         self.old_alive(target), cause=cause)

    def fail(self, target: Revision, message: str, old: list[Any],
             cause: str | None = None) -> str:
        """The revision failed: remove its replicas, keep the old ones serving. ``cause``: a
        transient one (``retries.transient_cause``) is retried automatically."""
        d = self.d
        mine = [s for s in self.observe() if s.revision == target.number]
        if target.healthy_at is not None and any(s.alive for s in mine):
            # A revision that was healthy is never failed by a replacement that could not be
            # prepared: its live replicas keep serving; the next pass tries again.
            event(d, message, kind=Kind.WARNING, revision=target.number)
            set_status(d, DeploymentStatus.DEGRADED, f"Could not replace replicas of revision "
                       f"{target.number}: {message.splitlines()[0]}", d.progress)
            return Outcome.DEGRADED
        note = retries.record_failure(target, message, cause)
        event(d, message, kind=Kind.ERROR, revision=target.number)
        if note:
            event(d, note, revision=target.number)
        # The failed revision's replicas serve nothing; old ones keep serving.
        for s in mine:
            self.remove_container(s.id)
        serving = [s for s in old if s.alive]
        rev = max(s.revision for s in serving) if serving else None
        self.publish(traffic=[{"revision": rev, "percent": 100}] if rev else [], shadow={})
        return retries.hold_failed(self, target, rev)

    def auto_rollback(self, target: Revision, old_revision: int, reason: str) -> str:
        d = self.d
        event(d, reason, kind=Kind.ERROR, revision=target.number)
        Revision.objects.filter(pk=target.pk).update(state=RevisionState.FAILED)
        for s in self.observe():
            if s.revision == target.number:
                self.remove_container(s.id)
        with transaction.atomic():
            fresh = revisions.locked(d)
            source = fresh.revisions.get(number=old_revision)
            revisions.rollback_revision(fresh, source, actor=None)
        return Outcome.ROLLED_BACK

    def settle(self, target: Revision, ready: int) -> str:
        d = self.d
        now = timezone.now()
        if target.healthy_at is None or target.state != RevisionState.ACTIVE:
            # Every other revision that served or was on its way is done: an earlier one
            # interrupted mid-rollout (a stepped one included) is never left "Rolling out".
            Revision.objects.filter(deployment=d, state__in=[RevisionState.ACTIVE,
                                                             *revisions.UNFINISHED]) \
                .exclude(pk=target.pk).update(state=RevisionState.SUPERSEDED,
                                              next_step_at=None)
            Revision.objects.filter(pk=target.pk).update(
                state=RevisionState.ACTIVE, healthy_at=target.healthy_at or now)
            target.healthy_at = target.healthy_at or now
            event(d, f"Revision {target.number} is healthy: {ready} of {d.replicas} "
                     "replica(s) ready.", revision=target.number)
        admission.mark_running(owner=d.owner, running=True)
        if ready >= d.replicas:
            if d.status != DeploymentStatus.HEALTHY:
                set_status(d, DeploymentStatus.HEALTHY,
                           f"{ready} of {d.replicas} replica(s) ready (revision "
                           f"{target.number}).", 100)
            else:
                Deployment.objects.filter(pk=d.pk).update(reconciled_at=now)
            return Outcome.HEALTHY
        waiting = f" {self.no_room}" if self.no_room else ""
        set_status(d, DeploymentStatus.DEGRADED,
                   f"{ready} of {d.replicas} replica(s) ready (revision {target.number})."
                   f"{waiting}", 100)
        return Outcome.DEGRADED

    def sleep_all(self) -> str:
        """Scaled to zero (``deployments.autoscale``): drain and remove every replica but keep
        the revision, the traffic split and the route, so the next request wakes it."""
        d = self.d
        states = self.observe()
        if states:
            self.remove(states, drain=True)
            event(d, f"Idle: removed {len(states)} replica(s); the next request wakes it.")
        self.publish([])
        admission.mark_running(owner=d.owner, running=False)
        if d.status != DeploymentStatus.IDLE:
            set_status(d, DeploymentStatus.IDLE, "Idle (scaled to zero): the next request "
                                                 "starts a replica.", 100)
        return Outcome.IDLE

    def stop_all(self) -> str:
        d = self.d
        states = self.observe()
        if states:
            self.publish(states, traffic=[], shadow={})
            for s in states:
                self.remove_container(s.id)
            event(d, f"Stopped: removed {len(states)} replica(s).")
        self.publish([], traffic=[], shadow={})
        admission.mark_running(owner=d.owner, running=False)
        self.revoke_ingest()
        if d.status != DeploymentStatus.STOPPED:
            set_status(d, DeploymentStatus.STOPPED, "Stopped.", 0)
        return Outcome.STOPPED
