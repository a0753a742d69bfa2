"""Celery tasks of host workers (several plain Docker hosts, ``deployments/hosts_runtime.py``).

Their names stay ``workers.tasks.*``: a host worker's heartbeat step sends
``workers.tasks.host_heartbeat`` by name (``workers/host_step.py``), the hosts runtime
dispatches the start/remove tasks by name to each host's queue, and beat schedules
``check_hosts`` by name. ``deployments/tasks.py`` imports this module, so Celery's autodiscovery
registers them in every process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from django.conf import settings

from compute import inventory
from compute.models import Host
from workers import factory

from . import host_models, host_side
from .models import Replica

log = logging.getLogger(__name__)
ENGINE_RETRY_S = 2.0


def _host_runtime(host_name: str) -> Any | None:
    """This machine's Docker as host ``host_name``'s runtime; None when this worker is another
    host's (a task routed to the wrong queue never touches a foreign engine)."""
    own = settings.MODELPORT_HOST_NAME
    if own and own != host_name:
        log.error("task for host %s reached host worker %s: ignored", host_name, own)
        return None
    return factory.host_worker_runtime(host_name)


def _engine_info(runtime: Any) -> dict[str, Any]:
    """``docker info``, asked once more after ENGINE_RETRY_S when it fails: one slow answer or
    a restarting engine must not reschedule every replica of the host."""
    try:
        return dict(runtime.client.info())
    except Exception:  # noqa: BLE001 - asked again below; that failure is the one reported
        time.sleep(ENGINE_RETRY_S)
        return dict(runtime.client.info())


@shared_task(name="workers.tasks.host_heartbeat", ignore_result=True,
             expires=max(5, settings.MODELPORT_HOST_HEARTBEAT_SECONDS))
def host_heartbeat(host_name: str) -> dict[str, Any] | None:
    """On a host worker (sent to its own queue by its HostHeartbeat step): register or refresh
    the host in the capacity registry from `docker info`, report its replicas, remove stale
    containers and cached models no replica here uses (above the cache bound). An engine that
    does not answer loses the host at once (``host_side.mark_engine_down``)."""
    runtime = _host_runtime(host_name)
    if runtime is None:
        return None
    # read before asking: a loss marked after this stands against the answer (inventory)
    lost_seen = Host.objects.filter(name=host_name).values_list("lost_at", flat=True).first()
    try:
        info = _engine_info(runtime)
    except Exception as exc:  # noqa: BLE001 - any failure, twice: the engine does not answer
        host_side.mark_engine_down(name=host_name, error=f"{exc.__class__.__name__}: {exc}")
        return None
    host = inventory.record_host_heartbeat(
        name=host_name, info=info,
        queue=settings.MODELPORT_HOST_QUEUE if settings.MODELPORT_HOST_NAME else "",
        address=runtime.bind_host, lost_seen=lost_seen)
    if host.state == Host.State.LOST:  # a late heartbeat: the host was lost after its answer
        return None
    report = host_side.report_host(host=host, runtime=runtime)
    if settings.MODELPORT_HOST_MODEL_SOURCE == "fetch":
        try:  # after the report: a replica removed from this host frees its model here
            report["models_evicted"] = host_models.evict(host=host_name)
        except OSError:  # the cache is best effort; the next heartbeat tries again
            log.warning("host %s: model cache eviction failed", host_name, exc_info=True)
    return report


@shared_task(name="workers.tasks.start_host_replica", ignore_result=True, acks_late=True)
def start_host_replica(replica_id: int) -> None:
    """On a host worker: start one replica placed on this host (a ``Replica`` row id)."""
    row = Replica.objects.select_related("host").filter(pk=replica_id).first()
    if row is None or row.host is None:
        return
    runtime = _host_runtime(row.host.name)
    if runtime is not None:
        host_side.start_on_host(replica_id=replica_id, runtime=runtime)


@shared_task(name="workers.tasks.remove_host_replica", ignore_result=True, acks_late=True)
def remove_host_replica(host_id: int, replica_id: str) -> None:
    """On a host worker: stop and remove one of this host's replicas (by its container name)."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return
    runtime = _host_runtime(host.name)
    if runtime is not None:
        host_side.remove_on_host(host_id=host_id, replica_id=replica_id, runtime=runtime)


@shared_task(name="workers.tasks.check_hosts", ignore_result=True,
             expires=max(5, settings.MODELPORT_HOST_HEARTBEAT_SECONDS))
def check_hosts() -> list[str]:
    """Beat: mark Docker hosts without a recent heartbeat lost (their replicas are
    rescheduled). A no-op on installations without host workers."""
    return [host.name for host in host_side.mark_lost_hosts()]
