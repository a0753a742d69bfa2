"""Bring models in from the MLflow tracking server: ``runs:/…``/``models:/…`` imports and the
listing the periodic sync reads.

Everything goes to the server over ``mlflow_upstream`` (its REST and artifact APIs), never
through MLflow's Python client: the client would resolve the model registry from this process's
environment (issue 24: ``models:/`` imports failing against a stray ``./mlflow.db``) and would
read whatever a run's artifact location says, local files included. Here an artifact is fetched
only from the server's own artifact store (``mlflow-artifacts:/``), file by file, streamed to
disk, within the archive limits uploads have. Downloading and reading metadata execute no model
code; loading still happens only in the sandbox, through the same validation as uploads.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings

from core.errors import InvalidInput

from . import archives, mlflow_upstream
from .mlflow_upstream import MlflowError, Unavailable

SOURCE_PATTERN = re.compile(
    r"^(?:runs:/(?P<run_id>[0-9a-zA-Z]{8,64})/(?P<path>[\w./-]+)"
    r"|models:/(?P<model_id>m-[0-9a-zA-Z]{8,64})"
    r"|models:/(?P<name>[^/\s]{1,200})/(?P<ref>\d+|@?[\w-]{1,100})"
    r"|mlflow-artifacts:/(?P<store>[\w][\w./-]{0,500}))$")
OWN_STORE = "modelport-registry/"  # Modelport's own versions (mlflow_registry_api): not imports
_STORE_RUN = re.compile(r"^[^/]+/(?P<run>[0-9a-zA-Z]{8,64})/artifacts(?:/|$)")
GIT_COMMIT_TAG = "mlflow.source.git.commit"
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
STORE_SCHEME = "mlflow-artifacts:"
PAGE = 1000
MAX_DEPTH = 20


@dataclass
class Download:
    model_dir: Path
    run_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


class ImportFailed(RuntimeError):
    """The tracking server could not give us the model (unreachable, unknown run, …)."""


def check_source(source: str) -> str:
    source = (source or "").strip()
    if not SOURCE_PATTERN.match(source):
        raise InvalidInput("source must be 'runs:/<run_id>/<artifact path>', "
                           "'models:/<logged model id>', 'models:/<name>/<version>' or "
                           "'mlflow-artifacts:/<path>'.", field="source")
    if source.startswith("mlflow-artifacts:/" + OWN_STORE):
        raise InvalidInput("That is a Modelport version already: nothing to import.",
                           field="source")
    return source


# --- Resolving a source to a folder of the server's artifact store ------------------------------
def _store_path(uri: str, what: str) -> str:
    """``mlflow-artifacts:/1/abc/artifacts`` → ``1/abc/artifacts``; anything else is refused."""
    if not uri.startswith(STORE_SCHEME) or uri.startswith(STORE_SCHEME + "//"):
        raise ImportFailed(f"{what} is stored at {uri!r}, outside the tracking server's "
                           "artifact store; only mlflow-artifacts:/ locations are imported.")
    path = uri[len(STORE_SCHEME):].lstrip("/")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ImportFailed(f"{what} has an unsafe artifact location {uri!r}.")
    return path


def _join(base: str, relative: str) -> str:
    relative = relative.strip("/")
    if not relative:
        return base
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise ImportFailed(f"unsafe artifact path {relative!r}")
    return posixpath.join(base, relative)


def _listing(path: str) -> list[dict[str, Any]]:
    body = mlflow_upstream.call("GET", ARTIFACTS, params={"path": path})
    files = body.get("files") or []
    return [entry for entry in files if isinstance(entry, dict)]


def _logged_model_path(model_id: str) -> str:
    body = mlflow_upstream.call("GET", f"{API}/logged-models/{quote(model_id, safe='')}")
    info = (body.get("model") or {}).get("info") or {}
    return _store_path(str(info.get("artifact_uri") or ""), f"logged model {model_id}")


def _run_model_path(run: dict[str, Any], run_id: str, relative: str) -> str:
    """Where ``runs:/<run>/<relative>`` lives: the run's own artifacts, else (MLflow 3) the
    logged model of that name whose source run it is."""
    info = run.get("info") or {}
    run_root = _store_path(str(info.get("artifact_uri") or ""), f"run {run_id}")
    candidate = _join(run_root, relative)
    if _listing(candidate):
        return candidate
    name, _, rest = relative.strip("/").partition("/")
    token = None
    while True:
        body = mlflow_upstream.call("POST", f"{API}/logged-models/search", json={
            "experiment_ids": [str(info.get("experiment_id") or "0")],
            "filter": f"name = '{name}'", "max_results": 100,
            **({"page_token": token} if token else {})})
        for model in body.get("models") or []:
            model_info = model.get("info") or {}
            if model_info.get("source_run_id") == run_id:
                return _join(_logged_model_path(str(model_info.get("model_id"))), rest)
        token = body.get("next_page_token")
        if not token:
            return candidate  # nothing there: the download says so


def _version_model_path(name: str, version: str) -> str:
    body = mlflow_upstream.call("GET", f"{API}/model-versions/get-download-uri",
                                params={"name": name, "version": version})
    uri = str(body.get("artifact_uri") or "")
    if uri.startswith("models:/m-"):
        return _logged_model_path(uri[len("models:/"):].split("/", 1)[0])
    return _store_path(uri, f"models:/{name}/{version}")


def _download_tree(path: str, target: Path) -> None:
    """Stream every file under ``path`` into ``target``, within the upload archive limits."""
    max_members = settings.MODELPORT_ARCHIVE_MAX_MEMBERS
    max_bytes = settings.MODELPORT_ARCHIVE_MAX_MB * 1048576
    members, total = 0, 0
    pending: list[tuple[str, Path, int]] = [(path, target, 0)]
    while pending:
        remote, local, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ImportFailed(f"{remote} is nested more than {MAX_DEPTH} folders deep.")
        local.mkdir(parents=True, exist_ok=True)
        for entry in _listing(remote):
            name = posixpath.basename(str(entry.get("path") or ""))
            if name in ("", ".", "..") or "\\" in name or "\x00" in name:
                raise ImportFailed(f"unsafe file name in {remote}: {entry.get('path')!r}")
            members += 1
            if members > max_members:
                raise ImportFailed(f"the model has more than {max_members} files "
                                   "(MODELPORT_ARCHIVE_MAX_MEMBERS).")
            if entry.get("is_dir"):
                pending.append((posixpath.join(remote, name), local / name, depth + 1))
                continue
            with mlflow_upstream.stream("GET", f"{ARTIFACTS}/{quote(posixpath.join(remote, name))}"
                                        ) as response, (local / name).open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ImportFailed(f"the model is larger than {max_bytes // 1048576} MB "
                                           "(MODELPORT_ARCHIVE_MAX_MB).")
                    out.write(chunk)
    if members == 0:
        raise ImportFailed(f"no files at {path} in the tracking server's artifact store.")


# --- Run metadata ----------------------------------------------------------------------------
def _pairs(items: Any) -> dict[str, Any]:
    return {str(item.get("key")): item.get("value") for item in items or []
            if isinstance(item, dict) and item.get("key") is not None}


def _run_lineage(run: dict[str, Any], run_id: str) -> tuple[dict, dict, dict]:
    if not run:
        return {}, {}, {}
    info, data = run.get("info") or {}, run.get("data") or {}
    tags = _pairs(data.get("tags"))
    lineage = {"mlflow_run_id": run_id,
               "mlflow_experiment_id": str(info.get("experiment_id") or "")}
    if tags.get(GIT_COMMIT_TAG):
        lineage["git_commit"] = tags[GIT_COMMIT_TAG]
    for tag in ("dataset_name", "dataset_hash"):
        if tags.get(tag):
            lineage[tag] = tags[tag]
    datasets = (run.get("inputs") or {}).get("dataset_inputs") or []
    if datasets and "dataset_name" not in lineage:
        dataset = datasets[0].get("dataset") or {}
        lineage["dataset_name"] = dataset.get("name", "")
        lineage["dataset_hash"] = dataset.get("digest", "")
    return _pairs(data.get("params")), _pairs(data.get("metrics")), lineage


def _get_run(run_id: str) -> dict[str, Any]:
    return mlflow_upstream.call("GET", f"{API}/runs/get", params={"run_id": run_id}).get(
        "run") or {}


def _registered_source(name: str, ref: str) -> tuple[str, str, dict[str, Any]]:
    """``models:/<name>/<version|@alias>`` in the tracking server's own registry (versions
    registered there before Modelport answered MLflow's registry API itself)."""
    if not ref.isdigit():
        ref = str((mlflow_upstream.call(
            "GET", f"{API}/registered-models/alias",
            params={"name": name, "alias": ref.lstrip("@")}).get("model_version")
            or {}).get("version") or "")
    version = mlflow_upstream.call("GET", f"{API}/model-versions/get", params={
        "name": name, "version": ref}).get("model_version") or {}
    return (_version_model_path(name, ref), str(version.get("run_id") or ""),
            {"mlflow_model": name, "mlflow_model_version": ref})


def _logged_model_source(model_id: str) -> tuple[str, str]:
    """``models:/m-…``: a logged model (MLflow 3's ``log_model``) and the run that logged it."""
    body = mlflow_upstream.call("GET", f"{API}/logged-models/{quote(model_id, safe='')}")
    info = (body.get("model") or {}).get("info") or {}
    return (_store_path(str(info.get("artifact_uri") or ""), f"logged model {model_id}"),
            str(info.get("source_run_id") or ""))


def download(source: str, dest: Path) -> Download:
    """Download ``source`` into ``dest`` and collect its run's params, metrics and lineage."""
    match = SOURCE_PATTERN.match(source)
    if match is None:
        raise ImportFailed(f"not an MLflow model URI: {source}")
    target = dest / "download"
    try:
        extra_lineage: dict[str, Any] = {}
        if match.group("name"):
            remote, run_id, extra_lineage = _registered_source(match["name"], match["ref"])
        elif match.group("model_id"):
            remote, run_id = _logged_model_source(match["model_id"])
            extra_lineage = {"mlflow_model_id": match["model_id"]}
        elif match.group("store"):
            remote = _store_path(source, source)
            found = _STORE_RUN.match(remote)
            run_id = found["run"] if found else ""
        else:
            run_id = match.group("run_id")
            remote = _run_model_path(_get_run(run_id), run_id, match.group("path"))
        run = _get_run(run_id) if run_id else {}
        _download_tree(remote, target)
        params, metrics, lineage = _run_lineage(run, run_id)
    except MlflowError as exc:
        raise ImportFailed(f"MLflow refused {source}: {exc.message}") from None
    except Unavailable as exc:
        raise ImportFailed(str(exc)) from None
    root = archives.find_model_root(target)
    model_dir = dest / "model"
    shutil.move(str(root), str(model_dir))
    shutil.rmtree(target, ignore_errors=True)
    return Download(model_dir=model_dir, run_id=run_id, params=params, metrics=metrics,
                    lineage={**lineage, **extra_lineage})


# --- What the sync reads ---------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteVersion:
    name: str
    version: str
    team_tag: str
    created_ms: int


def _paged(path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        body = mlflow_upstream.call("GET", path, params={
            **params, "max_results": PAGE, **({"page_token": token} if token else {})})
        found.extend(item for item in body.get(key) or [] if isinstance(item, dict))
        token = body.get("next_page_token")
        if not token:
            return found


def registered_versions() -> list[RemoteVersion]:
    """Every model version in the tracking server's registry, with its ``modelport.team`` tag
    (the version's own, else its registered model's). Prompts are not models: left out."""
    models = {m.get("name"): _pairs(m.get("tags"))
              for m in _paged(f"{API}/registered-models/search", "registered_models", {})}
    found: list[RemoteVersion] = []
    for version in _paged(f"{API}/model-versions/search", "model_versions", {}):
        name = str(version.get("name") or "")
        model_tags, tags = models.get(name, {}), _pairs(version.get("tags"))
        if "mlflow.prompt.is_prompt" in model_tags or "mlflow.prompt.is_prompt" in tags:
            continue
        found.append(RemoteVersion(
            name=name, version=str(version.get("version") or ""),
            team_tag=str(tags.get("modelport.team") or model_tags.get("modelport.team") or ""),
            created_ms=int(version.get("creation_timestamp") or 0)))
    return found
