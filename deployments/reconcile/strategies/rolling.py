"""Rolling (the default): one new replica at a time, each taking its share of traffic while one
old replica is drained and removed."""

from __future__ import annotations

from typing import Any

from .rollout import Rollout


class Rolling(Rollout):
    kind = "rolling"

    def one_at_a_time(self, old: list[Any], *, first_rollout: bool) -> bool:
        return bool(old) and first_rollout
