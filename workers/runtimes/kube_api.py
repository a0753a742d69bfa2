"""The Kubernetes API calls every part of ``KubernetesRuntime`` shares: credentials, reading,
listing, creating and deleting namespaced objects, and turning an ``ApiException`` into a
``ReplicaRuntimeError`` that names the namespace and the API server's message.

A mixin of ``KubernetesRuntime`` (it also provides what ``kube_policy.NetworkPolicies`` calls).
Imported only with the runtime (``workers/factory.py`` imports it lazily), so the SDK is
imported at module level here. No Django import.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .base import LABEL_INSTALLATION, LABEL_MANAGED, ReplicaRuntimeError


def load_client(in_cluster: bool, config_file: str | None, context: str | None) -> Any:
    """An ``ApiClient`` from in-cluster credentials or a kubeconfig (see ``KubernetesRuntime``)."""
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


class KubeApi:
    """Namespaced reads, lists, creates and deletes, scoped to this installation's objects."""

    namespace: str
    installation: str
    request_timeout_s: float
    core: Any

    def _get(self, replica_id: str) -> Any | None:
        pod = self._read(self.core.read_namespaced_pod, replica_id)
        labels = (pod.metadata.labels or {}) if pod is not None else {}
        if pod is None or labels.get(LABEL_MANAGED) != "1":
            return None  # never touch pods Modelport does not manage
        if labels.get(LABEL_INSTALLATION, "") != self.installation:
            return None  # nor another installation's (nor, scoped, one from before ids)
        return pod

    def _list_pods(self, selector: str) -> list[Any]:
        try:
            return list(self.core.list_namespaced_pod(
                self.namespace, label_selector=selector,
                _request_timeout=self.request_timeout_s).items)
        except ApiException as exc:
            raise self._error("listing pods", exc) from exc

    def _read(self, call: Any, name: str) -> Any | None:
        try:
            return call(name, self.namespace, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(f"reading {name}", exc) from exc

    def _create_if_missing(self, call: Any, body: dict[str, Any]) -> None:
        try:
            call(self.namespace, body, _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(f"creating {body['kind']} {body['metadata']['name']}",
                                  exc) from exc

    def _delete(self, call: Any, name: str) -> None:
        try:
            call(name, self.namespace, propagation_policy="Background",
                 _request_timeout=self.request_timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(f"deleting {name}", exc) from exc

    def _error(self, what: str, exc: Any) -> ReplicaRuntimeError:
        detail = exc.reason
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(exc.body or "{}").get("message") or detail
        return ReplicaRuntimeError(f"{what} in namespace {self.namespace} failed: "
                                   f"{exc.status} {detail}")
