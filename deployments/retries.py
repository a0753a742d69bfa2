"""Failed revisions recover.

- **Retry** (the verb ``services.retry``: API, portal button, CLI; and ``services.start`` of a
  stopped deployment whose revision had failed) re-runs the current revision: engineer or
  above, audited.
- **Automatic retry**: a failure with a transient cause — the image missing, the runtime not
  answering, a live replica not ready in time — is retried without a user after
  ``MODELPORT_RETRY_BACKOFF_S`` seconds, doubling up to ``MODELPORT_RETRY_BACKOFF_MAX_S``, at most
  ``MODELPORT_RETRY_MAX_ATTEMPTS`` times. The attempt count and the next attempt's time live on
  the revision; the deployment is ``pending`` meanwhile and says when it retries. Failures that
  are the model's or the spec's (the model does not load, the container exits, a requirement is
  refused) wait for a user.
- While a revision is failed, replicas of other revisions that nothing routes to (left by an
  interrupted rollout or a failed removal) are removed.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings
from django.utils import timezone
from docker.errors import ImageNotFound

from .events import event, set_status
from .models import Deployment, DeploymentEvent, DeploymentStatus, Revision, RevisionState
from .passes import schedule_pass

if TYPE_CHECKING:
    from .reconcile.outcomes import Outcomes
    from .reconcile.reconciler import Reconciler

Kind = DeploymentEvent.Kind
UNREACHABLE = "the runtime did not answer"
# Text of errors that wrap their cause as a message (image builds, wheel fetches).
TRANSIENT_TEXT = [
    (re.compile(r"base image \S+ is missing"), "the base image is missing"),
    (re.compile(r"image \S+ not found"), "the serving image is missing"),
    (re.compile(r"connection (aborted|refused|reset)|timed out|temporarily unavailable",
                re.IGNORECASE), UNREACHABLE),
]
NOT_READY_IN_TIME = "a live replica was not ready in time"


# --- What is worth retrying -------------------------------------------------------------------
def transient_cause(exc: BaseException) -> str | None:
    """A short reason when ``exc`` may well pass if tried again unchanged, else None (only a
    user can fix it). Follows the exception's causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _transient(current)
        if reason:
            return reason
        current = current.__cause__ or current.__context__
    return None


def _transient(exc: BaseException) -> str | None:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return UNREACHABLE
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return UNREACHABLE
    if isinstance(exc, ImageNotFound):
        return "the serving image is missing"
    text = str(exc)
    for pattern, reason in TRANSIENT_TEXT:
        if pattern.search(text):
            return reason
    return None


def backoff_s(attempt: int) -> float:
    """Seconds before automatic retry number ``attempt`` (1, 2, ...)."""
    base = settings.MODELPORT_RETRY_BACKOFF_S
    return min(settings.MODELPORT_RETRY_BACKOFF_MAX_S, base * 2 ** max(0, attempt - 1))


# --- The reconciler's side ------------------------------------------------------------------
def record_failure(target: Revision, message: str, cause: str | None) -> str:
    """Mark the revision failed with its reason and, for a transient cause with attempts left,
    schedule an automatic retry. Returns what to tell the user about retrying ("" if nothing)."""
    lines = message.strip().splitlines()
    fields: dict[str, Any] = {"state": RevisionState.FAILED, "next_retry_at": None,
                              "failure": (lines[0] if lines else "")[:2000]}
    limit = settings.MODELPORT_RETRY_MAX_ATTEMPTS
    note = ""
    if cause and target.retry_attempts < limit:
        attempt = target.retry_attempts + 1
        wait = backoff_s(attempt)
        fields.update(retry_attempts=attempt, next_retry_at=timezone.now() + timedelta(
            seconds=wait))
        note = (f"Automatic retry {attempt} of {limit} in {wait:.0f} s: {cause} (a transient "
                "cause).")
    elif cause and limit:
        note = (f"Not retried automatically: {limit} automatic retries failed ({cause}). Retry "
                "once the cause is fixed.")
    Revision.objects.filter(pk=target.pk).update(**fields)
    for key, value in fields.items():
        setattr(target, key, value)
    return note


def due(target: Revision) -> bool:
    return (target.state == RevisionState.FAILED and target.next_retry_at is not None
            and target.next_retry_at <= timezone.now())


def _rerun(revision: Revision, *, attempts: int) -> None:
    fields = {"state": RevisionState.PENDING, "next_retry_at": None,
              "retried_at": timezone.now(), "retry_attempts": attempts, "rollout_step": None,
              "step_started_at": None, "next_step_at": None}
    Revision.objects.filter(pk=revision.pk).update(**fields)
    for key, value in fields.items():
        setattr(revision, key, value)


def begin_automatic(rec: Reconciler, target: Revision) -> None:
    """The automatic retry is due: the revision runs again in this pass."""
    _rerun(target, attempts=target.retry_attempts)
    limit = settings.MODELPORT_RETRY_MAX_ATTEMPTS
    event(rec.d, f"Retrying revision {target.number} automatically (attempt "
                 f"{target.retry_attempts} of {limit}); it failed: {target.failure}",
          revision=target.number)
    set_status(rec.d, DeploymentStatus.PENDING,
               f"Retrying revision {target.number} (automatic attempt {target.retry_attempts} "
               f"of {limit}).", rec.d.progress)


def hold_failed(rec: Outcomes, target: Revision, serving: int | None) -> str:
    """Status of a deployment whose revision failed: ``pending`` while an automatic retry is
    scheduled (and a pass is brought for it), else ``failed``; the reason either way."""
    d = rec.d
    keeps = f"; revision {serving} keeps serving" if serving is not None else ""
    reason = target.failure or "see the events"
    progress = d.progress if serving is not None else 0
    if target.next_retry_at is not None:
        set_status(d, DeploymentStatus.PENDING,
                   f"Revision {target.number} failed{keeps}: {reason} Retrying automatically at "
                   f"{target.next_retry_at:%H:%M:%S} UTC (attempt {target.retry_attempts} of "
                   f"{settings.MODELPORT_RETRY_MAX_ATTEMPTS}).", progress)
        schedule_pass(d.pk, target.next_retry_at)
        return "retry-scheduled"
    message = f"Revision {target.number} failed{keeps}: {reason}"
    if d.status != DeploymentStatus.FAILED or d.status_message != message[:2000]:
        set_status(d, DeploymentStatus.FAILED, message, progress)
    return "failed"


def remove_strays(rec: Reconciler, target: Revision, states: list[Any],
                  serving: Revision | None) -> list[Any]:
    """Remove replicas that neither serve nor should: the failed revision's and any other
    revision's that no traffic goes to (an interrupted rollout's, a failed removal's). Returns
    the replicas left."""
    keep = {int(t["revision"]) for t in (rec.d.traffic or [])
            if isinstance(t, dict) and t.get("percent")}
    if serving is not None:
        keep.add(serving.number)
    strays = [s for s in states if s.revision not in keep]
    if not strays:
        return states
    for s in strays:
        rec.remove_container(s.id)
    event(rec.d, f"Removed {len(strays)} replica(s) that nothing routes to while revision "
                 f"{target.number} is failed: {', '.join(s.id for s in strays)}.",
          revision=target.number)
    return [s for s in states if s.revision in keep]


def describe(d: Deployment, revision: Revision | None) -> dict[str, Any] | None:
    """The current revision's failure and retries, for the API and the portal: None unless it
    failed or is being retried automatically."""
    if revision is None or d.stopped:
        return None
    failed = revision.state == RevisionState.FAILED
    retrying = revision.retry_attempts > 0 and revision.healthy_at is None and not failed
    if not failed and not retrying:
        return None
    return {"failed": failed, "reason": revision.failure,
            "attempt": revision.retry_attempts,
            "max_attempts": settings.MODELPORT_RETRY_MAX_ATTEMPTS,
            "next_attempt_at": revision.next_retry_at if failed else None}


def current_revision(d: Deployment) -> Revision | None:
    """The deployment's desired revision (from a prefetch when the view made one)."""
    prefetched = getattr(d, "unsettled_revisions", None)
    if prefetched is not None:
        return next((r for r in prefetched if r.number == d.revision), None)
    return d.revisions.filter(number=d.revision).first()


# --- The user's side (what the verb ``services.retry`` reads and does) ---------------------
def retryable(d: Deployment, revision: Revision | None) -> bool:
    """Whether Retry has something to do: the revision failed, or the deployment is failed or
    degraded (e.g. replicas that kept crashing, which the reconciler stopped replacing)."""
    if d.stopped or revision is None:
        return False
    return revision.state == RevisionState.FAILED or d.status in (DeploymentStatus.FAILED,
                                                                 DeploymentStatus.DEGRADED)


def rerun_failed(d: Deployment, *, actor, why: str) -> Revision | None:
    """Make the current revision run again if it failed (Start does this too); its automatic
    retries count from zero. The caller holds the deployment's row lock."""
    revision = Revision.objects.filter(deployment=d, number=d.revision).first()
    if revision is None or revision.state != RevisionState.FAILED:
        return None
    _rerun(revision, attempts=0)
    who = getattr(actor, "username", "") or "the platform"
    DeploymentEvent.objects.create(deployment=d, revision=revision.number,
                                   message=f"{why} by {who}: revision {revision.number} runs "
                                           "again.")
    return revision
