"""The capacity inventory's verbs: hosts and pools (registered by platform admins, or by a host
worker's heartbeat), their GPU devices, and which replica holds which device.

GPU allocation stays within what the team has reserved, under the team's quota lock
(``quotas.services.lock_team``), so two replicas of one team never take more devices than its
quota admitted; a device has at most one active allocation (a database constraint). Each
mutation checks the actor's role, runs in a transaction and is audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from quotas.capacity import Capacity
from quotas.platform import allocated_to_quotas, platform_numbers, used_by_deployments
from quotas.services import MAX_AMOUNT, _amounts, _cpu, _owner, _whole, lock_team
from quotas.services import reserved as team_reserved
from teams import audit
from teams.access import require_platform_admin
from teams.models import Team

from .models import ExecutionTarget, GpuAllocation, GpuDevice, Host, TargetKind
from .placement import host_summaries

# Who acts: a signed-in user, or None for the platform itself.
Actor = User | AnonymousUser | None

HOST_FIELDS = ["name", "kind", "cpu", "memory_mb", "cpu_overcommit", "memory_overcommit",
               "active"]


# --- GPUs ------------------------------------------------------------------------------------
def gpu_models() -> list[str]:
    return list(GpuDevice.objects.filter(active=True, host__active=True).order_by("model")
                .values_list("model", flat=True).distinct())


def _free_devices(model: str | None, host: Host | None = None) -> QuerySet[GpuDevice]:
    busy = GpuAllocation.objects.filter(device=OuterRef("pk"), released_at__isnull=True)
    devices = GpuDevice.objects.filter(active=True, host__active=True).filter(~Exists(busy))
    if model:
        devices = devices.filter(model=model)
    if host is not None:
        devices = devices.filter(host=host)
    return devices.order_by("host__name", "device_id")


def allocate_gpus(*, team: Team, count: int, owner: str, model: str | None = None,
                  actor: Actor = None, host: Host | None = None) -> list[GpuAllocation]:
    """Hand ``count`` specific devices to one replica (``owner``), within the team's reserved
    GPUs. Idempotent for the same owner and count. Devices are never shared. ``host``: only
    that host's devices (a replica placed on one of several Docker hosts)."""
    owner = _owner(owner)
    count = _whole(count, "count")
    if count < 1 or count > MAX_AMOUNT["gpus"]:
        raise InvalidInput("count must be at least 1.", field="count")
    if model and model not in gpu_models():
        raise InvalidInput(f"No GPU model '{model}' in the inventory.", field="gpu_model")
    for _attempt in range(5):
        try:
            return _allocate_gpus(team=team, count=count, owner=owner, model=model, actor=actor,
                                  host=host)
        except IntegrityError:  # another team took the same device between read and insert
            continue
    raise Conflict("GPU inventory is busy; try again.", code="gpu_contention")


@transaction.atomic
def _allocate_gpus(*, team: Team, count: int, owner: str, model: str | None, actor: Actor,
                   host: Host | None = None) -> list[GpuAllocation]:
    lock_team(team)
    existing = list(GpuAllocation.objects.active().filter(owner=owner).select_related("device"))
    if existing:
        if len(existing) == count and all(a.team_id == team.pk for a in existing):
            return existing
        raise Conflict(f"'{owner}' already holds {len(existing)} GPU(s); release them first.",
                       code="gpus_already_allocated")
    reserved = team_reserved(team).gpus
    in_use = GpuAllocation.objects.active().filter(team=team).count()
    if in_use + count > reserved:
        raise Conflict(f"needs {count} GPU{'s' if count != 1 else ''}; team {team.slug} has "
                       f"{reserved - in_use} of {reserved} reserved GPUs unassigned.",
                       code="quota_exceeded")
    devices = list(_free_devices(model, host).select_for_update(skip_locked=True)[:count])
    if len(devices) < count:
        what = (f" of model {model}" if model else "") + (f" on {host.name}" if host else "")
        raise Conflict(f"needs {count} GPU{'s' if count != 1 else ''}{what}; only "
                       f"{len(devices)} free in the inventory.", code="gpus_unavailable")
    now = timezone.now()
    with transaction.atomic():
        allocations = [GpuAllocation.objects.create(device=d, team=team, owner=owner,
                                                    allocated_at=now) for d in devices]
    audit.record(actor=actor, action="gpu.allocated", object_type="gpuallocation",
                 object_id=owner, object_repr=owner, team=team,
                 after={"devices": [str(d) for d in devices]})
    return allocations


@transaction.atomic
def release_gpus(*, owner: str, actor: Actor = None) -> int:
    """Free the devices of a stopped replica (or of every replica under ``owner/``)."""
    owner = _owner(owner)
    allocations = list(GpuAllocation.objects.select_for_update().active()
                       .filter(Q(owner=owner) | Q(owner__startswith=f"{owner}/"))
                       .select_related("device__host", "team"))
    if not allocations:
        return 0
    now = timezone.now()
    GpuAllocation.objects.filter(pk__in=[a.pk for a in allocations]).update(released_at=now)
    audit.record(actor=actor, action="gpu.released", object_type="gpuallocation",
                 object_id=owner, object_repr=owner, team=allocations[0].team,
                 before={"devices": [str(a.device) for a in allocations]})
    return len(allocations)


def release_stale_gpus(*, live_owners: Iterable[str], actor: Actor = None) -> int:
    """Free devices whose replica no longer exists (crashed without releasing)."""
    live = set(live_owners)
    stale = set(GpuAllocation.objects.active().exclude(owner__in=live)
                .values_list("owner", flat=True))
    return sum(release_gpus(owner=owner, actor=actor) for owner in sorted(stale))


def stale_gpu_owners(running_replicas: Iterable[str]) -> list[str]:
    """GPU holders (replicas) that are not among those running: the drift check reports them."""
    return sorted(set(GpuAllocation.objects.active().exclude(owner__in=set(running_replicas))
                      .values_list("owner", flat=True)))


def device_ids(owner: str) -> list[str]:
    """What the Docker runtime passes as ``device_requests`` for this replica."""
    return list(GpuAllocation.objects.active().filter(owner=owner)
                .order_by("device__device_id").values_list("device__device_id", flat=True))


# --- Capacity ------------------------------------------------------------------------------------
def _overcommit(value: Any, field: str) -> Decimal:
    ratio = _cpu(value, field)
    if ratio < 1 or ratio > 100:
        raise InvalidInput(f"{field} is a ratio between 1 (no overcommit) and 100.", field=field)
    return ratio.quantize(Decimal("0.01"))


def _gpu_inventory(gpus: Iterable) -> list[tuple[str, str]]:
    inventory, seen = [], set()
    for item in gpus or []:
        device_id, model = ((item.get("device_id"), item.get("model")) if isinstance(item, dict)
                            else item)
        device_id, model = str(device_id or "").strip(), str(model or "").strip()
        if not device_id or not model:
            raise InvalidInput("Each GPU needs a device_id and a model.", field="gpus")
        if device_id in seen:
            raise InvalidInput(f"GPU device '{device_id}' is listed twice.", field="gpus")
        seen.add(device_id)
        inventory.append((device_id, model))
    return inventory


@transaction.atomic
def register_host(*, actor: Actor, name: str, cpu: Any, memory_mb: Any,
                  kind: str = Host.Kind.HOST, cpu_overcommit: Any = 1,
                  memory_overcommit: Any = 1, gpus: Iterable = ()) -> Host:
    """Add a host or pool, with its GPUs as ``[(device_id, model), ...]``."""
    require_platform_admin(actor, "register capacity")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("A host needs a name (at most 100 characters).", field="name")
    if kind not in Host.Kind.values:
        raise InvalidInput(f"kind is one of {', '.join(Host.Kind.values)}.", field="kind")
    amounts = _amounts(cpu=cpu, memory_mb=memory_mb)
    inventory = _gpu_inventory(gpus)
    if Host.objects.filter(name=name).exists():
        raise Conflict(f"A host named '{name}' exists.", code="name_taken")
    host = Host.objects.create(name=name, kind=kind, cpu=amounts.cpu,
                               memory_mb=amounts.memory_mb,
                               cpu_overcommit=_overcommit(cpu_overcommit, "cpu_overcommit"),
                               memory_overcommit=_overcommit(memory_overcommit,
                                                             "memory_overcommit"))
    for device_id, model in inventory:
        GpuDevice.objects.create(host=host, device_id=device_id, model=model)
    audit.record(actor=actor, action="host.created", obj=host,
                 after={**audit.snapshot(host, HOST_FIELDS),
                        "gpus": [f"{d} ({m})" for d, m in inventory]})
    return host


@transaction.atomic
def update_host(*, actor: Actor, host: Host, **changes: Any) -> Host:
    """Change cpu, memory_mb, overcommit ratios, kind or active (GPUs: add/remove_gpu)."""
    require_platform_admin(actor, "edit capacity")
    host = Host.objects.select_for_update().get(pk=host.pk)
    before = audit.snapshot(host, HOST_FIELDS)
    unknown = set(changes) - {"cpu", "memory_mb", "cpu_overcommit", "memory_overcommit",
                              "active", "kind"}
    if unknown:
        raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))} of a host.")
    if "cpu" in changes or "memory_mb" in changes:
        amounts = _amounts(cpu=changes.get("cpu", host.cpu),
                           memory_mb=changes.get("memory_mb", host.memory_mb))
        host.cpu, host.memory_mb = amounts.cpu, amounts.memory_mb
    for field in ("cpu_overcommit", "memory_overcommit"):
        if field in changes:
            setattr(host, field, _overcommit(changes[field], field))
    if "kind" in changes:
        if changes["kind"] not in Host.Kind.values:
            raise InvalidInput(f"kind is one of {', '.join(Host.Kind.values)}.", field="kind")
        host.kind = changes["kind"]
    if "active" in changes:
        host.active = bool(changes["active"])
    host.save()
    after = audit.snapshot(host, HOST_FIELDS)
    if after != before:
        audit.record(actor=actor, action="host.updated", obj=host, before=before, after=after)
    return host


@transaction.atomic
def add_gpu(*, actor: Actor, host: Host, device_id: str, model: str) -> GpuDevice:
    require_platform_admin(actor, "edit capacity")
    [(device_id, model)] = _gpu_inventory([(device_id, model)])
    if GpuDevice.objects.filter(host=host, device_id=device_id).exists():
        raise Conflict(f"{host.name} already has GPU '{device_id}'.", code="device_taken")
    device = GpuDevice.objects.create(host=host, device_id=device_id, model=model)
    audit.record(actor=actor, action="gpu.added", obj=device,
                 after={"host": host.name, "device_id": device_id, "model": model})
    return device


@transaction.atomic
def remove_gpu(*, actor: Actor, device: GpuDevice) -> None:
    require_platform_admin(actor, "edit capacity")
    device = GpuDevice.objects.select_for_update().select_related("host").get(pk=device.pk)
    if device.allocations.filter(released_at__isnull=True).exists():
        raise Conflict(f"GPU {device} is allocated; stop its replica first.",
                       code="device_in_use")
    audit.record(actor=actor, action="gpu.removed", obj=device,
                 before={"host": device.host.name, "device_id": device.device_id,
                         "model": device.model})
    if device.allocations.exists():
        device.active = False  # keep history
        device.save(update_fields=["active"])
    else:
        device.delete()


def capacity_totals(hosts: Iterable[Host] | None = None) -> dict:
    hosts = list(Host.objects.filter(active=True) if hosts is None else hosts)
    cpu = sum((h.cpu for h in hosts), Decimal("0"))
    memory = sum(h.memory_mb for h in hosts)
    return {
        "cpu": cpu, "memory_mb": memory,
        "schedulable_cpu": sum((h.cpu * h.cpu_overcommit for h in hosts), Decimal("0"))
        .quantize(Decimal("0.001")),
        "schedulable_memory_mb": int(sum(h.memory_mb * h.memory_overcommit for h in hosts)),
        "gpus": GpuDevice.objects.filter(active=True, host__in=hosts).count(),
    }


def capacity(user: Actor) -> dict:
    """Hosts/pools, totals, what is allocated, and every GPU device with its holder. Other
    teams' holders are shown as '(another team)' to non-admins."""
    visible = set(Team.objects.visible_to(user).values_list("pk", flat=True))
    active_allocations = {a.device_id: a for a in GpuAllocation.objects.active()
                          .select_related("team")}
    docker = {h["name"]: h for h in host_summaries()}  # hosts with a host worker
    hosts: list[dict[str, Any]] = []
    for host in Host.objects.prefetch_related("gpus").order_by("name"):
        devices: list[dict[str, Any]] = []
        for device in host.gpus.all():
            allocation = active_allocations.get(device.pk)
            holder = None
            if allocation is not None:
                mine = allocation.team_id in visible
                holder = {"team": allocation.team.slug if mine else "(another team)",
                          "owner": allocation.owner if mine else "",
                          "since": allocation.allocated_at}
            devices.append({"device_id": device.device_id, "model": device.model,
                            "active": device.active, "allocated_to": holder})
        hosts.append({
            "name": host.name, "kind": host.kind, "active": host.active, "cpu": host.cpu,
            "memory_mb": host.memory_mb, "cpu_overcommit": host.cpu_overcommit,
            "memory_overcommit": host.memory_overcommit,
            "schedulable_cpu": (host.cpu * host.cpu_overcommit).quantize(Decimal("0.001")),
            "schedulable_memory_mb": int(host.memory_mb * host.memory_overcommit),
            "gpus_allocated": sum(1 for d in devices if d["allocated_to"]),
            "gpus": devices,
            "docker": docker.get(host.name),
        })
    numbers = platform_numbers()
    used = numbers.used if numbers else used_by_deployments()
    promised = numbers.allocated if numbers else allocated_to_quotas()
    models: dict[str, dict[str, Any]] = {}
    for row in hosts:
        if not row["active"]:
            continue
        for device in row["gpus"]:
            if not device["active"]:
                continue
            entry = models.setdefault(device["model"], {"model": device["model"], "total": 0,
                                                        "allocated": 0})
            entry["total"] += 1
            entry["allocated"] += 1 if device["allocated_to"] else 0
    for entry in models.values():
        entry["free"] = entry["total"] - entry["allocated"]
    return {
        "hosts": hosts,
        "totals": capacity_totals(),
        "allocated": {"cpu": used.cpu, "memory_mb": used.memory_mb, "gpus": used.gpus,
                      "gpu_devices": len(active_allocations)},
        "committed": {"cpu": promised.cpu, "memory_mb": promised.memory_mb,
                      "gpus": promised.gpus},
        "gpu_models": sorted(models.values(), key=lambda m: m["model"]),
        "platform": numbers.as_dict() if numbers else None,
    }


def platform_capacity() -> Capacity | None:
    """What quotas checks team limits against (``quotas.capacity``, registered in
    ``ComputeConfig.ready()``): None until an active host is registered."""
    hosts = list(Host.objects.filter(active=True))
    if not hosts:
        return None
    total = capacity_totals(hosts)
    by_model = dict(GpuDevice.objects.filter(active=True, host__active=True).order_by()
                    .values("model").annotate(n=Count("pk")).values_list("model", "n"))
    return Capacity(schedulable_cpu=total["schedulable_cpu"],
                    schedulable_memory_mb=total["schedulable_memory_mb"], gpus_by_model=by_model)


# --- Host workers (several plain Docker hosts, deployments/hosts_runtime.py) ------------------
HOST_WORKER_FIELDS = ["name", "queue", "address", "cpu", "memory_mb", "state", "active",
                      "docker_version"]


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
    unique: dict[str, tuple[str, str]] = {}
    for d, m in found:
        unique.setdefault(d, (d, m))  # the first model named for a device id wins
    return list(unique.values())


def _host_target() -> ExecutionTarget | None:
    """The multi-host docker target a host worker serves: MODELPORT_HOST_TARGET, else the
    first enabled docker target with "placement": "hosts"."""
    name = settings.MODELPORT_HOST_TARGET
    if name:
        return ExecutionTarget.objects.filter(name=name).first()
    return (ExecutionTarget.objects.enabled().filter(kind=TargetKind.DOCKER,
                                                    settings__placement="hosts")
            .order_by("name").first())


NOT_READ = object()  # record_host_heartbeat without ``lost_seen``: every answer counts


@transaction.atomic
def record_host_heartbeat(*, name: str, info: dict[str, Any], queue: str = "",
                          address: str = "", lost_seen: Any = NOT_READ) -> Any:
    """A host worker's heartbeat: register its Docker host in the capacity registry (CPU and
    memory from ``docker info`` — later edits in the console stick, e.g. to keep headroom for
    the host itself —, GPUs as above) or refresh it; a lost host comes back.

    ``lost_seen``: the host's ``lost_at`` as read *before* its engine was asked. A host marked
    lost since then (by beat, or by the check that found the engine dead) got this answer
    from before its loss — a slow task, or one racing that check: it changes nothing, so a
    lost host never flaps back on an old answer. Compared as values, not clocks: the host's
    and the platform's clocks may disagree."""
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
                     after=audit.snapshot(host, HOST_WORKER_FIELDS))
    elif host.state == Host.State.LOST and lost_seen is not NOT_READ \
            and host.lost_at != lost_seen:
        return host
    else:
        before = audit.snapshot(host, HOST_WORKER_FIELDS)
        was_lost = host.state == Host.State.LOST
        for key, value in values.items():
            setattr(host, key, value)
        if host.target_id is None:
            host.target = _host_target()
        host.last_heartbeat, host.state, host.lost_at = now, Host.State.ALIVE, None
        host.save()
        if was_lost:
            audit.record(actor=None, action="host.recovered", obj=host, before=before,
                         after=audit.snapshot(host, HOST_WORKER_FIELDS))
        elif {k: v for k, v in before.items() if k != "state"} != \
                {k: v for k, v in audit.snapshot(host, HOST_WORKER_FIELDS).items() if k != "state"}:
            audit.record(actor=None, action="host.updated", obj=host, before=before,
                         after=audit.snapshot(host, HOST_WORKER_FIELDS))
    known = set(host.gpus.values_list("device_id", flat=True))
    for device_id, model in _docker_gpus(info):
        if device_id not in known:
            GpuDevice.objects.create(host=host, device_id=device_id, model=model)
            audit.record(actor=None, action="gpu.added", obj=host,
                         after={"host": host.name, "device_id": device_id, "model": model})
    return host
