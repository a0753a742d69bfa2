"""A reconciler worker for tests (``python -m tests.deployments.standin_worker <celery worker
options>``): the real Celery worker, whose local runtime is handed the python named by
``MODELPORT_TEST_REPLICA_PYTHON`` — a script that runs a stand-in replica
(tests/deployments/standin_replica.py) for the deployments a test picks and the real model
server for the others. Only how replicas are started differs; reconciles, locks, the broker and
the database are the real ones."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    import django

    from config.celery import app

    django.setup()  # the runtime factory imports models; the worker's own setup finds it done
    from workers import factory
    from workers.runtimes.local import LocalRuntime

    python = os.environ["MODELPORT_TEST_REPLICA_PYTHON"]
    factory._local = lambda settings: LocalRuntime(factory._data_dir(settings) / "runtime",
                                                   python=python)
    app.worker_main(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    main()
