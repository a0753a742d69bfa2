"""Execution targets: registered by platform admins (API, portal, console), audited, validated
with 400s that name the field; deployments name one (or get the default); admission checks a
target's registered capacity; each target gets its own runtime; health on the capacity page."""

from __future__ import annotations

import importlib

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client

from compute import targets
from compute.models import ExecutionTarget
from compute.targets import clear_cache
from deployments import services as deployments
from deployments.models import Deployment
from quotas.models import Reservation
from teams.models import AuditEvent
from tests.deployments.conftest import (  # noqa: F401 - fixtures
    iris_dir,
    iris_model,
    no_enqueue,
    v1,
)
from tests.fixtures import bearer_client

pytestmark = pytest.mark.django_db
URL = "/api/v1/targets/"
SWARM = {"name": "swarm-a", "kind": "swarm", "endpoint": "tcp://127.0.0.1:9",
         "settings": {"network": "overlay", "overlay_network": "models"},
         "capacity": {"cpu": 8, "memory_mb": 16384, "gpus": 0}}


@pytest.fixture
def admin_api(admin_user):
    return bearer_client(admin_user)


@pytest.fixture
def default_target(admin_user):
    ExecutionTarget.objects.all().delete()
    return targets.create_target(actor=admin_user, name="local", kind="docker",
                                  is_default=True)


def test_the_migration_creates_one_default_docker_target_following_the_settings():
    migration = importlib.import_module("workers.migrations.0002_execution_targets")
    ExecutionTarget.objects.all().delete()
    then = MigrationLoader(connection).project_state(("workers", "0002_execution_targets")).apps
    migration.create_default_target(then, None)
    migration.create_default_target(then, None)  # idempotent
    [target] = ExecutionTarget.objects.all()
    assert (target.name, target.kind, target.endpoint, target.is_default) == (
        "default", "docker", "", True)


def test_admins_register_change_and_remove_targets_audited(admin_api, engineer, default_target):
    response = admin_api.post(URL, SWARM, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "swarm" and body["capacity"] == {"cpu": 8.0, "memory_mb": 16384,
                                                            "gpus": 0}
    listed = bearer_client(engineer).get(URL).json()["results"]
    assert [t["name"] for t in listed] == ["local", "swarm-a"]  # everyone may read

    response = admin_api.patch(f"{URL}swarm-a/", {"capacity": {"cpu": 4}, "is_default": True},
                               format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["capacity"]["cpu"] == 4.0 and response.json()["is_default"]
    assert not ExecutionTarget.objects.get(name="local").is_default  # only one default
    assert targets.default_target().name == "swarm-a"

    assert admin_api.delete(f"{URL}swarm-a/").status_code == 409  # the default
    admin_api.patch(f"{URL}local/", {"is_default": True}, format="json")
    assert admin_api.delete(f"{URL}swarm-a/").status_code == 204
    actions = list(AuditEvent.objects.filter(object_type="executiontarget")
                   .order_by("id").values_list("action", flat=True))
    assert actions == ["target.created", "target.created", "target.updated",
                       "target.updated", "target.deleted"]
    updated = AuditEvent.objects.filter(action="target.updated", object_repr="swarm-a").get()
    assert updated.before["cpu"] == "8.000" and updated.after["cpu"] == "4.000"


def test_only_platform_admins_change_targets(engineer, default_target):
    api = bearer_client(engineer)
    assert api.post(URL, SWARM, format="json").status_code == 403
    assert api.patch(f"{URL}local/", {"enabled": False}, format="json").status_code == 403
    assert api.delete(f"{URL}local/").status_code == 403
    assert ExecutionTarget.objects.count() == 1 and ExecutionTarget.objects.get().enabled
    assert Client().get(URL).status_code in (401, 403)


@pytest.mark.parametrize(("override", "field", "needle"), [
    ({"kind": "nomad"}, "kind", "nomad"),
    ({"name": "Bad Name"}, "name", "valid target name"),
    ({"endpoint": "docker.sock"}, "endpoint", "unix://"),
    ({"settings": {"network": "bridge"}}, "settings", "'host'"),
    ({"settings": {"network": "overlay"}}, "settings", "overlay_network"),
    ({"settings": {"port_range": [30000, 20000]}}, "settings", "port_range"),
    ({"settings": {"colour": "blue"}}, "settings", "colour"),
    ({"settings": "host"}, "settings", "object"),
    ({"settings": {"network": "overlay", "overlay_network": "models",
                   "egress_network": "models"}}, "settings", "egress_network"),
    ({"settings": {"network": "host", "egress_network": "out"}}, "settings", "egress_network"),
    ({"settings": {"bind_host": "10.1.2.3"}}, "settings", "bind_host"),
    ({"settings": {"network": "overlay", "overlay_network": "models", "bind_host": "0.0.0.0"}},
     "settings", "applies to host mode"),
    ({"settings": {"constraints": "node.role==worker"}}, "settings", "list of 1 to 20"),
    ({"settings": {"constraints": []}}, "settings", "list of 1 to 20"),
    ({"settings": {"constraints": ["node.role==worker", "node.role=manager"]}}, "settings",
     "constraints[1]"),
    ({"settings": {"constraints": ["role==worker"]}}, "settings", "constraints[0]"),
    ({"kind": "kubernetes", "endpoint": "", "namespace": "m", "in_cluster": True,
      "settings": {"network_policy": {"ingest_port": 0}}}, "settings", "ingest_port"),
    ({"kind": "kubernetes", "endpoint": "", "namespace": "m", "in_cluster": True,
      "settings": {"network_policy": {"client_pod": {"a": "b"}}}}, "settings",
     "network_policy has unknown key(s) client_pod"),
    ({"capacity": {"cpu": -1}}, "capacity", "greater than or equal"),
    ({"kind": "kubernetes", "endpoint": ""}, "namespace", "namespace"),
    ({"kind": "kubernetes", "namespace": "models"}, "endpoint", "context"),
    ({"namespace": "models"}, "namespace", "only to kubernetes"),
    ({"kind": "kubernetes", "endpoint": "", "namespace": "Models!"}, "namespace", "DNS label"),
    ({"kind": "kubernetes", "endpoint": "", "namespace": "m", "in_cluster": True,
      "kube_context": "prod"}, "kube_context", "not both"),
])
def test_bad_targets_are_400_naming_the_field_and_nothing_is_written(admin_api, override,
                                                                     field, needle):
    before = ExecutionTarget.objects.count()
    response = admin_api.post(URL, {**SWARM, **override}, format="json")
    assert response.status_code == 400, response.json()
    text = str(response.json())
    assert field in text and needle in text, text
    assert ExecutionTarget.objects.count() == before
    assert not AuditEvent.objects.filter(action="target.created").exists()


def test_kubernetes_targets_take_a_context_or_in_cluster_and_a_namespace(admin_api):
    response = admin_api.post(URL, {"name": "k8s", "kind": "kubernetes", "in_cluster": True,
                                    "namespace": "models",
                                    "settings": {"image_pull_secrets": ["regcred"]}},
                              format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["namespace"] == "models"


def test_deployments_name_their_target_or_get_the_default(engineer, team, v1, no_enqueue,  # noqa: F811
                                                          admin_user, default_target):
    targets.create_target(actor=admin_user, name="swarm-a", kind="swarm")
    plain = deployments.create_deployment(actor=engineer, team=team, name="iris-a",
                                          model="iris", version=1)
    assert plain.target == default_target  # pinned: a later default change does not move it
    api = bearer_client(engineer)
    response = api.post("/api/v1/deployments/", {
        "name": "iris-b", "team": team.slug, "model": "iris", "version": 1,
        "target": "swarm-a"}, format="json")
    assert response.status_code == 202 and response.json()["target"] == "swarm-a"
    response = api.post("/api/v1/deployments/", {
        "name": "iris-c", "team": team.slug, "model": "iris", "version": 1,
        "target": "nowhere"}, format="json")
    assert response.status_code == 400 and "No execution target 'nowhere'" in str(
        response.json())
    targets.update_target(actor=admin_user, target=ExecutionTarget.objects.get(name="swarm-a"),
                           enabled=False)
    response = api.post("/api/v1/deployments/", {
        "name": "iris-c", "team": team.slug, "model": "iris", "version": 1,
        "target": "swarm-a"}, format="json")
    assert response.status_code == 400 and "disabled" in str(response.json())
    assert not Deployment.objects.filter(name="iris-c").exists()
    assert admin_user and bearer_client(admin_user).delete(f"{URL}swarm-a/").status_code == 409


def test_admission_keeps_deployments_within_their_targets_capacity(
        engineer, team, v1, no_enqueue, admin_user, default_target):  # noqa: F811
    small = targets.create_target(actor=admin_user, name="small", kind="docker",
                                   endpoint="unix:///var/run/docker.sock", cpu=1, memory_mb=4096)
    deployments.create_deployment(actor=engineer, team=team, name="iris-a", model="iris",
                                  version=1, replicas=2, target="small",
                                  resources={"cpu": 0.5, "memory_mb": 512})
    api = bearer_client(engineer)
    response = api.post("/api/v1/deployments/", {
        "name": "iris-b", "team": team.slug, "model": "iris", "version": 1, "target": "small",
        "resources": {"cpu": 0.25, "memory_mb": 256}}, format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "target_capacity_exceeded"
    assert "'small' is full" in response.json()["detail"] and "0.000 of 1.000 free" in \
        response.json()["detail"]
    assert not Deployment.objects.filter(name="iris-b").exists()
    assert not Reservation.objects.filter(owner="deployment:iris-b").exists()
    # Scaling up past the target's capacity is refused too; the default target is unlimited.
    response = api.patch("/api/v1/deployments/iris-a/", {"replicas": 3}, format="json")
    assert response.status_code == 409 and Deployment.objects.get(name="iris-a").replicas == 2
    deployments.create_deployment(actor=engineer, team=team, name="iris-c", model="iris",
                                  version=1, resources={"cpu": 0.25, "memory_mb": 256})
    assert targets.target_reserved(small) == {"cpu": 1, "memory_mb": 1024, "gpus": 0}


def test_each_target_gets_its_own_runtime(admin_user, monkeypatch, settings, default_target):
    from workers.factory import runtime_for_target
    from workers.runtimes.docker import DockerRuntime
    from workers.runtimes.swarm import SwarmRuntime

    sentinel = object()
    monkeypatch.setattr("workers.factory.get_runtime", lambda name=None: sentinel)
    assert runtime_for_target(default_target) is sentinel  # this machine, as configured
    assert runtime_for_target(None) is sentinel
    remote = targets.create_target(actor=admin_user, name="remote", kind="docker",
                                    endpoint="tcp://127.0.0.1:9",
                                    settings={"port_range": [23000, 23099]})
    runtime = runtime_for_target(remote)
    assert isinstance(runtime, DockerRuntime)
    assert runtime.client.api.base_url == "http://127.0.0.1:9"
    assert (runtime.ports.start, runtime.ports.end) == (23000, 23099)
    swarm = targets.create_target(actor=admin_user, name="swarm-o", kind="swarm",
                                   settings={"network": "overlay", "overlay_network": "models",
                                             "egress_network": "outbound",
                                             "gpu_resource": "AMD-GPU"})
    runtime = runtime_for_target(swarm)
    assert isinstance(runtime, SwarmRuntime)
    assert (runtime.network, runtime.overlay_network, runtime.egress_network,
            runtime.gpu_resource) == ("overlay", "models", "outbound", "AMD-GPU")
    assert runtime.constraints == [] and runtime.publisher is None
    nodes = targets.create_target(
        actor=admin_user, name="swarm-n", kind="swarm", endpoint="tcp://127.0.0.1:9",
        settings={"network": "host", "bind_host": "0.0.0.0", "registry": "reg.example:5000/mp",
                  "constraints": ["node.role==worker", "node.labels.zone != b"]})
    settings.MODELPORT_IMAGE_REGISTRY_USERNAME = "puller"
    settings.MODELPORT_IMAGE_REGISTRY_PASSWORD = "secret"
    runtime = runtime_for_target(nodes)
    assert runtime.bind_host == "0.0.0.0"
    # The manager gets the registry credentials with create_service, for the nodes' pulls.
    assert runtime.client.api._auth_configs.resolve_authconfig("reg.example:5000")[
        "username"] == "puller"
    assert runtime.constraints == ["node.role==worker", "node.labels.zone != b"]
    # With a registry the image is built on this worker's engine and pushed from there.
    assert runtime.client.api.base_url == "http://127.0.0.1:9"
    assert runtime.images.client.api.base_url != "http://127.0.0.1:9"
    assert runtime.publisher.client is runtime.images.client
    assert runtime.publisher.registry == "reg.example:5000/mp"
    policy = {"platform_namespace": "ml", "client_pods": {"role": "gateway"}}
    k8s = targets.create_target(actor=admin_user, name="k8s", kind="kubernetes",
                                 namespace="models", kube_context="prod",
                                 settings={"network_policy": policy})
    from workers.runtimes.kubernetes import KubernetesRuntime

    monkeypatch.setattr(KubernetesRuntime, "__init__",
                        lambda self, **kwargs: setattr(self, "kwargs", kwargs))
    runtime = runtime_for_target(k8s)
    assert isinstance(runtime, KubernetesRuntime)
    assert runtime.kwargs["namespace"] == "models" and runtime.kwargs["context"] == "prod"
    assert runtime.kwargs["in_cluster"] is False
    assert runtime.kwargs["network_policy"] == policy


def test_an_unreachable_target_reads_as_unreachable(admin_api, admin_user):
    clear_cache()
    targets.create_target(actor=admin_user, name="gone", kind="swarm",
                           endpoint="tcp://127.0.0.1:9")
    response = admin_api.get(f"{URL}gone/health/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["reachable"] is False and body["nodes"] == [] and body["message"]
    assert body["warnings"] == []
    assert body["reserved"] == {"cpu": 0.0, "memory_mb": 0, "gpus": 0}


@pytest.mark.docker
def test_the_capacity_page_shows_each_targets_health(docker_client, admin_user, engineer,
                                                     default_target):
    clear_cache()
    targets.create_target(actor=admin_user, name="gone", kind="docker",
                           endpoint="tcp://127.0.0.1:9", cpu=4, memory_mb=8192)
    targets.create_target(actor=admin_user, name="engine", kind="docker",
                           endpoint="unix:///var/run/docker.sock")
    browser = Client()
    browser.force_login(engineer)
    capacity = browser.get("/capacity/").content.decode()
    table = capacity.split('id="targets"')[1].split("</table>")[0]
    engine_row = table.split("#target-engine")[1].split("</tr>")[0]
    gone_row = table.split("#target-gone")[1].split("</tr>")[0]
    assert ">reachable<" in engine_row and "CPU" in engine_row
    assert ">unreachable<" in gone_row
    page = browser.get("/capacity/targets/").content.decode()
    assert 'id="target-engine"' in page and 'id="target-gone"' in page
    engine = page.split('id="target-engine"')[1].split("</article>")[0]
    assert 'data-health="reachable"' in engine and "1 node(s)" in engine
    gone = page.split('id="target-gone"')[1].split("</article>")[0]
    assert 'data-health="unreachable"' in gone and "of 4 CPU, 8192 MB" in gone
    assert "Register a target" not in page  # engineers only read
    health = bearer_client(engineer).get(f"{URL}engine/health/").json()
    assert health["reachable"] and health["nodes"][0]["cpu"] > 0
    assert health["allocatable"]["memory_mb"] > 0 and health["allocatable"]["gpus"] is None


def test_admins_register_targets_in_the_portal(admin_user, default_target):
    clear_cache()
    browser = Client()
    browser.force_login(admin_user)
    page = browser.post("/capacity/targets/", {"name": "swarm-b", "kind": "swarm",
                                               "settings": "{not json"})
    assert page.status_code == 200 and "Not JSON" in page.content.decode()
    page = browser.post("/capacity/targets/", {"name": "swarm-b", "kind": "swarm",
                                               "settings": '{"network": "bridge"}'})
    assert "settings.network of a swarm target" in page.content.decode()
    assert not ExecutionTarget.objects.filter(name="swarm-b").exists()
    response = browser.post("/capacity/targets/", {
        "name": "swarm-b", "kind": "swarm", "endpoint": "tcp://127.0.0.1:9",
        "settings": '{"network": "host", "port_range": [22000, 22099]}', "cpu": "2"})
    assert response.status_code == 302
    target = ExecutionTarget.objects.get(name="swarm-b")
    assert target.settings["port_range"] == [22000, 22099] and target.cpu == 2
    browser.post("/capacity/targets/swarm-b/", {"intent": "default"})
    assert targets.default_target().name == "swarm-b"
    browser.post("/capacity/targets/local/", {"intent": "disable"})
    assert not ExecutionTarget.objects.get(name="local").enabled
    assert AuditEvent.objects.filter(action="target.created", object_repr="swarm-b").exists()


def test_the_console_changes_targets_through_the_service(admin_user, default_target):
    console = Client()
    console.force_login(admin_user)
    response = console.post("/admin/compute/executiontarget/add/", {
        "name": "swarm-c", "kind": "swarm", "endpoint": "", "kube_context": "",
        "namespace": "", "settings": '{"network": "overlay"}', "cpu": "0", "memory_mb": "0",
        "gpus": "0", "enabled": "on"})
    assert "overlay_network" in response.content.decode() or response.status_code == 302
    assert not ExecutionTarget.objects.filter(name="swarm-c").exists()
    response = console.post("/admin/compute/executiontarget/add/", {
        "name": "swarm-c", "kind": "swarm", "endpoint": "", "kube_context": "",
        "namespace": "", "settings": '{"network": "host"}', "cpu": "0", "memory_mb": "0",
        "gpus": "0", "enabled": "on"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="target.created", object_repr="swarm-c")
    assert event.source == "admin"
    target = ExecutionTarget.objects.get(name="local")
    response = console.post(f"/admin/compute/executiontarget/{target.pk}/delete/",
                            {"post": "yes"})
    assert ExecutionTarget.objects.filter(name="local").exists()  # the default stays
