"""Several plain Docker hosts without containers: the placement rule, target validation, the
host-worker settings, the lost-host check on installations without host workers, and tasks
that reach the wrong host. (Placement, loss and clean-up on the real Docker Engine:
tests/deployments/test_docker_hosts.py and test_host_workers.py.)"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from compute import inventory, placement
from compute.models import ExecutionTarget, Host
from config.settings.env import env_pattern
from deployments import host_tasks as tasks
from teams.models import AuditEvent
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db


def room(name: str, cpu: str, memory_mb: int = 8192, *, gpus: int = 0, same_revision: int = 0,
         same_deployment: int = 0) -> placement.Room:
    return placement.Room(host=Host(name=name), cpu=Decimal(cpu), memory_mb=memory_mb, gpus=gpus,
                          replicas=same_deployment, same_revision=same_revision,
                          same_deployment=same_deployment)


def test_placement_prefers_hosts_without_the_revision_then_the_most_free_cpu():
    need = {"cpu": Decimal("1"), "memory_mb": 1024, "gpus": 0}
    assert placement.choose([room("a", "2"), room("b", "6")], **need).host.name == "b"
    # b has more room but already runs a replica of this revision: spread first.
    assert placement.choose([room("a", "2"), room("b", "6", same_revision=1)],
                            **need).host.name == "a"
    # ... unless a cannot hold it at all.
    assert placement.choose([room("a", "0.5"), room("b", "6", same_revision=1)],
                            **need).host.name == "b"
    assert placement.choose([room("a", "4", 512), room("b", "0.5")], **need) is None
    assert placement.choose([room("a", "4")], cpu=Decimal(1), memory_mb=1, gpus=1) is None
    assert placement.choose([room("a", "4", gpus=1)], cpu=Decimal(1), memory_mb=1,
                            gpus=1).host.name == "a"
    # Equal rooms: by name, so placement is deterministic.
    assert placement.choose([room("b", "2"), room("a", "2")], **need).host.name == "a"


def test_a_hosts_target_takes_no_endpoint_and_only_the_hosts_placement(admin_user):
    api = bearer_client(admin_user)
    bad = api.post("/api/v1/targets/", {"name": "fleet", "kind": "docker",
                                        "endpoint": "tcp://10.0.0.5:2376",
                                        "settings": {"placement": "hosts"}}, format="json")
    assert bad.status_code == 400 and "takes no endpoint" in str(bad.json())
    bad = api.post("/api/v1/targets/", {"name": "fleet", "kind": "docker",
                                        "settings": {"placement": "spread"}}, format="json")
    assert bad.status_code == 400 and "placement" in str(bad.json())
    assert not ExecutionTarget.objects.filter(name="fleet").exists()
    ok = api.post("/api/v1/targets/", {"name": "fleet", "kind": "docker",
                                       "settings": {"placement": "hosts"}}, format="json")
    assert ok.status_code == 201, ok.json()
    health = api.get("/api/v1/targets/fleet/health/").json()
    assert health["reachable"] is False and "no host worker" in health["message"]


def test_a_registry_setting_is_host_port_prefix_on_hosts_and_swarm_targets(admin_user):
    api = bearer_client(admin_user)
    for bad in ("http://registry.example.com", "registry/mp", "Registry.example.com/MP",
                "registry.example.com/mp:tag", "", 5000):
        answer = api.post("/api/v1/targets/", {"name": "fleet", "kind": "docker", "settings": {
            "placement": "hosts", "registry": bad}}, format="json")
        assert answer.status_code == 400 and "settings.registry" in str(answer.json()), bad
    one_host = api.post("/api/v1/targets/", {"name": "fleet", "kind": "docker", "settings": {
        "registry": "registry.example.com"}}, format="json")
    assert one_host.status_code == 400 and "placement" in str(one_host.json())
    assert not ExecutionTarget.objects.filter(name="fleet").exists()
    for name, kind, settings in (
            ("fleet", "docker", {"placement": "hosts", "registry": "198.51.100.1:5000/mp"}),
            ("swarm-r", "swarm", {"registry": "registry.example.com"}),
            ("local-r", "docker", {"placement": "hosts", "registry": "localhost:5000"})):
        ok = api.post("/api/v1/targets/", {"name": name, "kind": kind, "settings": settings},
                      format="json")
        assert ok.status_code == 201, ok.json()


def test_the_registry_comes_from_the_target_else_the_global_setting(settings):
    from deployments.hosts_runtime import HostsRuntime
    from workers import factory

    settings.MODELPORT_IMAGE_REGISTRY = "registry.example.com/all"
    fleet = ExecutionTarget(name="fleet", kind="docker", settings={"placement": "hosts"})
    assert HostsRuntime(fleet, installation="x").registry == "registry.example.com/all"
    fleet.settings["registry"] = "198.51.100.1:5000/mp/"
    assert HostsRuntime(fleet, installation="x").registry == "198.51.100.1:5000/mp"
    swarm = ExecutionTarget(name="s", kind="swarm", endpoint="unix:///nonexistent.sock",
                            settings={})
    runtime = factory.runtime_for_target(swarm)
    assert runtime.publisher is not None
    assert runtime.publisher.registry == "registry.example.com/all"
    settings.MODELPORT_IMAGE_REGISTRY = ""
    assert HostsRuntime(ExecutionTarget(name="f", kind="docker",
                                        settings={"placement": "hosts"}),
                        installation="x").registry == ""
    assert factory.runtime_for_target(swarm).publisher is None


def test_host_names_must_be_usable_in_queue_and_container_names(monkeypatch):
    pattern = r"[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?"
    monkeypatch.setenv("MODELPORT_HOST_NAME", "Gpu_1!")
    with pytest.raises(ImproperlyConfigured, match="MODELPORT_HOST_NAME='Gpu_1!'"):
        env_pattern("MODELPORT_HOST_NAME", "", pattern, "lowercase")
    monkeypatch.setenv("MODELPORT_HOST_NAME", "gpu-1.dc2")
    assert env_pattern("MODELPORT_HOST_NAME", "", pattern, "lowercase") == "gpu-1.dc2"
    monkeypatch.delenv("MODELPORT_HOST_NAME")
    assert env_pattern("MODELPORT_HOST_NAME", "", pattern, "lowercase") == ""


def test_the_lost_host_check_leaves_single_host_installs_and_hand_registered_hosts_alone(
        admin_user, settings):

    assert tasks.check_hosts() == []
    inventory.register_host(actor=admin_user, name="rack-1", cpu=64, memory_mb=262144)
    assert tasks.check_hosts() == []  # capacity only: no worker, never "lost"
    assert Host.objects.get(name="rack-1").state == "alive"
    assert not AuditEvent.objects.filter(action="host.lost").exists()


def test_a_silent_host_is_lost_once_with_an_audit_entry(settings):
    settings.MODELPORT_HOST_LOST_SECONDS = 60
    Host.objects.create(name="h1", queue="host.h1", cpu=4, memory_mb=8192,
                        last_heartbeat=timezone.now() - timedelta(seconds=61))
    Host.objects.create(name="h2", queue="host.h2", cpu=4, memory_mb=8192,
                        last_heartbeat=timezone.now() - timedelta(seconds=30))
    assert tasks.check_hosts() == ["h1"]
    assert tasks.check_hosts() == []
    entry = AuditEvent.objects.get(action="host.lost")
    assert entry.object_repr == "h1" and entry.after["state"] == "lost"
    assert [h["state"] for h in placement.host_summaries()] == ["lost", "alive"]


def test_a_task_for_another_host_never_touches_this_hosts_engine(settings):
    settings.MODELPORT_HOST_NAME = "gpu-1"
    assert tasks._host_runtime("gpu-2") is None
    assert tasks.host_heartbeat("gpu-2") is None
    assert not Host.objects.filter(name="gpu-2").exists()
