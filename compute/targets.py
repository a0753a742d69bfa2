"""Reading execution targets' health for the capacity page and the API: reachable or not,
nodes, allocatable CPU/memory/GPUs, warnings about the isolation replicas get there (the
runtime's ``describe()``), what deployments there have reserved. Cached briefly so a page of
targets does not ask every backend on each view."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from django.utils import timezone

from . import factory
from .models import ExecutionTarget
from .services import target_reserved

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
