"""A version's MLflow model directory on this machine, unpacked from artifact storage: what
deployment replicas and batch-job containers mount read-only (moved here from
``deployments.revisions`` so that ``jobs`` uses it without importing its sibling)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from . import storage
from .models import ModelVersion


def model_dir_for(version: ModelVersion) -> Path:
    """The version's MLflow model dir, unpacked once per artifact under the data dir and made
    world-readable (containers run as uid 10001 and mount it read-only)."""
    if not version.artifact_name:
        raise RuntimeError(f"{version} has no stored artifact.")
    # The path deployments always used: an installation's unpacked models stay where they are.
    root = Path(settings.MODELPORT_DATA_DIR) / "deployments" / "models"
    target = root / (version.artifact_sha256 or f"v{version.pk}")
    if (target / "MLmodel").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        storage.unpack_artifact(version.artifact_name, staging)
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.rename(staging, target)
        except OSError:  # a concurrent reconcile unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
