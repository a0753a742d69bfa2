"""Kubernetes runtime: SCHEMA AND CONTRACT TESTS, NOT A CLUSTER.

No Kubernetes API server can run on these machines, so nothing here starts a pod. What is
tested, and how:

* schema: every object the runtime generates (and every body it actually sends) validates
  against the Kubernetes JSON schemas of v1.30 and v1.37 in strict mode (unknown fields are
  errors), from the ``kubernetes-validate`` package (offline, Apache-2.0);
* contract: the runtime drives the real ``kubernetes`` client against ``kube_fake.FakeKubeAPI``,
  an in-process HTTP fake of the endpoints it uses (a stand-in for the API server, mocked because
  it cannot run here). The tests assert the requests the client really sends and how the runtime
  reads real-shaped responses (a ready pod is RUNNING, a crash-looping one DEAD, ...).

What is NOT tested here: scheduling, image pulls, probes actually firing, the device plugin,
networking to pod IPs, RBAC enforcement. Those need a real cluster.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from tests.workers.kube_fake import FakeKubeAPI
from workers.runtimes import kube_policy
from workers.runtimes.base import ReplicaRuntimeError, ReplicaSpec, ReplicaStatus
from workers.runtimes.kube_manifests import (
    Autoscaling,
    build_deployment,
    build_hpa,
    build_secret,
    build_service,
)
from workers.runtimes.kube_names import ANN_INDICES, label_value, revision_object_name
from workers.runtimes.kubernetes import DELETION_COST, KubernetesRuntime

K8S_VERSIONS = ("1.30", "1.37")  # the oldest we claim and the newest the schemas ship
NS = "models"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def validate(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(obj, version, strict=True) == version
    for value in (obj["metadata"].get("labels") or {}).values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert len(obj["metadata"]["name"]) <= 63 and DNS_1035.match(obj["metadata"]["name"])


def spec(**kwargs: Any) -> ReplicaSpec:
    values: dict[str, Any] = dict(deployment="iris", revision=3, replica=0,
                                  image="registry.example/modelport/serving:abc",
                                  model_name="Iris classifier", model_version="7", cpu=1.5,
                                  memory_mb=768,
                                  env={"MODELPORT_INGEST_URL": "http://web/api/v1/ingest/",
                                       "MODELPORT_INGEST_TOKEN": "mpi_secret"})
    values.update(kwargs)
    return ReplicaSpec(**values)


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI().start()
    yield api
    api.stop()


def runtime_for(fake: FakeKubeAPI, **kwargs: Any) -> KubernetesRuntime:
    cfg = client.Configuration()
    cfg.host = fake.url
    kwargs.setdefault("pod_wait_s", 2)
    kwargs.setdefault("poll_interval_s", 0.05)
    return KubernetesRuntime(namespace=NS, api_client=client.ApiClient(cfg), **kwargs)


def running(ip: str, ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {"phase": "Running", "podIP": ip, "startTime": "2026-11-24T03:00:00Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{
                "name": "model", "ready": ready, "restartCount": restarts,
                "image": "registry.example/modelport/serving:abc", "imageID": "sha256:1",
                "state": {"running": {"startedAt": "2026-11-24T03:00:01Z"}}}]}


def waiting(reason: str, message: str = "", restarts: int = 0,
            last_exit: int | None = None, last_reason: str = "Error") -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "model", "ready": False, "restartCount": restarts, "image": "img",
        "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": last_reason,
                                              "startedAt": "2026-11-24T03:00:01Z",
                                              "finishedAt": "2026-11-24T03:00:02Z"}}
    return {"phase": "Running" if reason == "CrashLoopBackOff" else "Pending",
            "podIP": "192.0.2.9", "containerStatuses": [status]}


# --- schema -------------------------------------------------------------------------------------
def test_every_generated_object_validates_against_the_kubernetes_schema() -> None:
    s = spec(gpu_device_ids=["0", "1"], labels={"team": "vision"})
    objects = [
        build_deployment(s, "img:1", namespace=NS, replicas=2, indices=[0, 1],
                         secret_name="mp-iris-r3-env", image_pull_secrets=["regcred"],
                         node_selector={"gpu": "a100"},
                         tolerations=[{"key": "gpu", "operator": "Exists",
                                       "effect": "NoSchedule"}],
                         service_account="modelport-models"),
        build_service(s, namespace=NS),
        build_secret(s, namespace=NS),
        build_hpa(s, Autoscaling(max_replicas=6), namespace=NS, min_replicas=2),
    ]
    for obj in objects:
        validate(obj)


def test_the_schema_check_is_strict_enough_to_catch_a_misspelt_field() -> None:
    obj = build_service(spec(), namespace=NS)
    obj["spec"]["selectr"] = obj["spec"].pop("selector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, "1.30", strict=True)
    obj = build_deployment(spec(), "img", namespace=NS, replicas=1, indices=[0])
    obj["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_pod_template_carries_the_docker_hardening_probes_limits_and_gpus() -> None:
    s = spec(gpu_device_ids=["0"])
    dep = build_deployment(s, "img:1", namespace=NS, replicas=1, indices=[0],
                           secret_name="mp-iris-r3-env", image_pull_secrets=["regcred"])
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"medium": "Memory",
                                                           "sizeLimit": "64Mi"}}]
    assert c["resources"] == {"requests": {"cpu": "1500m", "memory": "768Mi"},
                              "limits": {"cpu": "1500m", "memory": "768Mi",
                                         "nvidia.com/gpu": "1"}}
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["MODELPORT_MODEL_DIR"] == "/model" and env["MODELPORT_PORT"] == "8080"
    assert env["MODELPORT_HOST"] == "0.0.0.0" and env["OMP_NUM_THREADS"] == "2"
    assert env["MODELPORT_REPLICA"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "MODELPORT_INGEST_TOKEN" not in env  # in the Secret, never in the template
    assert c["envFrom"] == [{"secretRef": {"name": "mp-iris-r3-env"}}]
    # The device plugin picks the GPU (and sets NVIDIA_VISIBLE_DEVICES): the count is ours.
    assert (env["CUDA_VISIBLE_DEVICES"], env["NVIDIA_DRIVER_CAPABILITIES"],
            env["MODELPORT_DEVICE"]) == ("0", "compute,utility", "auto")
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    plain = build_deployment(spec(), "img:1", namespace=NS, replicas=1, indices=[0],
                             secret_name="mp-iris-r3-env")
    (c,) = plain["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["MODELPORT_DEVICE"]) == ("void", "cpu")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["modelport.deployment"] == "iris" and labels["modelport.revision"] == "3"
    assert labels["modelport.managed"] == "1"
    assert labels["modelport.model"] == label_value("Iris classifier") != "Iris classifier"
    assert dep["spec"]["template"]["metadata"]["annotations"]["modelport.model-name"] == \
        "Iris classifier"


def test_names_and_label_values_stay_valid_and_distinct_for_awkward_input() -> None:
    long_name = "a" * 50
    assert len(revision_object_name(long_name, 123456)) <= 52
    assert DNS_1035.match(revision_object_name(long_name, 123456))
    assert revision_object_name("x-1", 1) != revision_object_name("x-2", 1)
    for text in ("Iris classifier", "ünïcode", "-edge-", "v" * 80, ""):
        value = label_value(text)
        assert len(value) <= 63 and LABEL_VALUE.match(value), (text, value)
    assert label_value("a b") != label_value("a_b")


# --- contract: requests sent -------------------------------------------------------------------
def test_start_replica_creates_secret_deployment_service_and_labels_a_pod(
        fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake, image_pull_secrets=["regcred"])
    state = rt.start_replica(spec())

    (secret,) = fake.bodies("POST", "secrets")
    assert secret["stringData"]["MODELPORT_INGEST_TOKEN"] == "mpi_secret"
    (dep,) = fake.bodies("POST", "deployments")
    assert dep["metadata"]["name"] == "mp-iris-r3" and dep["spec"]["replicas"] == 1
    assert dep["metadata"]["annotations"][ANN_INDICES] == "0"
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/modelport/serving:abc"
    (svc,) = fake.bodies("POST", "services")
    assert svc["spec"]["selector"] == {"modelport.managed": "1", "modelport.deployment": "iris",
                                       "modelport.revision": "3"}
    for body in (secret, dep, svc):
        validate(body)
    # The pod the ReplicaSet created got replica index 0 (a patch guarded by resourceVersion).
    (patch,) = fake.calls("PATCH", "pods")
    assert patch["content_type"] == "application/strategic-merge-patch+json"
    assert patch["body"]["metadata"]["labels"] == {"modelport.replica": "0"}
    assert "resourceVersion" in patch["body"]["metadata"]
    assert state.id.startswith("mp-iris-r3-") and state.replica == 0
    # Pending (image not pulled yet) but with its sandbox's IP: an address to probe.
    assert state.status is ReplicaStatus.STARTING
    assert re.fullmatch(r"http://192\.0\.2\.\d+:8080", state.url or "")
    assert (state.deployment, state.revision) == ("iris", 3)
    assert state.model_name == "Iris classifier"
    assert fake.calls("GET", "pods")[0]["query"]["labelSelector"] == \
        "modelport.managed=1,modelport.deployment=iris,modelport.revision=3"


def test_second_replica_scales_the_revision_and_a_repeat_start_changes_nothing(
        fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    first = rt.start_replica(spec(replica=0))
    second = rt.start_replica(spec(replica=1))
    (scale,) = fake.calls("PATCH", "deployments")
    assert scale["body"]["spec"] == {"replicas": 2}
    assert scale["body"]["metadata"]["annotations"] == {ANN_INDICES: "0,1"}
    assert scale["body"]["metadata"]["resourceVersion"]
    assert second.replica == 1 and second.id != first.id
    before = len([r for r in fake.requests if r["method"] in ("POST", "DELETE")])
    again = rt.start_replica(spec(replica=0))
    assert again.id == first.id
    assert len(fake.calls("PATCH", "deployments")) == 1
    assert len([r for r in fake.requests if r["method"] in ("POST", "DELETE")]) == before
    assert len(fake.pods()) == 2


def test_a_conflicting_writer_makes_the_runtime_reread_and_retry(fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    rt.start_replica(spec(replica=0))
    fake.conflict_once.add(("deployments", "mp-iris-r3"))
    rt.start_replica(spec(replica=1))
    patches = fake.calls("PATCH", "deployments")
    assert len(patches) == 2  # the first got 409 Conflict, the second went through
    assert fake.get("deployments", "mp-iris-r3")["spec"]["replicas"] == 2


def test_secret_values_are_refreshed_for_later_pods_without_touching_the_template(
        fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    rt.start_replica(spec(replica=0))
    template = fake.get("deployments", "mp-iris-r3")["spec"]["template"]
    rt.start_replica(spec(replica=1, env={"MODELPORT_INGEST_TOKEN": "mpi_newer"}))
    patches = [c for c in fake.calls("PATCH", "secrets") if c["path"].endswith("mp-iris-r3-env")]
    assert patches[-1]["body"] == {"stringData": {"MODELPORT_INGEST_TOKEN": "mpi_newer"}}
    assert fake.get("deployments", "mp-iris-r3")["spec"]["template"] == template


def test_autoscaling_adds_a_valid_hpa_for_the_revision(fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake, autoscaling=Autoscaling(max_replicas=5, cpu_utilization=60),
                     url_mode="service")
    state = rt.start_replica(spec())
    (hpa,) = fake.bodies("POST", "horizontalpodautoscalers")
    validate(hpa)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "mp-iris-r3"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert state.url == "http://mp-iris-r3.models.svc.cluster.local:8080"
    rt.start_replica(spec(replica=1))
    assert fake.get("horizontalpodautoscalers", "mp-iris-r3")["spec"]["minReplicas"] == 2


# --- contract: reading pod status --------------------------------------------------------------
@pytest.mark.parametrize(("status", "expected", "message", "exit_code"), [
    (running("192.0.2.5"), ReplicaStatus.RUNNING, "", None),
    (running("192.0.2.5", ready=False), ReplicaStatus.STARTING, "", None),
    (waiting("CrashLoopBackOff", "back-off 40s restarting failed container", restarts=4,
             last_exit=1), ReplicaStatus.DEAD, "CrashLoopBackOff", 1),
    (waiting("CrashLoopBackOff", restarts=2, last_exit=137, last_reason="OOMKilled"),
     ReplicaStatus.DEAD, "OOM killed", 137),
    (waiting("ImagePullBackOff", 'pull access denied for "img"'), ReplicaStatus.DEAD,
     "ImagePullBackOff", None),
    (waiting("ContainerCreating"), ReplicaStatus.STARTING, "ContainerCreating", None),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                          "reason": "Unschedulable",
                                          "message": "0/3 nodes have enough nvidia.com/gpu"}]},
     ReplicaStatus.STARTING, "unschedulable: 0/3 nodes", None),
    ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}, ReplicaStatus.DEAD,
     "Evicted low on memory", None),
    ({"phase": "Succeeded", "containerStatuses": [{
        "name": "model", "ready": False, "restartCount": 0, "image": "i", "imageID": "",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
     ReplicaStatus.EXITED, "", 0),
])
def test_pod_status_is_read_as_the_runtime_replica_status(
        fake: FakeKubeAPI, status: dict[str, Any], expected: ReplicaStatus, message: str,
        exit_code: int | None) -> None:
    rt = runtime_for(fake)
    pod = rt.start_replica(spec()).id
    fake.set_status(pod, status)
    (state,) = rt.list_replicas("iris")
    assert state.status is expected
    assert message in state.message
    assert state.exit_code == exit_code
    assert rt.get_replica(pod).status is expected
    if expected is ReplicaStatus.RUNNING:
        assert state.url == "http://192.0.2.5:8080" and state.health == "healthy"
        assert state.started_at is not None and state.started_at.tzinfo is not None
        assert state.image == "registry.example/modelport/serving:abc"
    if "restartCount" in str(status):
        assert state.restart_count == status.get("containerStatuses", [{}])[0].get(
            "restartCount", 0)


def test_list_replicas_sees_only_indexed_managed_live_pods_of_the_deployment(
        fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    a = rt.start_replica(spec(deployment="iris")).id
    b = rt.start_replica(spec(deployment="wine", revision=1)).id
    fake.add_pod("someone-elses", {"app": "other"})
    fake.add_pod("unindexed", {"modelport.managed": "1", "modelport.deployment": "iris"})
    assert [s.id for s in rt.list_replicas("iris")] == [a]
    assert sorted(s.id for s in rt.list_replicas()) == sorted([a, b])
    assert rt.get_replica("someone-elses").status is ReplicaStatus.MISSING
    assert rt.get_replica("no-such-pod").status is ReplicaStatus.MISSING
    fake.set_status(a, running("192.0.2.5"), deletionTimestamp="2026-11-24T03:10:00Z")
    assert rt.list_replicas("iris") == []  # terminating: no longer a replica
    assert fake.calls("GET", "pods")[-1]["query"]["labelSelector"] == \
        "modelport.managed=1,!modelport.installation,modelport.replica,modelport.deployment=iris"


def test_two_installations_in_one_namespace_never_touch_each_others_objects(
        fake: FakeKubeAPI) -> None:
    """Same deployment name, same revision, one namespace: each installation's objects are
    named and selected by its id; neither lists, adopts, removes nor un-fences the other's,
    and objects from before installation ids are left alone by both."""
    ours = runtime_for(fake, installation="a" * 32)
    theirs = runtime_for(fake, installation="b" * 32)
    legacy = runtime_for(fake)  # unscoped: objects made before installation ids
    mine = ours.start_replica(spec(deployment="iris"))
    other = theirs.start_replica(spec(deployment="iris"))
    # (Its selector has no installation: it would select pods of the same revision number.)
    old = legacy.start_replica(spec(deployment="iris", revision=2))
    deployments = sorted(d["metadata"]["name"] for d in fake.bodies("POST", "deployments"))
    assert deployments == ["mp-aaaaaaaa-iris-r3", "mp-bbbbbbbb-iris-r3", "mp-iris-r2"]
    selector = fake.get("deployments", "mp-aaaaaaaa-iris-r3")["spec"]["selector"]
    assert selector["matchLabels"]["modelport.installation"] == "a" * 32
    assert [s.id for s in ours.list_replicas()] == [mine.id]
    assert [s.id for s in theirs.list_replicas("iris")] == [other.id]
    assert [s.id for s in legacy.list_replicas()] == [old.id]
    assert ours.get_replica(other.id).status is ReplicaStatus.MISSING
    assert ours.get_replica(old.id).status is ReplicaStatus.MISSING
    ours.remove_replica(other.id)
    ours.remove_replica(old.id)
    assert fake.get("pods", other.id) is not None and fake.get("pods", old.id) is not None
    # The policy sweep (twice: orphans are deleted when seen twice) keeps the others' fences.
    for _ in range(2):
        kube_policy._synced.clear()
        ours.list_replicas()
    policies = {p["metadata"]["name"] for p in fake.bodies("POST", "networkpolicies")}
    assert {"mp-bbbbbbbb-iris-r3", "mp-iris-r2"} <= policies
    assert fake.get("networkpolicies", "mp-bbbbbbbb-iris-r3") is not None
    assert fake.get("networkpolicies", "mp-iris-r2") is not None
    ours.remove_replica(mine.id)
    assert fake.get("deployments", "mp-aaaaaaaa-iris-r3") is None
    assert fake.get("deployments", "mp-bbbbbbbb-iris-r3") is not None


def test_a_pod_replaced_by_kubernetes_is_adopted_for_the_missing_index(
        fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    old = rt.start_replica(spec()).id
    fake.kill_pod(old)  # kubectl delete pod / node lost: the ReplicaSet makes a new one
    assert rt.list_replicas("iris") == []
    new = rt.start_replica(spec())
    assert new.id != old and new.replica == 0
    assert fake.calls("PATCH", "deployments") == []  # no scaling: the count was right
    assert [s.id for s in rt.list_replicas("iris")] == [new.id]


def test_remove_replica_scales_that_pod_away_and_the_last_one_takes_the_revision(
        fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake, autoscaling=Autoscaling(max_replicas=3))
    first = rt.start_replica(spec(replica=0)).id
    second = rt.start_replica(spec(replica=1)).id
    rt.remove_replica(first)
    cost = [c for c in fake.calls("PATCH", "pods") if c["path"].endswith(first)][-1]
    assert cost["body"] == {"metadata": {"annotations": {DELETION_COST: "-2147483647"}}}
    dep = fake.get("deployments", "mp-iris-r3")
    assert dep["metadata"]["annotations"][ANN_INDICES] == "1" and dep["spec"]["replicas"] == 1
    assert fake.get("horizontalpodautoscalers", "mp-iris-r3")["spec"]["minReplicas"] == 1
    assert [p["metadata"]["name"] for p in fake.pods()] == [second]  # the other pod stays
    assert [s.replica for s in rt.list_replicas("iris")] == [1]
    rt.stop_replica(second, timeout=7)
    assert any(c["query"].get("gracePeriodSeconds") == "7" for c in fake.calls("DELETE", "pods"))
    for kind, name in (("deployments", "mp-iris-r3"), ("services", "mp-iris-r3"),
                       ("secrets", "mp-iris-r3-env"),
                       ("horizontalpodautoscalers", "mp-iris-r3")):
        assert fake.get(kind, name) is None, kind
    rt.remove_replica(second)  # unknown ids are ignored
    rt.remove_replica("someone-elses")


def test_no_pod_appearing_is_a_clear_error_naming_the_revision(fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake, pod_wait_s=0.2)
    fake.objects["deployments"][(NS, "mp-iris-r3")] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mp-iris-r3", "namespace": NS, "resourceVersion": "1",
                     "annotations": {ANN_INDICES: "0"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"x": "y"}},
                 "template": {"metadata": {}, "spec": {"containers": []}}},
        "status": {"conditions": [{"type": "ReplicaFailure", "status": "True",
                                   "reason": "FailedCreate",
                                   "message": 'exceeded quota: "models-quota"'}]}}
    with pytest.raises(ReplicaRuntimeError, match=r"mp-iris-r3.*exceeded quota"):
        rt.start_replica(spec())
    # The index is taken back: nothing is left waiting for a pod nobody tracks.
    assert fake.get("deployments", "mp-iris-r3") is None
    assert fake.get("services", "mp-iris-r3") is None


def test_start_waits_for_the_pod_address_the_reconciler_will_probe(fake: FakeKubeAPI) -> None:
    import threading

    fake.new_pod_status = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"}]}
    rt = runtime_for(fake, pod_wait_s=10)

    def sandbox_up() -> None:
        (pod,) = fake.pods()
        fake.set_status(pod["metadata"]["name"], {**pod["status"], "podIP": "192.0.2.77"})

    timer = threading.Timer(0.3, sandbox_up)
    timer.start()
    try:
        state = rt.start_replica(spec())
    finally:
        timer.join()
    assert state.url == "http://192.0.2.77:8080"


def test_an_unschedulable_pod_is_a_clear_error_with_the_scheduler_reason(
        fake: FakeKubeAPI) -> None:
    fake.new_pod_status = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}
    rt = runtime_for(fake, pod_wait_s=0.3)
    with pytest.raises(ReplicaRuntimeError, match=r"no address.*Insufficient nvidia.com/gpu"):
        rt.start_replica(spec(gpu_device_ids=["0"]))


# --- contract: logs, stats, ping, nodes ---------------------------------------------------------
def test_logs_include_the_crashed_previous_run(fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    pod = rt.start_replica(spec()).id
    fake.set_status(pod, waiting("CrashLoopBackOff", restarts=1, last_exit=1))
    fake.logs[(pod, True)] = "loading model\nTraceback: boom\n"
    fake.logs[(pod, False)] = "loading model\n"
    text = rt.logs(pod, tail=2)
    assert text == "Traceback: boom\nloading model\n"
    queries = [c["query"] for c in fake.calls("GET", "pods") if c["path"].endswith("/log")]
    assert {"container": "model", "previous": "True", "tailLines": "2"} in queries
    assert rt.logs("no-such-pod") == ""


def test_stats_come_from_metrics_server_or_are_zero_without_it(fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    pod = rt.start_replica(spec()).id
    assert rt.stats(pod) == {"cpu_percent": 0.0, "memory_bytes": 0.0,
                             "memory_limit_bytes": 768 * 1024 * 1024}
    fake.metrics[pod] = {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                         "containers": [{"name": "model",
                                         "usage": {"cpu": "250m", "memory": "200Mi"}}]}
    stats = rt.stats(pod)
    assert stats["cpu_percent"] == pytest.approx(25.0)
    assert stats["memory_bytes"] == 200 * 1024 * 1024


def test_ping_and_describe_report_the_api_server_and_its_nodes(fake: FakeKubeAPI) -> None:
    rt = runtime_for(fake)
    assert rt.ping() is True
    fake.nodes = [
        {"metadata": {"name": "gpu-1", "labels": {"node-role.kubernetes.io/gpu": ""}},
         "spec": {},
         "status": {"allocatable": {"cpu": "7800m", "memory": "30Gi", "nvidia.com/gpu": "4"},
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "cpu-1"}, "spec": {"unschedulable": True},
         "status": {"allocatable": {"cpu": "4", "memory": "16Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}]}},
    ]
    health = rt.describe()
    assert health.reachable and health.version == "v1.30.6-fake"
    assert [(n.name, n.role, n.available) for n in health.nodes] == [
        ("gpu-1", "gpu", True), ("cpu-1", "worker", False)]
    assert health.cpu == pytest.approx(7.8) and health.memory_mb == 30 * 1024
    assert health.gpus == 4
    fake.stop()
    assert rt.ping() is False
    assert rt.describe().reachable is False


# --- credentials ----------------------------------------------------------------------------------
def test_a_kubeconfig_context_selects_the_cluster_and_its_credentials(
        fake: FakeKubeAPI, tmp_path: Any) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "dev", "cluster": {"server": "http://127.0.0.1:9"}},
                     {"name": "prod", "cluster": {"server": fake.url}}],
        "users": [{"name": "dev", "user": {"token": "dev-token"}},
                  {"name": "prod", "user": {"token": "prod-token"}}],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "dev"}},
                     {"name": "prod", "context": {"cluster": "prod", "user": "prod"}}]}))
    rt = KubernetesRuntime(namespace=NS, context="prod", config_file=str(kubeconfig))
    assert rt.ping() is True
    assert fake.requests[-1]["authorization"] == "Bearer prod-token"
    with pytest.raises(ReplicaRuntimeError, match="context staging"):
        KubernetesRuntime(namespace=NS, context="staging", config_file=str(kubeconfig))


@pytest.mark.django_db
def test_a_kubernetes_execution_target_builds_this_runtime_with_its_settings(
        fake: FakeKubeAPI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring in workers.factory.runtime_for_target (an unsaved target; the database
    gives the installation id)."""
    from compute.models import ExecutionTarget
    from teams.installation import installation_id
    from workers.factory import runtime_for_target

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod",
        "clusters": [{"name": "prod", "cluster": {"server": fake.url}}],
        "users": [{"name": "prod", "user": {"token": "t"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    target = ExecutionTarget(name="cluster", kind="kubernetes", kube_context="prod",
                             namespace=NS, settings={"registry": "registry.example/mp",
                                                     "image_pull_secrets": ["regcred"],
                                                     "url_mode": "service"})
    rt = runtime_for_target(target)
    assert isinstance(rt, KubernetesRuntime)
    assert (rt.namespace, rt.registry, rt.image_pull_secrets, rt.url_mode) == (
        NS, "registry.example/mp", ["regcred"], "service")
    assert rt.image_builder is not None and rt.ping() is True
    assert rt.installation == installation_id() and len(rt.installation) == 32


def test_in_cluster_credentials_outside_a_cluster_are_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ReplicaRuntimeError, match="in-cluster service account"):
        KubernetesRuntime(namespace=NS, in_cluster=True)


# --- model delivery -----------------------------------------------------------------------------
def test_a_model_dir_without_an_image_builder_is_refused_with_the_reason(
        fake: FakeKubeAPI, tmp_path: Any) -> None:
    rt = runtime_for(fake)
    with pytest.raises(ReplicaRuntimeError, match="bakes the model into an image layer"):
        rt.start_replica(spec(model_dir=str(tmp_path)))
    assert fake.bodies("POST", "deployments") == []


def test_the_model_is_baked_into_a_content_addressed_layer_by_the_worker_docker(
        fake: FakeKubeAPI, docker_client: Any, base_image: str, tmp_path: Any) -> None:
    """Real Docker Engine (the bake); the registry push is not exercised: no registry runs
    here, so `registry=None` (images used as built, as on a single-node kind/minikube)."""
    import io
    import tarfile

    from tests.workers.conftest import TEST_LABEL
    from workers.runtimes.images import ImageBuilder

    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    builder = ImageBuilder(docker_client, base_image)
    rt = runtime_for(fake, image_builder=builder)
    refs: list[str] = []
    try:
        rt.start_replica(spec(image=base_image, model_dir=str(model)))
        (dep,) = fake.bodies("POST", "deployments")
        ref = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        refs.append(ref)
        assert ref.startswith("modelport/model:")
        image = docker_client.images.get(ref)
        assert image.labels["org.modelport.serving-image"] == base_image
        container = docker_client.containers.create(ref, command=["true"],
                                                    labels={TEST_LABEL: "1"})
        try:
            bits, _ = container.get_archive("/model/MLmodel")
            with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
                member = tar.extractfile("MLmodel")
                assert member is not None and member.read() == b"flavors: {}\n"
        finally:
            container.remove(force=True)
        # Same files: same tag, no rebuild (also from a fresh runtime). Other files: other tag.
        again = runtime_for(fake, image_builder=builder).model_image(base_image, str(model))
        assert again == ref and docker_client.images.get(ref).id == image.id
        (model / "MLmodel").write_text("flavors: {changed: true}\n")
        other = rt.model_image(base_image, str(model))
        refs.append(other)
        assert other != ref
    finally:
        for r in refs:
            with contextlib.suppress(Exception):
                docker_client.images.remove(r, force=True)
