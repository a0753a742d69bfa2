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

The parts: ``kube_manifests.py`` builds the objects and reads pods back, ``kube_names.py`` names
and labels them, ``kube_policy.py`` fences them in, ``kube_images.py`` builds and pushes the
images, ``kube_api.py`` holds the shared API calls; this module is the runtime's lifecycle and
discovery. The SDK is imported at module level: this module is imported only when a kubernetes
target's runtime is built (``workers/factory.py`` imports it lazily).

No Django import: the runtime takes explicit constructor arguments.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_REPLICA,
    LABEL_REVISION,
    BackendHealth,
    NodeInfo,
    ReplicaRuntimeError,
    ReplicaSpec,
    ReplicaState,
    Runtime,
    missing_state,
)
from .batch import BatchRuntime
from .kube_api import KubeApi, load_client
from .kube_batch import KubeBatchRuntime
from .kube_images import KubeImages
from .kube_manifests import (
    CONTAINER_NAME,
    CONTAINER_PORT,
    Autoscaling,
    autoscaling_for,
    build_deployment,
    build_hpa,
    build_secret,
    build_service,
    format_indices,
    label_int,
    parse_indices,
    pod_state,
)
from .kube_names import (
    ANN_DEPLOYMENT,
    ANN_INDICES,
    label_selector,
    label_value,
    object_name,
    revision_object_name,
    scope_selector,
    selector_labels,
)
from .kube_policy import NetworkPolicies, PolicyPeers

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


# --- the runtime --------------------------------------------------------------------------------
class KubernetesRuntime(KubeApi, KubeImages, NetworkPolicies, Runtime):
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
                 registry_auth: dict[str, str] | None = None,
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
                 installation: str = "",
                 batch_data_claim: str = "",
                 batch_data_root: str = "/data") -> None:
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
        self.api_client = api_client or load_client(in_cluster, config_file, context)
        self.image_pull_secrets = [s for s in image_pull_secrets if s]
        self.registry = registry.rstrip("/") if registry else None
        self.registry_auth = registry_auth  # else the worker's `docker login`
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
        self.batch_data_claim = batch_data_claim
        self.batch_data_root = batch_data_root
        self._pushed: set[str] = set()
        self._model_digests: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling_api = client.AutoscalingV2Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.version_api = client.VersionApi(self.api_client)

    def batch_runtime(self) -> BatchRuntime:
        """Batch jobs on this target: Indexed Jobs (``kube_batch``), input and output on the
        PVC named by the target's ``batch_data_claim`` setting."""
        return KubeBatchRuntime.for_runtime(self, data_claim=self.batch_data_claim,
                                            data_root=self.batch_data_root)

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
        self._ensure_hpa(spec, autoscaling_for(spec, self.autoscaling))
        return self._pod_for_index(spec)

    def _upsert_secret(self, body: dict[str, Any]) -> None:
        """Create the revision's Secret, or refresh its values: pods started from now on get the
        latest ingest token (running pods keep theirs, which stays valid until revoked)."""
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
        replicas = len(indices)
        if adding and self._hpa(current.metadata.name) is not None:  # keep the pods it added
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

    def _ensure_hpa(self, spec: ReplicaSpec, autoscaling: Autoscaling | None) -> None:
        """The revision's HPA as ``autoscaling`` says: created, brought in line with the
        deployment's settings (bounds, CPU target) and the replicas asked for, or deleted when
        the deployment's own autoscaling no longer wants one (metric changed from cpu)."""
        name = object_name(spec)
        if autoscaling is None:
            if spec.autoscaling is not None:  # its own autoscaling, not by CPU: no HPA
                self._delete(self.autoscaling_api.delete_namespaced_horizontal_pod_autoscaler,
                             name)
            return
        current = self._read(self.apps.read_namespaced_deployment, name)
        floor = len(parse_indices((current.metadata.annotations or {}).get(ANN_INDICES))) \
            if current is not None else 1
        body = build_hpa(spec, autoscaling, namespace=self.namespace, min_replicas=floor,
                         extra_labels=self.extra_labels)
        existing = self._hpa(name)
        if existing is None:
            self._create_if_missing(
                self.autoscaling_api.create_namespaced_horizontal_pod_autoscaler, body)
            return
        wanted = body["spec"]
        metrics = [self.api_client.sanitize_for_serialization(m)
                   for m in existing.spec.metrics or []]
        if ((existing.spec.min_replicas or 1), existing.spec.max_replicas, metrics) != (
                wanted["minReplicas"], wanted["maxReplicas"], wanted["metrics"]):
            self._patch_hpa(name, {"spec": {k: wanted[k] for k in
                                            ("minReplicas", "maxReplicas", "metrics")}})

    def _hpa(self, name: str) -> Any:
        return self._read(self.autoscaling_api.read_namespaced_horizontal_pod_autoscaler, name)

    def _patch_hpa(self, name: str, body: dict[str, Any]) -> None:
        try:
            self.autoscaling_api.patch_namespaced_horizontal_pod_autoscaler(
                name, self.namespace, body, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"updating autoscaler {name}", exc) from exc

    def _set_hpa_floor(self, name: str, floor: int) -> None:
        """The HPA never goes below the replicas the reconciler asked for."""
        existing = self._hpa(name)
        if existing is None:
            return
        floor = max(1, floor)
        if (existing.spec.min_replicas or 1) != floor:
            self._patch_hpa(name, {"spec": {"minReplicas": floor, "maxReplicas": max(
                floor, int(existing.spec.max_replicas or floor))}})

    def _pod_for_index(self, spec: ReplicaSpec) -> ReplicaState:
        """The pod holding replica index `spec.replica`; else label the oldest pod of the
        revision that holds none; else wait for the ReplicaSet to create one."""
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
        pod = self._get(replica_id)
        if pod is None:
            return
        labels = pod.metadata.labels or {}
        annotations = pod.metadata.annotations or {}
        deployment = annotations.get(ANN_DEPLOYMENT) or labels.get(LABEL_DEPLOYMENT, "")
        name = revision_object_name(deployment, label_int(labels.get(LABEL_REVISION)),
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
        elif left:
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

    def _state(self, pod: Any) -> ReplicaState:
        return pod_state(pod, url_mode=self.url_mode, namespace=self.namespace,
                         cluster_domain=self.cluster_domain)
