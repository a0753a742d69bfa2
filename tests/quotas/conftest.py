"""Fixtures for quota tests: a team with a known quota and a host with GPUs of two models."""

from __future__ import annotations

from decimal import Decimal

import pytest

from compute import inventory
from compute.models import Host
from quotas import services
from quotas.models import TeamQuota


def set_limits(team, *, cpu="8", memory_mb=16384, gpus=0, deployments=5) -> TeamQuota:
    """Set a team's base quota directly (the service path has its own tests)."""
    quota = services.get_quota(team)
    quota.cpu, quota.memory_mb, quota.gpus, quota.deployments = \
        Decimal(cpu), memory_mb, gpus, deployments
    quota.save()
    return quota


@pytest.fixture
def quota(team) -> TeamQuota:
    return set_limits(team)


@pytest.fixture
def gpu_host(admin_user) -> Host:
    return inventory.register_host(
        actor=admin_user, name="gpu-1", cpu=64, memory_mb=262144,
        gpus=[("0", "A100-80GB"), ("1", "A100-80GB"), ("2", "T4"), ("3", "T4")])
