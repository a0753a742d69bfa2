"""The worker step of a host worker (several plain Docker hosts,
``deployments/hosts_runtime.py``).
Imported by ``config.celery`` before Django is set up: no model imports here."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from django.conf import settings

log = logging.getLogger(__name__)


class HostHeartbeat(bootsteps.StartStopStep):
    """A host worker's own heartbeat: every MODELPORT_HOST_HEARTBEAT_SECONDS it sends
    ``host_heartbeat`` to its own queue, so the host registers itself at start and proves, as
    long as it runs, that it consumes; then ``report_host_chunks`` (jobs' chunks on this
    host). Only in workers started with MODELPORT_HOST_NAME."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.app: Any = parent.app

    def include_if(self, parent: Any) -> bool:
        return bool(settings.MODELPORT_HOST_NAME)

    def start(self, parent: Any) -> None:
        self.app = parent.app
        self.send()
        self.tref = parent.timer.call_repeatedly(settings.MODELPORT_HOST_HEARTBEAT_SECONDS,
                                                 self.send)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def send(self) -> None:
        try:
            for task in ("workers.tasks.host_heartbeat",  # registers, reports replicas
                         "workers.tasks.report_host_chunks"):  # batch chunks' states
                self.app.send_task(task, args=[settings.MODELPORT_HOST_NAME],
                                   queue=settings.MODELPORT_HOST_QUEUE)
        except Exception:  # the broker is down: the next tick tries again
            log.warning("host heartbeat not sent", exc_info=True)
