"""Celery tasks for quotas: grant expiry (every minute). The nightly usage-drift check asks the
runtimes what runs, so it is the inventory's (``compute/tasks.py``)."""

from __future__ import annotations

from celery import shared_task

from . import requests


@shared_task(name="quotas.tasks.expire_grants", ignore_result=True, expires=120)
def expire_grants() -> int:
    """Take back temporary grants whose time is up (and expire stale pending requests)."""
    return len(requests.expire_grants())
