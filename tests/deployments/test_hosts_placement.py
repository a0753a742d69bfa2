"""Several plain Docker hosts, the reconciler's side without containers: the host workers are
replaced by a dispatch that sends nothing (no worker consumes), so these tests see exactly what
the reconciler records before a host answers — GPU devices allocated on the chosen host, and a
host that does not report leaving the deployment waiting rather than failed. (With real
containers and host workers: test_docker_hosts.py, test_host_workers.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from compute.models import ExecutionTarget, GpuAllocation, GpuDevice, Host
from deployments import services
from deployments.hosts_runtime import HostsRuntime
from deployments.models import Replica, Revision
from deployments.reconcile import reconcile_deployment
from tests.quotas.conftest import set_limits

pytestmark = pytest.mark.django_db


@pytest.fixture
def silent_hosts(settings, no_enqueue):
    """A hosts target with two hosts that heartbeat but whose workers take no tasks."""
    settings.MODELPORT_HOST_START_TIMEOUT_S = 1
    settings.MODELPORT_DRAIN_SECONDS = 0
    target = ExecutionTarget.objects.create(name="hosts", kind="docker",
                                            settings={"placement": "hosts"})
    now = timezone.now()
    for name in ("h-a", "h-b"):
        Host.objects.create(name=name, queue=f"host.{name}", target=target, cpu=8,
                            memory_mb=16384, last_heartbeat=now)
    sent: list[tuple[str, list, str]] = []
    runtime = HostsRuntime(target, dispatch=lambda task, args, queue: sent.append(
        (task, args, queue)), poll_interval=0.05)
    return target, runtime, sent


def create(engineer, team, **extra):
    args = {"name": "iris-h", "model": "iris", "version": 1, "replicas": 1,
            "resources": {"cpu": 1, "memory_mb": 512}, "target": "hosts"}
    args.update(extra)
    return services.create_deployment(actor=engineer, team=team, **args)


def test_a_host_that_does_not_report_leaves_the_deployment_waiting_not_failed(
        silent_hosts, engineer, team, v1):
    _, runtime, sent = silent_hosts
    d = create(engineer, team)
    assert reconcile_deployment(d.pk, runtime) == "no-capacity"
    [(task, [row_id], queue)] = sent
    row = Replica.objects.get(pk=row_id)
    assert task == "workers.tasks.start_host_replica" and queue == f"host.{row.host.name}"
    assert row.host_status == "placing" and row.runtime_id.endswith(f".{row.host.name}")
    d.refresh_from_db()
    assert d.status == "pending" and d.status_message.startswith("Waiting for the host")
    assert Revision.objects.get(deployment=d, number=1).state != "failed"
    # The next pass does not place it twice: the placement stands until the host answers.
    assert reconcile_deployment(d.pk, runtime) == "starting"
    assert len(sent) == 1 and Replica.objects.filter(deployment=d).count() == 1

    # The host goes silent: lost, and the placement moves to the other host.
    Host.objects.filter(pk=row.host_id).update(
        last_heartbeat=timezone.now() - timedelta(seconds=600))
    from deployments import host_tasks as tasks

    assert tasks.check_hosts() == [row.host.name]
    assert reconcile_deployment(d.pk, runtime) == "no-capacity"  # its worker takes no tasks either
    moved = Replica.objects.get(deployment=d)
    assert moved.host_id != row.host_id and moved.host_status == "placing"
    assert sent[-1] == ("workers.tasks.start_host_replica", [moved.pk],
                        f"host.{moved.host.name}")


def test_gpu_replicas_get_devices_of_the_host_they_are_placed_on(silent_hosts, engineer, team,
                                                                  v1):
    _, runtime, _ = silent_hosts
    set_limits(team, gpus=2)
    gpu_host = Host.objects.get(name="h-b")
    for device in ("0", "1"):
        GpuDevice.objects.create(host=gpu_host, device_id=device, model="T4")
    d = create(engineer, team, resources={"cpu": 1, "memory_mb": 512, "gpus": 1})
    reconcile_deployment(d.pk, runtime)
    row = Replica.objects.get(deployment=d)
    assert row.host == gpu_host and row.gpus == 1  # h-a has more room but no GPU
    [allocation] = GpuAllocation.objects.active()
    assert allocation.device.host == gpu_host
    assert allocation.owner == f"deployment:{d.name}/{row.runtime_id}"
    # Stopping gives the device back (the host is silent: the row goes at once).
    Host.objects.filter(pk=gpu_host.pk).update(state="lost")
    services.stop(actor=engineer, deployment=d)
    assert reconcile_deployment(d.pk, runtime) == "stopped"
    assert not GpuAllocation.objects.active().exists()
    assert not Replica.objects.filter(deployment=d).exists()
