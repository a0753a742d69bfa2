"""NetworkPolicies for model pods on Kubernetes: only the platform reaches a replica, and a
replica reaches only DNS and the platform's ingest — unless a platform admin granted the
deployment egress.

One ``networking.k8s.io/v1`` NetworkPolicy per revision (named like the revision's other
objects, ``mp-<deployment>-r<n>``) selects that revision's pods:

* **ingress** on the serving port (8080/TCP) only from the platform's pods — pods matching
  ``client_pods`` in ``platform_namespace`` (the shipped manifests label the web and reconciler
  pods ``modelport.replica-client: "true"``: the edge and gateway call replicas, the reconciler
  probes ``/ready``), plus ``platform_cidrs`` for a platform outside the cluster. Not from other
  model pods, not from the same revision's other pods.
* **egress** only to the cluster DNS (``dns_namespace``/``dns_pods``, UDP and TCP 53) and the
  platform's ingest (``ingest_pods`` in ``platform_namespace`` on ``ingest_port``, where
  ``MODELPORT_INGEST_URL`` points); with ``spec.egress`` anywhere.

Kubernetes always lets the node a pod runs on reach it (the kubelet's probes), and a pod always
reaches itself. The policies are additive with the namespace default-deny that
``platform/kubernetes/networkpolicy.yaml`` ships. What a NetworkPolicy does not do (a CNI that
ignores them, host-network pods on the same node) the replica key still covers: a replica
answers only requests carrying it (``core/replica_keys.py``).

Created (or brought up to date) before the revision's Deployment, so no pod of it ever runs
unfenced; deleted with the revision's other objects once none of its pods is left (a
terminating pod still runs model code). ``NetworkPolicies.sync_network_policies`` — run by
``list_replicas()`` over the whole namespace at most once a minute — adds the policy of a
revision started before policies existed, follows a change of the target's settings, and
deletes policies whose revision is gone (found gone by two sweeps in a row). It never grants
egress and never overrides a concurrent start: only ``start_replica``, which knows what the
platform admin decided, is authoritative.

Builders return plain dicts, no Django: what is built is what the schema tests validate.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_REPLICA,
    LABEL_REVISION,
    ReplicaRuntimeError,
    ReplicaSpec,
)
from .kube_names import (
    ANN_DEPLOYMENT,
    ANN_MODEL,
    ANN_MODEL_VERSION,
    label_selector,
    object_annotations,
    object_labels,
    object_name,
    revision_object_name,
    scope_selector,
    selector_labels,
)

log = logging.getLogger(__name__)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
CLIENT_LABEL = "modelport.replica-client"  # on the platform pods that call replicas
ANN_EGRESS = "modelport.egress"  # on a revision's policy: "true" when egress was granted

DEFAULT_PLATFORM_NAMESPACE = "modelport"
DEFAULT_CLIENT_PODS = {CLIENT_LABEL: "true"}
DEFAULT_INGEST_PODS = {"app.kubernetes.io/name": "modelport",
                       "app.kubernetes.io/component": "web"}
DEFAULT_INGEST_PORT = 8000
DEFAULT_DNS_NAMESPACE = "kube-system"
DEFAULT_DNS_PODS = {"k8s-app": "kube-dns"}  # CoreDNS keeps kube-dns's label
SYNC_EVERY_S = 60.0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class PolicyPeers:
    """Who a model pod may talk to: the ``network_policy`` setting of a kubernetes target.

    The defaults match ``platform/kubernetes``: the platform in namespace ``modelport``, its web
    and reconciler pods labelled ``modelport.replica-client: "true"``, the ingest on the web
    pods' port 8000, CoreDNS/kube-dns in ``kube-system``."""

    platform_namespace: str = DEFAULT_PLATFORM_NAMESPACE
    client_pods: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CLIENT_PODS))
    ingest_pods: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_INGEST_PODS))
    ingest_port: int = DEFAULT_INGEST_PORT
    platform_cidrs: tuple[str, ...] = ()
    dns_namespace: str = DEFAULT_DNS_NAMESPACE
    dns_pods: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_DNS_PODS))
    dns_cidrs: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, raw: PolicyPeers | Mapping[str, Any] | None) -> PolicyPeers:
        """From a target's ``settings.network_policy`` (missing keys keep their default).
        ValueError naming the key on anything else."""
        if raw is None:
            return cls()
        if isinstance(raw, PolicyPeers):
            return raw
        if not isinstance(raw, Mapping):
            raise ValueError("network_policy must be an object, e.g. "
                             '{"platform_namespace": "modelport"}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"network_policy has unknown key(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for key in ("platform_namespace", "dns_namespace"):
            if key in raw:
                values[key] = _namespace(key, raw[key])
        for key in ("client_pods", "ingest_pods", "dns_pods"):
            if key in raw:
                values[key] = _selector(key, raw[key])
        if "ingest_port" in raw:
            port = raw["ingest_port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError("network_policy.ingest_port is a port number (1-65535)")
            values["ingest_port"] = port
        for key in ("platform_cidrs", "dns_cidrs"):
            if key in raw:
                values[key] = _cidrs(key, raw[key])
        return cls(**values)


def _namespace(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise ValueError(f"network_policy.{key} is a namespace name (a DNS label)")
    return value


def _selector(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"network_policy.{key} is a label selector: an object of label: value")
    for name, text in value.items():
        if not isinstance(name, str) or not valid_label_key(name):
            raise ValueError(f"network_policy.{key}: {name!r} is not a valid label key")
        if not isinstance(text, str) or not _LABEL_VALUE.match(text):
            raise ValueError(f"network_policy.{key}: {text!r} is not a valid label value")
    return dict(value)


def _cidrs(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"network_policy.{key} is a list of CIDRs, e.g. [\"192.0.2.0/24\"]")
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise ValueError(f"network_policy.{key}: {item!r} is not a CIDR") from None
    return tuple(out)


def valid_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(name))


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a matchLabels selector selects these labels (an empty one selects all)."""
    return all(labels.get(k) == v for k, v in selector.items())


def admits_model_pods(peers: PolicyPeers, *, namespace: str,
                      pod_labels: Mapping[str, str]) -> bool:
    """Whether model pods with these labels in ``namespace`` would count as platform clients —
    then the policy would let model pods call each other, so the runtime refuses it."""
    return namespace == peers.platform_namespace and selects(peers.client_pods, pod_labels)


def _peer(namespace: str, pods: Mapping[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
            "podSelector": {"matchLabels": dict(pods)}}


def _blocks(cidrs: Iterable[str]) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": c}} for c in cidrs]


def _policy(*, name: str, namespace: str, pod_selector: Mapping[str, str],
            labels: Mapping[str, str], annotations: Mapping[str, str], egress: bool,
            peers: PolicyPeers, port: int) -> dict[str, Any]:
    ingress = [{"from": [_peer(peers.platform_namespace, peers.client_pods),
                         *_blocks(peers.platform_cidrs)],
                "ports": [{"protocol": "TCP", "port": int(port)}]}]
    if egress:
        outbound: list[dict[str, Any]] = [{}]  # one empty rule: every destination
    else:
        outbound = [
            {"to": [_peer(peers.dns_namespace, peers.dns_pods), *_blocks(peers.dns_cidrs)],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"to": [_peer(peers.platform_namespace, peers.ingest_pods),
                    *_blocks(peers.platform_cidrs)],
             "ports": [{"protocol": "TCP", "port": int(peers.ingest_port)}]},
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                     "annotations": {**annotations, ANN_EGRESS: "true" if egress else "false"}},
        "spec": {"podSelector": {"matchLabels": dict(pod_selector)},
                 "policyTypes": ["Ingress", "Egress"],
                 "ingress": ingress, "egress": outbound},
    }


def build_network_policy(spec: ReplicaSpec, *, namespace: str, peers: PolicyPeers, port: int,
                         extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The revision's NetworkPolicy: labelled like its other objects, selecting its pods,
    egress as ``spec.egress`` says (see the module docstring for what it allows)."""
    return _policy(name=object_name(spec),
                   namespace=namespace, pod_selector=selector_labels(spec),
                   labels=object_labels(spec, extra_labels),
                   annotations=object_annotations(spec), egress=spec.egress, peers=peers,
                   port=port)


def policy_from_metadata(labels: Mapping[str, str], annotations: Mapping[str, str], *,
                         namespace: str, peers: PolicyPeers, port: int,
                         egress: bool) -> dict[str, Any] | None:
    """The policy of the revision a pod (or a Deployment's pod template) belongs to, from its
    labels and annotations; None for an object that names no revision."""
    deployment, revision = labels.get(LABEL_DEPLOYMENT), labels.get(LABEL_REVISION, "")
    if labels.get(LABEL_MANAGED) != "1" or not deployment or not revision.isdigit():
        return None
    kept = (ANN_DEPLOYMENT, ANN_MODEL, ANN_MODEL_VERSION)
    installation = labels.get(LABEL_INSTALLATION, "")
    selector = {LABEL_MANAGED: "1", LABEL_DEPLOYMENT: deployment, LABEL_REVISION: revision}
    if installation:
        selector[LABEL_INSTALLATION] = installation
    return _policy(name=revision_object_name(annotations.get(ANN_DEPLOYMENT) or deployment,
                                             int(revision), installation),
                   namespace=namespace,
                   pod_selector=selector,
                   labels={k: v for k, v in labels.items()
                           if k not in (LABEL_REPLICA, "pod-template-hash")},
                   annotations={k: annotations[k] for k in kept if k in annotations},
                   egress=egress, peers=peers, port=port)


# The SDK is imported inside the methods that talk to the API server: compute/targets.py imports
# this module (for PolicyPeers) in every Django process, and `import kubernetes` takes ~0.7 s.
# (API server, namespace, installation) -> last sweep
_synced: dict[tuple[str, str, str], float] = {}
_orphans: dict[tuple[str, str, str], dict[str, str]] = {}  # -> policies orphaned then


class NetworkPolicies:
    """The per-revision NetworkPolicies of ``KubernetesRuntime`` (a mixin: it uses the runtime's
    API clients and ``kube_api.KubeApi``'s ``_read``, ``_list_pods``, ``_delete`` and ``_error``,
    which come before this class in the runtime's bases)."""

    namespace: str
    installation: str
    policy_peers: PolicyPeers
    extra_labels: dict[str, str]
    container_port: int
    request_timeout_s: float
    api_client: Any
    apps: Any
    networking: Any

    def network_policy_for(self, spec: ReplicaSpec) -> dict[str, Any]:
        """The revision's policy; refused when the target's ``client_pods`` would count the
        model pods themselves as the platform (they could then call each other)."""
        if admits_model_pods(self.policy_peers, namespace=self.namespace,
                             pod_labels=object_labels(spec, self.extra_labels)):
            raise ReplicaRuntimeError(
                f"network_policy.client_pods {dict(self.policy_peers.client_pods)} selects the "
                f"model pods themselves in namespace {self.namespace}: label the platform's "
                "pods with a label model pods do not carry")
        return build_network_policy(spec, namespace=self.namespace, peers=self.policy_peers,
                                    port=self.container_port, extra_labels=self.extra_labels)

    def _ensure_policy(self, spec: ReplicaSpec) -> None:
        self._apply_policy(self.network_policy_for(spec))

    def _apply_policy(self, body: dict[str, Any]) -> None:
        """Create the policy, or replace it when its rules differ (guarded by resourceVersion:
        a concurrent writer makes it re-read and retry)."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - SDK import cost (note above)

        name = body["metadata"]["name"]
        for _attempt in range(5):
            current = self._read(self.networking.read_namespaced_network_policy, name)
            try:
                self._write_policy(current, body)
                return
            except ApiException as exc:
                if exc.status not in (404, 409):  # 404/409: changed under us, read again
                    raise self._error(f"writing network policy {name}", exc) from exc
        raise ReplicaRuntimeError(f"network policy {name} kept changing under us; try again")

    def _write_policy(self, current: Any | None, body: dict[str, Any]) -> None:
        """Create the policy, or replace ``current`` when it differs (ApiException on a race)."""
        if current is None:
            self.networking.create_namespaced_network_policy(
                self.namespace, body, _request_timeout=self.request_timeout_s)
        elif not self._same_policy(current, body):
            meta = {**body["metadata"], "resourceVersion": current.metadata.resource_version}
            self.networking.replace_namespaced_network_policy(
                body["metadata"]["name"], self.namespace, {**body, "metadata": meta},
                _request_timeout=self.request_timeout_s)

    def _same_policy(self, current: Any, body: dict[str, Any]) -> bool:
        spec = self.api_client.sanitize_for_serialization(current.spec)
        annotations = current.metadata.annotations or {}
        return spec == body["spec"] and \
            annotations.get(ANN_EGRESS) == body["metadata"]["annotations"][ANN_EGRESS]

    def _retire_policy(self, name: str) -> None:
        """Delete a revision's policy once none of its pods is left, terminating ones included
        (they still run model code); otherwise the sweep deletes it later."""
        policy = self._read(self.networking.read_namespaced_network_policy, name)
        if policy is None:
            return
        selector = policy.spec.pod_selector.match_labels if policy.spec and \
            policy.spec.pod_selector else None
        if not selector or self._list_pods(label_selector(selector)):
            return
        self._delete(self.networking.delete_namespaced_network_policy, name)

    def sync_network_policies(self) -> None:
        """Bring the namespace's policies in line with its revisions: one per revision that has
        a Deployment or pods (missing ones added without egress, existing ones keeping theirs,
        rules following the target's settings), none for revisions that are gone.

        It yields to ``start_replica``, which is authoritative: a create that meets an existing
        policy or a replace that meets a newer version is dropped, and a policy is deleted only
        when two sweeps (a minute or more apart) found it orphaned at the same version — a
        revision being started in between has its Deployment by then."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - SDK import cost (note above)

        managed = scope_selector(self.installation)  # this installation's objects only
        try:
            policies = self.networking.list_namespaced_network_policy(
                self.namespace, label_selector=managed,
                _request_timeout=self.request_timeout_s).items
            deployments = self.apps.list_namespaced_deployment(
                self.namespace, label_selector=managed,
                _request_timeout=self.request_timeout_s).items
        except ApiException as exc:
            raise self._error("listing network policies and deployments", exc) from exc
        pods = self._list_pods(managed)
        existing = {p.metadata.name: p for p in policies}
        wanted: dict[str, dict[str, Any]] = {}
        metas = [d.spec.template.metadata for d in deployments if d.spec and d.spec.template]
        for meta in [*metas, *(p.metadata for p in pods)]:
            labels, annotations = dict(meta.labels or {}), dict(meta.annotations or {})
            if admits_model_pods(self.policy_peers, namespace=self.namespace,
                                 pod_labels=labels):
                raise ReplicaRuntimeError(f"network_policy.client_pods selects model pods in "
                                          f"namespace {self.namespace}")
            body = policy_from_metadata(labels, annotations, namespace=self.namespace,
                                        peers=self.policy_peers, port=self.container_port,
                                        egress=False)
            if body is None or body["metadata"]["name"] in wanted:
                continue
            name = body["metadata"]["name"]
            current = existing.get(name)
            if current is not None and _granted(current):
                body = policy_from_metadata(labels, annotations, namespace=self.namespace,
                                            peers=self.policy_peers, port=self.container_port,
                                            egress=True)
                assert body is not None
            wanted[name] = body
        for name, body in wanted.items():
            current = existing.get(name)
            try:
                self._write_policy(current, body)
            except ApiException as exc:
                if exc.status not in (404, 409):  # written meanwhile: that writer decided
                    raise self._error(f"writing network policy {name}", exc) from exc
        self._delete_orphans({name: existing[name].metadata.resource_version
                              for name in set(existing) - set(wanted)})

    def _delete_orphans(self, orphans: dict[str, str]) -> None:
        """Delete the policies that were orphaned at the same version in the previous sweep
        too (the delete carries that version as a precondition)."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - SDK import cost (note above)

        key = (str(self.api_client.configuration.host), self.namespace, self.installation)
        before = _orphans.get(key, {})
        for name, version in sorted(orphans.items()):
            if before.get(name) != version:
                continue
            try:
                self.networking.delete_namespaced_network_policy(
                    name, self.namespace, body={"preconditions": {"resourceVersion": version}},
                    _request_timeout=self.request_timeout_s)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise self._error(f"deleting network policy {name}", exc) from exc
        _orphans[key] = {n: v for n, v in orphans.items() if before.get(n) != v}

    def isolation_warnings(self) -> list[str]:
        """What the target's health should say: no default-deny policy in the namespace (pods
        not selected by a revision's policy — not labelled yet, or started by hand — would be
        open), or policies the runtime may not read."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - SDK import cost (note above)

        try:
            policies = self.networking.list_namespaced_network_policy(
                self.namespace, _request_timeout=self.request_timeout_s).items
        except ApiException as exc:
            return [f"Cannot list NetworkPolicies in namespace {self.namespace} ({exc.status} "
                    f"{exc.reason}): the runtime's Role needs networkpolicies (get, list, "
                    "create, update, delete) to fence model pods in."]
        for policy in policies:
            spec = policy.spec
            if spec is None or spec.pod_selector is None:
                continue
            selector = spec.pod_selector
            if not selector.match_labels and not selector.match_expressions and \
                    {"Ingress", "Egress"} <= set(spec.policy_types or []) and \
                    not spec.ingress and not spec.egress:
                return []
        return [f"Namespace {self.namespace} has no default-deny NetworkPolicy: each revision's "
                "policy fences its own pods, but a pod the runtime has not labelled yet or one "
                "started there by hand is open. Apply platform/kubernetes/networkpolicy.yaml "
                "(and use a CNI that enforces NetworkPolicies)."]

    def _sweep_policies(self) -> None:
        """``sync_network_policies`` at most every SYNC_EVERY_S per namespace and process; a
        failure is logged, never raised (listing replicas must not fail for it)."""
        key = (str(self.api_client.configuration.host), self.namespace, self.installation)
        now = time.monotonic()
        if now - _synced.get(key, -SYNC_EVERY_S) < SYNC_EVERY_S:
            return
        _synced[key] = now
        try:
            self.sync_network_policies()
        except ReplicaRuntimeError as exc:
            log.warning("network policies of namespace %s not synced: %s", self.namespace, exc)

    # Provided by kube_api.KubeApi (before this class in KubernetesRuntime's bases).
    def _read(self, call: Any, name: str) -> Any | None:
        raise NotImplementedError

    def _list_pods(self, selector: str) -> list[Any]:
        raise NotImplementedError

    def _delete(self, call: Any, name: str) -> None:
        raise NotImplementedError

    def _error(self, what: str, exc: Any) -> ReplicaRuntimeError:
        raise NotImplementedError


def _granted(policy: Any) -> bool:
    """Whether a policy found in the cluster allows egress (only start_replica grants it)."""
    return (policy.metadata.annotations or {}).get(ANN_EGRESS) == "true"
