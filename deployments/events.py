"""What a deployment says about itself: its events and its status line.

Below the verbs, the reconciler and the retries, which all write both; none of them has to
import another to do it.
"""

from __future__ import annotations

import time
from typing import Any

from django.utils import timezone

from .models import Deployment, DeploymentEvent

Kind = DeploymentEvent.Kind


def event(d: Deployment, message: str, *, kind: str = Kind.INFO,
          revision: int | None = None) -> DeploymentEvent:
    return DeploymentEvent.objects.create(deployment=d, kind=kind, message=message[:20000],
                                          revision=revision)


class BuildLog:
    """Streams image build lines into events, a batch every ~2 s."""

    def __init__(self, d: Deployment, revision: int) -> None:
        self.d, self.revision, self.last = d, revision, time.monotonic()
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self.lines.append(line)
        if self.lines and (time.monotonic() - self.last > 2 or len(self.lines) >= 50):
            self.flush()

    def flush(self) -> None:
        if self.lines:
            event(self.d, "\n".join(self.lines), kind=Kind.BUILD, revision=self.revision)
            self.lines = []
        self.last = time.monotonic()


def set_status(d: Deployment, status: str, message: str = "", progress: int | None = None,
               **extra: Any) -> None:
    values: dict[str, Any] = {"status": status, "status_message": message[:2000],
                              "reconciled_at": timezone.now(), **extra}
    if progress is not None:
        values["progress"] = progress
    Deployment.objects.filter(pk=d.pk).update(**values)
    for key, value in values.items():
        setattr(d, key, value)
