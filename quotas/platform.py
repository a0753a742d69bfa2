"""The platform's capacity as one set of numbers: what it has, what team quotas promise, what
deployments hold, what is free. The capacity page, each team's quota page, ``GET /capacity/``
and ``GET /teams/{slug}/quota/`` all read ``platform_numbers()``, so they cannot disagree.

Read-only; ``beyond_platform`` says in words where an amount exceeds what exists at all (a
resource request's flag for requester and approver)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from . import capacity
from .models import QuotaGrant, Reservation, TeamQuota
from .services import Resources, _sum, fmt

NAMES = ("cpu", "memory_mb", "gpus")


def _resources(totals: dict) -> Resources:
    return Resources(cpu=Decimal(totals["cpu"]), memory_mb=totals["memory_mb"],
                     gpus=totals["gpus"])


@dataclass(frozen=True)
class PlatformNumbers:
    total: Resources      # schedulable CPU and memory (overcommit applied), active GPU devices
    allocated: Resources  # promised to teams: every quota plus unexpired temporary grants
    used: Resources       # held by deployments: reservations, running or starting
    gpus_by_model: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> Resources:
        """What deployments could still take (negative when hosts were retired under load)."""
        return self.total - self.used

    @property
    def unallocated(self) -> Resources:
        """What no team has been promised yet (negative: quotas overbook the platform)."""
        return self.total - self.allocated

    def as_dict(self) -> dict:
        def part(r: Resources) -> dict:
            return {name: getattr(r, name) for name in NAMES}

        return {"total": part(self.total), "allocated": part(self.allocated),
                "used": part(self.used), "free": part(self.free),
                "unallocated": part(self.unallocated)}


def allocated_to_quotas() -> Resources:
    """Every team's quota plus the temporary grants still running."""
    return (_resources(_sum(TeamQuota.objects.all(), NAMES))
            + _resources(_sum(QuotaGrant.objects.active(), NAMES)))


def used_by_deployments() -> Resources:
    """Every reservation, running or pending: what admission counts against quotas."""
    return _resources(_sum(Reservation.objects.all(), NAMES))


def platform_numbers() -> PlatformNumbers | None:
    """None until capacity is registered (no active host or pool): nothing to compare with."""
    found = capacity.current()
    if found is None:
        return None
    return PlatformNumbers(
        total=Resources(cpu=found.schedulable_cpu, memory_mb=found.schedulable_memory_mb,
                        gpus=found.gpus),
        allocated=allocated_to_quotas(), used=used_by_deployments(),
        gpus_by_model=dict(found.gpus_by_model))


def beyond_platform(amounts: Resources, *, gpu_model: str = "",
                    numbers: PlatformNumbers | None = None) -> list[str]:
    """Where ``amounts`` (e.g. a team's limits once a request is granted) exceed what the whole
    platform has, one sentence each with the numbers; empty when it fits or when no capacity
    is registered."""
    numbers = numbers or platform_numbers()
    if numbers is None:
        return []
    problems = []
    if amounts.cpu > numbers.total.cpu:
        problems.append(f"{fmt(amounts.cpu)} CPU, but the platform has "
                        f"{fmt(numbers.total.cpu)} in all")
    if amounts.memory_mb > numbers.total.memory_mb:
        problems.append(f"{amounts.memory_mb} MB memory, but the platform has "
                        f"{numbers.total.memory_mb} MB in all")
    devices = numbers.gpus_by_model.get(gpu_model, 0) if gpu_model else numbers.total.gpus
    if amounts.gpus > devices:
        what = f" {gpu_model}" if gpu_model else ""
        problems.append(f"{amounts.gpus} GPUs, but the platform has {devices}{what} in all")
    return problems
