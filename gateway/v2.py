"""The Open Inference Protocol (v2) paths of the gateway: ``/serve/<deployment>/v2/…``.

What a v2 path under a deployment means (the same for the edge and the Django path):

- ``/v2``, ``/v2/health/live``, ``/v2/health/ready`` (GET): the server metadata and health of a
  replica picked by the traffic split;
- ``/v2/models/<model>`` (GET: metadata), ``…/ready`` (GET), ``…/infer`` (POST): ``<model>`` is
  the deployment's registered model name (what the replicas serve) or the deployment's own name
  — clients may type either; any other name is a 404;
- ``/v2/models/<model>/versions/<v>/…``: version ``<v>`` of the registered model. When one of
  the deployment's live revisions (ready replicas, not a shadow) serves it, the request goes to
  that revision's replicas, bypassing the traffic split; any other version is a 404.

Only ``infer`` is traffic: counted, logged by the replica and mirrored to a shadow revision like
``/invocations``. Refusals on v2 paths are ``{"error": message}``, the form v2 clients read.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import unquote

from .routes import Refusal, Route

INFER = "infer"


class Target:
    """A v2 request within a deployment: what it asks and of which model version."""

    __slots__ = ("action", "method", "model", "path", "version")

    def __init__(self, path: str, method: str, model: str | None = None,
                 version: str | None = None, action: str = "") -> None:
        self.path = path  # as sent, after /serve/<deployment>
        self.method = method  # the method it takes
        self.model = model  # None: a server-level path (/v2, /v2/health/*)
        self.version = version
        self.action = action  # "", "ready" or "infer"

    @property
    def traffic(self) -> bool:
        return self.action == INFER


class Upstream(NamedTuple):
    """Where a v2 request goes: the replica path, and the revision it is pinned to (0: the
    traffic split decides)."""

    path: bytes
    revision: int


_cache: dict[tuple[str, str], Target | Refusal] = {}
# Both memos are keyed by what clients send (``/v2/models/iris///``, ``ir%69s``, any name):
# bounded, and no path longer than any v2 client sends is parsed, so no caller can grow them.
MEMO_SIZE = 4096
MAX_PATH = 2048


def target(path: str, method: str) -> Target | Refusal:
    """The :class:`Target` of ``path`` (``/v2…``) for ``method``, or the refusal: 404 for a
    path the protocol does not have, 405 for the wrong method. Cached per path."""
    if len(path) > MAX_PATH:
        return Refusal(414, f"A v2 path is at most {MAX_PATH} characters.", "uri_too_long", {})
    key = (path, method)
    known = _cache.get(key)
    if known is None:
        known = _target(path, method)
        if len(_cache) > MEMO_SIZE:
            _cache.clear()
        _cache[key] = known
    return known


def _target(path: str, method: str) -> Target | Refusal:
    parts = path.rstrip("/").split("/")[2:]  # after "", "v2"
    found: Target | None = None
    if not parts or parts in (["health", "live"], ["health", "ready"]):
        found = Target(path, "GET")
    elif parts[0] == "models" and len(parts) >= 2 and parts[1]:
        model, rest = unquote(parts[1]), parts[2:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
            version, rest = unquote(rest[1]), rest[2:]
        if not rest:
            found = Target(path, "GET", model, version, "")
        elif rest == ["ready"]:
            found = Target(path, "GET", model, version, "ready")
        elif rest == [INFER]:
            found = Target(path, "POST", model, version, INFER)
    if found is None:
        return Refusal(404, f"No Open Inference Protocol endpoint {path}; see "
                            "docs/serving.md.", "not_found", {})
    if method != found.method:
        return Refusal(405, f"Method {method} not allowed on {path}; use {found.method}.",
                       "method_not_allowed", {"Allow": found.method})
    return found


def upstream(route: Route, name: str, found: Target) -> Upstream | Refusal:
    """The replica path for ``found`` under ``route`` (deployment ``name``), or a 404 —
    remembered on the route (a new routing table is a new ``Route``)."""
    key = (name, found.path)
    known = route.v2_paths.get(key)
    if known is None:
        if len(route.v2_paths) > MEMO_SIZE:
            route.v2_paths.clear()
        known = route.v2_paths[key] = _upstream(route, name, found)
    return known  # type: ignore[return-value]  # only _upstream's answers are stored


def _upstream(route: Route, name: str, found: Target) -> Upstream | Refusal:
    if found.model is None:
        return Upstream(found.path.encode(), 0)
    if found.model not in (route.model, name) or not route.model:
        return Refusal(404, f"Deployment '{name}' serves model '{route.model}', not "
                            f"'{found.model}'.", "not_found", {})
    revision = 0
    path = f"/v2/models/{route.model}"
    if found.version is not None:
        revision = route.served.get(found.version, 0)
        if not revision:
            live = ", ".join(sorted(route.served, key=_number)) or "none"
            return Refusal(404, f"Deployment '{name}' serves no version '{found.version}' of "
                                f"model '{route.model}' right now (live versions: {live}).",
                           "not_found", {})
        path += f"/versions/{found.version}"
    if found.action:
        path += f"/{found.action}"
    return Upstream(path.encode(), revision)


def shadow_path(route: Route) -> str:
    """Where a mirrored v2 inference goes on the shadow's replicas (no version: the shadow
    serves its own)."""
    return f"/v2/models/{route.model}/infer"


def _number(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def refusal_body(refusal: Refusal) -> dict[str, Any]:
    return {"error": refusal.detail}
