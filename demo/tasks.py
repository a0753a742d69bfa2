"""Celery task of the demo: send a traffic run (started from the deployment page)."""

from __future__ import annotations

from celery import shared_task

from .services import MAX_TRAFFIC_S, run_traffic


@shared_task(name="demo.tasks.send_traffic", ignore_result=True, acks_late=False,
             soft_time_limit=MAX_TRAFFIC_S + 50, time_limit=MAX_TRAFFIC_S + 60)
def send_traffic(run_id: int) -> None:
    """Not acked late: a redelivered run would only find itself already claimed."""
    run_traffic(run_id)
