"""Another Modelport installation on the same Docker Engine, for the installation tests: run as
``python -m tests.deployments.second_installation <command> …`` with its own data dir and its
own SQLite database (no DATABASE_URL), so it shares nothing with the test process but the
engine. Every command prints one JSON line: what this installation is and sees.

- ``deploy NAME MODEL_DIR``: migrate, then deploy the model in MODEL_DIR as NAME and reconcile
  it until healthy (on Docker, replicas without a network, as ``make run`` has it);
- ``reconcile NAME``: one more reconcile pass;
- ``forget NAME``: delete the deployment with its removal task lost (its container stays: an
  orphan of this installation);
- ``sweep``: this installation's orphan sweep;
- ``list``: what this installation's Docker runtime lists.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()


def _replicas() -> list[str]:
    from workers.factory import get_runtime

    return [s.id for s in get_runtime("docker").list_replicas()]


def _state(**extra: Any) -> dict[str, Any]:
    from teams.installation import installation_id

    return {"installation": installation_id(), "replicas": _replicas(), **extra}


def deploy(name: str, model_dir: str) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from deployments import services
    from deployments.models import Deployment
    from deployments.reconcile import reconcile_deployment
    from registry import storage
    from registry.models import ModelVersion, RegisteredModel, VersionStatus
    from registry.sandbox import platform_requirements
    from teams.models import Membership, Team
    from teams.roles import Role

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("second-admin", password="not-used-here")
    team = Team.objects.create(slug="ml-search", name="ML search")
    Membership.objects.create(team=team, user=user, role=Role.MAINTAINER)
    model = RegisteredModel.objects.create(name="iris", team=team, created_by=user)
    stored = storage.store_model_dir(Path(model_dir))
    ModelVersion.objects.create(
        model=model, version=1, status=VersionStatus.READY, source_format="mlflow",
        flavor="sklearn", requirements=platform_requirements(), artifact_name=stored.name,
        artifact_sha256=stored.sha256, artifact_size=stored.size)
    d = services.create_deployment(actor=user, team=team, name=name, model="iris", version=1,
                                   replicas=1, resources={"cpu": 0.5, "memory_mb": 768})
    outcome = reconcile_deployment(d.pk)
    d = Deployment.objects.get(pk=d.pk)
    return _state(outcome=outcome, status=d.status, message=d.status_message,
                  runtime=d.runtime)


def reconcile(name: str) -> dict[str, Any]:
    from deployments.models import Deployment
    from deployments.reconcile import reconcile_deployment

    d = Deployment.objects.get(name=name)
    outcome = reconcile_deployment(d.pk)
    d.refresh_from_db()
    return _state(outcome=outcome, status=d.status)


def forget(name: str) -> dict[str, Any]:
    from deployments import passes, services
    from deployments.models import Deployment

    passes.enqueue_remove = lambda *args, **kwargs: None  # the removal task "was lost"
    d = Deployment.objects.get(name=name)
    services.delete(actor=d.created_by, deployment=d)
    return _state()


def sweep() -> dict[str, Any]:
    from deployments.orphans import sweep as run
    from teams.models import AuditEvent

    removed = run()
    audited = list(AuditEvent.objects.filter(action="deployment.orphan_removed")
                   .values_list("before__replica", flat=True))
    return _state(removed=removed, audited=audited)


def main(argv: list[str]) -> None:
    _setup()
    command, *args = argv
    result = {"deploy": deploy, "reconcile": reconcile, "forget": forget, "sweep": sweep,
              "list": lambda: _state()}[command](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
