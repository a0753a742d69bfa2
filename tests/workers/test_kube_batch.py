"""Batch jobs on Kubernetes (``workers.runtimes.kube_batch``): SCHEMA AND CONTRACT TESTS, NOT A
CLUSTER.

As for the Kubernetes runtime's replicas (test_runtime_kubernetes.py): no API server can run on
these machines, so nothing here starts a pod.

* schema: the Job and NetworkPolicy the runtime builds (and the bodies it actually sends)
  validate against the Kubernetes JSON schemas of v1.30 and v1.37, strict, and are asserted
  field by field;
* contract: the runtime drives the real ``kubernetes`` client against
  ``kube_batch_fake.FakeBatchKubeAPI`` (kube_fake's HTTP fake plus batch/v1 Jobs and a minimal
  Indexed Job controller — MOCKED, because no API server runs here). Asserted: the requests the
  client really sends (paths, bodies, the order policy-before-Job, the propagation policy) and
  how the runtime reads real-shaped Job statuses and pods back as chunk states.
* the container's entry point (completion index -> chunk) is run for real in a subprocess.

NOT tested: the real Job controller's timing, scheduling, the PVC actually being shared, a CNI
enforcing the NetworkPolicy, image pulls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from tests.workers.kube_batch_fake import INDEX, FakeBatchKubeAPI, intervals
from workers.runtimes.base import ReplicaRuntimeError
from workers.runtimes.batch import BatchSpec, ChunkPhase
from workers.runtimes.kube_batch import (
    ANN_CHUNKS,
    CHUNK_COMMAND,
    KubeBatchRuntime,
    build_job,
    build_job_policy,
    job_object_name,
    parse_intervals,
)

K8S_VERSIONS = ("1.30", "1.37")
NS = "models"
INSTALLATION = "5f0c3a9e-1111-2222-3333-444455556666"


def validate(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        assert kubernetes_validate.validate(obj, version, strict=True) == version
    assert len(obj["metadata"]["name"]) <= 52


def spec(**kwargs: Any) -> BatchSpec:
    values: dict[str, Any] = dict(
        job="job-42", image="registry.example/modelport/model:abc", model_dir=None,
        input_dir="/data/jobs/42/input", output_dir="/data/jobs/42/output", chunks=3,
        parallelism=2, cpu=1.5, memory_mb=768, max_retries=1, labels={"team": "fraud"},
        installation=INSTALLATION)
    values.update(kwargs)
    return BatchSpec(**values)


@pytest.fixture
def fake() -> Iterator[FakeBatchKubeAPI]:
    api = FakeBatchKubeAPI().start()
    yield api
    api.stop()


def runtime_for(fake: FakeBatchKubeAPI, **kwargs: Any) -> KubeBatchRuntime:
    cfg = client.Configuration()
    cfg.host = fake.url
    kwargs.setdefault("data_claim", "modelport-data")
    kwargs.setdefault("installation", INSTALLATION)
    return KubeBatchRuntime(namespace=NS, api_client=client.ApiClient(cfg), **kwargs)


# --- schema and fields --------------------------------------------------------------------------
def test_the_job_is_an_indexed_job_with_per_index_retries_and_hardened_pods() -> None:
    s = spec(gpus=1)
    job = build_job(s, "img:1", [0, 1, 2], namespace=NS, data_claim="modelport-data",
                    input_path="jobs/42/input", output_path="jobs/42/output",
                    image_pull_secrets=["regcred"], node_selector={"pool": "batch"},
                    tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
                    service_account="modelport-models")
    validate(job)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    meta = job["metadata"]
    assert meta["name"] == job_object_name("job-42", [0, 1, 2], INSTALLATION)
    assert meta["name"].startswith("mp-5f0c3a9e-job-42-")
    assert meta["labels"] == {"team": "fraud", "modelport.managed": "1",
                              "modelport.job": "job-42",
                              "modelport.installation": INSTALLATION}
    assert meta["annotations"] == {"modelport.job-name": "job-42", ANN_CHUNKS: "0,1,2"}
    js = job["spec"]
    assert js["completionMode"] == "Indexed"
    assert js["completions"] == 3 and js["parallelism"] == 2
    assert js["backoffLimitPerIndex"] == 1 and js["maxFailedIndexes"] == 3
    assert "backoffLimit" not in js  # per-index back-off replaces it
    template = js["template"]
    assert template["metadata"]["labels"] == meta["labels"]
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001,
                                      "runAsGroup": 10001, "fsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["serviceAccountName"] == "modelport-models"
    assert "hostNetwork" not in pod and "hostPath" not in str(pod)
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "modelport-data"}}]
    (container,) = pod["containers"]
    assert container["name"] == "chunk" and container["image"] == "img:1"
    assert container["command"] == CHUNK_COMMAND
    assert "ports" not in container
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["resources"] == {
        "requests": {"cpu": "1500m", "memory": "768Mi"},
        "limits": {"cpu": "1500m", "memory": "768Mi", "nvidia.com/gpu": "1"}}
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "data", "mountPath": "/job/input", "subPath": "jobs/42/input",
         "readOnly": True},
        {"name": "data", "mountPath": "/job/output", "subPath": "jobs/42/output"}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELPORT_CHUNKS"] == "0,1,2" and env["MODELPORT_JOB"] == "job-42"
    assert env["MODELPORT_MODEL_DIR"] == "/model" and env["HOME"] == "/tmp"
    assert env["OMP_NUM_THREADS"] == "2" and env["MODELPORT_DEVICE"] == "auto"


def test_the_network_policy_denies_everything_to_and_from_the_jobs_pods() -> None:
    s = spec()
    policy = build_job_policy(s, "mp-5f0c3a9e-job-42-abcdef", namespace=NS)
    validate(policy)
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"modelport.managed": "1", "modelport.job": "job-42",
                                        "modelport.installation": INSTALLATION}},
        "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    job = build_job(s, "img", [0], namespace=NS, data_claim="c", input_path="i",
                    output_path="o")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in
               policy["spec"]["podSelector"]["matchLabels"].items())


def test_a_resume_runs_only_the_chunks_asked_for_under_another_name() -> None:
    s = spec()
    full = build_job(s, "img", [0, 1, 2], namespace=NS, data_claim="c", input_path="i",
                     output_path="o")
    resume = build_job(s, "img", [2, 0], namespace=NS, data_claim="c", input_path="i",
                       output_path="o")
    validate(resume)
    assert resume["metadata"]["name"] != full["metadata"]["name"]
    assert resume["spec"]["completions"] == 2 and resume["spec"]["parallelism"] == 2
    assert resume["spec"]["maxFailedIndexes"] == 2
    assert resume["metadata"]["annotations"][ANN_CHUNKS] == "0,2"
    with pytest.raises(ValueError):
        build_job(s, "img", [], namespace=NS, data_claim="c", input_path="i", output_path="o")


def test_index_intervals_read_as_the_api_server_writes_them() -> None:
    assert parse_intervals("0,2-4,7") == {0, 2, 3, 4, 7}
    assert parse_intervals("") == set() and parse_intervals(None) == set()
    assert intervals({0, 2, 3, 4, 7}) == "0,2-4,7"


def test_the_entry_point_maps_the_completion_index_to_its_chunk(tmp_path: Path) -> None:
    """The container's command, run for real, with a stand-in ``serving.batch`` that reports
    the chunk it was given (the real module is the core stream's)."""
    package = tmp_path / "serving"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "batch.py").write_text(
        "import os, sys\nprint('chunk', os.environ['MODELPORT_CHUNK'], sys.argv[0])\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MODELPORT_CHUNKS": "3,5,9",
           "JOB_COMPLETION_INDEX": "1"}
    out = subprocess.run([sys.executable, *CHUNK_COMMAND[1:]], env=env, capture_output=True,
                         text=True, timeout=60, check=True, cwd=tmp_path)
    assert out.stdout.split()[:2] == ["chunk", "5"]


# --- contract against the fake API server -------------------------------------------------------
def test_submit_fences_first_runs_indexed_and_reads_every_chunk_state(
        fake: FakeBatchKubeAPI) -> None:
    runtime = runtime_for(fake)
    assert runtime.mode == "whole_job"
    s = spec()
    runtime.submit_job(s, [0, 1, 2])
    name = job_object_name("job-42", [0, 1, 2], INSTALLATION)

    # The policy exists before the Job, then is owned by it (the GC removes it with the Job).
    writes = [(r["method"], r["kind"]) for r in fake.requests if r["method"] != "GET"]
    assert writes == [("POST", "networkpolicies"), ("POST", "jobs"),
                      ("PATCH", "networkpolicies")]
    (sent,) = fake.bodies("POST", "jobs")
    validate(sent)
    assert sent["metadata"]["annotations"].pop("modelport.job-submitted").isdigit()
    assert sent == runtime.build(s, [0, 1, 2], s.image)
    (policy,) = fake.bodies("POST", "networkpolicies")
    validate(policy)
    owner = fake.get("networkpolicies", name)["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                      "uid": f"uid-{name}"}]

    # Idempotent: a second submit of the same chunks sends nothing.
    before = len(fake.calls("POST", "jobs"))
    runtime.submit_job(s, [2, 1, 0])
    assert len(fake.calls("POST", "jobs")) == before

    # parallelism 2: indices 0 and 1 have pods, 2 waits.
    states = runtime.chunk_states("job-42")
    assert sorted(states) == [0, 1, 2]
    assert [states[i].phase for i in range(3)] == [ChunkPhase.PENDING] * 3
    assert states[0].runtime_id == fake.pod_of(name, 0)["metadata"]["name"]
    assert states[2].runtime_id == ""

    fake.set_phase(fake.pod_of(name, 0)["metadata"]["name"], "Running")
    state = runtime.chunk_states("job-42")[0]
    assert state.phase is ChunkPhase.RUNNING and state.host == "node-1"

    fake.set_phase(fake.pod_of(name, 0)["metadata"]["name"], "Succeeded")
    states = runtime.chunk_states("job-42")
    assert states[0].phase is ChunkPhase.SUCCEEDED and states[0].exit_code == 0
    assert states[2].runtime_id  # index 2 got its pod once index 0 finished

    # Index 1 is OOM-killed: Kubernetes retries it (max_retries=1), then gives up on it.
    first = fake.pod_of(name, 1)["metadata"]["name"]
    fake.set_phase(first, "Failed", exit_code=137, reason="OOMKilled")
    state = runtime.chunk_states("job-42")[1]
    assert state.phase is ChunkPhase.PENDING and "OOMKilled" in state.message
    second = fake.pod_of(name, 1)["metadata"]["name"]
    assert second != first
    fake.set_phase(second, "Failed", exit_code=137, reason="OOMKilled")
    fake.set_phase(fake.pod_of(name, 2)["metadata"]["name"], "Succeeded")
    states = runtime.chunk_states("job-42")
    assert states[1].phase is ChunkPhase.FAILED and states[1].exit_code == 137
    assert "gave up after 2 failed attempt(s): OOMKilled" in states[1].message
    assert states[2].phase is ChunkPhase.SUCCEEDED
    assert fake.get("jobs", name)["status"]["failedIndexes"] == "1"

    # Logs of a chunk are its pod's.
    fake.logs[(second, False)] = "loading model\nKilled\n"
    assert runtime.chunk_logs("job-42", 1) == "loading model\nKilled\n"
    assert runtime.chunk_logs("job-42", 7) == ""

    # Resume chunk 1 alone: a new Job, completion index 0 runs chunk 1; the others keep
    # their state from the first Job.
    runtime.submit_job(s, [1])
    resume = job_object_name("job-42", [1], INSTALLATION)
    assert fake.get("jobs", resume)["spec"]["completions"] == 1
    assert fake.get("jobs", name) is not None  # finished: kept for its states
    pod = fake.pod_of(resume, 0)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MODELPORT_CHUNKS"] == "1"
    states = runtime.chunk_states("job-42")
    assert states[1].phase is ChunkPhase.PENDING and states[1].runtime_id == \
        pod["metadata"]["name"]
    fake.set_phase(pod["metadata"]["name"], "Succeeded")
    states = runtime.chunk_states("job-42")
    assert {i: s.phase for i, s in states.items()} == {i: ChunkPhase.SUCCEEDED
                                                       for i in range(3)}


def test_remove_job_deletes_jobs_in_the_foreground_and_leaves_no_pod(
        fake: FakeBatchKubeAPI) -> None:
    runtime = runtime_for(fake)
    runtime.submit_job(spec(), [0, 1, 2])
    # Somebody else's pods with look-alike labels: another installation's, and an unmanaged one.
    fake.add_pod("other-install", {"modelport.managed": "1", "modelport.job": "job-42",
                                   "modelport.installation": "another"})
    fake.add_pod("unmanaged", {"modelport.job": "job-42"})
    other = runtime_for(fake, installation="another")
    assert other.chunk_states("job-42") == {}

    runtime.remove_job("job-42")
    (delete,) = fake.calls("DELETE", "jobs")
    assert delete["query"]["propagationPolicy"] == "Foreground"
    assert [p["metadata"]["name"] for p in fake.pods()] == ["other-install", "unmanaged"]
    assert fake.objects["networkpolicies"] == {}
    assert runtime.chunk_states("job-42") == {}
    runtime.remove_job("job-42")  # idempotent


def test_the_chunks_still_to_do_are_resubmitted_only_once_they_are_not_running(
        fake: FakeBatchKubeAPI) -> None:
    """The runner passes every chunk still to do at each tick: chunks a Job runs, retries or
    finished are never submitted twice; a chunk the Job gave up on gets a Job of its own."""
    runtime = runtime_for(fake)
    runtime.submit_job(spec(), [0, 1, 2])
    first = job_object_name("job-42", [0, 1, 2], INSTALLATION)
    fake.set_phase(fake.pod_of(first, 0)["metadata"]["name"], "Succeeded")
    runtime.submit_job(spec(), [1, 2])
    runtime.submit_job(spec(), [0, 1, 2])
    assert len(fake.calls("POST", "jobs")) == 1 and fake.job_pods(first)
    for _ in range(2):  # index 2 fails past max_retries=1
        fake.set_phase(fake.pod_of(first, 2)["metadata"]["name"], "Failed", exit_code=2)
    assert runtime.chunk_states("job-42")[2].phase is ChunkPhase.FAILED
    runtime.submit_job(spec(), [1, 2])
    again = job_object_name("job-42", [2], INSTALLATION)
    assert fake.get("jobs", again)["spec"]["completions"] == 1
    assert fake.get("jobs", first) is not None  # still running chunk 1
    assert runtime.chunk_states("job-42")[2].phase is ChunkPhase.PENDING


def test_remove_chunk_deletes_that_chunks_pods_only(fake: FakeBatchKubeAPI) -> None:
    runtime = runtime_for(fake)
    runtime.submit_job(spec(), [4, 5])
    name = job_object_name("job-42", [4, 5], INSTALLATION)
    doomed = fake.pod_of(name, 1)["metadata"]["name"]  # completion index 1 = chunk 5
    kept = fake.pod_of(name, 0)["metadata"]["name"]
    runtime.remove_chunk("job-42", 5)
    deleted = [r["path"].rsplit("/", 1)[-1] for r in fake.calls("DELETE", "pods")]
    assert deleted == [doomed]
    assert kept in {p["metadata"]["name"] for p in fake.pods()}
    assert fake.pod_of(name, 0)["metadata"]["labels"][INDEX] == "0"


def test_bad_settings_are_refused_before_anything_is_created(fake: FakeBatchKubeAPI) -> None:
    with pytest.raises(ReplicaRuntimeError, match="not under the shared data volume"):
        runtime_for(fake).submit_job(spec(input_dir="/elsewhere/in"), [0])
    with pytest.raises(ReplicaRuntimeError, match="no data_claim"):
        runtime_for(fake, data_claim="").submit_job(spec(), [0])
    with pytest.raises(ReplicaRuntimeError, match=r"spec\.image"):
        runtime_for(fake).submit_job(spec(image=""), [0])
    assert [r for r in fake.requests if r["method"] != "GET"] == []


def test_for_runtime_shares_the_replica_runtimes_client_and_settings(
        fake: FakeBatchKubeAPI) -> None:
    from workers.runtimes.kubernetes import KubernetesRuntime

    cfg = client.Configuration()
    cfg.host = fake.url
    replicas = KubernetesRuntime(namespace=NS, api_client=client.ApiClient(cfg),
                                 image_pull_secrets=["regcred"], node_selector={"a": "b"},
                                 installation=INSTALLATION)
    batch = KubeBatchRuntime.for_runtime(replicas, data_claim="modelport-data")
    assert batch.api_client is replicas.api_client and batch.namespace == NS
    assert batch.installation == INSTALLATION and batch.image_pull_secrets == ["regcred"]
    batch.submit_job(spec(), [0])
    (sent,) = fake.bodies("POST", "jobs")
    assert sent["spec"]["template"]["spec"]["nodeSelector"] == {"a": "b"}


def test_a_kubernetes_targets_runtime_hands_out_its_batch_runtime(
        fake: FakeBatchKubeAPI) -> None:
    """What ``jobs.runner.runtimes.batch_runtime`` calls on a kubernetes target."""
    from workers.runtimes.kubernetes import KubernetesRuntime

    cfg = client.Configuration()
    cfg.host = fake.url
    replicas = KubernetesRuntime(namespace=NS, api_client=client.ApiClient(cfg),
                                 installation=INSTALLATION, batch_data_claim="shared-data",
                                 batch_data_root="/var/lib/modelport")
    batch = replicas.batch_runtime()
    assert isinstance(batch, KubeBatchRuntime) and batch.mode == "whole_job"
    assert batch.data_claim == "shared-data" and batch.data_root == "/var/lib/modelport"
    batch.submit_job(spec(input_dir="/var/lib/modelport/jobs/42/input",
                          output_dir="/var/lib/modelport/jobs/42/output"), [0])
    (sent,) = fake.bodies("POST", "jobs")
    mounts = sent["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert [m.get("subPath") for m in mounts] == [None, "jobs/42/input", "jobs/42/output"]


def test_the_per_chunk_bridge_runs_one_job_per_attempt_without_kubernetes_retries(
        fake: FakeBatchKubeAPI) -> None:
    """What the jobs runner does today (per chunk): start, read, retry itself, remove."""
    runtime = runtime_for(fake)
    s = spec(chunks=2, max_retries=3)
    state = runtime.start_chunk(s, 1, 1)
    assert state.index == 1 and state.attempt == 1 and state.phase is ChunkPhase.PENDING
    assert runtime.start_chunk(s, 1, 1).runtime_id == state.runtime_id  # idempotent
    name = job_object_name("job-42", [1], INSTALLATION, 1)
    assert name.endswith("-a1")
    sent = fake.get("jobs", name)
    validate({k: v for k, v in sent.items() if k != "status"})
    assert sent["spec"]["backoffLimitPerIndex"] == 0 and sent["spec"]["completions"] == 1
    assert sent["metadata"]["annotations"]["modelport.attempt"] == "1"

    fake.set_phase(fake.pod_of(name, 0)["metadata"]["name"], "Failed", exit_code=1)
    failed = runtime.chunk_states("job-42")[1]
    assert failed.phase is ChunkPhase.FAILED and failed.exit_code == 1 and failed.attempt == 1
    runtime.remove_chunk("job-42", 1)
    assert fake.get("jobs", name) is None and runtime.chunk_states("job-42") == {}
    assert fake.objects["networkpolicies"] == {}  # owned by the Job: collected with it

    runtime.start_chunk(s, 1, 2)
    second = job_object_name("job-42", [1], INSTALLATION, 2)
    fake.set_phase(fake.pod_of(second, 0)["metadata"]["name"], "Succeeded")
    done = runtime.chunk_states("job-42")[1]
    assert done.phase is ChunkPhase.SUCCEEDED and done.attempt == 2
    runtime.remove_chunk("job-42", 1)
    assert fake.pods() == [] and runtime.chunk_states("job-42") == {}


def test_the_runtime_role_grants_every_call_the_batch_runtime_makes(
        fake: FakeBatchKubeAPI) -> None:
    """Every request of a job's life (submit, read, logs, resume, bridge, remove) against
    platform/kubernetes/rbac.yaml's Role, as test_kubernetes_manifests.py does for replicas."""
    from tests.workers.test_kubernetes_manifests import _rbac_rule, all_objects

    role = next(o for o in all_objects() if o["kind"] == "Role")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    runtime = runtime_for(fake)
    runtime.submit_job(spec(), [0, 1, 2])
    name = job_object_name("job-42", [0, 1, 2], INSTALLATION)
    pod = fake.pod_of(name, 0)["metadata"]["name"]
    fake.logs[(pod, False)] = "x\n"
    runtime.chunk_logs("job-42", 0)
    runtime.submit_job(spec(), [1])  # supersedes the running Job
    runtime.start_chunk(spec(), 2, 1)
    runtime.remove_chunk("job-42", 2)
    runtime.remove_job("job-42")
    needed = {_rbac_rule(r) for r in fake.requests}
    assert ("batch", "jobs", "create") in needed and \
        ("networking.k8s.io", "networkpolicies", "patch") in needed
    assert needed - granted == set()
