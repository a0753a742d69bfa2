"""Canary: the new revision gets ``steps`` percent of traffic (default 10, then 50), each for
``interval_s`` seconds (default 60); after each step its error rate and p95 latency, as the
gateways measured them since the step began, are compared with the old revision's."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from ...models import Deployment, TrafficSample
from .base import SteppedRollout

DEFAULT_STEPS = [10, 50, 100]
DEFAULT_INTERVAL_S = 60.0


class Canary(SteppedRollout):
    kind = "canary"
    label = "Canary"

    @classmethod
    def steps_of(cls, d: Deployment) -> list[int]:
        return [s for s in (d.strategy or {}).get("steps") or DEFAULT_STEPS if s < 100]

    def interval_s(self) -> float:
        return float((self.d.strategy or {}).get("interval_s", DEFAULT_INTERVAL_S))

    def since(self, index: int) -> datetime:
        """Where step ``index``'s comparison window starts: the step's start — for the first
        step, the revision's creation (the new revision had no traffic before it, and the old
        one's traffic since the rollout began is the baseline)."""
        if index == 0 or self.target.step_started_at is None:
            return self.target.created_at
        return self.target.step_started_at

    def window(self, revision: int, since: datetime) -> tuple[int, int, float]:
        """(requests, errors, request-weighted p95 ms) the gateways saw for a revision."""
        samples = TrafficSample.objects.filter(deployment=self.d, revision=revision,
                                               at__gte=since)
        n = errors = 0
        weighted = 0.0
        for requests, errs, p95 in samples.values_list("requests", "errors", "p95_ms"):
            n, errors, weighted = n + requests, errors + errs, weighted + p95 * requests
        return n, errors, (weighted / n if n else 0.0)

    def verdict(self, index: int, old_revision: int) -> str:
        since = self.since(index)
        new_n, new_err, new_p95 = self.window(self.target.number, since)
        old_n, old_err, old_p95 = self.window(old_revision, since)
        return (f"new {new_n} requests, {new_err} errors, p95 {new_p95:.0f} ms; "
                f"old {old_n} requests, {old_err} errors, p95 {old_p95:.0f} ms.")

    def judge(self, index: int, old_revision: int) -> str | None:
        since = self.since(index)
        new_n, new_err, new_p95 = self.window(self.target.number, since)
        old_n, old_err, old_p95 = self.window(old_revision, since)
        if new_n < settings.MODELPORT_CANARY_MIN_REQUESTS:
            return None
        new_rate = new_err / new_n
        old_rate = old_err / old_n if old_n else 0.0
        summary = self.verdict(index, old_revision)
        if new_rate > old_rate + settings.MODELPORT_CANARY_MAX_ERROR_RATE_DELTA:
            return (f"error rate {new_rate:.1%} vs {old_rate:.1%} on revision {old_revision} "
                    f"({summary})")
        if old_p95 > 0 and new_p95 > old_p95 * settings.MODELPORT_CANARY_MAX_P95_RATIO:
            return (f"p95 latency {new_p95:.0f} ms vs {old_p95:.0f} ms on revision "
                    f"{old_revision} ({summary})")
        return None
