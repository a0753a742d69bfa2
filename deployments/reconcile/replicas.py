"""Starting a revision's replicas and waiting for them to be ready.

``Replicas`` is a part of ``Reconciler`` (mixed in); it uses the reconciler's ``d``,
``runtime``, ``publish``, ``still_current``, ``remove_container`` and its outcomes.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from core import replica_keys
from core.errors import InvalidInput
from serving import sockets
from teams import audit
from workers.runtimes import ReplicaSpec, ReplicaStatus, Runtime, ScalingHint

from .. import admission, retries
from ..events import event, set_status
from ..hosts_runtime import PlacementPending
from ..models import Deployment, DeploymentEvent, DeploymentStatus, Revision
from ..spec import Autoscaling
from .outcomes import Outcome

Kind = DeploymentEvent.Kind


def ready_status(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(HTTP status of GET url/ready, body text); (0, "") when nothing answers. ``url`` is a
    replica's: http:// or, for a replica without a network, http+unix://."""
    try:
        status, body = sockets.request(url.rstrip("/") + "/ready", timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError):
        return 0, ""
    return status, body[:4000].decode("utf-8", "replace")


def in_flight(url: str, key: str = "", timeout: float = 1.0) -> float:
    """Prediction requests the replica is still answering (its ``modelport_requests_in_flight``
    gauge); 0 when it cannot tell (gone, no such metric): draining never waits on silence."""
    try:
        status, body = sockets.request(url.rstrip("/") + "/metrics", timeout=timeout,
                                       headers={replica_keys.HEADER: key} if key else None)
    except (OSError, http.client.HTTPException, ValueError):
        return 0.0
    if status != 200:
        return 0.0
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("modelport_requests_in_flight "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return 0.0
    return 0.0


def probe(url: str | None, timeout: float = 1.0) -> bool:
    return bool(url) and ready_status(url or "", timeout)[0] == 200


def scaling_hint(stored: dict[str, Any] | None) -> ScalingHint | None:
    """``Deployment.autoscaling`` as the runtimes take it (None: a fixed count, or settings
    that no longer parse, e.g. above a lowered MODELPORT_MAX_REPLICAS: the scaler reports
    those; a replica still starts)."""
    try:
        a = Autoscaling.parse(stored or None)
    except InvalidInput:
        return None
    if a is None:
        return None
    return ScalingHint(min_replicas=a.min_replicas, max_replicas=a.max_replicas,
                       metric=str(a.metric), target=float(a.target))


class Replicas:
    d: Deployment
    runtime: Runtime
    places: bool
    load_error: str
    no_room: str
    rescheduled: dict[int, str]
    observe: Callable[[], list[Any]]
    publish: Callable[..., list[Any]]
    still_current: Callable[[], bool]
    remove_container: Callable[[str], None]
    last_logs: Callable[..., str]
    ingest_env: Callable[[], dict[str, str]]
    fail: Callable[..., str]
    old_alive: Callable[[Revision], list[Any]]
    not_ready: Callable[[Revision, Any], str]

    def start(self, target: Revision, model_dir: str, index: int) -> Any:
        d = self.d
        spec = ReplicaSpec(deployment=d.name, revision=target.number, replica=index,
                           image=target.image or None, model_dir=model_dir,
                           model_name=d.model.name,
                           model_version=str(target.model_version.version),
                           cpu=float(d.cpu), memory_mb=d.memory_mb,
                           installation=getattr(self.runtime, "installation", ""),
                           autoscaling=scaling_hint(d.autoscaling))
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
        return Outcome.NO_CAPACITY

    def wait(self, target: Revision, state: Any) -> bool:
        """Poll the replica's /ready until 200; give up early when the container exits or the
        model server reports that the model failed to load (it stays up answering 503)."""
        deadline = time.monotonic() + settings.MODELPORT_READY_TIMEOUT_S
        self.load_error = ""
        checked = 0.0
        while time.monotonic() < deadline:
            if not state.url:
                # Placed by an orchestrator (a swarm in host mode on several nodes): the address
                # is known once a node took the task.
                state = self.runtime.get_replica(state.id)
                if not state.alive or not self.still_current():
                    return False
                if not state.url:
                    time.sleep(0.25)
                    continue
            status, body = ready_status(state.url)
            if status == 200:
                event(self.d, f"Replica {state.id} is ready.", revision=target.number)
                return True
            if status == 503 and "failed to load" in body:
                self.load_error = body[:2000]
                return False
            # A probe of a socket not yet bound costs a failed connect; asking the runtime
            # and the database is dearer, so only every quarter second.
            if time.monotonic() - checked >= 0.25:
                if not self.runtime.get_replica(state.id).alive or not self.still_current():
                    return False
                checked = time.monotonic()
            # A woken deployment has a request waiting on this: a ready replica takes traffic
            # ~0.015 s later on average.
            time.sleep(0.03)
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
                return Outcome.DEGRADED
            return self.fail(target, f"Starting replicas failed: {exc}", self.old_alive(target),
                             cause=retries.transient_cause(exc))
        self.publish()
        for n, state in enumerate(started, 1):
            if not self.wait(target, state):
                if not self.still_current():
                    return Outcome.SUPERSEDED
                if not first_rollout:
                    event(d, f"Replica {state.id} did not become ready; it will be replaced."
                             f"\nLast log lines:\n{self.last_logs(state.id)}",
                          kind=Kind.WARNING, revision=target.number)
                    self.remove_container(state.id)
                    self.publish()
                    set_status(d, DeploymentStatus.DEGRADED,
                               f"A replacement replica of revision {target.number} did not "
                               "become ready; retrying.", d.progress)
                    return Outcome.DEGRADED
                return self.not_ready(target, state)
            if first_rollout:
                set_status(d, DeploymentStatus.STARTING,
                           f"{n} of {len(started)} new replica(s) ready.",
                           30 + int(60 * n / len(started)))
            self.publish()
        return None
