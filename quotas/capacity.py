"""What the whole platform can run, as quotas needs it to refuse promising more.

The inventory (hosts, pools, GPU devices) belongs to ``compute``, which sits above quotas: it
registers a provider here from ``ComputeConfig.ready()`` (every process calls
``django.setup()``), so quotas reads capacity without importing the app that owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Capacity:
    """Schedulable totals (overcommit applied) of the active hosts, and their active GPU
    devices counted by model."""

    schedulable_cpu: Decimal
    schedulable_memory_mb: int
    gpus_by_model: dict[str, int] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return sum(self.gpus_by_model.values())


# None from the provider: no active host registered yet (capacity is not checked then).
Provider = Callable[[], Capacity | None]
_provider: Provider | None = None


def register(provider: Provider) -> None:
    global _provider
    _provider = provider


def current() -> Capacity | None:
    """The platform's capacity now, or None until capacity is registered (or without an
    inventory app): a fresh installation works with default quotas."""
    return _provider() if _provider is not None else None


def gpu_models() -> list[str]:
    """GPU models the platform has (on active hosts), sorted."""
    found = current()
    return sorted(found.gpus_by_model) if found is not None else []
