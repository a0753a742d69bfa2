"""The host side of several plain Docker hosts (``deployments/hosts_runtime.py``): what a host
worker does on its own engine — report what runs there onto the ``Replica`` rows, start and
remove the replicas placed on it — and beat's check that marks silent hosts lost so the
reconciler reschedules their replicas. The tasks that run these are ``deployments/host_tasks.py``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from compute import inventory
from compute.inventory import HOST_WORKER_FIELDS
from compute.models import Host
from core import replica_keys
from teams import audit
from workers.runtimes import ReplicaSpec

from . import hooks, host_models, passes
from .models import Deployment, DeploymentEvent, Replica, Revision

logger = logging.getLogger(__name__)
HOST_LOG_LINES = 100


def report_host(*, host: Any, runtime: Any) -> dict[str, Any]:
    """On the host worker: what runs on this host's engine → its ``Replica`` rows (status, URL,
    exit code, last log lines). A container of this host without a row here is stale — its
    replica was rescheduled elsewhere while the host was lost, removed, or its deployment
    deleted — and is removed. A row whose container is gone reads ``missing`` (replaced by the
    next reconcile)."""
    states = runtime.list_replicas()  # first: a row placed after this never looks stale
    rows = {r.runtime_id: r for r in Replica.objects.filter(host=host)}
    now = timezone.now()
    stale: list[str] = []
    changed: set[int] = set()
    gone: set[int] = set()  # lost a live replica: the gateways reload their routes
    for s in states:
        row = rows.pop(s.id, None)
        if row is None:
            runtime.remove_replica(s.id)
            stale.append(s.id)
            d = Deployment.objects.filter(name=s.deployment).first()
            if d is not None:
                DeploymentEvent.objects.create(
                    deployment=d, kind=DeploymentEvent.Kind.INFO, revision=s.revision,
                    message=f"Host {host.name}: removed stale container {s.id} (its replica "
                            "runs elsewhere now).")
            continue
        if row.host_status in ("placing", "removing"):
            continue  # the start/remove task on this host owns it right now
        try:
            logs = runtime.logs(s.id, tail=HOST_LOG_LINES)
        except Exception:  # noqa: BLE001 - logs are best effort
            logs = row.host_logs
        update = {"host_status": s.status.value, "url": s.url or "", "exit_code": s.exit_code,
                  "restart_count": s.restart_count, "host_logs": logs[-20000:],
                  "reported_at": now}
        if row.host_status != s.status.value:
            changed.add(row.deployment_id)
            if not s.alive:
                update["ready"] = False
                gone.add(row.deployment_id)
        Replica.objects.filter(pk=row.pk).update(**update)
    timeout = timedelta(seconds=settings.MODELPORT_HOST_START_TIMEOUT_S)
    for row in rows.values():  # rows without a container on this host
        if row.host_status == "removing" or (row.host_status == "placing"
                                             and row.placed_at and now - row.placed_at < timeout):
            continue
        if row.host_status != "missing":
            Replica.objects.filter(pk=row.pk).update(host_status="missing", ready=False,
                                                     reported_at=now)
            changed.add(row.deployment_id)
            gone.add(row.deployment_id)
    if stale:
        audit.record(actor=None, action="host.stale_removed", obj=host,
                     after={"containers": stale})
    if gone:
        Deployment.objects.filter(pk__in=gone).update(routing_version=F("routing_version") + 1)
    if changed:
        for pk in sorted(changed):
            transaction.on_commit(partial(passes.enqueue_reconcile, pk))
    return {"host": host.name, "containers": len(states), "stale_removed": stale}


def start_on_host(*, replica_id: int, runtime: Any) -> Any:
    """On the host worker: start the replica placed here (image built on this engine when
    missing, model files fetched from the platform or unpacked from shared storage
    (``host_models``), GPU devices allocated at placement) and report it."""
    row = (Replica.objects.select_related("deployment__model", "deployment__team", "host")
           .filter(pk=replica_id).first())
    if row is None or row.host_status != "placing":
        return None  # removed, or started already (a redelivered task)
    d = row.deployment
    try:
        revision = Revision.objects.select_related("model_version").get(deployment=d,
                                                                         number=row.revision)
        version = revision.model_version
        image = host_image(runtime=runtime, row=row, image=revision.image,
                           requirements=list(version.requirements or []))
        model_dir = host_models.model_dir_on_host(
            version, host=row.host.name if row.host else settings.MODELPORT_HOST_NAME,
            progress=partial(_say, row.pk))
        spec = ReplicaSpec(deployment=d.name, revision=row.revision, replica=row.index,
                           image=image, model_dir=str(model_dir),
                           model_name=d.model.name, model_version=str(version.version),
                           cpu=float(row.cpu), memory_mb=row.memory_mb,
                           installation=runtime.installation)
        if row.gpus:
            spec.gpu_device_ids = inventory.device_ids(f"{d.owner}/{row.runtime_id}")
        spec.env.update(hooks.replica_environment(d))
        if revision.replica_key:
            spec.env[replica_keys.ENV] = revision.replica_key
        spec.egress = bool((revision.spec or {}).get("egress"))
        state = runtime.start_replica(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the reconciler, which waits for it
        Replica.objects.filter(pk=row.pk, host_status="placing").update(
            host_status="failed", message=f"{exc.__class__.__name__}: {exc}"[:2000],
            reported_at=timezone.now())
        return None
    updated = Replica.objects.filter(pk=row.pk, host_status="placing").update(
        host_status=state.status.value, url=state.url or "", exit_code=state.exit_code,
        message=state.message or f"running on {row.host.name if row.host else ''}",
        reported_at=timezone.now())
    if not updated:  # removed while it started: do not leave it behind
        runtime.remove_replica(state.id)
    return state


def _say(replica_id: int, message: str) -> None:
    """Progress of a start on the replica's row (the deployment page shows it)."""
    Replica.objects.filter(pk=replica_id, host_status="placing").update(message=message)


def host_image(*, runtime: Any, row: Any, image: str, requirements: list[str]) -> str:
    """The image this host runs: the registry reference the platform pushed (the revision's
    ``image``), pulled onto this engine when missing — progress on the replica's message, which
    the reconciler shows while it waits — else the serving image built on this engine."""
    last = [0.0]

    def progress(line: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or line.startswith(("pulling ", "pulled ")):
            last[0] = now
            Replica.objects.filter(pk=row.pk, host_status="placing").update(
                message=f"{row.host.name if row.host else ''}: {line}"[:2000])
        logger.info("%s: %s", row.runtime_id, line)

    return str(runtime.image_for(image, requirements, progress))


def remove_on_host(*, host_id: int, replica_id: str, runtime: Any) -> None:
    """On the host worker: stop the replica gracefully (its last prediction logs ship), remove
    it, then its row — which the reconciler waits for."""
    try:
        runtime.stop_replica(replica_id, timeout=settings.MODELPORT_STOP_TIMEOUT_S)
    except Exception:  # removal below is what matters; a failed stop only loses logs
        logger.warning("graceful stop of %s failed; removing it", replica_id, exc_info=True)
    runtime.remove_replica(replica_id)
    Replica.objects.filter(runtime_id=replica_id, host_id=host_id,
                           host_status="removing").delete()


def placed_artifact(*, host: str, sha256: str) -> Any | None:
    """The model version with artifact ``sha256`` when a replica is placed on ``host`` that
    runs it (any state but removing), else None: a host downloads only what it is to run."""
    placed = (Replica.objects.filter(host__name=host).exclude(host_status="removing")
              .values_list("deployment_id", "revision"))
    pairs = set(placed)
    if not pairs:
        return None
    revisions = (Revision.objects.filter(deployment_id__in={d for d, _ in pairs},
                                         model_version__artifact_sha256=sha256)
                 .select_related("model_version__model"))
    for revision in revisions:
        if (revision.deployment_id, revision.number) in pairs \
                and revision.model_version.artifact_name:
            return revision.model_version
    return None


def mark_lost_hosts(*, now: datetime | None = None) -> list[Any]:
    """Beat: Docker hosts whose worker has not reported for MODELPORT_HOST_LOST_SECONDS are
    lost. Their replicas are marked lost (out of routing at once), each deployment gets an
    event, the audit log a ``host.lost`` entry, and a reconcile is enqueued: the reconciler
    reschedules the lost replicas on other hosts."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.MODELPORT_HOST_LOST_SECONDS)
    candidates = (Host.objects.exclude(queue="").filter(state=Host.State.ALIVE)
                  .filter(Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True)))
    lost = []
    for pk in list(candidates.values_list("pk", flat=True)):
        with transaction.atomic():
            host = Host.objects.select_for_update().filter(pk=pk, state=Host.State.ALIVE).first()
            if host is None or (host.last_heartbeat and host.last_heartbeat >= cutoff):
                continue
            silent = (f"{(now - host.last_heartbeat).total_seconds():.0f} s"
                      if host.last_heartbeat else "ever")
            _lose(host, now, f"no heartbeat for {silent}")
            lost.append(host)
    return lost


ENGINE_DOWN = "engine not answering"


def mark_engine_down(*, name: str, error: str, now: datetime | None = None) -> Any | None:
    """On the host worker: its Docker Engine did not answer the heartbeat's ``info``. The
    host is lost at once — not after MODELPORT_HOST_LOST_SECONDS of silence — since nothing
    it runs can be started, stopped or trusted to serve (a dead engine's containers are gone
    or orphaned): its replicas leave routing and are rescheduled, as in ``mark_lost_hosts``,
    with the reason ``engine not answering``. The host comes back when its engine answers
    a heartbeat again (``inventory.record_host_heartbeat``); its stale containers are then
    removed by ``report_host``. None when the host is unknown or lost already."""
    now = now or timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().filter(name=name, state=Host.State.ALIVE) \
            .exclude(queue="").first()
        if host is None:
            return None
        _lose(host, now, f"{ENGINE_DOWN}: {error}"[:300])
    logger.warning("host %s lost: its Docker Engine is not answering (%s)", name, error)
    return host


def _lose(host: Any, now: datetime, why: str) -> None:
    """Host and replicas lost (in the caller's transaction, the host row locked): audit,
    events, routes reloaded, a reconcile per deployment to reschedule them."""
    before = audit.snapshot(host, [*HOST_WORKER_FIELDS, "last_heartbeat"])
    host.state, host.lost_at = Host.State.LOST, now
    host.save(update_fields=["state", "lost_at", "updated_at"])
    rows = list(Replica.objects.filter(host=host).exclude(host_status="removing")
                .values_list("runtime_id", "deployment_id"))
    Replica.objects.filter(host=host).exclude(host_status="removing").update(
        host_status="lost", status="lost", ready=False)
    audit.record(actor=None, action="host.lost", obj=host, before=before,
                 after={**audit.snapshot(host, HOST_WORKER_FIELDS),
                        "replicas": sorted(r for r, _ in rows), "reason": why})
    deployments = sorted({d for _, d in rows})
    for d in Deployment.objects.filter(pk__in=deployments):
        mine = sorted(r for r, dep in rows if dep == d.pk)
        DeploymentEvent.objects.create(
            deployment=d, kind=DeploymentEvent.Kind.WARNING, revision=d.revision,
            message=f"Host {host.name} lost ({why}): "
                    f"{len(mine)} replica(s) marked lost ({', '.join(mine)}); "
                    "rescheduling them on other hosts.")
    Deployment.objects.filter(pk__in=deployments).update(
        routing_version=F("routing_version") + 1)
    for d_pk in deployments:
        transaction.on_commit(partial(passes.enqueue_reconcile, d_pk))
