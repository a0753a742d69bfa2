"""The Kubernetes runtime's objects as plain dicts (what is sent is what the schema tests
validate): the pod template (environment, hardening, resources, probes), the revision's
Deployment, Service, Secret and HorizontalPodAutoscaler, the replica-index annotation, and
``pod_state``, which reads a pod the API returns as the runtime's ``ReplicaState``.

No Kubernetes SDK and no Django import: ``kubernetes.py`` sends these, the tests validate them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_REPLICA,
    LABEL_REVISION,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    gpu_env,
)
from .kube_names import (
    ANN_DEPLOYMENT,
    ANN_INDICES,
    ANN_MODEL,
    ANN_MODEL_VERSION,
    object_annotations,
    object_labels,
    object_name,
    revision_object_name,
    selector_labels,
)

CONTAINER_NAME = "model"
CONTAINER_PORT = 8080
MODEL_PATH = "/model"
RUN_AS = 10001
TMP_SIZE = "64Mi"

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
    """An optional HorizontalPodAutoscaler per revision (autoscaling/v2, CPU utilization):
    the target's setting for every deployment, or a deployment's own ``autoscaling`` with
    metric "cpu" (``autoscaling_for``).

    With it, Kubernetes may add pods beyond the replicas Modelport asked for; those pods get no
    replica index, so the reconciler neither counts nor removes them, and they only receive
    traffic through the revision's Service: use ``url_mode="service"`` with autoscaling. The
    HPA's floor is the larger of ``min_replicas`` and the replicas Modelport asked for (the
    platform's scaler moves those)."""

    max_replicas: int
    cpu_utilization: int = 70
    min_replicas: int = 1


def autoscaling_for(spec: ReplicaSpec, default: Autoscaling | None) -> Autoscaling | None:
    """The HPA a revision gets: for a deployment with its own autoscaling, one when its metric
    is "cpu" (averageUtilization = its target) and none for "concurrency" or "rps" (an HPA
    would need a custom-metrics adapter for those: the platform's scaler drives the count);
    for a deployment without, the target's ``default``."""
    hint = spec.autoscaling
    if hint is None:
        return default
    if hint.metric != "cpu":
        return None
    return Autoscaling(max_replicas=hint.max_replicas, min_replicas=hint.min_replicas,
                       cpu_utilization=max(1, min(100, round(hint.target))))


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
        **gpu_env(spec, pinned=False),  # the device plugin picks the devices
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
    """``min_replicas``: the replicas Modelport asked for (the HPA never goes below them)."""
    name = object_name(spec)
    floor = max(1, int(min_replicas), int(autoscaling.min_replicas))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": object_labels(spec, extra_labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": floor,
            "maxReplicas": max(floor, int(autoscaling.max_replicas)),
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
                                    label_int(labels.get(LABEL_REVISION)),
                                    labels.get(LABEL_INSTALLATION, ""))
        url: str | None = f"http://{name}.{namespace}.svc.{cluster_domain}:{CONTAINER_PORT}"
    else:
        url = f"http://{status.pod_ip}:{CONTAINER_PORT}" if status.pod_ip else None
    started = running.started_at if running is not None else (
        terminated.started_at if terminated is not None else status.start_time)
    return ReplicaState(
        id=meta.name,
        deployment=annotations.get(ANN_DEPLOYMENT) or labels.get(LABEL_DEPLOYMENT, ""),
        revision=label_int(labels.get(LABEL_REVISION)),
        replica=label_int(labels.get(LABEL_REPLICA)),
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


def label_int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _aware(value: datetime | None) -> datetime | None:
    return value if isinstance(value, datetime) else None
