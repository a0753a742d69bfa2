"""The reconciler: one pass over one deployment, making what runs match its desired revision.

``Reconciler.run`` looks at the desired revision and the replicas the runtime finds by label,
and converges in steps — prepare the image and the model files, replace dead replicas, start
missing ones the way the deployment's rollout strategy does (``strategies``), switch traffic,
drain and remove what nobody wants. This module also publishes what runs (the ``Replica`` rows,
traffic and shadow the API and the gateways read) and heals the revision that serves while the
desired one failed; starting replicas is in ``replicas``, the ends of a pass in ``outcomes``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from compute.models import Host
from workers.runtimes import ReplicaStatus, Runtime

from .. import admission, hooks, retries
from ..events import BuildLog, event, set_status
from ..hosts_runtime import PlacementPending
from ..models import (
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Replica,
    Revision,
    RevisionState,
)
from ..revisions import model_dir_for
from . import strategies
from .outcomes import Outcome, Outcomes
from .replicas import Replicas, in_flight, probe

log = logging.getLogger(__name__)
Kind = DeploymentEvent.Kind
PUBLISHED_FIELDS = ["revision", "index", "status", "ready", "url", "message", "restart_count",
                    "last_probe", "updated_at"]


# --- The reconciler -----------------------------------------------------------------------------
class Reconciler(Replicas, Outcomes):
    """One pass over one deployment: observe, then converge step by step."""

    def __init__(self, d: Deployment, runtime: Runtime) -> None:
        self.d = d
        self.runtime = runtime
        self.draining: set[str] = set()
        self.load_error = ""
        self._ingest_env: dict[str, str] | None = None
        # Several plain Docker hosts: the runtime places replicas, owns their rows and GPUs.
        self.places = bool(getattr(runtime, "places_replicas", False))
        self.rescheduled: dict[int, str] = {}  # replica index -> the lost host it ran on
        self.no_room = ""  # why a replica could not be placed now (no host had room, …)
        self.model_dir = ""  # the target revision's unpacked model files (``_prepare``)

    # What runs, published to the DB cache the API and the gateway read.
    def observe(self) -> list[Any]:
        return self.runtime.list_replicas(self.d.name)

    def publish(self, states: list[Any] | None = None,
                traffic: list[dict[str, int]] | None = None,
                shadow: dict[str, Any] | None = None) -> list[Any]:
        d = self.d
        states = self.observe() if states is None else states
        now = timezone.now()
        seen = []
        signature = []
        lost_since = 0
        with transaction.atomic():
            rows = {r.runtime_id: r for r in Replica.objects.filter(deployment=d)}
            # Before the loop below updates the rows in place: a replica turning ready (or
            # not) must bump ``routing_version``, or the edge keeps routing without it.
            old_sig = sorted((r.runtime_id, r.revision, r.url or None, r.ready)
                             for r in rows.values())
            for s in states:
                if self.places and s.id not in rows:
                    continue  # removed meanwhile: the placing runtime's rows are its state
                ready = s.alive and s.id not in self.draining and probe(s.url)
                status = "draining" if s.id in self.draining else (
                    "ready" if ready else s.status.value)
                row = rows.get(s.id) or Replica(deployment=d, runtime_id=s.id)
                row.revision, row.index, row.status, row.ready = s.revision, s.replica, status, \
                    ready
                row.url, row.message = s.url or "", s.message or ""
                row.restart_count, row.last_probe = s.restart_count, now
                if row.pk is None:
                    row.save()
                else:  # never clobber what a host worker reports meanwhile
                    row.save(update_fields=PUBLISHED_FIELDS)
                seen.append(s.id)
                signature.append((s.id, s.revision, s.url, ready))
            Replica.objects.filter(deployment=d).exclude(runtime_id__in=seen).delete()
            if self.places:
                # A host lost since ``observe`` (beat's check, or its engine found dead) marked
                # these rows lost before the saves above overwrote them: never ready while the
                # host is lost. (Lost later, its UPDATE waits for this transaction, then wins.)
                lost_since = Replica.objects.filter(deployment=d, host__state=Host.State.LOST) \
                    .exclude(host_status="removing").exclude(status="lost", ready=False) \
                    .update(ready=False, status="lost", host_status="lost")
            current = Deployment.objects.select_for_update().get(pk=d.pk)
            new_traffic = current.traffic if traffic is None else traffic
            new_shadow = current.shadow if shadow is None else shadow
            if lost_since or sorted(signature) != old_sig or new_traffic != current.traffic \
                    or new_shadow != current.shadow:
                Deployment.objects.filter(pk=d.pk).update(
                    traffic=new_traffic, shadow=new_shadow,
                    routing_version=F("routing_version") + 1)
            d.traffic, d.shadow = new_traffic, new_shadow
        return states

    def still_current(self) -> bool:
        fresh = Deployment.objects.filter(pk=self.d.pk).values("revision", "stopped").first()
        return fresh is not None and fresh["revision"] == self.d.revision \
            and fresh["stopped"] == self.d.stopped

    def remove(self, states: list[Any], *, drain: bool) -> None:
        """Take replicas out of routing, wait for in-flight requests, then remove them."""
        if not states:
            return
        if drain:
            self.draining.update(s.id for s in states)
            self.publish()
            time.sleep(settings.MODELPORT_DRAIN_SECONDS)
            self.wait_in_flight(states)
        for s in states:
            self.remove_container(s.id)
            self.draining.discard(s.id)

    def wait_in_flight(self, states: list[Any]) -> None:
        """Out of routing, a replica may still be answering a slow request (a long prediction
        the gateway sent before the drain): wait until none is, at most the gateway's own
        timeout, so neither a scale-down nor a scale to zero cuts one off."""
        keys = dict(Revision.objects.filter(deployment=self.d,
                                            number__in={s.revision for s in states})
                    .values_list("number", "replica_key"))
        deadline = time.monotonic() + settings.MODELPORT_GATEWAY_TIMEOUT_S
        busy = [s for s in states if s.url]
        while busy and time.monotonic() < deadline:
            busy = [s for s in busy if in_flight(s.url, keys.get(s.revision, "")) > 0]
            if busy:
                time.sleep(0.2)

    def ingest_env(self) -> dict[str, str]:
        """What the hooks give replicas (monitoring: where they ship their prediction log, one
        token per reconcile)."""
        if self._ingest_env is None:
            self._ingest_env = {}
            try:
                self._ingest_env = hooks.replica_environment(self.d)
            except Exception:
                log.warning("no ingest token for %s", self.d.name, exc_info=True)
        return self._ingest_env

    def remove_container(self, replica_id: str) -> None:
        """Stop the replica gracefully first (SIGTERM: the model server ships the prediction
        logs still in its buffer, up to a second's worth), then remove it. A dead replica's stop
        is a no-op; one that ignores SIGTERM is killed after MODELPORT_STOP_TIMEOUT_S."""
        try:
            self.runtime.stop_replica(replica_id, timeout=settings.MODELPORT_STOP_TIMEOUT_S)
        except Exception:  # removal below is what matters; a failed stop only loses logs
            log.warning("graceful stop of %s failed; removing it", replica_id, exc_info=True)
        self.runtime.remove_replica(replica_id)
        if self.d.gpus:
            admission.release_gpus(owner=f"{self.d.owner}/{replica_id}")

    def last_logs(self, replica_id: str, lines: int = 20) -> str:
        try:
            return self.runtime.logs(replica_id, tail=lines).strip()
        except Exception as exc:  # noqa: BLE001 - logs are best effort
            return f"(logs unavailable: {exc})"

    # --- one pass, step by step ---------------------------------------------------------------
    def run(self) -> str:
        d = self.d
        if d.stopped:
            return self.stop_all()
        if d.replicas == 0 and d.autoscaling:  # scaled to zero: the next request wakes it
            return self.sleep_all()
        target = Revision.objects.select_related("model_version").get(deployment=d,
                                                                      number=d.revision)
        states = self.observe()
        if retries.due(target):  # a transient failure's automatic retry: run it again now
            retries.begin_automatic(self, target)
        if target.state == RevisionState.FAILED:
            return self._hold_failed(target, states)
        states = strategies.end_stale_shadows(self, target, states)
        ours = {s.replica: s for s in states if s.revision == target.number}
        old = [s for s in states if s.revision != target.number]
        stepping = strategies.in_progress(self, target)
        if stepping is not None and (outcome := stepping.guard(states)):
            return outcome  # a new replica died during a canary step: rolled back
        rollout = strategies.for_revision(self, target)
        first_rollout = target.healthy_at is None and target.state != RevisionState.SHADOW
        outcome = (self._prepare(target, ours, old)
                   or self._replace_dead(target, ours)
                   or self._start_missing(target, ours, old, rollout,
                                          first_rollout=first_rollout))
        if outcome:
            return outcome
        return self._switch_traffic(target, rollout, first_rollout=first_rollout)

    def _hold_failed(self, target: Revision, states: list[Any]) -> str:
        """The desired revision failed: keep the last good revision whole while a retry or a
        user comes."""
        serving = (Revision.objects.select_related("model_version")
                   .filter(deployment=self.d, state=RevisionState.ACTIVE).order_by("-number")
                   .first())
        states = retries.remove_strays(self, target, states, serving)
        if serving is not None:
            self.heal(serving, states)
        self.publish()
        return retries.hold_failed(self, target, serving.number if serving else None)

    def _prepare(self, target: Revision, ours: dict[int, Any], old: list[Any]) -> str | None:
        """1. The serving image (built when missing or replicas must start) and the model
        files (``self.model_dir``)."""
        d = self.d
        if not target.image or not all(s.alive for s in ours.values()) \
                or len(ours) < d.replicas:
            if not target.image:
                set_status(d, DeploymentStatus.BUILDING,
                           f"Preparing the serving image for {target.model_version}.", 10)
            build = BuildLog(d, target.number)
            try:
                image = self.runtime.ensure_image(list(target.model_version.requirements or []),
                                                  build)
            except Exception as exc:  # noqa: BLE001 - any build failure fails the revision
                build.flush()
                return self.fail(target, f"Image build failed: {exc}", old,
                                 cause=retries.transient_cause(exc))
            build.flush()
            if image != target.image:
                Revision.objects.filter(pk=target.pk).update(image=image)
                target.image = image
        try:
            self.model_dir = str(model_dir_for(target.model_version))
        except Exception as exc:  # noqa: BLE001
            return self.fail(target, f"Cannot unpack the model artifact: {exc}", old,
                             cause=retries.transient_cause(exc))
        return None

    def _replace_dead(self, target: Revision, ours: dict[int, Any]) -> str | None:
        """2. Remove surplus and dead replicas of the target revision (from ``ours``) and those
        whose host was lost; stop at a crash loop."""
        d = self.d
        for index, s in sorted(ours.items()):
            if index >= d.replicas:
                event(d, f"Scaling down: removing {s.id}.", revision=target.number)
                self.remove([s], drain=True)
                del ours[index]
            elif s.status == ReplicaStatus.LOST:  # its host stopped answering: not a crash
                event(d, f"Rescheduling replica {index} of revision {target.number}: its host "
                         f"{s.host or '?'} was lost ({s.id}).", kind=Kind.WARNING,
                      revision=target.number)
                self.remove_container(s.id)
                self.rescheduled[index] = s.host
                del ours[index]
            elif not s.alive:
                logs = self.last_logs(s.id)
                event(d, f"Replica {s.id} {s.status.value} (exit code {s.exit_code}"
                         f"{', ' + s.message if s.message else ''}); replacing it.\n"
                         f"Last log lines:\n{logs}", kind=Kind.WARNING, revision=target.number)
                self.remove_container(s.id)
                del ours[index]
                if self.crash_looping(target):
                    self.publish()
                    set_status(d, DeploymentStatus.DEGRADED if ours else DeploymentStatus.FAILED,
                               f"Replica {index} of revision {target.number} keeps crashing; "
                               f"see events for its last log lines.", d.progress)
                    return Outcome.CRASH_LOOP
        return None

    def _start_missing(self, target: Revision, ours: dict[int, Any], old: list[Any],
                       rollout: strategies.Rollout, *, first_rollout: bool) -> str | None:
        """3. Start what is missing, the way the rollout does (unless it keeps crashing)."""
        d = self.d
        missing = [i for i in range(d.replicas) if i not in ours]
        if not missing:
            return None
        if self.crash_looping(target):  # back off: a human has to look
            self.publish()
            set_status(d, DeploymentStatus.DEGRADED if ours else DeploymentStatus.FAILED,
                       f"Revision {target.number} keeps crashing ({len(ours)} of {d.replicas} "
                       "replicas up); see events for the last log lines, then Retry, roll back or "
                       "change the deployment.", d.progress)
            return Outcome.CRASH_LOOP
        if target.state == RevisionState.PENDING:
            Revision.objects.filter(pk=target.pk).update(state=RevisionState.ROLLING_OUT)
            target.state = RevisionState.ROLLING_OUT
        if first_rollout:
            set_status(d, DeploymentStatus.STARTING,
                       f"Starting {len(missing)} replica(s) of revision {target.number}.",
                       max(d.progress, 30))
        elif d.autoscaling and target.state == RevisionState.ACTIVE:  # the scaler's doing
            serving = any(s.alive for s in ours.values())
            set_status(d, DeploymentStatus.HEALTHY if serving else DeploymentStatus.STARTING,
                       f"Scaling up: starting {len(missing)} more replica(s) of revision "
                       f"{target.number}." if serving else
                       f"Waking: starting {len(missing)} replica(s) of revision "
                       f"{target.number}.", d.progress)
        else:
            set_status(d, DeploymentStatus.DEGRADED,
                       f"Replacing {len(missing)} replica(s) of revision {target.number}.",
                       d.progress)
        return rollout.start(self.model_dir, missing, ours, old, first_rollout=first_rollout)

    def _switch_traffic(self, target: Revision, rollout: strategies.Rollout, *,
                        first_rollout: bool) -> str:
        """4. Every replica of the target is up: the rollout moves traffic (or the reconciler
        switches it all), then drains and stops the rest."""
        d = self.d
        states = self.observe()
        ours = {s.replica: s for s in states if s.revision == target.number}
        old = [s for s in states if s.revision != target.number]
        ready = [s for s in ours.values() if s.alive and probe(s.url)]
        if not ready:
            self.publish(states)
            set_status(d, DeploymentStatus.STARTING if not old else DeploymentStatus.DEGRADED,
                       f"No replica of revision {target.number} is ready yet.", d.progress)
            return Outcome.STARTING
        outcome = rollout.switch(old, states, len(ready), first_rollout=first_rollout)
        if outcome:
            return outcome
        self.publish(states, traffic=[{"revision": target.number, "percent": 100}])
        if old:
            event(d, f"Traffic: 100% to revision {target.number}; draining "
                     f"{len(old)} old replica(s).", kind=Kind.TRAFFIC, revision=target.number)
            self.remove(old, drain=True)
            self.publish()
        return self.settle(target, len(ready))

    def heal(self, revision: Revision, states: list[Any]) -> None:
        """Replace dead or missing replicas of a revision that is not the desired one (the last
        healthy revision while the desired one failed)."""
        d = self.d
        want = int((revision.spec or {}).get("replicas") or d.replicas)
        ours = {s.replica: s for s in states if s.revision == revision.number}
        for index, s in list(ours.items()):
            if not s.alive:
                event(d, f"Replica {s.id} of serving revision {revision.number} "
                         f"{s.status.value} (exit code {s.exit_code}); replacing it.\n"
                         f"Last log lines:\n{self.last_logs(s.id)}", kind=Kind.WARNING,
                      revision=revision.number)
                self.remove_container(s.id)
                del ours[index]
        missing = [i for i in range(want) if i not in ours]
        if not missing or not revision.image:
            return
        model_dir = str(model_dir_for(revision.model_version))
        for index in missing:
            try:
                self.wait(revision, self.start(revision, model_dir, index))
            except PlacementPending as exc:
                self.capacity_short(revision, exc, started=1)
                return

    # --- strategies ---------------------------------------------------------------------------
    def serving_revision(self, target: Revision) -> Revision | None:
        """The newest active revision other than the target (healed if its replicas died)."""
        return (Revision.objects.select_related("model_version")
                .filter(deployment=self.d, state=RevisionState.ACTIVE)
                .exclude(pk=target.pk).order_by("-number").first())

    def traffic_revision(self, old: list[Any]) -> int:
        """Of the old replicas' revisions, the one that carries the most traffic now (never a
        shadow: shadows carry none)."""
        numbers = {s.revision for s in old}
        shares = {int(t["revision"]): int(t.get("percent", 0)) for t in (self.d.traffic or [])
                  if isinstance(t, dict) and t.get("revision") in numbers}
        if shares:
            return max(shares, key=lambda rev: (shares[rev], rev))
        return max(numbers)

    # --- monitoring ---------------------------------------------------------------------------
    def revoke_ingest(self) -> None:
        try:
            hooks.deployment_stopped(self.d)
        except Exception:
            log.warning("could not revoke ingest tokens of %s", self.d.name, exc_info=True)
