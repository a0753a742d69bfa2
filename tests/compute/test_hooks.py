"""The lower apps reach what the upper apps own only through what those register at start-up:
quotas reads the platform's capacity from compute (``quotas.capacity``), and the runtime
factory builds several Docker hosts' runtime and recognises legacy replicas through what
deployments registers (``workers.factory``, ``workers.installation``). Each process calls
``django.setup()`` (web, worker, beat, host worker, edge), which runs the apps' ``ready()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from compute import inventory
from compute.models import ExecutionTarget
from deployments import services
from deployments.hosts_runtime import HostsRuntime
from deployments.models import Revision
from quotas import capacity
from tests.deployments.conftest import (  # noqa: F401 - fixtures
    iris_dir,
    iris_model,
    no_enqueue,
    v1,
)
from workers import factory, installation

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

_SETUP_SCRIPT = """
import json
import django
django.setup()
from quotas import capacity
from workers import factory, installation
print(json.dumps({
    "capacity": capacity._provider is not None,
    "hosts": "hosts" in factory._PLACEMENT_RUNTIMES,
    "legacy": installation._legacy_owner is not None,
}))
"""


def test_every_process_that_sets_up_django_registers_the_hooks():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    out = subprocess.run([sys.executable, "-c", _SETUP_SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "capacity": True, "hosts": True, "legacy": True}


def test_quotas_reads_the_platform_capacity_from_the_inventory(admin_user):
    assert capacity.current() is None  # nothing registered: quotas are not capped
    inventory.register_host(actor=admin_user, name="gpu-1", cpu=8, memory_mb=1024,
                            cpu_overcommit=2, gpus=[("0", "T4"), ("1", "T4"), ("2", "A100")])
    host = inventory.register_host(actor=admin_user, name="off", cpu=64, memory_mb=1024,
                                   gpus=[("0", "H100")])
    inventory.update_host(actor=admin_user, host=host, active=False)
    assert capacity.current() == capacity.Capacity(
        schedulable_cpu=Decimal("16.000"), schedulable_memory_mb=1024,
        gpus_by_model={"T4": 2, "A100": 1})
    assert capacity.gpu_models() == ["A100", "T4"]


def test_a_hosts_target_gets_the_runtime_deployments_registered(admin_user):
    target = ExecutionTarget.objects.create(name="fleet", kind="docker",
                                            settings={"placement": "hosts"})
    runtime = factory.runtime_for_target(target)
    assert isinstance(runtime, HostsRuntime) and runtime.target == target


def test_a_legacy_replica_is_ours_only_with_a_replica_key_our_database_knows(
        engineer, team, v1, no_enqueue):  # noqa: F811
    d = services.create_deployment(actor=engineer, team=team, name="legacy-check",
                                   model="iris", version=1)
    key = Revision.objects.get(deployment=d, number=1).replica_key
    assert key
    assert installation.owns_legacy_replica("legacy-check", 1, key)
    assert not installation.owns_legacy_replica("legacy-check", 1, "0" * len(key))
    assert not installation.owns_legacy_replica("legacy-check", 2, key)
    assert not installation.owns_legacy_replica("legacy-check", 1, "")
