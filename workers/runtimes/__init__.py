"""Container runtimes that carry out desired state: Docker (one host), local processes (no
Docker), Docker Swarm and Kubernetes, and the image builds they share.

Django-free, like ``serving/``: the runtime classes take explicit arguments and never import
Django, Celery, DRF or an app (an import-linter contract in ``make lint`` checks it, in-function
imports included). The Django side that builds a runtime from settings and execution targets
is ``workers/factory.py``. This package re-exports only the interface in ``base``."""

from __future__ import annotations

from .base import (
    BackendHealth,
    NodeInfo,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    ScalingHint,
    wait_ready,
)

__all__ = [
    "BackendHealth",
    "NodeInfo",
    "ReplicaRuntimeError",
    "ReplicaSpec",
    "ReplicaState",
    "ReplicaStatus",
    "Runtime",
    "ScalingHint",
    "wait_ready",
]
