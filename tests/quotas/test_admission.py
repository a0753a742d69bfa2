"""admit/resize/release: the ledger deployments use; refusals carry the numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import Conflict, InvalidInput
from quotas import services
from quotas.models import Reservation
from teams.models import AuditEvent
from tests.factories import TeamFactory
from tests.quotas.conftest import set_limits

pytestmark = pytest.mark.django_db


def test_a_new_team_gets_the_default_quota_from_settings(team, settings):
    settings.MODELPORT_DEFAULT_QUOTA_CPU = 3.5
    settings.MODELPORT_DEFAULT_QUOTA_MEMORY_MB = 2048
    settings.MODELPORT_DEFAULT_QUOTA_GPUS = 1
    settings.MODELPORT_DEFAULT_QUOTA_DEPLOYMENTS = 2
    limits = services.usage(team).limits
    assert limits == services.Resources(cpu=Decimal("3.5"), memory_mb=2048, gpus=1,
                                        deployments=2)


def test_admit_reserves_within_the_quota_and_usage_lists_it(team, quota):
    services.admit(team=team, owner="deployment:fraud-v2", cpu="1.5", memory_mb=2048,
                   deployments=1)
    usage = services.usage(team)
    assert usage.used.cpu == Decimal("1.5") and usage.pending.cpu == Decimal("1.5")
    assert usage.reserved.cpu == 0
    assert usage.free.cpu == Decimal("6.5") and usage.free.deployments == 4
    services.mark_running(owner="deployment:fraud-v2")
    usage = services.usage(team)
    assert usage.reserved.memory_mb == 2048 and usage.pending.memory_mb == 0
    assert AuditEvent.objects.filter(action="quota.admitted", team=team).count() == 1


def test_a_request_that_does_not_fit_is_refused_with_the_numbers(team, quota):
    services.admit(team=team, owner="deployment:a", cpu="6.5", deployments=1)
    with pytest.raises(Conflict) as refused:
        services.admit(team=team, owner="deployment:b", cpu=4, deployments=1)
    assert refused.value.code == "quota_exceeded"
    assert refused.value.message == "needs 4 CPU; team ml-search has 1.5 of 8 free."
    assert refused.value.extra["resources"]["cpu"] == {"needs": 4.0, "free": 1.5, "limit": 8.0}
    assert not Reservation.objects.filter(owner="deployment:b").exists()


def test_every_resource_that_does_not_fit_is_named(team):
    set_limits(team, cpu="2", memory_mb=1024, gpus=0, deployments=1)
    with pytest.raises(Conflict) as refused:
        services.admit(team=team, owner="deployment:big", cpu=4, memory_mb=4096, gpus=1,
                       deployments=2)
    message = refused.value.message
    assert "needs 4 CPU; team ml-search has 2 of 2 free" in message
    assert "needs 4096 MB memory; team ml-search has 1024 of 1024 MB free" in message
    assert "needs 1 GPU; team ml-search has 0 of 0 free" in message
    assert "needs 2 deployments; team ml-search has 1 of 1 free" in message


def test_scaling_admits_only_the_growth_and_scaling_down_is_never_refused(team, quota):
    services.admit(team=team, owner="deployment:x", cpu=2, memory_mb=1024, deployments=1)
    services.admit(team=team, owner="deployment:x", cpu=2, memory_mb=1024)  # 2 → 4 replicas
    reservation = Reservation.objects.get(owner="deployment:x")
    assert (reservation.cpu, reservation.memory_mb, reservation.deployments) == (4, 2048, 1)
    set_limits(team, cpu="1")  # the quota shrank under it
    services.admit(team=team, owner="deployment:x", cpu=-3, memory_mb=-1536)
    assert Reservation.objects.get(owner="deployment:x").cpu == 1


def test_resize_sets_totals(team, quota):
    services.admit(team=team, owner="deployment:x", cpu=1, deployments=1)
    services.resize(owner="deployment:x", cpu=3, memory_mb=512, deployments=1)
    assert Reservation.objects.get(owner="deployment:x").cpu == 3
    with pytest.raises(Conflict):
        services.resize(owner="deployment:x", cpu=9, deployments=1)
    assert Reservation.objects.get(owner="deployment:x").cpu == 3


def test_release_frees_everything_and_is_audited(team, quota):
    services.admit(team=team, owner="deployment:x", cpu=8, deployments=1)
    assert services.release(owner="deployment:x") is True
    assert services.usage(team).free.cpu == 8
    assert services.release(owner="deployment:x") is False
    assert AuditEvent.objects.filter(action="quota.released").count() == 1


def test_an_owner_belongs_to_one_team(team, quota):
    other = TeamFactory(slug="other")
    services.admit(team=team, owner="deployment:x", cpu=1)
    with pytest.raises(Conflict) as refused:
        services.admit(team=other, owner="deployment:x", cpu=1)
    assert refused.value.code == "owner_taken"


def test_cannot_release_more_than_held(team, quota):
    services.admit(team=team, owner="deployment:x", cpu=1)
    with pytest.raises(InvalidInput):
        services.admit(team=team, owner="deployment:x", cpu=-2)
    assert Reservation.objects.get(owner="deployment:x").cpu == 1


@pytest.mark.parametrize("bad", [{"cpu": "abc"}, {"cpu": "0.0001"}, {"memory_mb": 1.5},
                                 {"gpus": "two"}, {"cpu": "1e9"}])
def test_nonsense_amounts_are_invalid_input(team, quota, bad):
    with pytest.raises(InvalidInput):
        services.admit(team=team, owner="deployment:x", **bad)
    assert not Reservation.objects.exists()


def test_astronomical_cpu_is_invalid_not_a_crash(team, quota):
    with pytest.raises(InvalidInput):
        services.admit(team=team, owner="deployment:x", cpu="1e40")


@pytest.mark.parametrize("bad", [{"memory_mb": "inf"}, {"gpus": True}, {"deployments": "1.5"},
                                 {"cpu": "NaN"}])
def test_non_numbers_are_invalid_input(team, quota, bad):
    with pytest.raises(InvalidInput):
        services.admit(team=team, owner="deployment:x", **bad)


def test_resize_with_a_team_creates_or_sets_totals_idempotently(team, quota):
    for _ in range(3):  # a retried reconcile sets the same totals, never adds them up
        services.resize(team=team, owner="deployment:y", cpu=2, memory_mb=1024, deployments=1)
    reservation = Reservation.objects.get(owner="deployment:y")
    assert (reservation.cpu, reservation.memory_mb, reservation.deployments) == (2, 1024, 1)
    assert AuditEvent.objects.filter(action__startswith="quota.", team=team).count() == 1
    with pytest.raises(Conflict) as refused:
        services.resize(team=team, owner="deployment:y", cpu=10, deployments=1)
    assert refused.value.message == "needs 8 CPU; team ml-search has 6 of 8 free."
