"""What apps above deployments add to a deployment's replicas, without deployments importing them.

Layers point down (monitoring imports deployments, never the reverse), yet the reconciler must
give each replica monitoring's ingest environment and revoke its tokens when the deployment
stops. So monitoring registers its functions here in ``MonitoringConfig.ready()``, which every
process runs through ``django.setup()`` (web, Celery worker and beat, host worker, edge).
With nothing registered a replica gets no extra environment and a stop does nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Deployment

EnvironmentHook = Callable[..., dict[str, str]]
StopHook = Callable[..., Any]

_environment: list[EnvironmentHook] = []
_on_stop: list[StopHook] = []


def register_replica_environment(fn: EnvironmentHook) -> EnvironmentHook:
    """Have ``fn(deployment=…)`` add variables to the environment of every replica started.
    Registering the same function again (``ready()`` run twice) changes nothing."""
    if fn not in _environment:
        _environment.append(fn)
    return fn


def register_on_stop(fn: StopHook) -> StopHook:
    """Have ``fn(deployment=…)`` run once a deployment's replicas are all stopped."""
    if fn not in _on_stop:
        _on_stop.append(fn)
    return fn


def replica_environment(deployment: Deployment) -> dict[str, str]:
    """The variables the registered functions give ``deployment``'s replicas (later ones win).
    A function's error reaches the caller, which decides what a replica without them is worth."""
    env: dict[str, str] = {}
    for fn in _environment:
        env.update(fn(deployment=deployment))
    return env


def deployment_stopped(deployment: Deployment) -> None:
    """Tell the registered functions that ``deployment`` has no replica left."""
    for fn in _on_stop:
        fn(deployment=deployment)
