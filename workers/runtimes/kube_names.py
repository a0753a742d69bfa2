"""Names, labels and annotations of the Kubernetes runtime's objects (shared by the object
builders in ``kube_manifests.py`` and the NetworkPolicies in ``kube_policy.py``)."""

from __future__ import annotations

import hashlib
import re

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_REVISION,
    ReplicaSpec,
    short_id,
)

# Annotations (keys follow the same syntax as labels).
ANN_INDICES = "modelport.replica-indices"  # on the Deployment: "0,1,2"
ANN_DEPLOYMENT = "modelport.deployment-name"  # the unabridged names, on pods and objects
ANN_MODEL = "modelport.model-name"
ANN_MODEL_VERSION = "modelport.model-version-name"

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_DNS_BAD = re.compile(r"[^a-z0-9-]+")


# --- naming -------------------------------------------------------------------------------------
def label_value(text: str) -> str:
    """`text` as a valid label value (<= 63 chars, alphanumeric at both ends); a short hash is
    appended whenever characters had to be changed, so different names never collide."""
    clean = _LABEL_VALUE_BAD.sub("-", str(text)).strip("-_.")
    if clean == text and len(clean) <= 63:
        return clean
    digest = hashlib.sha256(str(text).encode()).hexdigest()[:8]
    return f"{clean[:54].rstrip('-_.')}-{digest}".lstrip("-_.")


def revision_object_name(deployment: str, revision: int, installation: str = "") -> str:
    """DNS-1035 name of a revision's Deployment/Service/Secret/HPA/NetworkPolicy:
    ``mp-<installation[:8]>-<deployment>-r<n>`` (two installations may share a namespace and a
    deployment name), short enough (<= 52) that pod names keep their ReplicaSet hash and
    random suffix."""
    slug = _DNS_BAD.sub("-", deployment.lower()).strip("-") or "deployment"
    prefix = f"mp-{short_id(installation)}-" if installation else "mp-"
    name = f"{prefix}{slug}-r{int(revision)}"
    if len(name) <= 52 and slug == deployment:
        return name
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:6]
    tail = f"-{digest}-r{int(revision)}"
    return f"{prefix}{slug[:52 - len(prefix) - len(tail)].rstrip('-')}{tail}"


def object_name(spec: ReplicaSpec) -> str:
    """The name of the revision's objects ``spec`` belongs to."""
    return revision_object_name(spec.deployment, spec.revision, spec.installation)


def selector_labels(spec: ReplicaSpec) -> dict[str, str]:
    """What a revision's Deployment, Service and NetworkPolicy select: its pods, of its
    installation only."""
    labels = {LABEL_MANAGED: "1", LABEL_DEPLOYMENT: label_value(spec.deployment),
              LABEL_REVISION: str(int(spec.revision))}
    if spec.installation:
        labels[LABEL_INSTALLATION] = spec.installation
    return labels


def scope_selector(installation: str) -> str:
    """The label selector of every managed object of one installation (unscoped: of none —
    objects made before installation ids, which no scoped runtime lists)."""
    if installation:
        return f"{LABEL_MANAGED}=1,{LABEL_INSTALLATION}={installation}"
    return f"{LABEL_MANAGED}=1,!{LABEL_INSTALLATION}"


def object_labels(spec: ReplicaSpec, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Label keys are the caller's (valid keys); values are made valid label values."""
    labels = {k: label_value(v) for k, v in {**(extra or {}), **spec.labels}.items()}
    labels.update(selector_labels(spec))
    labels[LABEL_MODEL] = label_value(spec.model_name)
    labels[LABEL_MODEL_VERSION] = label_value(str(spec.model_version))
    return labels


def object_annotations(spec: ReplicaSpec) -> dict[str, str]:
    return {ANN_DEPLOYMENT: spec.deployment, ANN_MODEL: spec.model_name,
            ANN_MODEL_VERSION: str(spec.model_version)}


def label_selector(labels: dict[str, str]) -> str:
    """A matchLabels selector as the ``labelSelector`` query string."""
    return ",".join(f"{k}={v}" for k, v in labels.items())
