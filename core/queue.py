"""Celery tasks looked up by name, so a module that enqueues a task need not import the tasks
module that imports it back (``registry.services`` ↔ ``registry.tasks``, ``demo.services`` ↔
``demo.tasks``). Eager mode in the test settings still runs them."""

from __future__ import annotations

from celery import Task, current_app


def task(name: str) -> Task:
    """The registered task called ``name``. A worker registered every task at start-up
    (autodiscovery); a web or edge process has imported no task module yet, so the first call
    runs the same autodiscovery."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # a Proxy, typed as Celery
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]
