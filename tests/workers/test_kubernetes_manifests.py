"""platform/kubernetes/: SCHEMA AND CONSISTENCY TESTS, NOT A CLUSTER.

Every manifest that runs Modelport itself on Kubernetes is validated offline against the
Kubernetes JSON schemas of v1.30 and v1.37 (strict: unknown fields are errors; from the
``kubernetes-validate`` package), built with ``kubectl kustomize`` when kubectl is installed, and
checked for the hardening, probes and RBAC the platform relies on. Nothing is applied anywhere:
whether the pods start, the Ingress routes or the Docker sidecar builds is not tested here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from tests.workers.kube_fake import FakeKubeAPI
from workers.runtimes.base import ReplicaSpec
from workers.runtimes.kube_manifests import Autoscaling
from workers.runtimes.kubernetes import KubernetesRuntime

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "platform" / "kubernetes"
K8S_VERSIONS = ("1.30", "1.37")
FILES = sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
PRIVILEGED_ALLOWED = {("modelport-worker", "docker"), ("modelport-reconciler", "docker")}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_objects() -> list[dict[str, Any]]:
    return [d for p in FILES for d in docs(p)]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for obj in all_objects():
        if obj["kind"] in ("Deployment", "Job"):
            out.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return out


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    objects = docs(path)
    assert objects
    for obj in objects:
        for version in K8S_VERSIONS:
            assert kubernetes_validate.validate(obj, version, strict=True) == version
        assert obj["metadata"].get("namespace") or obj["kind"] in (
            "Namespace", "ClusterRole", "ClusterRoleBinding"), obj["metadata"]["name"]


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in FILES} - {"secret.example.yaml"}
    assert [i["name"] for i in kustomization["images"]] == ["modelport/web"]


def test_kustomize_build_validates_too() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the per-file schema test still ran")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    objects = [d for d in yaml.safe_load_all(out) if d]
    assert len(objects) == sum(len(docs(MANIFESTS / f)) for f in yaml.safe_load(
        (MANIFESTS / "kustomization.yaml").read_text())["resources"])
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelport"
        if obj["kind"] in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                assert c["image"] in ("registry.example.com/modelport/web:0.1.0",), c["image"]


def test_the_platform_image_is_built_from_platform_dockerfile() -> None:
    """The manifests' image is the compose stack's modelport/web, from platform/Dockerfile."""
    assert (REPO / "platform" / "Dockerfile").is_file()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["x-app"]["image"].startswith("modelport/web:")
    assert compose["x-app-build"]["dockerfile"] == "platform/Dockerfile"
    for _name, spec in pod_specs():
        for c in spec["containers"]:
            assert c["image"] == "modelport/web"
    assert (REPO / "platform" / "gunicorn.conf.py").is_file()
    assert (REPO / "teams" / "management" / "commands" / "bootstrap.py").is_file()


def test_every_platform_container_is_hardened_but_the_docker_sidecar() -> None:
    privileged = set()
    for name, spec in pod_specs():
        pod_sc = spec.get("securityContext") or {}
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                privileged.add((name, c["name"]))
                continue
            assert (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) is True, name
            assert (sc.get("runAsUser") or pod_sc.get("runAsUser")) == 10001, name
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], (name, c["name"])
            assert c["resources"]["limits"]["memory"], (name, c["name"])
        tokens = spec.get("automountServiceAccountToken")
        # Only the pods that use the Kubernetes runtime get the service account's token.
        assert tokens is (name in ("modelport-web", "modelport-worker",
                                   "modelport-reconciler")), name
        assert (spec.get("serviceAccountName") == "modelport") is tokens, name
    assert privileged == PRIVILEGED_ALLOWED


def test_web_probes_use_the_platform_health_endpoints() -> None:
    from django.urls import resolve

    from config import system

    web = next(spec for name, spec in pod_specs() if name == "modelport-web")
    edge, gunicorn = web["containers"]  # the edge (probed, on the port) in front of gunicorn
    c = edge
    assert c["command"][:3] == ["python", "-m", "config.edge"]
    socket = c["command"][c["command"].index("--upstream") + 1]
    assert {"name": "GUNICORN_BIND", "value": socket} in gunicorn["env"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert resolve("/healthz").func is system.healthz
    assert resolve("/readyz").func is system.readyz
    config = next(o for o in all_objects() if o["kind"] == "ConfigMap")
    # The probes' Host header must be an allowed host, or Django answers 400.
    assert "localhost" in config["data"]["DJANGO_ALLOWED_HOSTS"].split(",")
    web_host = re.sub(r"^https?://|:\d+$", "", config["data"]["MODELPORT_BASE_URL"])
    assert web_host in config["data"]["DJANGO_ALLOWED_HOSTS"].split(",")


def _rbac_rule(request: dict[str, Any]) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) of one API request, as the API server authorizes it."""
    path, method = request["path"], request["method"]
    m = re.match(r"^/(?:api/v1|apis/([^/]+)/[^/]+)/namespaces/[^/]+/([^/]+)(?:/([^/]+))?"
                 r"(?:/([^/]+))?$", path)
    assert m, path
    group, resource, name, sub = m.group(1) or "", m.group(2), m.group(3), m.group(4)
    if sub:
        resource = f"{resource}/{sub}"
    verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
            "PUT": "update", "DELETE": "delete"}[method]
    return group, resource, verb


def test_the_runtime_role_grants_every_call_the_runtime_makes() -> None:
    """Drive the runtime through its whole life cycle against the in-process API fake (see
    test_runtime_kubernetes.py) and check each request against rbac.yaml's Role."""
    role = next(o for o in all_objects() if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "modelport-models"
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    fake = FakeKubeAPI().start()
    try:
        cfg = client.Configuration()
        cfg.host = fake.url
        rt = KubernetesRuntime(namespace="modelport-models", api_client=client.ApiClient(cfg),
                               autoscaling=Autoscaling(max_replicas=3), pod_wait_s=2,
                               poll_interval_s=0.05)
        spec = ReplicaSpec(deployment="iris", revision=1, replica=0, image="img",
                           env={"MODELPORT_INGEST_TOKEN": "mpi_x"})
        a = rt.start_replica(spec).id
        spec.replica = 1
        b = rt.start_replica(spec).id
        # Other settings: the revision's NetworkPolicy is replaced; the sweep lists and syncs.
        KubernetesRuntime(namespace="modelport-models", api_client=client.ApiClient(cfg),
                          network_policy={"client_pods": {"role": "gateway"}}, pod_wait_s=2,
                          poll_interval_s=0.05).start_replica(spec)
        rt.list_replicas()
        rt.list_replicas("iris")
        rt.get_replica(a)
        fake.logs[(a, False)] = "x\n"
        rt.logs(a)
        rt.stats(a)
        rt.remove_replica(a)
        rt.stop_replica(b)
        rt.describe()
        cluster = [r for r in fake.requests if "/namespaces/" not in r["path"]]
        needed = {_rbac_rule(r) for r in fake.requests if "/namespaces/" in r["path"]}
    finally:
        fake.stop()
    assert {("networking.k8s.io", "networkpolicies", verb)
            for verb in ("get", "list", "create", "update", "delete")} <= needed
    assert needed - granted == set()
    assert {r["path"] for r in cluster} == {"/version/", "/api/v1/nodes"}
    cluster_role = next(o for o in all_objects() if o["kind"] == "ClusterRole")
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes"],
                                      "verbs": ["get", "list"]}]


def test_container_commands_parse_as_shell_and_python() -> None:
    """`sh -c` scripts pass `sh -n`; inline `python -c` programs compile."""
    import shlex

    checked = 0
    for name, spec in pod_specs():
        for c in spec["containers"]:
            command = c.get("command") or []
            if command[:2] != ["sh", "-c"]:
                continue
            subprocess.run(["sh", "-n", "-c", command[2]], check=True, timeout=30)
            words = shlex.split(command[2])
            for i, word in enumerate(words[:-1]):
                if word == "-c" and words[i - 1] == "python":
                    compile(words[i + 1], f"{name}:{c['name']}", "exec")
            checked += 1
    assert checked >= 4  # worker, reconciler, migrate, mlflow


def test_model_pod_policies_match_the_shipped_platform_pods() -> None:
    """The runtime's default NetworkPolicy peers (workers/runtimes/kube_policy.py) are the
    manifests' pods: only web (edge, gateway) and the reconciler (readiness probes) may call
    replicas; the ingest port is web's; the models namespace denies everything else."""
    from workers.runtimes.kube_policy import PolicyPeers, selects

    peers = PolicyPeers()
    templates = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]
                 for o in all_objects() if o["kind"] in ("Deployment", "Job")}
    namespaces = {o["metadata"]["name"]: o["metadata"]["namespace"]
                  for o in all_objects() if o["kind"] in ("Deployment", "Job")}
    clients = {name for name, meta in templates.items()
               if selects(peers.client_pods, meta["labels"])}
    assert clients == {"modelport-web", "modelport-reconciler"}
    assert {namespaces[n] for n in clients} == {peers.platform_namespace}
    ingest = {name for name, meta in templates.items()
              if selects(peers.ingest_pods, meta["labels"])}
    assert ingest == {"modelport-web"}
    web = next(spec for name, spec in pod_specs() if name == "modelport-web")
    assert peers.ingest_port in {p["containerPort"] for c in web["containers"]
                                 for p in c.get("ports", [])}
    config = next(o for o in all_objects() if o["kind"] == "ConfigMap")
    # Replicas ship to MODELPORT_BASE_URL: the web Service, which targets that port.
    assert config["data"]["MODELPORT_BASE_URL"] == \
        f"http://modelport-web.{peers.platform_namespace}.svc:{peers.ingest_port}"
    role = next(o for o in all_objects() if o["kind"] == "Role")
    # The models namespace's one policy (the platform namespace has MLflow's, mlflow.yaml).
    (deny,) = [o for o in all_objects() if o["kind"] == "NetworkPolicy"
               and o["metadata"]["namespace"] == role["metadata"]["namespace"]]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    models = next(o for o in all_objects() if o["kind"] == "Namespace"
                  and o["metadata"]["name"] == role["metadata"]["namespace"])
    assert models["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
