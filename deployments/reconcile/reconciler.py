"""The reconciler: make what runs match what the database says should run.

Level-triggered and idempotent: every call looks at the deployment's desired revision and the
containers the runtime finds by label, and converges — build/find the image, unpack the model,
start missing replicas, replace dead ones, shift traffic, drain and remove what nobody wants.
Safe to run twice at once (per-deployment lock) and safe to kill at any point: the next run
(beat, every few seconds) picks up from what it finds.
"""

from __future__ import annotations

import http.client
import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import replica_keys
from serving import sockets
from workers.hosts import PlacementPending
from workers.runtimes import ReplicaStatus

from .. import admission, retries, revisions, runtime_health
from ..events import BuildLog, event, set_status
from ..locks import deployment_lock
from ..models import (
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Replica,
    Revision,
    RevisionState,
    ShadowSample,
)
from ..revisions import model_dir_for
from . import strategies

log = logging.getLogger(__name__)
Kind = DeploymentEvent.Kind
PUBLISHED_FIELDS = ["revision", "index", "status", "ready", "url", "message", "restart_count",
                    "last_probe", "updated_at"]


# --- Helpers ------------------------------------------------------------------------------------
def ready_status(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(HTTP status of GET url/ready, body text); (0, "") when nothing answers. ``url`` is a
    replica's: http:// or, for a replica without a network, http+unix://."""
    try:
        status, body = sockets.request(url.rstrip("/") + "/ready", timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError):
        return 0, ""
    return status, body[:4000].decode("utf-8", "replace")


def probe(url: str | None, timeout: float = 1.0) -> bool:
    return bool(url) and ready_status(url or "", timeout)[0] == 200


# --- The reconciler -----------------------------------------------------------------------------
class Reconciler:
    def __init__(self, d: Deployment, runtime: Any) -> None:
        self.d = d
        self.runtime = runtime
        self.draining: set[str] = set()
        self.load_error = ""
        self._ingest_env: dict[str, str] | None = None
        # Several plain Docker hosts: the runtime places replicas, owns their rows and GPUs.
        self.places = bool(getattr(runtime, "places_replicas", False))
        self.rescheduled: dict[int, str] = {}  # replica index -> the lost host it ran on
        self.no_room = ""  # why a replica could not be placed now (no host had room, …)

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
        with transaction.atomic():
            rows = {r.runtime_id: r for r in Replica.objects.filter(deployment=d)}
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
            current = Deployment.objects.select_for_update().get(pk=d.pk)
            new_traffic = current.traffic if traffic is None else traffic
            new_shadow = current.shadow if shadow is None else shadow
            old_sig = sorted((r.runtime_id, r.revision, r.url or None, r.ready)
                             for r in rows.values())
            if sorted(signature) != old_sig or new_traffic != current.traffic \
                    or new_shadow != current.shadow:
                Deployment.objects.filter(pk=d.pk).update(
                    traffic=new_traffic, shadow=new_shadow,
                    routing_version=F("routing_version") + 1)
            d.traffic, d.shadow = new_traffic, new_shadow
        return states

    def still_current(self) -> bool:
        fresh = Deployment.objects.filter(pk=self.d.pk).values("revision", "stopped").first()
        return bool(fresh) and fresh["revision"] == self.d.revision \
            and fresh["stopped"] == self.d.stopped

    def remove(self, states: list[Any], *, drain: bool) -> None:
        """Take replicas out of routing, wait for in-flight requests, then remove them."""
        if not states:
            return
        if drain:
            self.draining.update(s.id for s in states)
            self.publish()
            time.sleep(settings.MODELPORT_DRAIN_SECONDS)
        for s in states:
            self.remove_container(s.id)
            self.draining.discard(s.id)

    def ingest_env(self) -> dict[str, str]:
        """Where replicas ship their prediction log (monitoring), one token per reconcile."""
        if self._ingest_env is None:
            self._ingest_env = {}
            from django.apps import apps

            if apps.is_installed("monitoring"):
                try:
                    from monitoring.services import ingest_environment

                    self._ingest_env = ingest_environment(deployment=self.d)
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

    def run(self) -> str:
        d = self.d
        if d.stopped:
            return self.stop_all()
        target = Revision.objects.select_related("model_version").get(deployment=d,
                                                                      number=d.revision)
        states = self.observe()
        ours = {s.replica: s for s in states if s.revision == target.number}
        old = [s for s in states if s.revision != target.number]
        if retries.due(target):  # a transient failure's automatic retry: run it again now
            retries.begin_automatic(self, target)
        if target.state == RevisionState.FAILED:
            serving = (Revision.objects.select_related("model_version")
                       .filter(deployment=d, state=RevisionState.ACTIVE).order_by("-number")
                       .first())
            states = retries.remove_strays(self, target, states, serving)
            if serving is not None:  # keep the last good revision whole while we wait
                self.heal(serving, states)
            self.publish()
            return retries.hold_failed(self, target, serving.number if serving else None)

        states = self.end_stale_shadows(target, states)
        ours = {s.replica: s for s in states if s.revision == target.number}
        old = [s for s in states if s.revision != target.number]
        stepping = strategies.in_progress(self, target)
        if stepping is not None and (outcome := stepping.guard(states)):
            return outcome  # a new replica died during a canary step: rolled back
        # A shadow strategy shadows the revision that serves now; with nothing serving yet, the
        # new revision simply takes the traffic.
        serving = self.serving_revision(target) if d.strategy_type == "shadow" else None

        # 1. Image and model files.
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
            model_dir = str(model_dir_for(target.model_version))
        except Exception as exc:  # noqa: BLE001
            return self.fail(target, f"Cannot unpack the model artifact: {exc}", old,
                             cause=retries.transient_cause(exc))

        # 2. Replace dead replicas of the target revision; remove surplus ones.
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
                    return "crash-loop"

        # 3. Start what is missing, following the strategy.
        missing = [i for i in range(d.replicas) if i not in ours]
        first_rollout = target.healthy_at is None and target.state != RevisionState.SHADOW
        if missing and self.crash_looping(target):  # back off: a human has to look
            self.publish()
            set_status(d, DeploymentStatus.DEGRADED if ours else DeploymentStatus.FAILED,
                       f"Revision {target.number} keeps crashing ({len(ours)} of {d.replicas} "
                       "replicas up); see events for the last log lines, then Retry, roll back or "
                       "change the deployment.", d.progress)
            return "crash-loop"
        if missing:
            if target.state == RevisionState.PENDING:
                Revision.objects.filter(pk=target.pk).update(state=RevisionState.ROLLING_OUT)
                target.state = RevisionState.ROLLING_OUT
            if first_rollout:
                set_status(d, DeploymentStatus.STARTING,
                           f"Starting {len(missing)} replica(s) of revision {target.number}.",
                           max(d.progress, 30))
            else:
                set_status(d, DeploymentStatus.DEGRADED,
                           f"Replacing {len(missing)} replica(s) of revision {target.number}.",
                           d.progress)
            # GPU deployments hold exactly their reserved devices: no surge, replace in place.
            # A rollback starts every replica first and switches at once (blue/green).
            rollback = bool((target.spec or {}).get("rollback_of"))
            rolling = ((d.strategy_type == "rolling" and not rollback)
                       or (d.gpus and serving is None)) and old and first_rollout
            if rolling:
                result = self.rolling(target, model_dir, missing, ours, old)
            else:
                result = self.start_and_wait(target, model_dir, missing, ours,
                                             first_rollout=first_rollout)
            if result:
                return result
        # 4. Every replica of the target is up: switch traffic, drain and stop the rest.
        states = self.observe()
        ours = {s.replica: s for s in states if s.revision == target.number}
        old = [s for s in states if s.revision != target.number]
        ready = [s for s in ours.values() if s.alive and probe(s.url)]
        if not ready:
            self.publish(states)
            set_status(d, DeploymentStatus.STARTING if not old else DeploymentStatus.DEGRADED,
                       f"No replica of revision {target.number} is ready yet.", d.progress)
            return "starting"
        if serving is not None:
            return self.shadow(target, serving, len(ready))
        stepped = strategies.for_rollout(self, target, old, first_rollout=first_rollout)
        if stepped is not None:  # a canary: what is due now, then return (no waiting here)
            result = stepped.advance(old, states)
            if result:
                return result
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

    def end_stale_shadows(self, target: Revision, states: list[Any]) -> list[Any]:
        """Stop mirroring to, and remove, shadow revisions that are no longer the desired one
        (promoted, rolled back or replaced by a newer shadow). They carry no traffic: no drain."""
        d = self.d
        stale = Revision.objects.filter(deployment=d, state=RevisionState.SHADOW) \
            .exclude(pk=target.pk)
        numbers = set(stale.values_list("number", flat=True))
        mirrored = (d.shadow or {}).get("revision")
        if mirrored is not None and mirrored != target.number:
            numbers.add(int(mirrored))
        if not numbers:
            return states
        if d.shadow:
            self.publish(states, shadow={})
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
                self.remove_container(s.id)
        Revision.objects.filter(deployment=d, state=RevisionState.SHADOW,
                                number__in=numbers).update(state=RevisionState.SUPERSEDED)
        states = [s for s in states if s.revision not in numbers]
        self.publish(states)
        return states

    def shadow(self, target: Revision, serving: Revision, ready: int) -> str:
        """The target revision's replicas are up: keep 100% of traffic on the serving revision
        and let the gateways mirror the configured share of requests to the target."""
        d = self.d
        self.heal(serving, self.observe())
        percent = int((d.strategy or {}).get("percent", 100))
        config = {"revision": target.number, "percent": percent,
                  "tolerance": (d.strategy or {}).get("tolerance", 1e-6)}
        states = self.publish(traffic=[{"revision": serving.number, "percent": 100}],
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
        return "shadowing"

    def start(self, target: Revision, model_dir: str, index: int) -> Any:
        from workers.runtimes import ReplicaSpec

        d = self.d
        spec = ReplicaSpec(deployment=d.name, revision=target.number, replica=index,
                           image=target.image or None, model_dir=model_dir,
                           model_name=d.model.name,
                           model_version=str(target.model_version.version),
                           cpu=float(d.cpu), memory_mb=d.memory_mb,
                           installation=getattr(self.runtime, "installation", ""))
        if d.gpus and self.places:
            spec.gpus = d.gpus  # the placing runtime allocates devices on the chosen host
        elif d.gpus:
            spec.gpu_device_ids = admission.gpu_devices(team=d.team, count=d.gpus,
                                                        owner=f"{d.owner}/{spec.name}")
        if not self.places:  # host workers issue their replicas' ingest tokens themselves
            spec.env.update(self.ingest_env())
        if target.replica_key:
            spec.env[replica_keys.ENV] = target.replica_key
        spec.egress = bool((target.spec or {}).get("egress"))
        state = self.runtime.start_replica(spec)
        where = f" on host {state.host}" if state.host else ""
        event(d, f"Started replica {state.id}{where} ({state.url or 'no url'}).",
              revision=target.number)
        lost_host = self.rescheduled.pop(index, None)
        if lost_host is not None:
            from teams import audit

            audit.record(actor=None, action="deployment.replica_rescheduled", obj=d,
                         team=d.team, before={"replica": index, "host": lost_host},
                         after={"replica": index, "host": state.host, "id": state.id,
                                "revision": target.number})
        return state

    def capacity_short(self, target: Revision, exc: PlacementPending, started: int = 0) -> str:
        """A replica cannot be placed now (no host has room, or the host has not reported it
        yet): an event (once per distinct reason), the deployment pending (nothing runs) or
        degraded, the revision not failed; beat retries."""
        d = self.d
        message = str(exc)
        self.no_room = f"Waiting for {exc.waiting_for}: {message}"
        last = d.events.filter(kind=Kind.WARNING).values_list("message", flat=True).first()
        if last != message:
            event(d, message, kind=Kind.WARNING, revision=target.number)
        if started:
            return ""
        running = any(s.status == ReplicaStatus.RUNNING for s in self.observe())
        set_status(d, DeploymentStatus.DEGRADED if running else DeploymentStatus.PENDING,
                   self.no_room, d.progress)
        self.publish()
        return "no-capacity"

    def wait(self, target: Revision, state: Any) -> bool:
        """Poll the replica's /ready until 200; give up early when the container exits or the
        model server reports that the model failed to load (it stays up answering 503)."""
        deadline = time.monotonic() + settings.MODELPORT_READY_TIMEOUT_S
        self.load_error = ""
        while state.url and time.monotonic() < deadline:
            status, body = ready_status(state.url)
            if status == 200:
                event(self.d, f"Replica {state.id} is ready.", revision=target.number)
                return True
            if status == 503 and "failed to load" in body:
                self.load_error = body[:2000]
                return False
            if not self.runtime.get_replica(state.id).alive or not self.still_current():
                return False
            time.sleep(0.1)  # a ready replica takes traffic ~0.05 s later on average
        return False

    def start_and_wait(self, target: Revision, model_dir: str, missing: list[int],
                       ours: dict[int, Any], *, first_rollout: bool = True) -> str | None:
        d = self.d
        started: list[Any] = []
        try:
            for i in missing:
                started.append(self.start(target, model_dir, i))
        except PlacementPending as exc:
            outcome = self.capacity_short(target, exc, started=len(started))
            if outcome:
                return outcome
        except Exception as exc:  # noqa: BLE001
            if not first_rollout:  # a healthy revision is not failed by one replacement
                event(d, f"Replica replacement failed: {exc}", kind=Kind.WARNING,
                      revision=target.number)
                return "degraded"
            return self.fail(target, f"Starting replicas failed: {exc}", self.old_alive(target),
                             cause=retries.transient_cause(exc))
        self.publish()
        for n, state in enumerate(started, 1):
            if not self.wait(target, state):
                if not self.still_current():
                    return "superseded"
                if not first_rollout:
                    event(d, f"Replica {state.id} did not become ready; it will be replaced."
                             f"\nLast log lines:\n{self.last_logs(state.id)}",
                          kind=Kind.WARNING, revision=target.number)
                    self.remove_container(state.id)
                    self.publish()
                    set_status(d, DeploymentStatus.DEGRADED,
                               f"A replacement replica of revision {target.number} did not "
                               "become ready; retrying.", d.progress)
                    return "degraded"
                return self.not_ready(target, state)
            if first_rollout:
                set_status(d, DeploymentStatus.STARTING,
                           f"{n} of {len(started)} new replica(s) ready.",
                           30 + int(60 * n / len(started)))
            self.publish()
        return None

    def rolling(self, target: Revision, model_dir: str, missing: list[int],
                ours: dict[int, Any], old: list[Any]) -> str | None:
        """One new replica at a time: start, wait ready, shift its share of traffic, drain and
        remove one old replica."""
        d = self.d
        old_revision = self.traffic_revision(old)
        remaining = sorted(old, key=lambda s: (s.revision, s.replica))
        for n, index in enumerate(missing, 1):
            if d.gpus and remaining:  # free this replica's devices first
                self.remove([remaining.pop(0)], drain=True)
                self.publish()
            try:
                state = self.start(target, model_dir, index)
            except PlacementPending as exc:
                return self.capacity_short(target, exc) or "no-capacity"
            except Exception as exc:  # noqa: BLE001
                return self.fail(target, f"Starting replica {index} failed: {exc}",
                                 self.old_alive(target), cause=retries.transient_cause(exc))
            if not self.wait(target, state):
                if not self.still_current():
                    return "superseded"
                return self.not_ready(target, state)
            ready_new = len(ours) + n
            percent = min(100, round(100 * ready_new / d.replicas))
            traffic = [{"revision": target.number, "percent": percent}]
            if percent < 100:
                traffic.append({"revision": old_revision, "percent": 100 - percent})
            self.publish(traffic=traffic)
            event(d, f"Traffic: {percent}% to revision {target.number}.", kind=Kind.TRAFFIC,
                  revision=target.number)
            set_status(d, DeploymentStatus.STARTING,
                       f"Rolling out revision {target.number}: {ready_new} of {d.replicas} "
                       "replicas ready.", 30 + int(60 * ready_new / d.replicas))
            if remaining and percent < 100:
                self.remove([remaining.pop(0)], drain=True)
                self.publish()
        return None

    # --- outcomes -----------------------------------------------------------------------------
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
            return "degraded"
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
        return "rolled-back"

    def settle(self, target: Revision, ready: int) -> str:
        d = self.d
        now = timezone.now()
        if target.healthy_at is None or target.state != RevisionState.ACTIVE:
            Revision.objects.filter(deployment=d, state=RevisionState.ACTIVE) \
                .exclude(pk=target.pk).update(state=RevisionState.SUPERSEDED)
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
            return "healthy"
        waiting = f" {self.no_room}" if self.no_room else ""
        set_status(d, DeploymentStatus.DEGRADED,
                   f"{ready} of {d.replicas} replica(s) ready (revision {target.number})."
                   f"{waiting}", 100)
        return "degraded"

    def revoke_ingest(self) -> None:
        from django.apps import apps

        if apps.is_installed("monitoring"):
            try:
                from monitoring.services import revoke_ingest_tokens

                revoke_ingest_tokens(deployment=self.d)
            except Exception:
                log.warning("could not revoke ingest tokens of %s", self.d.name, exc_info=True)

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
        return "stopped"


def reconcile_deployment(deployment_id: int, runtime: Any = None) -> str:
    """One level-triggered pass for one deployment; returns what happened."""
    with deployment_lock(deployment_id) as got:
        if not got:
            return "busy"
        d = (Deployment.objects.select_related("team", "model").filter(pk=deployment_id)
             .first())
        if d is None:
            return "gone"
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
                if outcome != "superseded":
                    break
                d = (Deployment.objects.select_related("team", "model")
                     .filter(pk=deployment_id).first())
                if d is None:  # deleted while we were starting replicas: clean up
                    remove_deployment_containers(name, runtime)
                    return "gone"
                outcome = Reconciler(d, runtime).run()
            return outcome
        except Exception as exc:
            log.exception("reconcile of %s failed", d.name)
            event(d, f"Reconcile error: {exc.__class__.__name__}: {exc}", kind=Kind.ERROR,
                  revision=d.revision)
            raise


def remove_deployment_containers(name: str, runtime: Any = None,
                                 target_id: int | None = None, kind: str = "") -> int:
    """Remove every replica of this deployment name (after a delete) — this installation's —
    on the execution target it ran on (``target_id``; None: the default target), of the
    runtime kind fixed for it (``kind``; empty: the target's)."""
    if runtime is None:
        from workers.models import ExecutionTarget
        from workers.runtime_choice import runtime_on
        from workers.services import default_target

        target = (ExecutionTarget.objects.filter(pk=target_id).first() if target_id
                  else default_target())
        runtime = runtime_on(target, kind)
    states = runtime.list_replicas(name)
    for s in states:
        runtime.remove_replica(s.id)
    return len(states)
