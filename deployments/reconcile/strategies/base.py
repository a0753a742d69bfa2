"""The stepping machinery every stepped rollout shares: persist the step, do what is due,
return. A rollout type says which traffic percentages its steps give the new revision, how long
each lasts and how a finished step is judged."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from ...events import set_status
from ...models import Deployment, DeploymentEvent, DeploymentStatus, Revision
from ...passes import schedule_pass
from .rollout import Rollout

if TYPE_CHECKING:
    pass

Kind = DeploymentEvent.Kind


class SteppedRollout(Rollout):
    """Moves traffic from the old revision to ``target`` in steps, one pass at a time. Its new
    replicas start like blue/green's (all, then ready); the steps begin once they are up."""

    kind = "stepped"
    label = "Rollout"

    # --- what a rollout type defines ------------------------------------------------------
    @classmethod
    def steps_of(cls, d: Deployment) -> list[int]:
        """The new revision's share of traffic (%) at each step, increasing, each below 100
        (the switch to 100 % ends the rollout)."""
        raise NotImplementedError

    def interval_s(self) -> float:
        """How long each step lasts before it is judged."""
        raise NotImplementedError

    def judge(self, index: int, old_revision: int) -> str | None:
        """Why the step that just ended is a failure (the deployment is rolled back), or None."""
        return None

    def verdict(self, index: int, old_revision: int) -> str:
        """What the event says of a step that passed."""
        return ""

    # --- the machinery --------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return self.steps_of(self.d)

    def switch(self, old: list[Any], states: list[Any], ready: int, *,
               first_rollout: bool) -> str | None:
        """What is due now, then return (no waiting here); None once every step passed. A
        first rollout with traffic to move is stepped; replacing replicas is not."""
        if not old or not first_rollout:
            return None
        return self.advance(old, states)

    def advance(self, old: list[Any], states: list[Any]) -> str | None:
        """Do what is due and return: an outcome while the rollout goes on (or was rolled
        back), None once every step passed (the reconciler then switches 100 %)."""
        old_revision = self.rec.traffic_revision(old)
        steps = self.steps
        while True:
            index = self.target.rollout_step
            if index is not None and index >= len(steps):
                return None
            now = timezone.now()
            if index is None:
                self.begin(0, old_revision)
                continue
            if self.target.next_step_at is not None and now < self.target.next_step_at:
                return self.wait(index, old_revision, states, self.target.next_step_at)
            why = self.judge(index, old_revision)
            if why:
                return self.roll_back(old_revision, f"{self.label} failed at {steps[index]}%: "
                                                    f"{why}")
            self.event(f"{self.label} at {steps[index]}% looks fine: "
                           f"{self.verdict(index, old_revision)}", kind=Kind.TRAFFIC)
            self.begin(index + 1, old_revision)

    def split(self, percent: int, old_revision: int) -> list[dict[str, int]]:
        return [{"revision": self.target.number, "percent": percent},
                {"revision": old_revision, "percent": 100 - percent}]

    def begin(self, index: int, old_revision: int) -> None:
        """Start step ``index`` (or, past the last one, mark every step passed)."""
        now = timezone.now()
        steps = self.steps
        if index >= len(steps):
            self.save(rollout_step=index, next_step_at=None)
            return
        percent = steps[index]
        self.rec.publish(traffic=self.split(percent, old_revision))
        self.event(f"{self.label}: {percent}% of traffic to revision {self.target.number}.",
                       kind=Kind.TRAFFIC)
        self.save(rollout_step=index, step_started_at=now,
                  next_step_at=now + timedelta(seconds=self.interval_s()))

    def wait(self, index: int, old_revision: int, states: list[Any], at: datetime) -> str:
        """The step is not over (it ends ``at``): keep its split published, say when the next
        one comes, and have a pass brought then."""
        percent = self.steps[index]
        self.rec.publish(states, traffic=self.split(percent, old_revision))
        set_status(self.d, DeploymentStatus.STARTING,
                   f"{self.label} at {percent}% for revision {self.target.number} (step "
                   f"{index + 1} of {len(self.steps)}); next step at {at:%H:%M:%S} UTC.",
                   90 + int(10 * percent / 100))
        schedule_pass(self.d.pk, at)
        return self.kind

    def guard(self, states: list[Any]) -> str | None:
        """A new replica that dies while a step runs rolls the deployment back."""
        dead = [s for s in states if s.revision == self.target.number and not s.alive]
        old = [s for s in states if s.revision != self.target.number]
        if not dead or not old:
            return None
        step = self.steps[self.target.rollout_step or 0]
        return self.roll_back(self.rec.traffic_revision(old),
                              f"{self.label} failed at {step}%: replica {dead[0].id} exited "
                              f"(code {dead[0].exit_code}).\n{self.rec.last_logs(dead[0].id)}")

    def roll_back(self, old_revision: int, reason: str) -> str:
        self.rec.publish(traffic=[{"revision": old_revision, "percent": 100}])
        self.save(next_step_at=None)
        return self.rec.auto_rollback(self.target, old_revision, reason)

    def event(self, message: str, kind: str = Kind.INFO) -> None:
        DeploymentEvent.objects.create(deployment=self.d, kind=kind, message=message[:20000],
                                       revision=self.target.number)

    def save(self, **fields: Any) -> None:
        Revision.objects.filter(pk=self.target.pk).update(**fields)
        for key, value in fields.items():
            setattr(self.target, key, value)
