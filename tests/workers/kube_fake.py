"""An in-process fake of the few Kubernetes API endpoints the Kubernetes runtime calls.

NOT a cluster: no scheduler, no kubelet, no containers. A small HTTP server on 127.0.0.1 that
speaks the REST paths and status codes of the real API server for apps/v1 Deployments,
v1 Services/Secrets/Pods (list, read, patch, delete, log), autoscaling/v2 HPAs,
networking.k8s.io/v1 NetworkPolicies (list, read, create, replace, delete),
metrics.k8s.io pod metrics, nodes and /version; plus a minimal ReplicaSet controller (a
Deployment's ``spec.replicas`` pods exist, surplus ones go lowest pod-deletion-cost first) so
the runtime's pod handling can be exercised. Tests set pod statuses by hand (``set_status``).

The real ``kubernetes`` client talks to it through a ``Configuration`` whose host points here,
so what is asserted is the client's actual requests (paths, query strings, JSON bodies,
content types) and the runtime's reading of real-shaped responses.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
_ROUTES = [
    (re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$"), "deployments"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$"), "services"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?$"), "secrets"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$"), "pods"),
    (re.compile(r"^/apis/autoscaling/v2/namespaces/([^/]+)/horizontalpodautoscalers"
                r"(?:/([^/]+))?$"), "horizontalpodautoscalers"),
    (re.compile(r"^/apis/networking.k8s.io/v1/namespaces/([^/]+)/networkpolicies"
                r"(?:/([^/]+))?$"), "networkpolicies"),
]
_KINDS = {"deployments": ("apps/v1", "Deployment"), "services": ("v1", "Service"),
          "secrets": ("v1", "Secret"), "pods": ("v1", "Pod"),
          "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscaler"),
          "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy")}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge (what a strategic merge does for the maps the runtime patches)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if term.startswith("!"):  # "!key": the label is absent
            if term[1:] in labels:
                return False
            continue
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


class FakeKubeAPI:
    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in _KINDS}
        self.requests: list[dict[str, Any]] = []  # method, path, query, body, content_type
        self.logs: dict[tuple[str, bool], str] = {}  # (pod, previous) -> text
        self.metrics: dict[str, dict[str, Any]] = {}
        self.nodes: list[dict[str, Any]] = []
        self.conflict_once: set[tuple[str, str]] = set()  # (kind, name): next patch gets 409
        self.new_pod_status: dict[str, Any] | None = None  # status of pods created from now
        # Deleting a Deployment leaves its pods terminating (as a real cluster does for the
        # grace period) instead of removing them at once; finish_terminating() removes them.
        self.pods_linger = False
        self.forbidden: set[str] = set()  # kinds the caller's Role does not cover: 403
        self._rv = itertools.count(1)
        self._pod_seq = itertools.count(1)
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # --- test helpers ---------------------------------------------------------------------------
    def bodies(self, method: str, kind: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests
                if r["method"] == method and r["kind"] == kind and r["body"] is not None]

    def calls(self, method: str, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["kind"] == kind]

    def pods(self, namespace: str = "models") -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(p) for (ns, _), p in sorted(self.objects["pods"].items())
                    if ns == namespace]

    def get(self, kind: str, name: str, namespace: str = "models") -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects[kind].get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def set_status(self, pod: str, status: dict[str, Any], namespace: str = "models",
                   **metadata: Any) -> None:
        with self.lock:
            obj = self.objects["pods"][(namespace, pod)]
            obj["status"] = status
            merge(obj["metadata"], metadata)

    def add_pod(self, name: str, labels: dict[str, str], namespace: str = "models") -> None:
        """A pod nobody asked for (another tool's), to check the runtime leaves it alone."""
        with self.lock:
            self.objects["pods"][(namespace, name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels,
                             "uid": name, "resourceVersion": str(next(self._rv)),
                             "creationTimestamp": now()},
                "spec": {"containers": [{"name": "model", "image": "other"}]},
                "status": {"phase": "Running"}}

    def kill_pod(self, name: str, namespace: str = "models") -> None:
        """What `kubectl delete pod` does: the ReplicaSet replaces it with a new pod."""
        with self.lock:
            self.objects["pods"].pop((namespace, name), None)
            self.reconcile()

    def finish_terminating(self, namespace: str = "models") -> None:
        """The grace period is over: terminating pods are gone."""
        with self.lock:
            for key in [k for k, p in self.objects["pods"].items()
                        if k[0] == namespace and p["metadata"].get("deletionTimestamp")]:
                del self.objects["pods"][key]

    # --- the ReplicaSet controller --------------------------------------------------------------
    def reconcile(self) -> None:
        with self.lock:
            for (ns, name), dep in list(self.objects["deployments"].items()):
                want = int(dep["spec"].get("replicas", 1))
                sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"]
                               .items())
                pods = [p for (pns, _), p in self.objects["pods"].items()
                        if pns == ns and matches(p["metadata"].get("labels", {}), sel)
                        and not p["metadata"].get("deletionTimestamp")]
                while len(pods) < want:
                    pods.append(self._new_pod(ns, name, dep))
                if len(pods) > want:
                    def cost(p: dict[str, Any]) -> tuple[int, str]:
                        ann = p["metadata"].get("annotations") or {}
                        return (int(ann.get("controller.kubernetes.io/pod-deletion-cost", 0)),
                                p["metadata"]["creationTimestamp"])
                    for pod in sorted(pods, key=cost)[:len(pods) - want]:
                        self.objects["pods"].pop((ns, pod["metadata"]["name"]), None)

    def _new_pod(self, ns: str, dep_name: str, dep: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(dep["spec"]["template"])
        seq = next(self._pod_seq)
        name = f"{dep_name}-7d9f8c6b5-{seq:05d}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**template["metadata"], "name": name, "namespace": ns,
                            "uid": f"uid-{seq}", "resourceVersion": str(next(self._rv)),
                            "creationTimestamp": now(),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                 "name": f"{dep_name}-7d9f8c6b5",
                                                 "uid": "rs", "controller": True}]},
               "spec": template["spec"],
               "status": copy.deepcopy(self.new_pod_status) if self.new_pod_status else {
                   # scheduled, sandbox up (so an IP), image not pulled yet
                   "phase": "Pending", "podIP": f"192.0.2.{seq % 250 + 1}",
                   "conditions": [{"type": "PodScheduled", "status": "True"}]}}
        self.objects["pods"][(ns, name)] = pod
        return pod

    # --- HTTP -----------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def do_GET(self) -> None:
                api.dispatch(self, "GET")

            def do_POST(self) -> None:
                api.dispatch(self, "POST")

            def do_PATCH(self) -> None:
                api.dispatch(self, "PATCH")

            def do_PUT(self) -> None:
                api.dispatch(self, "PUT")

            def do_DELETE(self) -> None:
                api.dispatch(self, "DELETE")

        return Handler

    def dispatch(self, h: Any, method: str) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        ctype = h.headers.get("Content-Type", "")
        path = parts.path
        kind = ""
        for regex, k in _ROUTES:
            if regex.match(path) or (k == "pods" and path.endswith("/log")):
                kind = k
                break
        with self.lock:
            self.requests.append({"method": method, "path": path, "query": query, "body": body,
                                  "content_type": ctype, "kind": kind,
                                  "authorization": h.headers.get("Authorization", "")})
        if kind in self.forbidden:
            return h._status(403, "Forbidden", f"{kind} is forbidden: the service account "
                             "cannot do this in this namespace")
        if path in ("/version", "/version/"):  # the client asks for /version/
            return h._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.6-fake",
                                 "gitCommit": "0" * 40, "gitTreeState": "clean",
                                 "buildDate": "2026-10-01T00:00:00Z", "goVersion": "go1.22.8",
                                 "compiler": "gc", "platform": "linux/amd64"})
        if path == "/api/v1/nodes":
            return h._send(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                                 "items": self.nodes})
        m = re.match(r"^/apis/metrics.k8s.io/v1beta1/namespaces/([^/]+)/pods/([^/]+)$", path)
        if m:
            data = self.metrics.get(m.group(2))
            if data is None:
                return h._status(404, "NotFound", f'pods.metrics.k8s.io "{m.group(2)}" not found')
            return h._send(200, data)
        m = re.match(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$", path)
        if m:
            with self.lock:
                exists = (m.group(1), m.group(2)) in self.objects["pods"]
            if not exists:
                return h._status(404, "NotFound", f'pods "{m.group(2)}" not found')
            # Go's strconv.ParseBool, as the API server parses it (the client sends "True").
            previous = query.get("previous") in ("1", "t", "T", "true", "TRUE", "True")
            text = self.logs.get((m.group(2), previous))
            if text is None:
                return h._status(400, "BadRequest", "previous terminated container not found")
            tail = int(query.get("tailLines") or 0)
            lines = text.splitlines(keepends=True)
            return h._send(200, "".join(lines[-tail:] if tail else lines), "text/plain")
        for regex, k in _ROUTES:
            m = regex.match(path)
            if m:
                return self._crud(h, method, k, m.group(1), m.group(2), query, body, ctype)
        return h._status(404, "NotFound", f"the server could not find {path}")

    def _crud(self, h: Any, method: str, kind: str, ns: str, name: str | None,
              query: dict[str, str], body: Any, ctype: str) -> None:
        api_version, kind_name = _KINDS[kind]
        store = self.objects[kind]
        with self.lock:
            if name is None and method == "GET":
                items = [copy.deepcopy(o) for (ons, _), o in sorted(store.items())
                         if ons == ns and matches(o["metadata"].get("labels") or {},
                                                  query.get("labelSelector", ""))]
                return h._send(200, {"kind": f"{kind_name}List", "apiVersion": api_version,
                                     "metadata": {"resourceVersion": str(next(self._rv))},
                                     "items": items})
            if name is None and method == "POST":
                if body.get("kind") != kind_name or body.get("apiVersion") != api_version:
                    return h._status(400, "BadRequest", "kind/apiVersion do not match the path")
                obj_name = body["metadata"]["name"]
                if (ns, obj_name) in store:
                    return h._status(409, "AlreadyExists",
                                     f'{kind} "{obj_name}" already exists')
                obj = copy.deepcopy(body)
                obj["metadata"].update(namespace=ns, uid=f"uid-{obj_name}",
                                       resourceVersion=str(next(self._rv)),
                                       creationTimestamp=now())
                if kind == "secrets" and "stringData" in obj:
                    obj["data"] = {k: "(base64)" for k in obj.pop("stringData")}
                store[(ns, obj_name)] = obj
                self.reconcile()
                return h._send(201, obj)
            obj = store.get((ns, name or ""))
            if obj is None:
                return h._status(404, "NotFound", f'{kind} "{name}" not found')
            if method == "GET":
                return h._send(200, obj)
            if method == "DELETE":
                want_rv = ((body or {}).get("preconditions") or {}).get("resourceVersion")
                if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
                    return h._status(409, "Conflict", "Precondition failed: ResourceVersion "
                                     f"in precondition: {want_rv}, in object meta: "
                                     f"{obj['metadata']['resourceVersion']}")
                del store[(ns, name)]
                if kind == "deployments":
                    sel = obj["spec"]["selector"]["matchLabels"]
                    for key in [k for k, p in self.objects["pods"].items() if k[0] == ns and all(
                            p["metadata"].get("labels", {}).get(a) == b for a, b in sel.items())]:
                        if self.pods_linger:
                            self.objects["pods"][key]["metadata"]["deletionTimestamp"] = now()
                        else:
                            del self.objects["pods"][key]
                self.reconcile()  # a deleted pod of a Deployment is replaced
                return h._send(200, {"kind": "Status", "apiVersion": "v1",
                                     "status": "Success"})
            if method == "PUT":
                if body.get("kind") != kind_name or body.get("apiVersion") != api_version \
                        or body["metadata"].get("name") != name:
                    return h._status(400, "BadRequest", "kind/apiVersion/name do not match")
                want_rv = body["metadata"].get("resourceVersion")
                if want_rv is None:
                    return h._status(422, "Invalid", "metadata.resourceVersion: must be "
                                     "specified for an update")
                if want_rv != obj["metadata"]["resourceVersion"]:
                    return h._status(409, "Conflict", "the object has been modified; please "
                                     "apply your changes to the latest version and try again")
                kept = {k: obj["metadata"][k] for k in ("namespace", "uid",
                                                         "creationTimestamp")}
                replaced = copy.deepcopy(body)
                replaced["metadata"].update(kept, resourceVersion=str(next(self._rv)))
                store[(ns, name)] = replaced
                return h._send(200, replaced)
            if method == "PATCH":
                if ctype not in PATCH_TYPES or not isinstance(body, dict):
                    return h._status(415, "UnsupportedMediaType",
                                     f"the body of the request was in an unknown format "
                                     f"({ctype}) for a map patch")
                if (kind, name) in self.conflict_once:
                    self.conflict_once.discard((kind, name))
                    obj["metadata"]["resourceVersion"] = str(next(self._rv))
                want_rv = (body.get("metadata") or {}).get("resourceVersion")
                if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
                    return h._status(409, "Conflict", "the object has been modified; please "
                                     "apply your changes to the latest version and try again")
                merge(obj, body)
                if kind == "secrets" and "stringData" in obj:
                    obj.setdefault("data", {}).update(
                        {k: "(base64)" for k in obj.pop("stringData")})
                obj["metadata"]["resourceVersion"] = str(next(self._rv))
                self.reconcile()
                return h._send(200, obj)
        return h._status(405, "MethodNotAllowed", method)
