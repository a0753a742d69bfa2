"""Several plain Docker hosts: the runtime of a docker target with ``"placement": "hosts"``.

Each Docker host runs a host worker — a Celery worker with ``MODELPORT_HOST_NAME`` set, consuming
the queue ``host.<name>`` — that starts and removes replicas on its own engine and reports what
runs there. The reconciler (queue ``deployments``) drives this runtime like any other; here:

- ``start_replica`` places the replica on the host with the most room (``compute.placement``,
  under a lock on the target's host rows), records the placement on a ``Replica`` row (host,
  reserved CPU/memory/GPUs, ``host_status="placing"``) and sends ``start_host_replica(<row
  id>)`` to that host's queue, then waits until the host reports the container (its URL) or
  fails. No host with room (``NoCapacity``) or no report within MODELPORT_HOST_START_TIMEOUT_S
  / the host went silent (``HostNotReporting``): the reconciler turns these into an event and
  a pending/degraded deployment, not a failed revision, and tries again on its next pass.
- ``remove_replica`` marks the row ``removing`` and sends ``remove_host_replica`` to the host,
  waiting until the host removed the container (and the row). On a lost host the row goes at
  once; the host's worker removes the container when the host comes back.
- ``list_replicas`` / ``get_replica`` read the rows: the hosts are the truth, reported by each
  host worker's heartbeat (``deployments.host_side.report_host``); a replica on a lost host is
  ``lost``.

The rows are this runtime's state, so the reconciler's ``publish`` never creates or clobbers
them (``places_replicas``). Images: with a registry (the target's ``registry`` setting, else
MODELPORT_IMAGE_REGISTRY) ``ensure_image`` builds the serving image on this worker's own Docker
Engine, pushes it and returns the registry reference, which the revision records and each host
worker pulls (``host_side.host_image``); without one it only names the image and each host
builds it on its own engine. Stats are not collected from remote hosts (zeros); logs are the
last lines each host reported. The runtime factory builds it for such targets:
``DeploymentsConfig.ready()`` registers it there (``workers.factory.register_target_runtime``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compute import inventory, placement
from compute.models import Host
from core.errors import Conflict
from workers import factory
from workers.installation import installation_id
from workers.runtimes.base import (
    BackendHealth,
    LogFn,
    NodeInfo,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    missing_state,
)
from workers.runtimes.images import ImageBuilder, normalize_requirements

from .models import Deployment, Replica

PLACING, REMOVING, LOST, FAILED = "placing", "removing", "lost", "failed"
_STATUS = {s.value: s for s in ReplicaStatus}
Dispatch = Callable[[str, list[Any], str], None]


class PlacementPending(ReplicaRuntimeError):
    """A replica cannot run yet, through no fault of its revision: the reconciler records an
    event, keeps the deployment pending/degraded and tries again on its next pass."""

    waiting_for = "a host"


class NoCapacity(PlacementPending):
    """No host of the target has room for the replica (the message gives every host's
    numbers)."""

    waiting_for = "capacity"


class HostNotReporting(PlacementPending):
    """The chosen host has not reported the replica yet (an image build on that host, or the
    host went silent: then it is marked lost and the replica rescheduled)."""

    waiting_for = "the host"


def send_to_host(task: str, args: list[Any], queue: str) -> None:
    """Send a task to one host worker's queue (tasks take ids)."""
    # Celery takes any sequence of arguments; its stubs say tuple.
    current_app.tasks[task].apply_async(args=args, queue=queue)  # type: ignore[arg-type]


def image_tag(requirements: list[str]) -> str:
    """The serving image's tag for these requirements, as every host's ImageBuilder names it
    (each host builds it on its own engine when it is missing)."""
    builder = ImageBuilder(None, settings.MODELPORT_SERVING_BASE_IMAGE, ca_bundle=None,
                           offline=True)
    return builder.tag_for(normalize_requirements(requirements))


class HostsRuntime(Runtime):
    """Replicas of one multi-host docker target, placed on its hosts by free capacity."""

    name = "docker-hosts"
    sandboxed = True
    places_replicas = True  # the reconciler leaves Replica rows and GPU devices to this runtime

    def __init__(self, target: Any, *, dispatch: Dispatch | None = None,
                 poll_interval: float = 0.2, installation: str | None = None,
                 registry: str | None = None, image_builder: ImageBuilder | None = None) -> None:
        self.target = target
        self.dispatch = dispatch or send_to_host
        self.poll_interval = poll_interval
        # Names its replicas as the host workers' Docker runtimes (same database, same id) do.
        self.installation = installation_id() if installation is None else installation
        self.registry = (factory.image_registry(getattr(target, "settings", None))
                         if registry is None else registry)
        self._image_builder = image_builder  # default: this worker's engine

    # --- images -----------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        """Without a registry: the tag each host builds on its own engine. With one: built
        here, pushed, and the registry reference (what the hosts pull)."""
        if not self.registry:
            tag = image_tag(requirements)
            if on_log:
                on_log(f"image {tag}: each host worker builds it on its own engine when missing")
            return tag
        return factory.push_serving_image(self.registry, requirements, on_log,
                                          builder=self._image_builder)

    # --- lifecycle --------------------------------------------------------------------------
    def start_replica(self, spec: ReplicaSpec) -> ReplicaState:
        row, queue = self._place(spec)
        if queue:
            self.dispatch("workers.tasks.start_host_replica", [row.pk], queue)
        deadline = time.monotonic() + settings.MODELPORT_HOST_START_TIMEOUT_S
        while True:
            fresh = Replica.objects.select_related("host").filter(pk=row.pk).first()
            if fresh is None:
                raise ReplicaRuntimeError(f"replica {row.runtime_id} was removed while its "
                                          "host started it")
            if fresh.host_status == FAILED:
                message = fresh.message or "the host worker could not start it"
                fresh.delete()
                self._release_gpus(fresh)
                raise ReplicaRuntimeError(f"host {fresh.host.name if fresh.host else '?'}: "
                                          f"{message}")
            if fresh.host_status != PLACING:
                return self._state(fresh)
            host = fresh.host
            silent = host is None or host.last_heartbeat is None \
                or host.last_heartbeat < placement.fresh_cutoff()
            if silent or time.monotonic() > deadline:
                why = "stopped answering" if silent else "has not started it yet"
                raise HostNotReporting(f"host {host.name if host else '?'} {why} "
                                       f"(replica {fresh.runtime_id}); the next pass looks "
                                       "again.")
            time.sleep(self.poll_interval)

    def _place(self, spec: ReplicaSpec) -> tuple[Any, str]:
        """Choose a host and record the placement (locked: two reconciles never overbook)."""
        spec = self.scoped(spec)
        cpu, memory_mb = Decimal(str(spec.cpu or 0)).quantize(Decimal("0.01")), \
            int(spec.memory_mb or 0)
        with transaction.atomic():
            d = Deployment.objects.select_related("team").get(name=spec.deployment)
            current = (Replica.objects.select_related("host")
                       .filter(deployment=d, revision=spec.revision, index=spec.replica,
                               host__isnull=False)
                       .exclude(host_status__in=[LOST, REMOVING, FAILED]).first())
            if current is not None and self._state(current).alive:
                return current, ""  # already placed and running: idempotent
            hosts = list(placement.placeable_hosts(self.target).select_for_update()
                         .order_by("pk"))
            candidates = placement.rooms(hosts, deployment_id=d.pk, revision=spec.revision)
            room = placement.choose(candidates, cpu=cpu, memory_mb=memory_mb, gpus=spec.gpus)
            if room is None:
                raise NoCapacity(placement.shortfall(self.target, candidates, cpu=cpu,
                                                     memory_mb=memory_mb, gpus=spec.gpus))
            host = room.host
            runtime_id = f"{spec.name}.{host.name}"
            Replica.objects.filter(runtime_id=runtime_id).delete()  # a failed earlier attempt
            row = Replica.objects.create(
                deployment=d, runtime_id=runtime_id, revision=spec.revision,
                index=spec.replica, status="starting", host=host, cpu=cpu,
                memory_mb=memory_mb, gpus=spec.gpus, host_status=PLACING,
                placed_at=timezone.now(), message=f"placed on {host.name}")
            if spec.gpus:
                try:
                    inventory.allocate_gpus(team=d.team, count=spec.gpus,
                                         owner=f"{d.owner}/{runtime_id}", host=host)
                except Conflict as exc:
                    raise NoCapacity(f"host {host.name}: {exc}") from exc
        # Committed above (the reconciler runs in autocommit): the host worker sees the row.
        return row, host.queue

    def stop_replica(self, replica_id: str, timeout: float = 10) -> None:
        """Nothing here: ``remove_replica`` stops gracefully on the host, then removes."""

    def remove_replica(self, replica_id: str) -> None:
        row = Replica.objects.select_related("host").filter(runtime_id=replica_id).first()
        if row is None:
            return
        host = row.host
        if host is None or host.state == Host.State.LOST or not host.queue:
            row.delete()  # the host's worker removes the container when the host is back
            return
        Replica.objects.filter(pk=row.pk).update(host_status=REMOVING, ready=False,
                                                 status="removing")
        self.dispatch("workers.tasks.remove_host_replica", [host.pk, replica_id], host.queue)
        deadline = time.monotonic() + settings.MODELPORT_STOP_TIMEOUT_S + 30
        while Replica.objects.filter(pk=row.pk).exists():
            if time.monotonic() > deadline:  # the host will sweep it (no row: stale)
                Replica.objects.filter(pk=row.pk).delete()
                break
            time.sleep(self.poll_interval)

    def _release_gpus(self, row: Any) -> None:
        if row.gpus:
            inventory.release_gpus(owner=f"deployment:{row.deployment.name}/{row.runtime_id}")

    # --- discovery --------------------------------------------------------------------------
    def _rows(self) -> Any:
        rows = (Replica.objects.select_related("host", "deployment")
                .filter(host__isnull=False).exclude(host_status=REMOVING))
        if self.target.is_default:
            return rows.filter(Q(deployment__target=self.target)
                               | Q(deployment__target__isnull=True))
        return rows.filter(deployment__target=self.target)

    def list_replicas(self, deployment: str | None = None) -> list[ReplicaState]:
        rows = self._rows()
        if deployment is not None:
            rows = rows.filter(deployment__name=deployment)
        states = [self._state(r) for r in rows]
        return sorted(states, key=lambda s: (s.deployment, s.revision, s.replica, s.id))

    def get_replica(self, replica_id: str) -> ReplicaState:
        row = self._rows().filter(runtime_id=replica_id).first()
        return missing_state(replica_id) if row is None else self._state(row)

    def logs(self, replica_id: str, tail: int = 200) -> str:
        row = self._rows().filter(runtime_id=replica_id).first()
        if row is None:
            return ""
        lines = row.host_logs.splitlines()[-tail:]
        return "\n".join(lines)

    def stats(self, replica_id: str) -> dict[str, float]:
        return {"cpu_percent": 0.0, "memory_bytes": 0.0, "memory_limit_bytes": 0.0}

    def ping(self) -> bool:
        return placement.placeable_hosts(self.target).exists()

    def describe(self) -> BackendHealth:
        summaries = placement.host_summaries(placement.docker_hosts(self.target))
        hosts = {h.name: h for h in placement.docker_hosts(self.target)}
        nodes = []
        for s in summaries:
            host = hosts[s["name"]]
            nodes.append(NodeInfo(
                name=host.name, role="docker host", state=s["state"],
                available=s["state"] == "alive" and host.active,
                cpu=float(host.cpu * host.cpu_overcommit),
                memory_mb=int(host.memory_mb * host.memory_overcommit),
                gpus=host.gpus.filter(active=True).count()))
        alive = any(n.available for n in nodes)
        message = "" if alive else ("no host worker is alive" if nodes else
                                    "no host worker has registered yet")
        return BackendHealth(reachable=alive, nodes=nodes, message=message)

    def _state(self, row: Any) -> ReplicaState:
        host = row.host
        lost = row.host_status == LOST or (host is not None and host.state == Host.State.LOST)
        if lost:
            status, message = ReplicaStatus.LOST, f"host {host.name if host else '?'} lost"
        elif row.host_status == PLACING:
            status, message = ReplicaStatus.STARTING, row.message
        elif row.host_status == FAILED:
            status, message = ReplicaStatus.DEAD, row.message
        else:
            status, message = _STATUS.get(row.host_status, ReplicaStatus.STARTING), row.message
        return ReplicaState(
            id=row.runtime_id, deployment=row.deployment.name, revision=row.revision,
            replica=row.index, status=status, url=row.url or None,
            exit_code=None if status in (ReplicaStatus.RUNNING, ReplicaStatus.STARTING)
            else row.exit_code,
            restart_count=row.restart_count, message=message or "",
            host=host.name if host else "")
