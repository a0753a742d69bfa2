"""``Client``: a typed wrapper of Modelport's REST API v1."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from . import errors
from .config import load_config
from .jobs import JobsMixin

ProgressFn = Callable[[int, int], None]
JSON = dict[str, Any]
TERMINAL_VERSION = {"ready", "failed"}
TERMINAL_DEPLOYMENT = {"healthy", "failed", "stopped"}


class _ProgressFile:
    """A file-like object that reports how much of itself has been read."""

    def __init__(self, path: Path, progress: ProgressFn | None) -> None:
        self._file = path.open("rb")
        self._size = path.stat().st_size
        self._read = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._read += len(chunk)
        if self._progress:
            self._progress(self._read, self._size)
        return chunk

    # httpx sizes the multipart body from these, so uploads carry a Content-Length.
    def fileno(self) -> int:
        return self._file.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class Client(JobsMixin):
    """``Client(url, token)``; both default to ``MODELPORT_URL``/``MODELPORT_TOKEN`` or the
    file written by ``modelport login``."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        saved = load_config()
        self.url = (url or os.environ.get("MODELPORT_URL") or saved.get("url")
                    or "http://127.0.0.1:8000").rstrip("/")
        self.token = token or os.environ.get("MODELPORT_TOKEN") or saved.get("token")
        headers = {"Accept": "application/json", "User-Agent": "modelport-client/0.1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = path if path.startswith(("/serve/", "/healthz", "/readyz")) else f"/api/v1{path}"
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise errors.ModelportError(f"{method} {url} timed out: {exc}") from None
        except httpx.TransportError as exc:
            raise errors.ModelportError(f"cannot reach Modelport at {self.url}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise errors.from_response(response.status_code, body)
        return body

    def _all(self, path: str, params: dict[str, Any] | None = None) -> Iterator[JSON]:
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        page = self.request("GET", path, params=params)
        while True:
            if isinstance(page, list):
                yield from page
                return
            yield from page["results"]
            if not page.get("next"):
                return
            page = self.request("GET", page["next"].split("/api/v1", 1)[-1])

    # --- platform -----------------------------------------------------------------------------
    def info(self) -> JSON:
        return self.request("GET", "/info/")

    def create_token(self, username: str, password: str, *, name: str,
                     expires_in_days: int | None = None) -> JSON:
        """Obtain a token with a password (HTTP Basic, accepted only here)."""
        body: JSON = {"name": name}
        if expires_in_days:
            body["expires_in_days"] = expires_in_days
        return self.request("POST", "/tokens/", json=body, auth=(username, password),
                            headers={"Authorization": ""})

    def redeem_cli_login(self, code: str, code_verifier: str) -> JSON:
        """Trade the one-time code of ``modelport login --sso`` for a token (no credentials:
        the code and the PKCE verifier are the proof)."""
        return self.request("POST", "/cli-login/",
                            json={"code": code, "code_verifier": code_verifier},
                            headers={"Authorization": ""})

    def tokens(self) -> list[JSON]:
        return list(self._all("/tokens/"))

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/tokens/{token_id}/")

    def teams(self) -> list[JSON]:
        return list(self._all("/teams/"))

    # --- registry -----------------------------------------------------------------------------
    def models(self, *, team: str | None = None, tag: str | None = None,
               alias: str | None = None, search: str | None = None) -> list[JSON]:
        return list(self._all("/models/", {"team": team, "tag": tag, "alias": alias,
                                           "search": search}))

    def model(self, name: str) -> JSON:
        return self.request("GET", f"/models/{name}/")

    def create_model(self, *, name: str, team: str, description: str = "",
                     tags: list[str] | None = None, card: str = "") -> JSON:
        return self.request("POST", "/models/", json={"name": name, "team": team,
                                                      "description": description,
                                                      "tags": tags or [], "card": card})

    def versions(self, name: str) -> list[JSON]:
        return list(self._all(f"/models/{name}/versions/"))

    def version(self, name: str, version: int) -> JSON:
        return self.request("GET", f"/models/{name}/versions/{version}/")

    def register_version(self, name: str, path: str | os.PathLike[str] | None = None, *,
                         format: str | None = None, source: str | None = None,
                         input_example: Any = None,
                         reference_data: str | os.PathLike[str] | None = None,
                         description: str = "", metrics: dict | None = None,
                         params: dict | None = None, git_commit: str | None = None,
                         dataset_name: str | None = None,
                         progress: ProgressFn | None = None) -> JSON:
        """Upload a model file (``format`` mlflow or sklearn; None: the platform tells it from
        the file) or import ``source`` (``runs:/…``, ``models:/…``). Returns
        ``{"version", "status": "pending"}``."""
        if source:
            return self.request("POST", f"/models/{name}/versions/",
                                json={"source": source, "description": description})
        if path is None:
            raise errors.BadRequest("give a file path or a source")
        data: JSON = {"description": description}
        if format:
            data["format"] = format
        if input_example is not None:
            data["input_example"] = (input_example if isinstance(input_example, str)
                                     else json.dumps(input_example))
        for key, value in (("metrics", metrics), ("params", params)):
            if value:
                data[key] = json.dumps(value)
        for key, value in (("git_commit", git_commit), ("dataset_name", dataset_name)):
            if value:
                data[key] = value
        with contextlib.ExitStack() as stack:
            model_file = _ProgressFile(Path(path), progress)
            stack.callback(model_file.close)
            files: dict[str, Any] = {"file": (Path(path).name, model_file)}
            if reference_data:
                files["reference_data"] = (Path(reference_data).name,
                                           stack.enter_context(Path(reference_data).open("rb")))
            return self.request("POST", f"/models/{name}/versions/", data=data, files=files,
                                timeout=None)

    def version_events(self, name: str, version: int, *, since: int | None = None
                       ) -> list[JSON]:
        """The version's validation events after event id ``since`` (all pages), oldest first:
        ``{id, kind, progress, message, created_at}``; kind is step, log (lines of the image
        build or the sandbox's output), info, ready or failed."""
        return list(self._all(f"/models/{name}/versions/{version}/events/", {"since": since}))

    def wait_for_version(self, name: str, version: int, *, timeout: float = 600,
                         on_progress: Callable[[JSON], None] | None = None,
                         on_event: Callable[[JSON], None] | None = None,
                         since: int | None = None, interval: float = 1.0) -> JSON:
        """Poll until the version is ``ready`` (returned) or ``failed`` (raises
        OperationFailed with the reason and the last log lines). ``on_event`` hears each of its
        validation events as they arrive (steps, build and sandbox lines, the outcome), after
        event id ``since`` when given (a retry: this attempt's only)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.version(name, version)
            if on_event is not None:  # events are written before the status: none is missed
                for event in self.version_events(name, version, since=since):
                    on_event(event)
                    since = event["id"]
            if on_progress:
                on_progress(current)
            if current["status"] == "ready":
                return current
            if current["status"] == "failed":
                tail = current.get("log_tail") or []
                last = ("\nlast lines of its log:\n" + "\n".join(tail)) \
                    if tail and on_event is None else ""
                raise errors.OperationFailed(f"{name} v{version} failed: "
                                             f"{current['status_message']}{last}", body=current)
            if time.monotonic() > deadline:
                raise errors.TimeoutExpired(f"{name} v{version} is still {current['status']} "
                                            f"after {timeout:.0f}s")
            time.sleep(interval)

    def retry_version(self, name: str, version: int) -> JSON:
        """Validate a failed version again (``pending``; follow it with ``wait_for_version``).
        ``Conflict`` with code ``upload_gone`` when its upload is not kept: register it again."""
        return self.request("POST", f"/models/{name}/versions/{version}/retry/")

    def set_alias(self, name: str, alias: str, version: int, *, comment: str = "") -> JSON:
        return self.request("PUT", f"/models/{name}/aliases/{alias}/",
                            json={"version": version, "comment": comment})

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/models/{name}/aliases/{alias}/")

    def download_artifact(self, name: str, version: int, target: str | os.PathLike[str]) -> Path:
        path = Path(target)
        with self._http.stream("GET", f"/api/v1/models/{name}/versions/{version}/artifact/") \
                as response:
            if response.status_code >= 400:
                response.read()
                raise errors.from_response(response.status_code, response.json())
            with path.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return path

    # --- deployments ----------------------------------------------------------------------------
    def deployments(self, *, team: str | None = None, model: str | None = None) -> list[JSON]:
        return list(self._all("/deployments/", {"team": team, "model": model}))

    def deployment(self, name: str) -> JSON:
        return self.request("GET", f"/deployments/{name}/")

    def deploy(self, *, name: str, team: str, model: str, version: int | None = None,
               alias: str | None = None, replicas: int = 1, cpu: float = 1.0,
               memory_mb: int = 1024, gpus: int = 0, strategy: JSON | None = None,
               autoscaling: JSON | None = None) -> JSON:
        """``autoscaling``: ``{"min_replicas", "max_replicas", "metric", "target",
        "scale_down_delay_s", "idle_to_zero_after_s"}`` (only ``max_replicas`` required);
        ``replicas`` is then the count it starts with, held within the bounds."""
        body: JSON = {"name": name, "team": team, "model": model, "replicas": replicas,
                      "resources": {"cpu": cpu, "memory_mb": memory_mb, "gpus": gpus}}
        if version is not None:
            body["version"] = version
        if alias:
            body["alias"] = alias
        if strategy:
            body["strategy"] = strategy
        if autoscaling:
            body["autoscaling"] = autoscaling
        return self.request("POST", "/deployments/", json=body)

    def update_deployment(self, name: str, **changes: Any) -> JSON:
        return self.request("PATCH", f"/deployments/{name}/", json=changes)

    def set_autoscaling(self, name: str, autoscaling: JSON | None, *,
                        replicas: int | None = None) -> JSON:
        """Turn autoscaling on or change its settings (the whole object), or off with None
        (the count stays). Never a new revision: nothing restarts."""
        body: JSON = {"autoscaling": autoscaling}
        if replicas is not None:
            body["replicas"] = replicas
        return self.request("PATCH", f"/deployments/{name}/", json=body)

    def wait_until_healthy(self, name: str, *, timeout: float = 300,
                           on_progress: Callable[[JSON], None] | None = None,
                           interval: float = 1.0) -> JSON:
        deadline = time.monotonic() + timeout
        while True:
            current = self.deployment(name)
            if on_progress:
                on_progress(current)
            if current["status"] in ("healthy", "idle"):  # idle: the next request wakes it
                return current
            if current["status"] in ("failed", "stopped"):
                raise errors.OperationFailed(f"deployment {name} is {current['status']}: "
                                             f"{current.get('status_message', '')}",
                                             body=current)
            if time.monotonic() > deadline:
                raise errors.TimeoutExpired(f"deployment {name} is still {current['status']} "
                                            f"after {timeout:.0f}s")
            time.sleep(interval)

    def rollback(self, name: str, revision: int | None = None) -> JSON:
        body = {"revision": revision} if revision else {}
        return self.request("POST", f"/deployments/{name}/rollback/", json=body)

    def promote(self, name: str, strategy: JSON | None = None) -> JSON:
        """End a shadow by rolling its version out for real, as a new revision with
        ``strategy`` (default rolling; not shadow). ``Conflict`` (code ``no_shadow``) when
        nothing shadows."""
        body = {"strategy": strategy} if strategy else {}
        return self.request("POST", f"/deployments/{name}/promote/", json=body)

    def discard(self, name: str) -> JSON:
        """End a shadow without promoting it: back to the serving revision's spec.
        ``Conflict`` (code ``no_shadow``) when nothing shadows."""
        return self.request("POST", f"/deployments/{name}/discard/")

    def retry(self, name: str) -> JSON:
        """Re-run a failed deployment's current revision. ``Conflict`` with code
        ``nothing_to_retry`` (nothing failed) or ``stopped`` (start it instead)."""
        return self.request("POST", f"/deployments/{name}/retry/")

    def stop(self, name: str) -> JSON:
        return self.request("POST", f"/deployments/{name}/stop/")

    def start(self, name: str) -> JSON:
        return self.request("POST", f"/deployments/{name}/start/")

    def delete_deployment(self, name: str) -> None:
        self.request("DELETE", f"/deployments/{name}/")

    def events(self, name: str) -> list[JSON]:
        return list(self._all(f"/deployments/{name}/events/"))

    def logs(self, name: str, *, replica: str | None = None, tail: int = 200) -> Any:
        return self.request("GET", f"/deployments/{name}/logs/",
                            params={k: v for k, v in {"replica": replica, "tail": tail}.items()
                                    if v is not None})

    def predict(self, name: str, payload: Any, *, content_type: str = "application/json",
                route_key: str | None = None) -> Any:
        headers = {"Content-Type": content_type}
        if route_key:
            headers["X-Modelport-Route-Key"] = route_key
        content = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.request("POST", f"/serve/{name}/invocations", content=content,
                            headers=headers)

    def metrics(self, name: str, **window: Any) -> JSON:
        return self.request("GET", f"/deployments/{name}/metrics/", params=window)

    # --- consumer keys (for the services that call a model) --------------------------------------
    def consumer_keys(self, *, team: str | None = None, deployment: str | None = None,
                      status: str | None = None) -> list[JSON]:
        return list(self._all("/consumer-keys/", {"team": team, "deployment": deployment,
                                                  "status": status}))

    def create_consumer_key(self, *, team: str, name: str, deployments: list[str],
                            rate_per_s: float | None = None, burst: int | None = None,
                            expires_at: str | None = None) -> JSON:
        """A key for one calling service, usable only at ``/serve/`` of ``deployments``;
        the answer's ``secret`` is shown this once."""
        body: JSON = {"team": team, "name": name, "deployments": deployments}
        if rate_per_s is not None:
            body["rate_limit"] = {"per_second": rate_per_s, "burst": burst}
        elif burst is not None:
            raise errors.BadRequest("a burst needs a rate (rate_per_s)")
        if expires_at:
            body["expires_at"] = expires_at
        return self.request("POST", "/consumer-keys/", json=body)

    def update_consumer_key(self, key_id: str, *, deployments: list[str] | None = None,
                            rate_limit: Any = ...) -> JSON:
        """Change a key's deployments or ``rate_limit`` (``{"per_second", "burst"}``; None
        lifts the limit); the secret never changes."""
        body: JSON = {}
        if deployments is not None:
            body["deployments"] = deployments
        if rate_limit is not ...:
            body["rate_limit"] = rate_limit
        return self.request("PATCH", f"/consumer-keys/{key_id}/", json=body)

    def revoke_consumer_key(self, key_id: str) -> JSON:
        return self.request("POST", f"/consumer-keys/{key_id}/revoke/")

    def callers(self, name: str, *, window: str = "24h") -> JSON:
        """Per consumer key: requests, 429s and last seen on deployment ``name``."""
        return self.request("GET", f"/deployments/{name}/callers/", params={"window": window})

    # --- quotas -----------------------------------------------------------------------------------
    def quota(self, team: str) -> JSON:
        return self.request("GET", f"/teams/{team}/quota/")

    def request_resources(self, *, team: str, justification: str, cpu: float | None = None,
                          memory_mb: int | None = None, gpus: int | None = None,
                          gpu_model: str | None = None, expires_at: str | None = None) -> JSON:
        body = {"team": team, "justification": justification, "cpu": cpu,
                "memory_mb": memory_mb, "gpus": gpus, "gpu_model": gpu_model,
                "expires_at": expires_at}
        return self.request("POST", "/resource-requests/",
                            json={k: v for k, v in body.items() if v is not None})

    def resource_requests(self, *, team: str | None = None,
                          status: str | None = None) -> list[JSON]:
        return list(self._all("/resource-requests/", {"team": team, "status": status}))
