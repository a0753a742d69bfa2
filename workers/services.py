"""Worker bookkeeping (heartbeats written by the Celery worker, read by the portal and /readyz)
and execution targets (where deployments run), registered by platform admins."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from config.errors import Conflict, InvalidInput
from core import replica_keys
from teams import audit
from teams.access import require_platform_admin

from .models import ExecutionTarget, TargetKind, WorkerHeartbeat

logger = logging.getLogger(__name__)


def record_heartbeat(*, hostname: str, sent_at: datetime | None) -> WorkerHeartbeat:
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        defaults={"last_seen": timezone.now(), "beat_sent_at": sent_at,
                  "version": settings.MODELPORT_VERSION},
    )
    return heartbeat


def live_workers() -> list[WorkerHeartbeat]:
    return [hb for hb in WorkerHeartbeat.objects.all()[:50] if hb.is_alive]


# --- Execution targets ---------------------------------------------------------------------------
TARGET_FIELDS = ["name", "kind", "endpoint", "kube_context", "in_cluster", "namespace",
                 "settings", "cpu", "memory_mb", "gpus", "enabled", "is_default"]
ENDPOINT_SCHEMES = ("unix://", "tcp://", "ssh://", "http://", "https://", "npipe://")
SETTINGS_KEYS = {
    TargetKind.DOCKER: {"network", "port_range", "placement"},
    TargetKind.SWARM: {"network", "overlay_network", "egress_network", "port_range",
                       "gpu_resource"},
    TargetKind.KUBERNETES: {"image_pull_secrets", "registry", "service_account",
                            "node_selector", "url_mode", "service_type", "gpu_resource",
                            "network_policy"},
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")
MAX_CPU = Decimal("100000")


def _target_settings(kind: str, raw: Any) -> dict[str, Any]:
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput('settings must be an object, e.g. {"network": "host"}.',
                           field="settings")
    allowed = SETTINGS_KEYS[TargetKind(kind)]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidInput(f"settings has unknown key(s) {', '.join(unknown)} for a {kind} "
                           f"target; allowed: {', '.join(sorted(allowed))}.", field="settings")
    out = dict(raw)
    network = raw.get("network")
    if network is not None:
        if not isinstance(network, str) or not network.strip():
            raise InvalidInput("settings.network must be a name.", field="settings")
        if kind == TargetKind.SWARM and network not in ("host", "overlay"):
            raise InvalidInput("settings.network of a swarm target is 'host' (tests, one "
                               "node) or 'overlay' (production).", field="settings")
    if kind == TargetKind.SWARM and network == "overlay":
        name = raw.get("overlay_network")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("settings.overlay_network names the attachable overlay network "
                               "the gateway shares with the replicas (overlay mode needs it).",
                               field="settings")
    if "egress_network" in raw:
        egress = raw["egress_network"]
        if not isinstance(egress, str) or not egress.strip():
            raise InvalidInput("settings.egress_network names the overlay network that leads "
                               "out, for deployments a platform admin granted egress.",
                               field="settings")
        if network != "overlay" or egress == raw.get("overlay_network"):
            raise InvalidInput("settings.egress_network applies to overlay mode and differs "
                               "from overlay_network (in host mode replicas already share the "
                               "node's network).", field="settings")
    if "network_policy" in raw:
        from .runtimes.kube_policy import PolicyPeers

        try:
            PolicyPeers.from_settings(raw["network_policy"])
        except ValueError as exc:
            raise InvalidInput(f"settings.{exc}.", field="settings") from None
    if "port_range" in raw:
        ports = raw["port_range"]
        if (not isinstance(ports, list) or len(ports) != 2
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
                or not 1024 <= ports[0] <= ports[1] <= 65535):
            raise InvalidInput("settings.port_range is [first, last] with 1024 <= first <= last "
                               "<= 65535.", field="settings")
    if "placement" in raw and raw["placement"] != "hosts":
        raise InvalidInput('settings.placement of a docker target is "hosts" (several plain '
                           "Docker hosts, each with a host worker) or absent (one host).",
                           field="settings")
    if "gpu_resource" in raw and (not isinstance(raw["gpu_resource"], str)
                                  or not raw["gpu_resource"].strip()):
        raise InvalidInput("settings.gpu_resource is the Swarm generic resource name, e.g. "
                           "NVIDIA-GPU.", field="settings")
    return out


def _capacity(values: dict[str, Any]) -> tuple[Decimal, int, int]:
    try:
        raw = values.get("cpu", 0)
        if isinstance(raw, bool):
            raise InvalidOperation
        cpu = Decimal(str(raw if raw not in (None, "") else 0))
        if not cpu.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"cpu must be a number of cores (got {values.get('cpu')!r}).",
                           field="cpu") from None
    if cpu < 0 or cpu > MAX_CPU or cpu != cpu.quantize(Decimal("0.001")):
        raise InvalidInput(f"cpu must be between 0 and {MAX_CPU} with at most 3 decimals.",
                           field="cpu")
    whole = []
    for key, limit in (("memory_mb", 1024 ** 3), ("gpus", 10000)):
        value = values.get(key, 0)
        if value in (None, ""):
            value = 0
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                if str(value).strip() != str(int(str(value).strip())):
                    raise ValueError
                value = int(str(value).strip())
            except (TypeError, ValueError):
                raise InvalidInput(f"{key} must be a whole number (got {value!r}).",
                                   field=key) from None
        if not 0 <= value <= limit:
            raise InvalidInput(f"{key} must be between 0 and {limit}.", field=key)
        whole.append(value)
    return cpu, whole[0], whole[1]


def _validate_target(values: dict[str, Any]) -> dict[str, Any]:
    """Every field of a target, checked together (the kind decides what must be there)."""
    name = str(values.get("name") or "").strip()
    if not _SLUG.match(name):
        raise InvalidInput(f"'{name}' is not a valid target name: use 1-50 lowercase letters, "
                           "digits and hyphens.", field="name")
    kind = values.get("kind") or TargetKind.DOCKER
    if kind not in TargetKind.values:
        raise InvalidInput(f"kind must be one of {', '.join(TargetKind.values)} (got {kind!r}).",
                           field="kind")
    endpoint = str(values.get("endpoint") or "").strip()
    if endpoint and not endpoint.startswith(ENDPOINT_SCHEMES):
        raise InvalidInput(f"endpoint must start with one of {', '.join(ENDPOINT_SCHEMES)}, "
                           "e.g. unix:///var/run/docker.sock or tcp://swarm-manager:2376.",
                           field="endpoint")
    namespace = str(values.get("namespace") or "").strip()
    context = str(values.get("kube_context") or "").strip()
    in_cluster = bool(values.get("in_cluster"))
    if kind == TargetKind.KUBERNETES:
        if endpoint:
            raise InvalidInput("A kubernetes target takes a kubeconfig context or in-cluster "
                               "credentials, not a Docker endpoint.", field="endpoint")
        if not namespace or not _DNS_LABEL.match(namespace):
            raise InvalidInput("A kubernetes target needs a namespace (a DNS label, e.g. "
                               "'models').", field="namespace")
        if in_cluster and context:
            raise InvalidInput("Give a kubeconfig context or in_cluster, not both.",
                               field="kube_context")
    elif namespace or context or in_cluster:
        raise InvalidInput(f"kube_context, in_cluster and namespace apply only to kubernetes "
                           f"targets, not {kind}.", field="namespace")
    options = values.get("settings")
    if isinstance(options, dict) and options.get("placement") == "hosts" and (
            endpoint or set(options) - {"placement"}):
        raise InvalidInput('A "placement": "hosts" target takes no endpoint, network or port '
                           "range: each host's worker uses its own Docker Engine "
                           "(MODELPORT_HOST_ADDRESS, MODELPORT_PORT_RANGE on that host).",
                           field="settings")
    cpu, memory_mb, gpus = _capacity(values)
    return {"name": name, "kind": kind, "endpoint": endpoint, "kube_context": context,
            "in_cluster": in_cluster, "namespace": namespace,
            "settings": _target_settings(kind, values.get("settings")),
            "cpu": cpu, "memory_mb": memory_mb, "gpus": gpus,
            "enabled": bool(values.get("enabled", True)),
            "is_default": bool(values.get("is_default", False))}


def _take_default(target: ExecutionTarget) -> None:
    ExecutionTarget.objects.filter(is_default=True).exclude(pk=target.pk) \
        .update(is_default=False)


@transaction.atomic
def create_target(*, actor, **values: Any) -> ExecutionTarget:
    require_platform_admin(actor, "register execution targets")
    unknown = sorted(set(values) - set(TARGET_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown field(s) {', '.join(unknown)}.")
    clean = _validate_target(values)
    if clean["is_default"] and not clean["enabled"]:
        raise InvalidInput("The default target must be enabled.", field="is_default")
    if ExecutionTarget.objects.filter(name=clean["name"]).exists():
        raise Conflict(f"A target named '{clean['name']}' exists.", code="name_taken")
    if clean["is_default"]:
        ExecutionTarget.objects.filter(is_default=True).update(is_default=False)
    target = ExecutionTarget.objects.create(**clean)
    audit.record(actor=actor, action="target.created", obj=target,
                 after=audit.snapshot(target, TARGET_FIELDS))
    return target


@transaction.atomic
def update_target(*, actor, target: ExecutionTarget, **changes: Any) -> ExecutionTarget:
    require_platform_admin(actor, "edit execution targets")
    unknown = sorted(set(changes) - set(TARGET_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown field(s) {', '.join(unknown)}.")
    target = ExecutionTarget.objects.select_for_update().get(pk=target.pk)
    before = audit.snapshot(target, TARGET_FIELDS)
    current = {name: getattr(target, name) for name in TARGET_FIELDS}
    clean = _validate_target({**current, **changes})
    if clean["name"] != target.name:
        raise InvalidInput("A target's name cannot change (deployments and replicas name it).",
                           field="name")
    if clean["kind"] != target.kind and target.deployments.exists():
        raise Conflict(f"Target '{target.name}' has deployments; its kind cannot change.",
                       code="target_in_use")
    if target.is_default and not clean["is_default"]:
        raise Conflict("Make another target the default instead of un-flagging this one.",
                       code="default_target")
    if clean["is_default"] and not clean["enabled"]:
        raise InvalidInput("The default target must be enabled.", field="enabled")
    if clean["is_default"]:
        _take_default(target)
    for name, value in clean.items():
        setattr(target, name, value)
    target.save()
    after = audit.snapshot(target, TARGET_FIELDS)
    if after != before:
        audit.record(actor=actor, action="target.updated", obj=target, before=before,
                     after=after)
    return target


@transaction.atomic
def delete_target(*, actor, target: ExecutionTarget) -> None:
    require_platform_admin(actor, "remove execution targets")
    target = ExecutionTarget.objects.select_for_update().get(pk=target.pk)
    if target.is_default:
        raise Conflict("The default target cannot be removed; make another one the default "
                       "first.", code="default_target")
    if target.deployments.exists():
        names = ", ".join(target.deployments.values_list("name", flat=True)[:5])
        raise Conflict(f"Target '{target.name}' still has deployments ({names}); delete or "
                       "move them first.", code="target_in_use")
    audit.record(actor=actor, action="target.deleted", obj=target,
                 before=audit.snapshot(target, TARGET_FIELDS))
    target.delete()


def default_target() -> ExecutionTarget | None:
    """MODELPORT_DEFAULT_TARGET (a name) if set, else the target flagged default; None on an
    installation without targets (the runtime then follows MODELPORT_RUNTIME)."""
    name = getattr(settings, "MODELPORT_DEFAULT_TARGET", "")
    if name:
        target = ExecutionTarget.objects.filter(name=name).first()
        if target is None:
            raise ImproperlyConfigured(f"MODELPORT_DEFAULT_TARGET={name!r} names no registered "
                                       "execution target.")
        return target
    return ExecutionTarget.objects.filter(is_default=True).first()


def resolve_target(value: Any) -> ExecutionTarget | None:
    """A target named by a caller (deploying), or the default when ``value`` is empty."""
    if value in (None, ""):
        return default_target()
    if isinstance(value, ExecutionTarget):
        target = value
    else:
        target = ExecutionTarget.objects.filter(name=str(value)).first()
        if target is None:
            names = ", ".join(ExecutionTarget.objects.enabled().values_list("name", flat=True))
            raise InvalidInput(f"No execution target '{value}' (known: {names or 'none'}).",
                               field="target")
    if not target.enabled:
        raise InvalidInput(f"Execution target '{target.name}' is disabled.", field="target")
    return target


def target_reserved(target: ExecutionTarget, *, exclude_owner: str = "") -> dict[str, Any]:
    """What deployments on this target have reserved (their quota reservations)."""
    from deployments.models import Deployment
    from quotas.models import Reservation

    deployments = Deployment.objects.filter(target=target)
    if target.is_default:
        deployments = Deployment.objects.filter(Q(target=target) | Q(target__isnull=True))
    owners = [f"deployment:{name}" for name in deployments.values_list("name", flat=True)]
    totals = (Reservation.objects.filter(owner__in=owners).exclude(owner=exclude_owner)
              .aggregate(cpu=Sum("cpu"), memory_mb=Sum("memory_mb"), gpus=Sum("gpus")))
    return {"cpu": totals["cpu"] or Decimal("0"), "memory_mb": totals["memory_mb"] or 0,
            "gpus": totals["gpus"] or 0}


def check_target_capacity(*, target: ExecutionTarget, owner: str, cpu: Decimal,
                          memory_mb: int, gpus: int) -> None:
    """Refuse (409) resources beyond what a target with registered capacity can hold. Locks
    the target row: two deploys to one target cannot both take its last CPUs."""
    locked = ExecutionTarget.objects.select_for_update().get(pk=target.pk)
    if not locked.has_capacity_limit:
        return
    used = target_reserved(locked, exclude_owner=owner)
    problems = []
    if locked.cpu and used["cpu"] + Decimal(cpu) > locked.cpu:
        problems.append(f"{cpu} CPU needed, {locked.cpu - used['cpu']} of {locked.cpu} free")
    if locked.memory_mb and used["memory_mb"] + memory_mb > locked.memory_mb:
        problems.append(f"{memory_mb} MB needed, {locked.memory_mb - used['memory_mb']} of "
                        f"{locked.memory_mb} MB free")
    if gpus and used["gpus"] + gpus > locked.gpus:
        problems.append(f"{gpus} GPUs needed, {locked.gpus - used['gpus']} of {locked.gpus} "
                        "free")
    if problems:
        raise Conflict(f"Execution target '{locked.name}' is full: " + "; ".join(problems)
                       + ".", code="target_capacity_exceeded")


def deployment_target(deployment) -> ExecutionTarget | None:
    """The target a deployment runs on: its own, else the default."""
    if deployment.target_id is not None:
        return deployment.target
    return default_target()


def deployment_runtime(deployment) -> Any:
    """The runtime that carries out this deployment: its target's, of the kind fixed when it
    was created (``workers.runtime_choice``)."""
    from .runtime_choice import runtime_for

    return runtime_for(deployment)


# --- Several plain Docker hosts (workers/hosts.py) --------------------------------------------
HOST_FIELDS = ["name", "queue", "address", "cpu", "memory_mb", "state", "active",
               "docker_version"]
HOST_LOG_LINES = 100


def _docker_gpus(info: dict[str, Any]) -> list[tuple[str, str]]:
    """GPUs a Docker Engine advertises as generic resources (``node-generic-resources`` in
    daemon.json, e.g. ``NVIDIA-GPU=GPU-8f3a…``) plus MODELPORT_HOST_GPUS (``id=model``)."""
    found: list[tuple[str, str]] = []
    for item in info.get("GenericResources") or []:
        named = (item or {}).get("NamedResourceSpec") or {}
        kind, value = str(named.get("Kind") or ""), str(named.get("Value") or "")
        if value and "GPU" in kind.upper():
            found.append((value, kind))
    for entry in settings.MODELPORT_HOST_GPUS:
        device_id, _, model = entry.partition("=")
        if device_id.strip():
            found.append((device_id.strip(), model.strip() or "GPU"))
    seen: set[str] = set()
    return [(d, m) for d, m in found if not (d in seen or seen.add(d))]


def _host_target() -> ExecutionTarget | None:
    """The multi-host docker target a host worker serves: MODELPORT_HOST_TARGET, else the
    first enabled docker target with "placement": "hosts"."""
    name = settings.MODELPORT_HOST_TARGET
    if name:
        return ExecutionTarget.objects.filter(name=name).first()
    return (ExecutionTarget.objects.enabled().filter(kind=TargetKind.DOCKER,
                                                    settings__placement="hosts")
            .order_by("name").first())


@transaction.atomic
def record_host_heartbeat(*, name: str, info: dict[str, Any], queue: str = "",
                          address: str = "") -> Any:
    """A host worker's heartbeat: register its Docker host in the capacity registry (CPU and
    memory from ``docker info`` — later edits in the console stick, e.g. to keep headroom for
    the host itself —, GPUs as above) or refresh it; a lost host comes back."""
    from quotas.models import GpuDevice, Host

    now = timezone.now()
    cpu = Decimal(str(info.get("NCPU") or 0)).quantize(Decimal("0.001"))
    memory_mb = int(info.get("MemTotal") or 0) // (1024 * 1024)
    values = {"queue": queue or f"host.{name}", "address": address or "127.0.0.1",
              "docker_version": str(info.get("ServerVersion") or "")[:40]}
    host = Host.objects.select_for_update().filter(name=name).first()
    if host is None:  # CPU and memory from the engine once; then the console's to edit
        host = Host.objects.create(name=name, kind=Host.Kind.HOST, target=_host_target(),
                                   state=Host.State.ALIVE, last_heartbeat=now, cpu=cpu,
                                   memory_mb=memory_mb, **values)
        audit.record(actor=None, action="host.registered", obj=host,
                     after=audit.snapshot(host, HOST_FIELDS))
    else:
        before = audit.snapshot(host, HOST_FIELDS)
        was_lost = host.state == Host.State.LOST
        for key, value in values.items():
            setattr(host, key, value)
        if host.target_id is None:
            host.target = _host_target()
        host.last_heartbeat, host.state, host.lost_at = now, Host.State.ALIVE, None
        host.save()
        if was_lost:
            audit.record(actor=None, action="host.recovered", obj=host, before=before,
                         after=audit.snapshot(host, HOST_FIELDS))
        elif {k: v for k, v in before.items() if k != "state"} != \
                {k: v for k, v in audit.snapshot(host, HOST_FIELDS).items() if k != "state"}:
            audit.record(actor=None, action="host.updated", obj=host, before=before,
                         after=audit.snapshot(host, HOST_FIELDS))
    known = set(host.gpus.values_list("device_id", flat=True))
    for device_id, model in _docker_gpus(info):
        if device_id not in known:
            GpuDevice.objects.create(host=host, device_id=device_id, model=model)
            audit.record(actor=None, action="gpu.added", obj=host,
                         after={"host": host.name, "device_id": device_id, "model": model})
    return host


def report_host(*, host: Any, runtime: Any) -> dict[str, Any]:
    """On the host worker: what runs on this host's engine → its ``Replica`` rows (status, URL,
    exit code, last log lines). A container of this host without a row here is stale — its
    replica was rescheduled elsewhere while the host was lost, removed, or its deployment
    deleted — and is removed. A row whose container is gone reads ``missing`` (replaced by the
    next reconcile)."""
    from deployments.models import Deployment, DeploymentEvent, Replica

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
        from deployments import passes

        for pk in sorted(changed):
            transaction.on_commit(lambda pk=pk: passes.enqueue_reconcile(pk))
    return {"host": host.name, "containers": len(states), "stale_removed": stale}


def start_on_host(*, replica_id: int, runtime: Any) -> Any:
    """On the host worker: start the replica placed here (image built on this engine when
    missing, model files unpacked here, GPU devices allocated at placement) and report it."""
    from deployments.models import Replica, Revision
    from deployments.reconcile import model_dir_for
    from quotas import services as quotas

    from .runtimes import ReplicaSpec

    row = (Replica.objects.select_related("deployment__model", "deployment__team", "host")
           .filter(pk=replica_id).first())
    if row is None or row.host_status != "placing":
        return None  # removed, or started already (a redelivered task)
    d = row.deployment
    try:
        revision = Revision.objects.select_related("model_version").get(deployment=d,
                                                                         number=row.revision)
        version = revision.model_version
        image = runtime.ensure_image(list(version.requirements or []))
        spec = ReplicaSpec(deployment=d.name, revision=row.revision, replica=row.index,
                           image=image, model_dir=str(model_dir_for(version)),
                           model_name=d.model.name, model_version=str(version.version),
                           cpu=float(row.cpu), memory_mb=row.memory_mb,
                           installation=runtime.installation)
        if row.gpus:
            spec.gpu_device_ids = quotas.device_ids(f"{d.owner}/{row.runtime_id}")
        spec.env.update(_ingest_env(d))
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
        message=state.message or f"running on {row.host.name}", reported_at=timezone.now())
    if not updated:  # removed while it started: do not leave it behind
        runtime.remove_replica(state.id)
    return state


def _ingest_env(deployment: Any) -> dict[str, str]:
    from django.apps import apps

    if not apps.is_installed("monitoring"):
        return {}
    from monitoring.services import ingest_environment

    return ingest_environment(deployment=deployment)


def remove_on_host(*, host_id: int, replica_id: str, runtime: Any) -> None:
    """On the host worker: stop the replica gracefully (its last prediction logs ship), remove
    it, then its row — which the reconciler waits for."""
    from deployments.models import Replica

    try:
        runtime.stop_replica(replica_id, timeout=settings.MODELPORT_STOP_TIMEOUT_S)
    except Exception:  # removal below is what matters; a failed stop only loses logs
        logger.warning("graceful stop of %s failed; removing it", replica_id, exc_info=True)
    runtime.remove_replica(replica_id)
    Replica.objects.filter(runtime_id=replica_id, host_id=host_id,
                           host_status="removing").delete()


def mark_lost_hosts(*, now: datetime | None = None) -> list[Any]:
    """Beat: Docker hosts whose worker has not reported for MODELPORT_HOST_LOST_SECONDS are
    lost. Their replicas are marked lost (out of routing at once), each deployment gets an
    event, the audit log a ``host.lost`` entry, and a reconcile is enqueued: the reconciler
    reschedules the lost replicas on other hosts."""
    from deployments.models import Deployment, DeploymentEvent, Replica
    from quotas.models import Host

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
            before = audit.snapshot(host, [*HOST_FIELDS, "last_heartbeat"])
            host.state, host.lost_at = Host.State.LOST, now
            host.save(update_fields=["state", "lost_at", "updated_at"])
            rows = list(Replica.objects.filter(host=host).exclude(host_status="removing")
                        .values_list("runtime_id", "deployment_id"))
            Replica.objects.filter(host=host).exclude(host_status="removing").update(
                host_status="lost", status="lost", ready=False)
            silent = (f"{(now - host.last_heartbeat).total_seconds():.0f} s"
                      if host.last_heartbeat else "ever")
            audit.record(actor=None, action="host.lost", obj=host, before=before,
                         after={**audit.snapshot(host, HOST_FIELDS),
                                "replicas": sorted(r for r, _ in rows)})
            deployments = sorted({d for _, d in rows})
            for d in Deployment.objects.filter(pk__in=deployments):
                mine = sorted(r for r, dep in rows if dep == d.pk)
                DeploymentEvent.objects.create(
                    deployment=d, kind=DeploymentEvent.Kind.WARNING, revision=d.revision,
                    message=f"Host {host.name} lost (no heartbeat for {silent}): "
                            f"{len(mine)} replica(s) marked lost ({', '.join(mine)}); "
                            "rescheduling them on other hosts.")
            Deployment.objects.filter(pk__in=deployments).update(
                routing_version=F("routing_version") + 1)
            from deployments import passes

            for d_pk in deployments:
                transaction.on_commit(lambda d_pk=d_pk: passes.enqueue_reconcile(d_pk))
            lost.append(host)
    return lost
