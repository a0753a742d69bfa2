"""A failed version validated again (Retry: API, portal button, CLI).

A version whose validation could not run — the sandbox, the image build of its environment,
Docker — keeps its staged upload for ``MODELPORT_FAILED_UPLOAD_KEEP_DAYS`` days, and Retry
validates it again from there (once the platform's side is fixed: packages allowed, an index
reachable, Docker up). An import from MLflow is downloaded again. A version whose model itself
failed (it does not load, fails on its input example, names refused requirements) keeps nothing:
it is registered again with a new upload. Beat removes kept uploads past their time, and staging
folders no version refers to (a deleted model's, an interrupted upload's), every hour.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict
from teams import audit
from teams.access import require_team_role
from teams.roles import Role

from . import archives, services
from .models import ModelVersion, VersionStatus

UNREFERENCED_AFTER = timedelta(days=1)  # an upload being staged has its version within seconds


def kept_upload(version: ModelVersion) -> Path | None:
    """The failed version's staged upload, when it is still kept."""
    if not version.staging_dir:
        return None
    staging = Path(version.staging_dir)
    return staging if (staging / "input" / "job.json").is_file() else None


def retryable(version: ModelVersion) -> bool:
    """Whether Retry can validate this version again."""
    return version.status == VersionStatus.FAILED and (
        version.source_format == "import" or kept_upload(version) is not None)


@transaction.atomic
def retry_version(*, actor, version: ModelVersion) -> ModelVersion:
    """Validate a failed version again: ``pending``, then the worker's validation as for a new
    upload. Engineers and above; audited."""
    require_team_role(actor, version.model.team, Role.ENGINEER, "retrying versions")
    locked = (ModelVersion.objects.select_for_update(of=("self",))
              .select_related("model__team").get(pk=version.pk))
    name = f"'{locked.model.name}' v{locked.version}"
    if locked.status != VersionStatus.FAILED:
        raise Conflict(f"{name} is {locked.status}; only a failed version can be validated "
                       "again.", code="not_failed")
    staging = kept_upload(locked)
    if staging is None and locked.source_format != "import":
        raise Conflict(
            f"{name} cannot be validated again: its upload is not kept (a version keeps it only "
            "when validation could not run, for "
            f"{settings.MODELPORT_FAILED_UPLOAD_KEEP_DAYS} day(s)). Register the model again "
            f"with the file: POST /api/v1/models/{locked.model.name}/versions/.",
            code="upload_gone")
    if staging is None:  # an import: downloaded again from the tracking server
        staging = services._staging_root() / uuid.uuid4().hex
        (staging / "input").mkdir(parents=True)
    before = {"status": locked.status, "status_message": locked.status_message[:500]}
    message = "Retry requested: waiting for a worker to validate it again."
    ModelVersion.objects.filter(pk=locked.pk).update(
        status=VersionStatus.PENDING, progress=0, status_message=message,
        staging_dir=str(staging))
    locked.refresh_from_db()
    audit.record(actor=actor, action="version.retried", obj=locked, team=locked.model.team,
                 before=before, after={"status": locked.status, "source": locked.source})
    pk = locked.pk
    transaction.on_commit(lambda: services._enqueue_validation(pk))
    return locked


def prune_staging() -> int:
    """Remove kept uploads of failed versions past ``MODELPORT_FAILED_UPLOAD_KEEP_DAYS`` and
    staging folders no version refers to; how many were removed."""
    now = timezone.now()
    removed = 0
    expired = (ModelVersion.objects.filter(
        status=VersionStatus.FAILED,
        validated_at__lt=now - timedelta(days=settings.MODELPORT_FAILED_UPLOAD_KEEP_DAYS))
        .exclude(staging_dir=""))
    for version in expired:
        archives.remove_tree(Path(version.staging_dir))
        ModelVersion.objects.filter(pk=version.pk).update(staging_dir="")
        removed += 1
    root = Path(settings.MODELPORT_DATA_DIR) / "staging"
    if not root.is_dir():
        return removed
    referenced = {str(Path(p)) for p in ModelVersion.objects.exclude(staging_dir="")
                  .values_list("staging_dir", flat=True)}
    cutoff = (now - UNREFERENCED_AFTER).timestamp()
    for child in root.iterdir():
        if str(child) not in referenced and child.stat().st_mtime < cutoff:
            archives.remove_tree(child)
            removed += 1
    return removed
