"""The worker reads the host's pip configuration once, before its pool forks (config/celery.py):
a pool process's first reconcile — a wake from zero among them — does not start pip."""

from __future__ import annotations

from celery.signals import worker_init

import config.celery


def test_worker_init_reads_the_pip_config(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(config.celery, "pip_config", lambda: calls.append(1))
    worker_init.send(sender=None)
    assert calls == [1]
