"""What a deployment asks for, as typed values: ``Resources`` per replica, the rollout
``Strategy``, the ``DeploymentSpec`` that holds them with the replica count, and
``Autoscaling`` (how the platform's scaler, ``deployments.autoscale``, moves that count).

The REST API, the portal's form and the CLI send JSON-like dicts; ``parse`` checks one the way
the API documents it (an ``InvalidInput`` naming the field otherwise) and returns the typed
value the service verbs (``deployments.services``) work with. ``Strategy.as_dict`` is what the
``Deployment.strategy`` JSON column and revisions store. No Django model is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from django.conf import settings

from core.errors import InvalidInput

MAX_CPU = Decimal("256")
MAX_MEMORY_MB = 1024 * 1024
MAX_GPUS = 64
SHADOW_DEFAULT_PERCENT = 100
SHADOW_DEFAULT_TOLERANCE = 1e-6
LINEAR_DEFAULT_STEP_PERCENT = 25
CANARY_DEFAULT_STEPS = (10, 50, 100)
DEFAULT_INTERVAL_S = 60


class StrategyKind(StrEnum):
    """The rollout kinds (``strategy.type``); ``deployments.reconcile.strategies`` has one
    object per kind."""

    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"
    CANARY = "canary"
    LINEAR = "linear"
    SHADOW = "shadow"


KINDS = tuple(kind.value for kind in StrategyKind)
_STRATEGY_KEYS = {"type", "steps", "interval_s", "percent", "tolerance", "step_percent"}


def parse_replicas(value: Any) -> int:
    """A replica count from 1 to ``MODELPORT_MAX_REPLICAS``: an int, or a string of one."""
    limit = settings.MODELPORT_MAX_REPLICAS
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, bool) or str(value).strip() != str(int(str(value).strip())):
                raise ValueError
            value = int(str(value).strip())
        except (TypeError, ValueError):
            raise InvalidInput("replicas must be a whole number.", field="replicas") from None
    if value < 1 or value > limit:
        raise InvalidInput(f"replicas must be between 1 and {limit} (got {value}).",
                           field="replicas")
    return value


@dataclass(frozen=True)
class Resources:
    """What each replica gets: cores (in steps of 0.01), memory and whole GPUs."""

    cpu: Decimal = Decimal("1")
    memory_mb: int = 1024
    gpus: int = 0

    @classmethod
    def parse(cls, raw: Any) -> Resources:
        """``{"cpu": 1, "memory_mb": 1024, "gpus": 0}`` (every key optional; None: defaults)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InvalidInput("resources must be an object like {\"cpu\": 1, \"memory_mb\": "
                               "1024, \"gpus\": 0}.", field="resources")
        unknown = sorted(set(raw) - {"cpu", "memory_mb", "gpus"})
        if unknown:
            raise InvalidInput(f"resources has unknown key(s) {', '.join(unknown)}; expected "
                               "cpu, memory_mb, gpus.", field="resources")
        try:
            cpu_raw = raw.get("cpu", 1)
            if isinstance(cpu_raw, bool):
                raise InvalidOperation
            cpu = Decimal(str(cpu_raw))
            if not cpu.is_finite():
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            raise InvalidInput(f"resources.cpu must be a number of cores, e.g. 0.5 (got "
                               f"{raw.get('cpu')!r}).", field="resources") from None
        if cpu <= 0 or cpu > MAX_CPU or cpu != cpu.quantize(Decimal("0.01")):
            raise InvalidInput(f"resources.cpu must be more than 0 and at most {MAX_CPU}, in "
                               "steps of 0.01.", field="resources")
        return cls(cpu=cpu, memory_mb=_whole(raw, "memory_mb", 1024, 64, MAX_MEMORY_MB),
                   gpus=_whole(raw, "gpus", 0, 0, MAX_GPUS))


def _whole(raw: dict[str, Any], key: str, default: int, minimum: int, maximum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"resources.{key} must be a whole number (got {value!r}).",
                           field="resources")
    if value < minimum or value > maximum:
        raise InvalidInput(f"resources.{key} must be between {minimum} and {maximum} "
                           f"(got {value}).", field="resources")
    return value


@dataclass(frozen=True)
class Strategy:
    """How a new revision takes over. Only the fields of its kind are set: ``steps`` and
    ``interval_s`` (canary), ``step_percent`` and ``interval_s`` (linear), ``percent`` and
    ``tolerance`` (shadow); rolling and blue/green have none."""

    type: StrategyKind = StrategyKind.ROLLING
    steps: tuple[int, ...] | None = None
    interval_s: int | float | None = None
    step_percent: int | None = None
    percent: int | None = None
    tolerance: int | float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored form: ``{"type": ...}`` plus the kind's fields, in the order the API
        has always written them."""
        out: dict[str, Any] = {"type": str(self.type)}
        if self.type == StrategyKind.SHADOW:
            out.update(percent=self.percent, tolerance=self.tolerance)
        elif self.type == StrategyKind.LINEAR:
            out.update(step_percent=self.step_percent, interval_s=self.interval_s)
        elif self.type == StrategyKind.CANARY:
            out.update(steps=list(self.steps or ()), interval_s=self.interval_s)
        return out

    @classmethod
    def parse(cls, raw: Any) -> Strategy:
        """``{"type": "canary", "steps": [10, 50, 100], "interval_s": 60}`` and the like (None
        or ``{}``: rolling); the defaults of the kind fill what is left out."""
        if raw in (None, {}):
            return cls()
        if not isinstance(raw, dict):
            raise InvalidInput("strategy must be an object like {\"type\": \"rolling\"}.",
                               field="strategy")
        kind = raw.get("type", "rolling")
        if kind not in KINDS:
            raise InvalidInput(f"strategy.type must be one of {', '.join(KINDS)} "
                               f"(got {kind!r}).", field="strategy")
        unknown = sorted(set(raw) - _STRATEGY_KEYS)
        if unknown:
            raise InvalidInput(f"strategy has unknown key(s) {', '.join(unknown)}.",
                               field="strategy")
        kind = StrategyKind(kind)
        if kind == StrategyKind.SHADOW:
            return _shadow(raw)
        if "percent" in raw or "tolerance" in raw:
            raise InvalidInput("strategy.percent and tolerance apply only to shadow.",
                               field="strategy")
        if "step_percent" in raw and kind != StrategyKind.LINEAR:
            raise InvalidInput("strategy.step_percent applies only to linear.", field="strategy")
        if kind == StrategyKind.LINEAR:
            step = raw.get("step_percent", LINEAR_DEFAULT_STEP_PERCENT)
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 99:
                raise InvalidInput("strategy.step_percent (the share of traffic each step adds) "
                                   f"must be a whole number from 1 to 99 (got {step!r}).",
                                   field="strategy")
            if "steps" in raw:
                raise InvalidInput("strategy.steps applies only to canary; linear steps by "
                                   "step_percent.", field="strategy")
            return cls(kind, step_percent=step, interval_s=_interval(raw))
        if kind == StrategyKind.CANARY:
            steps = raw.get("steps", list(CANARY_DEFAULT_STEPS))
            if (not isinstance(steps, list) or not steps
                    or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100
                               for s in steps)
                    or steps != sorted(steps) or steps[-1] != 100):
                raise InvalidInput("strategy.steps must be increasing percentages ending at "
                                   "100, e.g. [10, 50, 100].", field="strategy")
            return cls(kind, steps=tuple(steps), interval_s=_interval(raw))
        if "steps" in raw or "interval_s" in raw:
            raise InvalidInput("strategy.steps and interval_s apply only to canary (interval_s "
                               "also to linear).", field="strategy")
        return cls(kind)


def _shadow(raw: dict[str, Any]) -> Strategy:
    percent = raw.get("percent", SHADOW_DEFAULT_PERCENT)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise InvalidInput("strategy.percent (the share of requests mirrored to the shadow "
                           f"revision) must be a whole number from 1 to 100 (got {percent!r}).",
                           field="strategy")
    tolerance = raw.get("tolerance", SHADOW_DEFAULT_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0 <= tolerance <= 1e6:
        raise InvalidInput("strategy.tolerance (how far apart two numeric predictions may be "
                           "and still agree) must be a number from 0 to 1000000 "
                           f"(got {tolerance!r}).", field="strategy")
    if "steps" in raw or "interval_s" in raw or "step_percent" in raw:
        raise InvalidInput("strategy.steps, interval_s and step_percent apply only to "
                           "canary and linear.", field="strategy")
    return Strategy(StrategyKind.SHADOW, percent=percent, tolerance=tolerance)


def _interval(raw: dict[str, Any]) -> int | float:
    interval = raw.get("interval_s", DEFAULT_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
            or not 0 <= interval <= 86400:
        raise InvalidInput("strategy.interval_s must be seconds between 0 and 86400.",
                           field="strategy")
    return interval


class ScaleMetric(StrEnum):
    """What ``Autoscaling.target`` is per replica: requests in flight at once (time-averaged,
    from the edge's counters), requests per second, or CPU percent of the replica's cores."""

    CONCURRENCY = "concurrency"
    RPS = "rps"
    CPU = "cpu"


SCALE_METRICS = tuple(m.value for m in ScaleMetric)
_AUTOSCALING_KEYS = {"min_replicas", "max_replicas", "metric", "target", "scale_down_delay_s",
                     "idle_to_zero_after_s"}
DEFAULT_TARGETS = {ScaleMetric.CONCURRENCY: 4, ScaleMetric.RPS: 50, ScaleMetric.CPU: 70}
DEFAULT_SCALE_DOWN_DELAY_S = 300
MIN_IDLE_TO_ZERO_S = 10


@dataclass(frozen=True)
class Autoscaling:
    """How many replicas the scaler keeps: between ``min_replicas`` and ``max_replicas``, enough
    for ``target`` of ``metric`` per replica; fewer only after ``scale_down_delay_s`` of less
    load (a stabilisation window: the highest count wanted over that window is kept); none at
    all after ``idle_to_zero_after_s`` without a request (None: never to zero)."""

    min_replicas: int = 1
    max_replicas: int = 1
    metric: ScaleMetric = ScaleMetric.CONCURRENCY
    target: float = DEFAULT_TARGETS[ScaleMetric.CONCURRENCY]
    scale_down_delay_s: int = DEFAULT_SCALE_DOWN_DELAY_S
    idle_to_zero_after_s: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored form (``Deployment.autoscaling``) and what the API shows."""
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "metric": str(self.metric), "target": self.target,
                "scale_down_delay_s": self.scale_down_delay_s,
                "idle_to_zero_after_s": self.idle_to_zero_after_s}

    def clamp(self, replicas: int) -> int:
        """``replicas`` within ``[min_replicas, max_replicas]``."""
        return max(self.min_replicas, min(self.max_replicas, replicas))

    @classmethod
    def parse(cls, raw: Any) -> Autoscaling | None:
        """``{"min_replicas": 1, "max_replicas": 4, "metric": "concurrency", "target": 4,
        "scale_down_delay_s": 300, "idle_to_zero_after_s": 600}`` (only ``max_replicas`` is
        required); None or ``{}``: a fixed replica count."""
        if raw in (None, {}):
            return None
        if not isinstance(raw, dict):
            raise InvalidInput('autoscaling must be an object like {"min_replicas": 1, '
                               '"max_replicas": 4, "target": 4}, or null for a fixed count.',
                               field="autoscaling")
        unknown = sorted(set(raw) - _AUTOSCALING_KEYS)
        if unknown:
            raise InvalidInput(f"autoscaling has unknown key(s) {', '.join(unknown)}; expected "
                               f"{', '.join(sorted(_AUTOSCALING_KEYS))}.", field="autoscaling")
        limit = settings.MODELPORT_MAX_REPLICAS
        if "max_replicas" not in raw:
            raise InvalidInput("autoscaling.max_replicas is required (the most replicas the "
                               "scaler may run).", field="autoscaling")
        low = _count(raw, "min_replicas", 1, 1, limit)
        high = _count(raw, "max_replicas", low, 1, limit)
        if high < low:
            raise InvalidInput(f"autoscaling.max_replicas ({high}) must be at least "
                               f"min_replicas ({low}).", field="autoscaling")
        metric = raw.get("metric", ScaleMetric.CONCURRENCY.value)
        if metric not in SCALE_METRICS:
            raise InvalidInput(f"autoscaling.metric must be one of {', '.join(SCALE_METRICS)} "
                               f"(got {metric!r}).", field="autoscaling")
        metric = ScaleMetric(metric)
        target = raw.get("target", DEFAULT_TARGETS[metric])
        top = 100 if metric == ScaleMetric.CPU else 100000
        if isinstance(target, bool) or not isinstance(target, (int, float)) \
                or not 0 < target <= top:
            raise InvalidInput(f"autoscaling.target ({metric.value} per replica) must be a "
                               f"number above 0 and at most {top} (got {target!r}).",
                               field="autoscaling")
        delay = _count(raw, "scale_down_delay_s", DEFAULT_SCALE_DOWN_DELAY_S, 0, 86400)
        idle = raw.get("idle_to_zero_after_s")
        if idle is not None:
            idle = _count(raw, "idle_to_zero_after_s", None, MIN_IDLE_TO_ZERO_S, 30 * 86400)
        return cls(min_replicas=low, max_replicas=high, metric=metric, target=target,
                   scale_down_delay_s=delay, idle_to_zero_after_s=idle)


def _count(raw: dict[str, Any], key: str, default: Any, minimum: int, maximum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(f"autoscaling.{key} must be a whole number from {minimum} to "
                           f"{maximum} (got {value!r}).", field="autoscaling")
    return value


def as_autoscaling(value: Autoscaling | Mapping[str, Any] | None) -> Autoscaling | None:
    """An ``Autoscaling`` as is; anything else through ``Autoscaling.parse``."""
    return value if isinstance(value, Autoscaling) else Autoscaling.parse(value)


ResourcesArg = Resources | Mapping[str, Any] | None
StrategyArg = Strategy | Mapping[str, Any] | None


@dataclass(frozen=True)
class DeploymentSpec:
    """Replica count, resources per replica and rollout strategy: the part of a deployment
    a revision records besides the model version."""

    replicas: int = 1
    resources: Resources = field(default_factory=Resources)
    strategy: Strategy = field(default_factory=Strategy)

    @classmethod
    def parse(cls, *, replicas: int | str = 1, resources: ResourcesArg = None,
              strategy: StrategyArg = None) -> DeploymentSpec:
        """Check each part in this order (the first problem is the one reported); typed
        parts are taken as they are."""
        return cls(replicas=parse_replicas(replicas), resources=as_resources(resources),
                   strategy=as_strategy(strategy))


def as_resources(value: ResourcesArg) -> Resources:
    """A ``Resources`` as is; anything else through ``Resources.parse``."""
    return value if isinstance(value, Resources) else Resources.parse(value)


def as_strategy(value: StrategyArg) -> Strategy:
    """A ``Strategy`` as is; anything else through ``Strategy.parse``."""
    return value if isinstance(value, Strategy) else Strategy.parse(value)
