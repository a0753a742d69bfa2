"""Linear: the new revision's share of traffic grows in equal steps (``step_percent``, default
25: 25, 50, 75 %), each held for ``interval_s`` seconds (default 60), then 100 %. Unlike canary,
a step is not judged by error rate or latency: a step passes when its time is up, and a new
replica that dies during a step still rolls the deployment back."""

from __future__ import annotations

from ...models import Deployment
from .base import SteppedRollout

DEFAULT_STEP_PERCENT = 25
DEFAULT_INTERVAL_S = 60.0


class Linear(SteppedRollout):
    kind = "linear"
    label = "Linear rollout"

    @classmethod
    def steps_of(cls, d: Deployment) -> list[int]:
        step = int((d.strategy or {}).get("step_percent") or DEFAULT_STEP_PERCENT)
        return list(range(step, 100, step))

    def interval_s(self) -> float:
        return float((self.d.strategy or {}).get("interval_s", DEFAULT_INTERVAL_S))

    def verdict(self, index: int, old_revision: int) -> str:
        return f"its {self.interval_s():.0f} s passed with every new replica up."
