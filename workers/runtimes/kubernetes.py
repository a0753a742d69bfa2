"""Kubernetes runtime: per revision a Deployment, a Service, a Secret, a NetworkPolicy (and
optionally a HorizontalPodAutoscaler), through the official ``kubernetes`` client.

How the runtime's replica notion maps onto Kubernetes (honestly, not one-to-one):

* a **replica is a pod**; its id is the pod's name, its url ``http://<pod IP>:8080`` (or the
  revision's Service with ``url_mode="service"``). The reconciler therefore has to run where pod
  IPs are routable: inside the cluster (platform/kubernetes/ runs it there).
* the pods of one revision come from that revision's Deployment, whose pod template never changes
  (so no rollout is ever triggered by Kubernetes itself: Modelport's reconciler does rollouts,
  canaries and rollbacks across revisions, as on Docker). The replica indices the reconciler asked
  for are kept in an annotation on the Deployment; ``spec.replicas`` is their count.
* pods of a ReplicaSet have random names, so an index is **assigned** to a pod: ``start_replica``
  labels the oldest pod of the revision that has no ``modelport.replica`` label yet. A pod that
  Kubernetes replaced on its own (node loss, eviction, ``kubectl delete pod``) is picked up the
  same way at the next reconcile.
* there is no stopped pod: ``stop_replica`` and ``remove_replica`` both scale the revision down by
  that pod (``controller.kubernetes.io/pod-deletion-cost`` makes the ReplicaSet pick it) and delete
  it; when no index is left the revision's objects are deleted.
* a container in ``CrashLoopBackOff`` / ``ImagePullBackOff`` is reported DEAD with the reason, so
  the reconciler's crash-loop handling works as on Docker.

Model delivery: Kubernetes has no host bind mount, so the model is **baked into a thin image
layer** (``ImageBuilder.bake_model``) on the worker's Docker Engine, tagged by the digest of the
model files and the serving image, and pushed to ``registry`` with the serving image. Pods then
need nothing from the platform to start (a pod rescheduled while the platform is down still
starts), the image is immutable and content-addressed, and no artifact-download credential has
to live in the cluster. The price: the worker needs a Docker Engine and push access to a registry
the nodes can pull from (``image_pull_secrets`` for a private one).

Isolation: the revision's NetworkPolicy (``kube_policy.py``) lets only the platform's pods reach
the model pods and the model pods reach only DNS and the platform's ingest (anything, when a
platform admin granted the deployment egress); the replica key and the ingest token travel in
the revision's Secret, never in the pod template; pods mount no service-account token and use
neither the host's network nor host paths.

No Django import: the runtime takes explicit constructor arguments.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_REPLICA,
    LABEL_REVISION,
    BackendHealth,
    LogFn,
    NodeInfo,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    Runtime,
    missing_state,
)
from .kube_names import (
    ANN_DEPLOYMENT,
    ANN_INDICES,
    ANN_MODEL,
    ANN_MODEL_VERSION,
    label_selector,
    label_value,
    object_annotations,
    object_labels,
    object_name,
    revision_object_name,
    scope_selector,
    selector_labels,
)
from .kube_policy import NetworkPolicies, PolicyPeers

CONTAINER_NAME = "model"
CONTAINER_PORT = 8080
MODEL_PATH = "/model"
RUN_AS = 10001
TMP_SIZE = "64Mi"

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

# Container waiting reasons that mean "this replica is not going to come up by itself".
FAILED_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
    "ErrImageNeverPull",
})


# --- quantities ---------------------------------------------------------------------------------
def cpu_quantity(cores: float) -> str:
    return f"{max(1, round(float(cores) * 1000))}m"


def memory_quantity(mb: int) -> str:
    return f"{int(mb)}Mi"


@dataclass
class Autoscaling:
    """An optional HorizontalPodAutoscaler per revision (autoscaling/v2, CPU utilization).

    With it, Kubernetes may add pods beyond the replicas Modelport asked for; those pods get no
    replica index, so the reconciler neither counts nor removes them, and they only receive
    traffic through the revision's Service: use ``url_mode="service"`` with autoscaling."""

    max_replicas: int
    cpu_utilization: int = 70


# --- object builders (plain dicts: what is sent is what the schema tests validate) ---------------
def container_env(spec: ReplicaSpec) -> list[dict[str, Any]]:
    """The Docker runtime's environment, minus what differs per pod or is secret: the replica's
    name comes from the downward API, ``spec.env`` (the ingest token, the replica key) from the
    revision's Secret."""
    threads = str(max(1, int(-(-spec.cpu // 1)))) if spec.cpu else "1"
    plain = {
        "MODELPORT_MODEL_DIR": MODEL_PATH,
        "MODELPORT_HOST": "0.0.0.0",  # noqa: S104 - the pod's own network namespace
        "MODELPORT_PORT": str(CONTAINER_PORT),
        "MODELPORT_WORKERS": str(spec.workers),
        "MODELPORT_MODEL_NAME": spec.model_name or spec.deployment,
        "MODELPORT_MODEL_VERSION": str(spec.model_version),
        "MODELPORT_DEPLOYMENT": spec.deployment,
        "MODELPORT_REVISION": str(spec.revision),
        "HOME": "/tmp",  # noqa: S108 - the pod's own emptyDir
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    env.append({"name": "MODELPORT_REPLICA",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def container_security_context() -> dict[str, Any]:
    """The Docker hardening (uid 10001, read-only root, no capabilities, no-new-privileges)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(spec: ReplicaSpec, gpu_resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS): what admission reserved is what the pod gets.
    GPUs by count: the device plugin picks devices (Docker's device ids do not apply)."""
    limits: dict[str, str] = {}
    if spec.cpu:
        limits["cpu"] = cpu_quantity(spec.cpu)
    if spec.memory_mb:
        limits["memory"] = memory_quantity(spec.memory_mb)
    if spec.gpu_device_ids:
        limits[gpu_resource] = str(len(spec.gpu_device_ids))
    requests = {k: v for k, v in limits.items() if k in ("cpu", "memory")}
    return {"requests": requests, "limits": limits}


def build_pod_template(spec: ReplicaSpec, image: str, *, secret_name: str | None,
                       image_pull_secrets: Iterable[str] = (),
                       extra_labels: dict[str, str] | None = None,
                       node_selector: dict[str, str] | None = None,
                       tolerations: list[dict[str, Any]] | None = None,
                       service_account: str | None = None,
                       gpu_resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    probe = {"port": "http", "scheme": "HTTP"}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": container_env(spec),
        "resources": resources(spec, gpu_resource),
        "securityContext": container_security_context(),
        # /health answers as soon as the server listens, /ready once the model is loaded.
        "startupProbe": {"httpGet": {**probe, "path": "/health"}, "periodSeconds": 2,
                         "timeoutSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {"httpGet": {**probe, "path": "/health"}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {**probe, "path": "/ready"}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    if secret_name:
        container["envFrom"] = [{"secretRef": {"name": secret_name}}]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "restartPolicy": "Always",
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in image_pull_secrets]
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = list(tolerations)
    return {"metadata": {"labels": object_labels(spec, extra_labels),
                         "annotations": object_annotations(spec)},
            "spec": pod_spec}


def build_deployment(spec: ReplicaSpec, image: str, *, namespace: str, replicas: int,
                     indices: Iterable[int], secret_name: str | None = None,
                     **template_kwargs: Any) -> dict[str, Any]:
    name = object_name(spec)
    extra = template_kwargs.get("extra_labels")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": object_labels(spec, extra),
                     "annotations": {**object_annotations(spec),
                                     ANN_INDICES: format_indices(indices)}},
        "spec": {
            "replicas": int(replicas),
            "selector": {"matchLabels": selector_labels(spec)},
            # The template of a revision never changes; a new revision is a new Deployment.
            "revisionHistoryLimit": 1,
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": build_pod_template(spec, image, secret_name=secret_name,
                                           **template_kwargs),
        },
    }


def build_service(spec: ReplicaSpec, *, namespace: str, service_type: str = "ClusterIP",
                  extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": object_name(spec),
                     "namespace": namespace, "labels": object_labels(spec, extra_labels),
                     "annotations": object_annotations(spec)},
        "spec": {"type": service_type, "selector": selector_labels(spec),
                 "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http",
                            "protocol": "TCP"}]},
    }


def build_secret(spec: ReplicaSpec, *, namespace: str,
                 extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """``spec.env`` (the ingest URL and token, the replica key) kept out of the pod template:
    the template must not change between calls (a change would roll the revision), and both are
    secrets (anyone who may read Deployments would otherwise read them)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": object_name(spec) + "-env",
                     "namespace": namespace, "labels": object_labels(spec, extra_labels),
                     "annotations": object_annotations(spec)},
        "stringData": {k: str(v) for k, v in spec.env.items()},
    }


def build_hpa(spec: ReplicaSpec, autoscaling: Autoscaling, *, namespace: str, min_replicas: int,
              extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    name = object_name(spec)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": object_labels(spec, extra_labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(1, int(min_replicas)),
            "maxReplicas": max(int(min_replicas), int(autoscaling.max_replicas), 1),
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization",
                "averageUtilization": int(autoscaling.cpu_utilization)}}}],
        },
    }


def format_indices(indices: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(set(int(i) for i in indices)))


def parse_indices(text: str | None) -> set[int]:
    return {int(p) for p in (text or "").split(",") if p.strip().isdigit()}


# --- interpreting what the API returns ----------------------------------------------------------
def pod_state(pod: Any, *, url_mode: str = "pod", namespace: str = "",
              cluster_domain: str = "cluster.local") -> ReplicaState:
    """A pod (the client's V1Pod) as the runtime's ReplicaState."""
    meta, status = pod.metadata, pod.status
    labels = dict(meta.labels or {})
    annotations = dict(meta.annotations or {})
    cstatus = next((c for c in (status.container_statuses or []) if c.name == CONTAINER_NAME),
                   None)
    phase = status.phase or "Pending"
    waiting = cstatus.state.waiting if cstatus and cstatus.state else None
    running = cstatus.state.running if cstatus and cstatus.state else None
    terminated = cstatus.state.terminated if cstatus and cstatus.state else None
    last_term = cstatus.last_state.terminated if cstatus and cstatus.last_state else None
    message = ""
    exit_code: int | None = None
    if meta.deletion_timestamp is not None:
        state, message = ReplicaStatus.EXITED, "pod terminating"
    elif phase == "Succeeded":
        state = ReplicaStatus.EXITED
    elif phase == "Failed":
        state = ReplicaStatus.DEAD
        message = " ".join(p for p in (status.reason, status.message) if p)
    elif waiting is not None and waiting.reason in FAILED_REASONS:
        state = ReplicaStatus.DEAD
        message = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
        exit_code = last_term.exit_code if last_term else None
    elif phase == "Running" and cstatus is not None and running is not None and cstatus.ready:
        state = ReplicaStatus.RUNNING
    else:
        state = ReplicaStatus.STARTING
        if waiting is not None and waiting.reason:
            message = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
        for cond in status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                message = f"unschedulable: {cond.message or cond.reason or ''}".strip(": ")
    if terminated is not None:
        exit_code = terminated.exit_code
        if terminated.reason == "OOMKilled" or (last_term and last_term.reason == "OOMKilled"):
            message = (message + " OOM killed").strip()
    elif last_term is not None and last_term.reason == "OOMKilled":
        message = (message + " OOM killed").strip()
    health = None
    if cstatus is not None and state in (ReplicaStatus.RUNNING, ReplicaStatus.STARTING):
        health = "healthy" if cstatus.ready else "starting"
    if url_mode == "service":
        name = revision_object_name(annotations.get(ANN_DEPLOYMENT)
                                    or labels.get(LABEL_DEPLOYMENT, ""),
                                    _int(labels.get(LABEL_REVISION)),
                                    labels.get(LABEL_INSTALLATION, ""))
        url: str | None = f"http://{name}.{namespace}.svc.{cluster_domain}:{CONTAINER_PORT}"
    else:
        url = f"http://{status.pod_ip}:{CONTAINER_PORT}" if status.pod_ip else None
    started = running.started_at if running is not None else (
        terminated.started_at if terminated is not None else status.start_time)
    return ReplicaState(
        id=meta.name,
        deployment=annotations.get(ANN_DEPLOYMENT) or labels.get(LABEL_DEPLOYMENT, ""),
        revision=_int(labels.get(LABEL_REVISION)),
        replica=_int(labels.get(LABEL_REPLICA)),
        status=state,
        url=url if state is not ReplicaStatus.EXITED else None,
        exit_code=exit_code if state not in (ReplicaStatus.RUNNING,) else None,
        started_at=_aware(started),
        finished_at=_aware(terminated.finished_at) if terminated is not None else None,
        restart_count=int(cstatus.restart_count or 0) if cstatus else 0,
        port=CONTAINER_PORT,
        image=(cstatus.image if cstatus and cstatus.image else
               (pod.spec.containers[0].image if pod.spec and pod.spec.containers else None)),
        model_name=annotations.get(ANN_MODEL) or labels.get(LABEL_MODEL, ""),
        model_version=annotations.get(ANN_MODEL_VERSION) or labels.get(LABEL_MODEL_VERSION, ""),
        message=message,
        health=health,
        labels=labels,
    )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _aware(value: datetime | None) -> datetime | None:
    return value if isinstance(value, datetime) else None


# --- the runtime --------------------------------------------------------------------------------
class KubernetesRuntime(NetworkPolicies, Runtime):
    """Runs replicas as pods of one Deployment per revision in one namespace.

    Credentials: ``api_client`` (a ready ``kubernetes.client.ApiClient``), else in-cluster
    service-account credentials (``in_cluster=True``), else a kubeconfig (``config_file``, default
    ``$KUBECONFIG`` / ``~/.kube/config``) and its ``context`` (default: the current one).

    Images: ``ensure_image`` builds with ``image_builder`` (the Docker runtime's ImageBuilder)
    and pushes to ``registry`` (e.g. ``registry.example.com/modelport``); ``start_replica`` bakes
    ``spec.model_dir`` into a thin layer and pushes that. Without ``registry`` images are used
    as built (a single-node cluster sharing the worker's Docker image store, e.g. kind/minikube
    with the image loaded; the pods use ``imagePullPolicy: IfNotPresent``).

    Network: ``network_policy`` (a ``kube_policy.PolicyPeers`` or the target's settings dict)
    says which pods are the platform (callers of replicas, the ingest) and where DNS is.

    ``installation`` (see ``Runtime``): every object is named ``mp-<id[:8]>-…`` and labelled
    with the id, which the revision's selectors include; only this installation's pods and
    policies are listed, adopted or removed. Objects from before installation ids carry no id
    and are left alone (docs/beyond-one-host.md says how to remove them).
    """

    name = "kubernetes"
    sandboxed = True
    container_port = CONTAINER_PORT

    def __init__(self, *, namespace: str = "default", context: str | None = None,
                 in_cluster: bool = False, api_client: Any = None,
                 config_file: str | None = None,
                 image_pull_secrets: Iterable[str] = (),
                 registry: str | None = None,
                 image_builder: Any = None,
                 service_type: str = "ClusterIP",
                 url_mode: str = "pod",
                 autoscaling: Autoscaling | None = None,
                 extra_labels: dict[str, str] | None = None,
                 node_selector: dict[str, str] | None = None,
                 tolerations: list[dict[str, Any]] | None = None,
                 service_account: str | None = None,
                 gpu_resource: str = "nvidia.com/gpu",
                 cluster_domain: str = "cluster.local",
                 network_policy: PolicyPeers | Mapping[str, Any] | None = None,
                 pod_wait_s: float = 120.0,
                 poll_interval_s: float = 0.5,
                 request_timeout_s: float = 30.0,
                 installation: str = "") -> None:
        if url_mode not in ("pod", "service"):
            raise ValueError("url_mode must be 'pod' or 'service'")
        try:
            self.policy_peers = PolicyPeers.from_settings(network_policy)
        except ValueError as exc:
            raise ReplicaRuntimeError(f"the kubernetes runtime's settings: {exc}") from exc
        self.namespace = namespace
        self.installation = installation
        self.context = context
        self.in_cluster = in_cluster
        self.api_client = api_client or self._load_client(in_cluster, config_file, context)
        self.image_pull_secrets = [s for s in image_pull_secrets if s]
        self.registry = registry.rstrip("/") if registry else None
        self.image_builder = image_builder
        self.service_type = service_type
        self.url_mode = url_mode
        self.autoscaling = autoscaling
        self.extra_labels = dict(extra_labels or {})
        self.node_selector = dict(node_selector or {})
        self.tolerations = list(tolerations or [])
        self.service_account = service_account
        self.gpu_resource = gpu_resource
        self.cluster_domain = cluster_domain
        self.pod_wait_s = pod_wait_s
        self.poll_interval_s = poll_interval_s
        self.request_timeout_s = request_timeout_s
        self._pushed: set[str] = set()
        self._model_digests: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

        from kubernetes import client

        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling_api = client.AutoscalingV2Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.version_api = client.VersionApi(self.api_client)

    @staticmethod
    def _load_client(in_cluster: bool, config_file: str | None, context: str | None) -> Any:
        from kubernetes import client, config

        try:
            if in_cluster:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                return client.ApiClient(cfg)
            # $KUBECONFIG as it is now (the client reads it once, at import), may list several.
            config_file = config_file or os.environ.get("KUBECONFIG") or None
            return config.new_client_from_config(config_file=config_file, context=context)
        except config.ConfigException as exc:
            where = "in-cluster service account" if in_cluster else (
                f"kubeconfig {config_file or '(default)'} context {context or '(current)'}")
            raise ReplicaRuntimeError(f"cannot load Kubernetes credentials from {where}: "
                                      f"{exc}") from exc

    # --- images -----------------------------------------------------------------------------
    def ensure_image(self, requirements: list[str], on_log: LogFn | None = None) -> str:
        if self.image_builder is None:
            raise ReplicaRuntimeError(
                "the kubernetes runtime builds serving images on the worker's Docker Engine: "
                "configure an image builder (and a registry the cluster pulls from)")
        local = self.image_builder.ensure_image(requirements, on_log)
        return self._publish(local, on_log)

    def model_image(self, serving_image: str, model_dir: str, on_log: LogFn | None = None) -> str:
        """The serving image plus the model at /model: built once per (serving image, model
        files) and pushed. The tag is content-addressed, so a re-run reuses it."""
        if self.image_builder is None:
            raise ReplicaRuntimeError(
                "the kubernetes runtime bakes the model into an image layer: it needs an image "
                "builder (a Docker Engine on the worker) and a registry the cluster pulls from")
        client = self.image_builder.client
        from docker.errors import ImageNotFound

        try:  # the id, not the tag: a serving image rebuilt under its tag re-bakes the model
            serving_id = client.images.get(serving_image).id
        except ImageNotFound as exc:
            raise ReplicaRuntimeError(f"serving image {serving_image} is not on the worker's "
                                      "Docker Engine (see ensure_image)") from exc
        digest = hashlib.sha256(f"{serving_image}@{serving_id}\n"
                                f"{self._model_digest(model_dir)}".encode()).hexdigest()[:16]
        repo = f"{self.registry}/model" if self.registry else "modelport/model"
        ref = f"{repo}:{digest}"
        with self._lock:
            if ref in self._pushed:
                return ref
        try:
            client.images.get(ref)
        except ImageNotFound:
            self.image_builder.bake_model(serving_image, model_dir, ref, on_log)
        return self._push(ref, on_log)

    def _model_digest(self, model_dir: str) -> str:
        from .images import _tree_digest

        path = Path(model_dir)
        # Hashing reads every file; a listing of (name, size, mtime) says whether we must.
        listing = sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                         for p in path.rglob("*") if p.is_file() for st in [p.stat()])
        key = (str(path.resolve()), hash(tuple(listing)))
        if key not in self._model_digests:
            self._model_digests[key] = _tree_digest([path], path)
        return self._model_digests[key]

    def _publish(self, local_ref: str, on_log: LogFn | None) -> str:
        if not self.registry:
            return local_ref
        name = local_ref.rsplit("/", 1)[-1]
        ref = f"{self.registry}/{name}"
        image = self.image_builder.client.images.get(local_ref)
        with self._lock:  # keyed by image id: a rebuild under the same tag is pushed again
            if f"{ref}@{image.id}" in self._pushed:
                return ref
        repo, _, tag = ref.rpartition(":")
        image.tag(repo, tag=tag)
        self._push(ref, on_log)
        with self._lock:
            self._pushed.add(f"{ref}@{image.id}")
        return ref

    def _push(self, ref: str, on_log: LogFn | None) -> str:
        if not self.registry:
            return ref
        log = on_log or (lambda _line: None)
        repo, _, tag = ref.rpartition(":")
        log(f"pushing {ref}")
        try:
            for chunk in self.image_builder.client.images.push(repo, tag=tag, stream=True,
                                                               decode=True):
                if "error" in chunk or "errorDetail" in chunk:
                    raise ReplicaRuntimeError(f"pushing {ref} failed: "
                                              f"{chunk.get('error') or chunk['errorDetail']}")
        except ReplicaRuntimeError:
            raise
        except Exception as exc:  # docker.errors.APIError, connection errors
            raise ReplicaRuntimeError(f"pushing {ref} failed: {exc}") from exc
        log(f"pushed {ref}")
        with self._lock:
            self._pushed.add(ref)
        return ref

    # --- lifecycle --------------------------------------------------------------------------
    def start_replica(self, spec: ReplicaSpec) -> ReplicaState:
        spec = self.scoped(spec)
        if not spec.image:
            raise ReplicaRuntimeError("the kubernetes runtime needs spec.image (see ensure_image)")
        image = self.model_image(spec.image, spec.model_dir) if spec.model_dir else spec.image
        name = object_name(spec)
        secret_name = None
        if spec.env:
            secret_name = name + "-env"
            self._upsert_secret(build_secret(spec, namespace=self.namespace,
                                             extra_labels=self.extra_labels))
        self._ensure_policy(spec)  # before any pod of the revision exists
        self._ensure_deployment(spec, image, secret_name)
        if self._read(self.core.read_namespaced_service, name) is None:
            self._create_if_missing(self.core.create_namespaced_service,
                                    build_service(spec, namespace=self.namespace,
                                                  service_type=self.service_type,
                                                  extra_labels=self.extra_labels))
        if self.autoscaling is not None:
            self._ensure_hpa(spec)
        return self._pod_for_index(spec)

    def _upsert_secret(self, body: dict[str, Any]) -> None:
        """Create the revision's Secret, or refresh its values: pods started from now on get the
        latest ingest token (running pods keep theirs, which stays valid until revoked)."""
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            self.core.patch_namespaced_secret(name, self.namespace,
                                              {"stringData": body["stringData"]},
                                              _request_timeout=self.request_timeout_s)
            return
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"updating secret {name}", exc) from exc
        self._create_if_missing(self.core.create_namespaced_secret, body)

    def _template_kwargs(self) -> dict[str, Any]:
        return {"image_pull_secrets": self.image_pull_secrets, "extra_labels": self.extra_labels,
                "node_selector": self.node_selector, "tolerations": self.tolerations,
                "service_account": self.service_account, "gpu_resource": self.gpu_resource}

    def _ensure_deployment(self, spec: ReplicaSpec, image: str, secret_name: str | None) -> None:
        from kubernetes.client.exceptions import ApiException

        name = object_name(spec)
        for _attempt in range(5):
            current = self._read(self.apps.read_namespaced_deployment, name)
            if current is None:
                body = build_deployment(spec, image, namespace=self.namespace, replicas=1,
                                        indices=[spec.replica], secret_name=secret_name,
                                        **self._template_kwargs())
                try:
                    self.apps.create_namespaced_deployment(self.namespace, body,
                                                           _request_timeout=self.request_timeout_s)
                    return
                except ApiException as exc:
                    if exc.status != 409:  # 409: another worker created it a moment ago
                        raise self._error(f"creating deployment {name}", exc) from exc
                    continue
            indices = parse_indices((current.metadata.annotations or {}).get(ANN_INDICES))
            if spec.replica in indices:
                return
            indices.add(spec.replica)
            if self._scale(current, indices):
                return
        raise ReplicaRuntimeError(f"deployment {name} kept changing under us; try again")

    def _scale(self, current: Any, indices: set[int], adding: bool = True) -> bool:
        """Set the indices annotation and the replica count in one patch guarded by the
        object's resourceVersion (False: someone else changed it first; re-read and retry)."""
        from kubernetes.client.exceptions import ApiException

        replicas = len(indices)
        if self.autoscaling is not None and adding:  # keep the pods the HPA added
            replicas = max(replicas, int(current.spec.replicas or 0))
        body = {"metadata": {"resourceVersion": current.metadata.resource_version,
                             "annotations": {ANN_INDICES: format_indices(indices)}},
                "spec": {"replicas": replicas}}
        try:
            self.apps.patch_namespaced_deployment(current.metadata.name, self.namespace, body,
                                                  _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise self._error(f"scaling deployment {current.metadata.name}", exc) from exc
        return True

    def _ensure_hpa(self, spec: ReplicaSpec) -> None:
        assert self.autoscaling is not None
        current = self._read(self.apps.read_namespaced_deployment,
                             object_name(spec))
        floor = len(parse_indices((current.metadata.annotations or {}).get(ANN_INDICES))) \
            if current is not None else 1
        body = build_hpa(spec, self.autoscaling, namespace=self.namespace, min_replicas=floor,
                         extra_labels=self.extra_labels)
        existing = self._read(self.autoscaling_api.read_namespaced_horizontal_pod_autoscaler,
                              body["metadata"]["name"])
        if existing is None:
            self._create_if_missing(
                self.autoscaling_api.create_namespaced_horizontal_pod_autoscaler, body)
        elif (existing.spec.min_replicas or 1) != body["spec"]["minReplicas"]:
            self._set_hpa_floor(body["metadata"]["name"], floor)

    def _set_hpa_floor(self, name: str, floor: int) -> None:
        """The HPA never goes below the replicas the reconciler asked for."""
        from kubernetes.client.exceptions import ApiException

        assert self.autoscaling is not None
        floor = max(1, floor)
        try:
            self.autoscaling_api.patch_namespaced_horizontal_pod_autoscaler(
                name, self.namespace,
                {"spec": {"minReplicas": floor,
                          "maxReplicas": max(floor, self.autoscaling.max_replicas)}},
                _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"updating autoscaler {name}", exc) from exc

    def _pod_for_index(self, spec: ReplicaSpec) -> ReplicaState:
        """The pod holding replica index `spec.replica`; else label the oldest pod of the
        revision that holds none; else wait for the ReplicaSet to create one."""
        from kubernetes.client.exceptions import ApiException

        selector = label_selector(selector_labels(spec))
        deadline = time.monotonic() + self.pod_wait_s
        while True:
            pods = [p for p in self._list_pods(selector) if p.metadata.deletion_timestamp is None]
            for pod in pods:
                if (pod.metadata.labels or {}).get(LABEL_REPLICA) == str(spec.replica):
                    return self._addressable(pod, deadline)
            free = sorted((p for p in pods if LABEL_REPLICA not in (p.metadata.labels or {})),
                          key=lambda p: (p.metadata.creation_timestamp or datetime.min,
                                         p.metadata.name))
            for pod in free:
                body = {"metadata": {"resourceVersion": pod.metadata.resource_version,
                                     "labels": {LABEL_REPLICA: str(spec.replica)}}}
                try:
                    patched = self.core.patch_namespaced_pod(
                        pod.metadata.name, self.namespace, body,
                        _request_timeout=self.request_timeout_s)
                except ApiException as exc:
                    if exc.status in (404, 409):  # gone, or claimed by another worker
                        continue
                    raise self._error(f"labelling pod {pod.metadata.name}", exc) from exc
                return self._addressable(patched, deadline)
            if time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval_s)
        name = object_name(spec)
        why = self._deployment_problem(name)
        # Take the index back, so no Deployment waits forever for a pod nobody tracks.
        self._after_drop(name, self._drop_index(name, spec.replica))
        raise ReplicaRuntimeError(
            f"no pod of {name} became available for replica {spec.replica} within "
            f"{self.pod_wait_s:.0f}s{': ' + why if why else ''} "
            f"(kubectl -n {self.namespace} describe deployment {name})")

    def _addressable(self, pod: Any, deadline: float) -> ReplicaState:
        """The pod's state once it has an address to probe (the reconciler polls the url it
        gets back): a pod IP comes with the pod sandbox, before the image is pulled. A pod that
        cannot be scheduled in time is an error naming the scheduler's reason."""
        state = self._state(pod)
        while state.url is None and state.alive:
            if time.monotonic() >= deadline:
                raise ReplicaRuntimeError(
                    f"pod {state.id} got no address within {self.pod_wait_s:.0f}s"
                    f"{': ' + state.message if state.message else ''} "
                    f"(kubectl -n {self.namespace} describe pod {state.id})")
            time.sleep(self.poll_interval_s)
            fresh = self._get(state.id)
            if fresh is None:
                return missing_state(state.id)
            state = self._state(fresh)
        return state

    def _deployment_problem(self, name: str) -> str:
        dep = self._read(self.apps.read_namespaced_deployment, name)
        if dep is None or dep.status is None:
            return ""
        return "; ".join(f"{c.type}: {c.message or c.reason}" for c in dep.status.conditions or []
                         if c.status == "False" or c.type == "ReplicaFailure")

    def stop_replica(self, replica_id: str, timeout: float = 10) -> None:
        """No stopped pods in Kubernetes: scale the replica away, with `timeout` as the grace
        period (SIGTERM, then SIGKILL)."""
        self._remove(replica_id, grace=max(0, int(timeout)))

    def remove_replica(self, replica_id: str) -> None:
        self._remove(replica_id, grace=None)

    def _remove(self, replica_id: str, grace: int | None) -> None:
        from kubernetes.client.exceptions import ApiException

        pod = self._get(replica_id)
        if pod is None:
            return
        labels = pod.metadata.labels or {}
        annotations = pod.metadata.annotations or {}
        deployment = annotations.get(ANN_DEPLOYMENT) or labels.get(LABEL_DEPLOYMENT, "")
        name = revision_object_name(deployment, _int(labels.get(LABEL_REVISION)),
                                    labels.get(LABEL_INSTALLATION, ""))
        index = labels.get(LABEL_REPLICA)
        left: set[int] | None = None
        if index is not None and index.isdigit():
            # Make the ReplicaSet remove this pod (not another) when it scales down.
            try:
                self.core.patch_namespaced_pod(
                    replica_id, self.namespace,
                    {"metadata": {"annotations": {DELETION_COST: "-2147483647"}}},
                    _request_timeout=self.request_timeout_s)
            except ApiException as exc:
                if exc.status != 404:
                    raise self._error(f"annotating pod {replica_id}", exc) from exc
            left = self._drop_index(name, int(index))
        try:
            self.core.delete_namespaced_pod(replica_id, self.namespace,
                                            grace_period_seconds=grace,
                                            _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"deleting pod {replica_id}", exc) from exc
        self._after_drop(name, left)

    def _drop_index(self, name: str, index: int) -> set[int] | None:
        """Remove `index` from the revision's indices and scale down; the indices left (None:
        no such Deployment)."""
        for _attempt in range(5):
            current = self._read(self.apps.read_namespaced_deployment, name)
            if current is None:
                return None
            indices = parse_indices((current.metadata.annotations or {}).get(ANN_INDICES))
            indices.discard(index)
            if self._scale(current, indices, adding=False):
                return indices
        raise ReplicaRuntimeError(f"deployment {name} kept changing under us; try again")

    def _after_drop(self, name: str, left: set[int] | None) -> None:
        if left is not None and not left:
            self.delete_revision(name)
        elif left and self.autoscaling is not None:
            self._set_hpa_floor(name, len(left))

    def delete_revision(self, name: str) -> None:
        """Delete a revision's Deployment (its pods go with it), Service, Secret and HPA; its
        NetworkPolicy once its pods are gone (``_retire_policy``)."""
        calls = [self.apps.delete_namespaced_deployment, self.core.delete_namespaced_service,
                 self.autoscaling_api.delete_namespaced_horizontal_pod_autoscaler]
        for call in calls:
            self._delete(call, name)
        self._delete(self.core.delete_namespaced_secret, name + "-env")
        self._retire_policy(name)

    # --- discovery --------------------------------------------------------------------------
    def list_replicas(self, deployment: str | None = None) -> list[ReplicaState]:
        """Pods holding a replica index (terminating pods are no longer replicas). Over the
        whole namespace (the beat's sweep) it also keeps the NetworkPolicies in step, at most
        once a minute (``kube_policy.NetworkPolicies.sync_network_policies``)."""
        if deployment is None:
            self._sweep_policies()
        selector = scope_selector(self.installation) + f",{LABEL_REPLICA}"
        if deployment is not None:
            selector += f",{LABEL_DEPLOYMENT}={label_value(deployment)}"
        states = [self._state(p) for p in self._list_pods(selector)
                  if p.metadata.deletion_timestamp is None]
        if deployment is not None:
            states = [s for s in states if s.deployment == deployment]
        return sorted(states, key=lambda s: (s.deployment, s.revision, s.replica, s.id))

    def get_replica(self, replica_id: str) -> ReplicaState:
        pod = self._get(replica_id)
        return missing_state(replica_id) if pod is None else self._state(pod)

    def logs(self, replica_id: str, tail: int = 200) -> str:
        """The container's output; after a crash, the previous run's output too (Docker keeps
        every run's output in one log; Kubernetes keeps the current and the previous run)."""
        from kubernetes.client.exceptions import ApiException

        pod = self._get(replica_id)
        if pod is None:
            return ""
        state = self._state(pod)
        parts: list[str] = []
        for previous in ([True] if state.restart_count else []) + [False]:
            try:
                # Raw bytes, decoded here: kubernetes 36 returns the repr of the bytes from
                # read_namespaced_pod_log (kubernetes-client/python#2596) and older releases
                # re-format log lines that parse as JSON (#811).
                resp = self.core.read_namespaced_pod_log(
                    replica_id, self.namespace, container=CONTAINER_NAME, previous=previous,
                    tail_lines=tail, _preload_content=False,
                    _request_timeout=self.request_timeout_s)
                parts.append(resp.data.decode("utf-8", "replace"))
            except ApiException as exc:  # 400: no previous run / container not started yet
                if exc.status not in (400, 404):
                    raise self._error(f"reading logs of {replica_id}", exc) from exc
        lines = "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts).splitlines()
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")

    def stats(self, replica_id: str) -> dict[str, float]:
        """From metrics.k8s.io (metrics-server); zeros when it is not installed."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.utils import parse_quantity

        pod = self._get(replica_id)
        zero = {"cpu_percent": 0.0, "memory_bytes": 0.0, "memory_limit_bytes": 0.0}
        if pod is None:
            return zero
        limit = 0.0
        for c in pod.spec.containers or []:
            if c.name == CONTAINER_NAME and c.resources and c.resources.limits:
                mem = c.resources.limits.get("memory")
                limit = float(parse_quantity(mem)) if mem else 0.0
        try:
            raw = self.custom.get_namespaced_custom_object(
                "metrics.k8s.io", "v1beta1", self.namespace, "pods", replica_id,
                _request_timeout=self.request_timeout_s)
        except ApiException:
            return {**zero, "memory_limit_bytes": limit}
        cpu = mem_bytes = 0.0
        for c in raw.get("containers") or []:
            if c.get("name") == CONTAINER_NAME:
                usage = c.get("usage") or {}
                cpu = float(parse_quantity(usage.get("cpu", "0")))
                mem_bytes = float(parse_quantity(usage.get("memory", "0")))
        return {"cpu_percent": cpu * 100.0, "memory_bytes": mem_bytes,
                "memory_limit_bytes": limit}

    def ping(self) -> bool:
        try:
            self.version_api.get_code(_request_timeout=5)
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return False
        return True

    def describe(self) -> BackendHealth:
        """Reachable or not, nodes and allocatable CPU/memory/GPUs (needs `list nodes`, a
        ClusterRole; without it, reachable with no nodes and a message saying so)."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.utils import parse_quantity

        try:
            version = self.version_api.get_code(_request_timeout=5).git_version or ""
        except Exception as exc:  # noqa: BLE001 - describe reports, it does not fail
            return BackendHealth(reachable=False, message=f"the API server does not answer: "
                                                          f"{exc}")
        try:
            warnings = self.isolation_warnings()
        except Exception as exc:  # noqa: BLE001 - reported, the API server still answers
            warnings = [f"Could not check the namespace's NetworkPolicies: {exc}"]
        try:
            nodes = self.core.list_node(_request_timeout=self.request_timeout_s).items
        except ApiException as exc:
            return BackendHealth(reachable=True, version=version, warnings=warnings,
                                 message=f"cannot list nodes ({exc.status} {exc.reason}); "
                                         "grant the modelport-nodes ClusterRole to see capacity")
        out = []
        for node in nodes:
            alloc = node.status.allocatable or {}
            ready = next((c.status for c in node.status.conditions or [] if c.type == "Ready"),
                         "Unknown")
            roles = sorted(k.rsplit("/", 1)[-1] for k in (node.metadata.labels or {})
                           if k.startswith("node-role.kubernetes.io/"))
            gpus = alloc.get(self.gpu_resource)
            out.append(NodeInfo(
                name=node.metadata.name, role=",".join(roles) or "worker",
                state="ready" if ready == "True" else "not-ready",
                available=ready == "True" and not (node.spec and node.spec.unschedulable),
                cpu=float(parse_quantity(alloc.get("cpu", "0"))),
                memory_mb=int(parse_quantity(alloc.get("memory", "0")) / (1024 * 1024)),
                gpus=int(parse_quantity(gpus)) if gpus is not None else 0))
        return BackendHealth(reachable=True, nodes=out, version=version, warnings=warnings)

    # --- helpers ----------------------------------------------------------------------------
    def _state(self, pod: Any) -> ReplicaState:
        return pod_state(pod, url_mode=self.url_mode, namespace=self.namespace,
                         cluster_domain=self.cluster_domain)

    def _get(self, replica_id: str) -> Any | None:
        pod = self._read(self.core.read_namespaced_pod, replica_id)
        labels = (pod.metadata.labels or {}) if pod is not None else {}
        if pod is None or labels.get(LABEL_MANAGED) != "1":
            return None  # never touch pods Modelport does not manage
        if labels.get(LABEL_INSTALLATION, "") != self.installation:
            return None  # nor another installation's (nor, scoped, one from before ids)
        return pod

    def _list_pods(self, selector: str) -> list[Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return list(self.core.list_namespaced_pod(
                self.namespace, label_selector=selector,
                _request_timeout=self.request_timeout_s).items)
        except ApiException as exc:
            raise self._error("listing pods", exc) from exc

    def _read(self, call: Any, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return call(name, self.namespace, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(f"reading {name}", exc) from exc

    def _create_if_missing(self, call: Any, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            call(self.namespace, body, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(f"creating {body['kind']} {body['metadata']['name']}",
                                  exc) from exc

    def _delete(self, call: Any, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            call(name, self.namespace, propagation_policy="Background",
                 _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"deleting {name}", exc) from exc

    def _error(self, what: str, exc: Any) -> ReplicaRuntimeError:
        detail = exc.reason
        try:
            import json

            detail = json.loads(exc.body or "{}").get("message") or detail
        except (ValueError, AttributeError):
            pass
        return ReplicaRuntimeError(f"{what} in namespace {self.namespace} failed: "
                                   f"{exc.status} {detail}")

