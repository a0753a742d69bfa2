"""deployments.hooks: monitoring gives replicas their ingest environment and revokes the tokens
on stop without deployments (or workers) importing monitoring. The reconciler's side (tokens
issued at start, revoked on stop) is tests/deployments/test_reconcile.py's
``test_replicas_get_an_ingest_token_for_monitoring_revoked_on_stop``; here: the registration
in every process, and the host worker's side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from compute.models import ExecutionTarget, Host
from deployments import hooks, host_side, services
from deployments.hosts_runtime import HostsRuntime
from deployments.models import Replica
from deployments.reconcile import reconcile_deployment
from monitoring import ingest
from monitoring.models import IngestToken
from workers.runtimes import ReplicaState, ReplicaStatus

ROOT = Path(__file__).resolve().parents[2]


def test_monitoring_registers_its_hooks_when_django_is_set_up():
    assert ingest.ingest_environment in hooks._environment
    assert ingest.revoke_ingest_tokens in hooks._on_stop


def test_a_process_that_only_sets_django_up_has_the_hooks():
    """Web, Celery worker and beat, host worker and edge all start with ``django.setup()``
    and import nothing of monitoring themselves: that alone must register the hooks."""
    code = ("import django; django.setup(); from deployments import hooks; "
            "print(sorted(f'{f.__module__}.{f.__name__}' for f in hooks._environment)); "
            "print(sorted(f'{f.__module__}.{f.__name__}' for f in hooks._on_stop))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out == ["['monitoring.ingest.ingest_environment']",
                   "['monitoring.ingest.revoke_ingest_tokens']"]


def test_registering_a_hook_twice_runs_it_once(monkeypatch):
    monkeypatch.setattr(hooks, "_environment", [])
    calls = []

    def env(*, deployment):
        calls.append(deployment)
        return {"A": "1"}

    hooks.register_replica_environment(env)
    hooks.register_replica_environment(env)  # ready() run again
    assert hooks.replica_environment("d") == {"A": "1"} and calls == ["d"]


class Recorder:
    """The host worker's runtime, reduced to what ``start_on_host`` calls; it keeps the spec."""

    installation = "test"

    def __init__(self) -> None:
        self.specs = []

    def ensure_image(self, requirements, on_log=None) -> str:
        return "modelport/serving:fake"

    def image_for(self, image, requirements, on_log=None) -> str:
        return self.ensure_image(requirements, on_log)

    def start_replica(self, spec) -> ReplicaState:
        self.specs.append(spec)
        return ReplicaState(id=spec.name, deployment=spec.deployment, revision=spec.revision,
                            replica=spec.replica, status=ReplicaStatus.RUNNING,
                            url="http://unused")


@pytest.mark.django_db
def test_a_replica_started_on_a_host_gets_the_ingest_environment(settings, no_enqueue,
                                                                 engineer, team, v1):
    settings.MODELPORT_HOST_START_TIMEOUT_S = 1
    # The model from the shared storage: no platform listens here (fetching it over HTTP is
    # tests/deployments/test_host_models.py).
    settings.MODELPORT_HOST_MODEL_SOURCE = "shared"
    target = ExecutionTarget.objects.create(name="hosts", kind="docker",
                                            settings={"placement": "hosts"})
    Host.objects.create(name="h-a", queue="host.h-a", target=target, cpu=8, memory_mb=16384,
                        last_heartbeat=timezone.now())
    sent: list = []
    d = services.create_deployment(actor=engineer, team=team, name="iris-h", model="iris",
                                   version=1, replicas=1, target="hosts",
                                   resources={"cpu": 1, "memory_mb": 512})
    reconcile_deployment(d.pk, HostsRuntime(target, dispatch=lambda *a: sent.append(a),
                                            poll_interval=0.05))
    row = Replica.objects.get(deployment=d)
    assert row.host_status == "placing"

    runtime = Recorder()
    host_side.start_on_host(replica_id=row.pk, runtime=runtime)
    [spec] = runtime.specs
    assert spec.env["MODELPORT_INGEST_URL"].endswith("/api/v1/ingest/predictions/")
    token = spec.env["MODELPORT_INGEST_TOKEN"]
    assert ingest.authenticate_ingest(f"Bearer {token}").deployment == d
    assert IngestToken.objects.filter(deployment=d, revoked=False).exists()
