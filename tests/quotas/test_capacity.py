"""Capacity: hosts/pools with overcommit, GPU inventory by device, and the capacity API."""

from __future__ import annotations

import pytest

from compute import inventory
from compute.models import GpuDevice, Host
from core.errors import Conflict, InvalidInput
from deployments import admission
from quotas import services
from teams.models import AuditEvent
from tests.quotas.conftest import set_limits

pytestmark = pytest.mark.django_db


def test_registering_a_host_records_its_gpus_and_is_audited(admin_user, gpu_host):
    assert sorted(GpuDevice.objects.values_list("device_id", "model")) == [
        ("0", "A100-80GB"), ("1", "A100-80GB"), ("2", "T4"), ("3", "T4")]
    event = AuditEvent.objects.get(action="host.created")
    assert event.after["gpus"][0] == "0 (A100-80GB)"
    assert inventory.gpu_models() == ["A100-80GB", "T4"]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"cpu": -1}, InvalidInput), ({"cpu_overcommit": "0.5"}, InvalidInput),
    ({"gpus": [("0", "T4"), ("0", "T4")]}, InvalidInput), ({"gpus": [("0", "")]}, InvalidInput),
    ({"kind": "cluster"}, InvalidInput), ({"name": "gpu-1"}, Conflict),
])
def test_bad_capacity_is_refused(admin_user, gpu_host, kwargs, error):
    with pytest.raises(error):
        inventory.register_host(actor=admin_user, **{"name": "h2", "cpu": 4, "memory_mb": 1024,
                                                    **kwargs})
    assert Host.objects.count() == 1


def test_capacity_api_shows_totals_allocation_and_each_device(api_as, admin_user, team,
                                                              gpu_host):
    inventory.register_host(actor=admin_user, name="pool-a", kind="pool", cpu=16,
                           memory_mb=32768, cpu_overcommit=2, memory_overcommit="1.5")
    set_limits(team, gpus=2)
    services.admit(team=team, owner="deployment:llm", cpu=2, memory_mb=4096, gpus=1)
    inventory.allocate_gpus(team=team, count=1, model="T4", owner="deployment:llm/r0")
    body = api_as(admin_user).get("/api/v1/capacity/").json()
    assert body["totals"] == {"cpu": 80.0, "memory_mb": 294912, "schedulable_cpu": 96.0,
                              "schedulable_memory_mb": 262144 + 49152, "gpus": 4}
    assert body["allocated"] == {"cpu": 2.0, "memory_mb": 4096, "gpus": 1, "gpu_devices": 1}
    gpu = next(h for h in body["hosts"] if h["name"] == "gpu-1")
    assert gpu["gpus_allocated"] == 1
    held = [d for d in gpu["gpus"] if d["allocated_to"]]
    assert held[0]["device_id"] == "2" and held[0]["allocated_to"]["team"] == "ml-search"
    assert {m["model"]: m["free"] for m in body["gpu_models"]} == {"A100-80GB": 2, "T4": 1}


def test_an_allocated_gpu_cannot_be_removed(admin_user, team, gpu_host):
    set_limits(team, gpus=1)
    services.admit(team=team, owner="deployment:x", gpus=1)
    [allocation] = inventory.allocate_gpus(team=team, count=1, owner="deployment:x/r0")
    with pytest.raises(Conflict):
        inventory.remove_gpu(actor=admin_user, device=allocation.device)
    admission.release_spec(owner="deployment:x")
    inventory.remove_gpu(actor=admin_user, device=allocation.device)
    assert not GpuDevice.objects.get(pk=allocation.device_id).active  # history kept


def test_only_platform_admins_edit_capacity(engineer, gpu_host):
    from core.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        inventory.register_host(actor=engineer, name="mine", cpu=1, memory_mb=1)
    with pytest.raises(PermissionDenied):
        inventory.update_host(actor=engineer, host=gpu_host, cpu_overcommit=4)
    with pytest.raises(PermissionDenied):
        inventory.add_gpu(actor=engineer, host=gpu_host, device_id="9", model="T4")
