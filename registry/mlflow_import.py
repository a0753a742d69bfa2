"""Bring models in from an MLflow tracking server: ``runs:/…``/``models:/…`` imports and the
periodic sync that picks up versions a training script registered with stock ``mlflow``.

Downloading artifacts and reading run metadata execute no model code; loading still happens
only in the sandbox, through the same validation as uploads.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from config.errors import InvalidInput

from . import archives

SOURCE_PATTERN = re.compile(
    r"^(?:runs:/(?P<run_id>[0-9a-zA-Z]{8,64})/(?P<path>[\w./-]+)"
    r"|models:/(?P<name>[^/\s]{1,200})/(?P<ref>\d+|@?[\w-]{1,100}))$")
GIT_COMMIT_TAG = "mlflow.source.git.commit"


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
        raise InvalidInput("source must be 'runs:/<run_id>/<artifact path>' or "
                           "'models:/<name>/<version>'.", field="source")
    return source


def _client():
    from mlflow import MlflowClient

    uri = settings.MLFLOW_TRACKING_URI
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _run_lineage(client, run_id: str) -> tuple[dict, dict, dict]:
    if not run_id:
        return {}, {}, {}
    run = client.get_run(run_id)
    lineage = {"mlflow_run_id": run_id, "mlflow_experiment_id": run.info.experiment_id}
    commit = run.data.tags.get(GIT_COMMIT_TAG)
    if commit:
        lineage["git_commit"] = commit
    for tag in ("dataset_name", "dataset_hash"):
        if run.data.tags.get(tag):
            lineage[tag] = run.data.tags[tag]
    inputs = getattr(run, "inputs", None)
    datasets = getattr(inputs, "dataset_inputs", None) or []
    if datasets and "dataset_name" not in lineage:
        lineage["dataset_name"] = datasets[0].dataset.name
        lineage["dataset_hash"] = datasets[0].dataset.digest
    return dict(run.data.params), dict(run.data.metrics), lineage


def download(source: str, dest: Path) -> Download:
    """Download ``source`` into ``dest`` and collect its run's params, metrics and lineage."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = _client()
    match = SOURCE_PATTERN.match(source)
    if match is None:
        raise ImportFailed(f"not an MLflow model URI: {source}")
    try:
        run_id = match.group("run_id") or ""
        extra_lineage: dict[str, Any] = {}
        if match.group("name"):
            name, ref = match.group("name"), match.group("ref")
            version = (client.get_model_version_by_alias(name, ref.lstrip("@"))
                       if not ref.isdigit() else client.get_model_version(name, ref))
            run_id = version.run_id or ""
            extra_lineage = {"mlflow_model": name, "mlflow_model_version": str(version.version)}
        target = dest / "download"
        target.mkdir(parents=True, exist_ok=True)
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target),
            tracking_uri=settings.MLFLOW_TRACKING_URI))
        params, metrics, lineage = _run_lineage(client, run_id)
    except MlflowException as exc:
        raise ImportFailed(f"MLflow at {settings.MLFLOW_TRACKING_URI} refused {source}: "
                           f"{exc.message}") from None
    except OSError as exc:
        raise ImportFailed(f"MLflow at {settings.MLFLOW_TRACKING_URI} is unreachable: "
                           f"{exc}") from None
    root = archives.find_model_root(local if local.is_dir() else local.parent)
    model_dir = dest / "model"
    shutil.move(str(root), str(model_dir))
    shutil.rmtree(target, ignore_errors=True)
    return Download(model_dir=model_dir, run_id=run_id, params=params, metrics=metrics,
                    lineage={**lineage, **extra_lineage})


def tracking_server_answers(timeout: float = 2.0) -> bool:
    """A quick health check, so the periodic sync never waits on MLflow's client retries
    (up to minutes of backoff) when no tracking server runs."""
    import requests

    try:
        return requests.get(f"{settings.MLFLOW_TRACKING_URI.rstrip('/')}/health",
                            timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


@dataclass(frozen=True)
class RemoteVersion:
    name: str
    version: str
    team_tag: str


def registered_versions() -> list[RemoteVersion]:
    """Every model version in the tracking server's registry, with its ``modelport.team`` tag."""
    client = _client()
    found: list[RemoteVersion] = []
    for registered in client.search_registered_models(max_results=1000):
        team = (registered.tags or {}).get("modelport.team", "")
        for version in client.search_model_versions(f"name='{registered.name}'",
                                                    max_results=1000):
            found.append(RemoteVersion(name=registered.name, version=str(version.version),
                                       team_tag=(version.tags or {}).get("modelport.team",
                                                                         team)))
    return found
