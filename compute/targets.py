"""Execution targets (where deployments run), registered by platform admins: the verbs that
register, change and remove them, the default one, what deployments there have reserved and
whether a deploy fits; and their health for the capacity page and the API (reachable or not,
nodes, allocatable CPU/memory/GPUs, warnings about the isolation replicas get there — the
runtime's ``describe()``), cached briefly so a page of targets does not ask every backend on
each view."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from quotas.models import Reservation
from teams import audit
from teams.access import require_platform_admin
from workers import factory
from workers.runtimes.kube_policy import PolicyPeers

from .models import ExecutionTarget, TargetKind

# Who acts: a signed-in user, or None for the platform itself.
Actor = User | AnonymousUser | None

TARGET_FIELDS = ["name", "kind", "endpoint", "kube_context", "in_cluster", "namespace",
                 "settings", "cpu", "memory_mb", "gpus", "enabled", "is_default"]
ENDPOINT_SCHEMES = ("unix://", "tcp://", "ssh://", "http://", "https://", "npipe://")
SETTINGS_KEYS = {
    TargetKind.DOCKER: {"network", "port_range", "placement", "registry"},
    TargetKind.SWARM: {"network", "overlay_network", "egress_network", "port_range",
                       "gpu_resource", "registry", "bind_host", "constraints"},
    TargetKind.KUBERNETES: {"image_pull_secrets", "registry", "service_account",
                            "node_selector", "url_mode", "service_type", "gpu_resource",
                            "network_policy", "batch_data_claim"},
}
# A Swarm placement constraint: node.role==worker, node.labels.gpu!=true, engine.labels.x==y
_CONSTRAINT = re.compile(r"^(node|engine)\.[A-Za-z0-9_.-]+\s*(==|!=)\s*[^\s=!][^\n]*$")
MAX_CONSTRAINTS = 20
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")
MAX_CPU = Decimal("100000")
# host[:port][/prefix] of an image registry, as Docker reads a reference: the host has a dot or
# a port or is localhost (otherwise "name/x" would mean a Docker Hub account).
_REGISTRY = re.compile(
    r"^(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?)"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def _check_registry(value: Any) -> None:
    """A target's ``registry`` setting (also checked for kubernetes targets)."""
    match = _REGISTRY.match(value) if isinstance(value, str) else None
    host = match.group("host") if match else ""
    if not match or not ("." in host or ":" in host or host == "localhost") or len(value) > 90:
        raise InvalidInput("settings.registry is host[:port][/prefix] of an image registry, "
                           "without a scheme, at most 90 characters, e.g. "
                           "registry.example.com:5000/modelport (the host needs a dot or a "
                           "port, or is localhost).", field="settings")


def _check_swarm_nodes(raw: dict[str, Any]) -> None:
    """``bind_host`` and ``constraints`` of a swarm target (several nodes)."""
    if "bind_host" in raw:
        if raw["bind_host"] not in ("127.0.0.1", "0.0.0.0"):  # noqa: S104 - a setting
            raise InvalidInput('settings.bind_host is "127.0.0.1" (one node) or "0.0.0.0" '
                               "(several nodes: a replica listens on its node's addresses and "
                               "is reached at the address the node advertised).",
                               field="settings")
        if raw.get("network", "host") != "host":
            raise InvalidInput("settings.bind_host applies to host mode (in overlay mode "
                               "replicas listen on 8080 in their own network namespace).",
                               field="settings")
    if "constraints" in raw:
        items = raw["constraints"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_CONSTRAINTS:
            raise InvalidInput("settings.constraints is a list of 1 to "
                               f"{MAX_CONSTRAINTS} Swarm placement constraints, e.g. "
                               '["node.role==worker"].', field="settings")
        for i, item in enumerate(items):
            if not isinstance(item, str) or len(item) > 200 or not _CONSTRAINT.match(item):
                raise InvalidInput(f"settings.constraints[{i}] ({item!r}) is not a Swarm "
                                   "placement constraint: node.<attribute>==<value> or !=, "
                                   "e.g. node.role==worker, node.labels.zone!=b.",
                                   field="settings")


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
    claim = raw.get("batch_data_claim")
    if claim is not None and (not isinstance(claim, str)
                              or not re.match(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", claim)):
        raise InvalidInput("settings.batch_data_claim is the name of a PersistentVolumeClaim in "
                           "the target's namespace (ReadWriteMany, on the platform's data "
                           "volume).", field="settings")
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
    if "registry" in raw:
        _check_registry(raw["registry"])
        if kind == TargetKind.DOCKER and raw.get("placement") != "hosts":
            raise InvalidInput('settings.registry of a docker target applies to "placement": '
                               '"hosts" (one engine builds its own images).', field="settings")
    _check_swarm_nodes(raw)
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
            endpoint or set(options) - {"placement", "registry"}):
        raise InvalidInput('A "placement": "hosts" target takes no endpoint, network or port '
                           "range (only a registry): each host's worker uses its own Docker "
                           "Engine (MODELPORT_HOST_ADDRESS, MODELPORT_PORT_RANGE on that host).",
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
def create_target(*, actor: Actor, **values: Any) -> ExecutionTarget:
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
def update_target(*, actor: Actor, target: ExecutionTarget, **changes: Any) -> ExecutionTarget:
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
def delete_target(*, actor: Actor, target: ExecutionTarget) -> None:
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
        found = ExecutionTarget.objects.filter(name=str(value)).first()
        if found is None:
            names = ", ".join(ExecutionTarget.objects.enabled().values_list("name", flat=True))
            raise InvalidInput(f"No execution target '{value}' (known: {names or 'none'}).",
                               field="target")
        target = found
    if not target.enabled:
        raise InvalidInput(f"Execution target '{target.name}' is disabled.", field="target")
    return target


def target_reserved(target: ExecutionTarget, *, exclude_owner: str = "") -> dict[str, Any]:
    """What deployments and batch jobs on this target have reserved (their quota
    reservations)."""
    deployments = target.deployments.all()
    if target.is_default:  # deployments without a target run on the default one
        deployments = target.deployments.model.objects.filter(Q(target=target)
                                                              | Q(target__isnull=True))
    owners = [f"deployment:{name}" for name in deployments.values_list("name", flat=True)]
    # Batch jobs (``jobs.BatchJob.target``, reached through its reverse relation: compute sits
    # below jobs) hold reservations too while queued or running.
    jobs = target.jobs.all()
    if target.is_default:
        jobs = target.jobs.model.objects.filter(Q(target=target) | Q(target__isnull=True))
    owners += [f"job:{pk}" for pk in jobs.exclude(status__in=("succeeded", "failed", "cancelled"))
               .values_list("pk", flat=True)]
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


def deployment_target(deployment: Any) -> ExecutionTarget | None:
    """The target a deployment runs on: its own, else the default."""
    if deployment.target_id is not None:
        return deployment.target
    return default_target()


# --- Health ----------------------------------------------------------------------------------
HEALTH_TIMEOUT_S = 5
CACHE_SECONDS = 15.0
_cache: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}


def target_health(target: ExecutionTarget, *, fresh: bool = False) -> dict[str, Any]:
    """One target's health; never raises (an unreachable backend is an answer)."""
    key = (target.pk, target.updated_at.isoformat() if target.updated_at else "")
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and not fresh and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        health = factory.runtime_for_target(target, timeout=HEALTH_TIMEOUT_S).describe()
        body: dict[str, Any] = {
            "reachable": health.reachable, "message": health.message,
            "version": health.version, "nodes": [asdict(n) for n in health.nodes],
            "allocatable": {"cpu": health.cpu, "memory_mb": health.memory_mb,
                            "gpus": health.gpus},
            "warnings": list(health.warnings)}
    except Exception as exc:  # noqa: BLE001 - e.g. no SDK, bad endpoint, bad kubeconfig
        body = {"reachable": False, "message": f"{exc.__class__.__name__}: {exc}",
                "version": "", "nodes": [],
                "allocatable": {"cpu": 0.0, "memory_mb": 0, "gpus": None}, "warnings": []}
    body.update(name=target.name, kind=target.kind, checked_at=timezone.now())
    _cache[key] = (now, body)
    return body


def target_summary(target: ExecutionTarget, *, health: bool = True) -> dict[str, Any]:
    """A target with its registered capacity, what is reserved there and (optionally) its
    health: what the capacity page shows per target."""
    reserved = target_reserved(target)
    return {
        "target": target,
        "capacity": {"cpu": target.cpu, "memory_mb": target.memory_mb, "gpus": target.gpus,
                     "limited": target.has_capacity_limit},
        "reserved": reserved,
        "deployments": target.deployments.count(),
        "health": target_health(target) if health and target.enabled else None,
    }


def clear_cache() -> None:
    _cache.clear()
