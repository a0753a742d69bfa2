"""GPU allocation: specific devices from the inventory, never one device to two replicas."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import inventory
from compute.models import GpuAllocation, GpuDevice
from core.errors import Conflict, InvalidInput
from deployments import admission
from quotas import requests, services
from quotas.models import QuotaGrant
from tests.factories import TeamFactory
from tests.quotas.conftest import set_limits

pytestmark = pytest.mark.django_db


@pytest.fixture
def gpu_team(team, gpu_host):
    set_limits(team, gpus=4)
    services.admit(team=team, owner="deployment:llm", gpus=3, deployments=1)
    return team


def test_allocates_specific_devices_of_the_asked_model(gpu_team):
    allocations = inventory.allocate_gpus(team=gpu_team, count=2, model="T4",
                                         owner="deployment:llm/r0")
    assert sorted(a.device.device_id for a in allocations) == ["2", "3"]
    assert inventory.device_ids("deployment:llm/r0") == ["2", "3"]


def test_allocation_is_idempotent_for_the_same_replica(gpu_team):
    first = inventory.allocate_gpus(team=gpu_team, count=1, owner="deployment:llm/r0")
    again = inventory.allocate_gpus(team=gpu_team, count=1, owner="deployment:llm/r0")
    assert [a.pk for a in first] == [a.pk for a in again]


def test_replicas_cannot_exceed_the_teams_reserved_gpus(gpu_team):
    inventory.allocate_gpus(team=gpu_team, count=2, owner="deployment:llm/r0")
    with pytest.raises(Conflict) as refused:
        inventory.allocate_gpus(team=gpu_team, count=2, owner="deployment:llm/r1")
    assert refused.value.code == "quota_exceeded"
    assert "has 1 of 3 reserved GPUs unassigned" in refused.value.message


def test_no_free_device_of_the_model_is_a_conflict(gpu_team):
    inventory.allocate_gpus(team=gpu_team, count=2, model="T4", owner="deployment:llm/r0")
    with pytest.raises(Conflict) as refused:
        inventory.allocate_gpus(team=gpu_team, count=1, model="T4", owner="deployment:llm/r1")
    assert refused.value.code == "gpus_unavailable"


def test_unknown_model_is_invalid(gpu_team):
    with pytest.raises(InvalidInput):
        inventory.allocate_gpus(team=gpu_team, count=1, model="H100", owner="deployment:llm/r0")


def test_release_when_the_replica_stops_frees_the_device(gpu_team):
    inventory.allocate_gpus(team=gpu_team, count=1, model="T4", owner="deployment:llm/r0")
    assert inventory.release_gpus(owner="deployment:llm/r0") == 1
    again = inventory.allocate_gpus(team=gpu_team, count=2, model="T4", owner="deployment:llm/r1")
    assert len(again) == 2


def test_releasing_the_deployment_releases_its_replicas_devices(gpu_team):
    inventory.allocate_gpus(team=gpu_team, count=1, owner="deployment:llm/r0")
    inventory.allocate_gpus(team=gpu_team, count=1, owner="deployment:llm/r1")
    admission.release_spec(owner="deployment:llm")  # what deleting a deployment calls
    assert not GpuAllocation.objects.active().exists()


def test_the_database_refuses_a_second_active_allocation_of_a_device(gpu_team):
    device = GpuDevice.objects.first()
    GpuAllocation.objects.create(device=device, team=gpu_team, owner="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        GpuAllocation.objects.create(device=device, team=gpu_team, owner="b")


def test_stale_allocations_of_vanished_replicas_are_released(gpu_team):
    inventory.allocate_gpus(team=gpu_team, count=1, owner="deployment:llm/r0")
    inventory.allocate_gpus(team=gpu_team, count=1, owner="deployment:llm/r1")
    assert inventory.release_stale_gpus(live_owners=["deployment:llm/r1"]) == 1
    assert set(GpuAllocation.objects.active().values_list("owner", flat=True)) == \
        {"deployment:llm/r1"}


# --- property: random sequences of allocate / release / expire ---------------------------------
OWNERS = [f"deployment:d{d}/r{r}" for d in range(2) for r in range(3)]
operations = st.lists(st.one_of(
    st.tuples(st.just("allocate"), st.sampled_from(["a", "b"]), st.sampled_from(OWNERS),
              st.integers(min_value=1, max_value=3),
              st.sampled_from([None, "A100-80GB", "T4"])),
    st.tuples(st.just("release"), st.sampled_from(OWNERS)),
    st.tuples(st.just("stale"), st.sets(st.sampled_from(OWNERS))),
    st.tuples(st.just("expire"), st.sampled_from(["a", "b"])),
), max_size=25)


class _Rollback(Exception):
    pass


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_no_device_is_ever_held_by_two_replicas(admin_user, ops):
    try:
        with transaction.atomic():
            _check_sequence(admin_user, ops)
            raise _Rollback
    except _Rollback:
        pass


def _check_sequence(admin_user, ops) -> None:
    inventory.register_host(actor=admin_user, name="h", cpu=8, memory_mb=8192,
                           gpus=[("0", "A100-80GB"), ("1", "A100-80GB"), ("2", "T4"),
                                 ("3", "T4"), ("4", "T4")])
    teams = {}
    for name in ("a", "b"):
        teams[name] = TeamFactory(slug=f"team-{name}")
        set_limits(teams[name], gpus=0)
        QuotaGrant.objects.create(team=teams[name], gpus=5,
                                  expires_at=timezone.now() + timedelta(hours=1))
        services.admit(team=teams[name], owner=f"team-{name}", gpus=5)
    holders: dict[str, tuple[str, set[str]]] = {}  # owner → (team, devices)
    for op in ops:
        if op[0] == "allocate":
            _, team, owner, count, model = op
            try:
                got = inventory.allocate_gpus(team=teams[team], count=count, owner=owner,
                                             model=model)
            except (Conflict, InvalidInput):
                continue
            devices = {a.device.device_id for a in got}
            assert len(devices) == count
            if owner in holders:
                assert holders[owner] == (team, devices)
            holders[owner] = (team, devices)
        elif op[0] == "release":
            inventory.release_gpus(owner=op[1])
            holders.pop(op[1], None)
        elif op[0] == "stale":
            inventory.release_stale_gpus(live_owners=op[1])
            holders = {o: h for o, h in holders.items() if o in op[1]}
        else:  # a grant expires: flagged, never taken away from running replicas
            QuotaGrant.objects.filter(team=teams[op[1]]).update(expires_at=timezone.now())
            requests.expire_grants()
        active = list(GpuAllocation.objects.active().values_list("device_id", "owner"))
        assert len({d for d, _ in active}) == len(active), "a device is held twice"
        expected = sorted(d for _, devices in holders.values() for d in devices)
        assert sorted(GpuAllocation.objects.active()
                      .values_list("device__device_id", flat=True)) == expected
