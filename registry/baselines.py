"""Services of the drift baseline: reference data is checked in the request, kept, and parsed
and profiled by a worker.

A reference CSV of 100,000 columns tied a web worker for 73 s (1,000,000: no answer in 200 s).
Now a request only checks what is cheap — size, format, the CSV header line's or Parquet
footer's column count against ``MODELPORT_REFERENCE_MAX_COLUMNS`` (``reference.check_upload``) —
stores the file under ``MODELPORT_DATA_DIR/references/`` and enqueues ``compute_reference``
(``registry.tasks.compute_reference``, after commit). The version's ``reference_status`` tells
where it is: ``pending``, then ``ready`` (``reference_stats`` replaced, drift uses it from then
on) or ``failed`` with the reason in ``reference_message`` (the previous baseline, or the input
example's, stays in use).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from core import queue, uploads
from core.errors import InvalidInput
from teams import audit
from teams.access import require_team_role
from teams.roles import Role

from . import reference
from .models import ModelVersion, ReferenceStatus


def _root() -> Path:
    root = Path(settings.MODELPORT_DATA_DIR) / "references"
    root.mkdir(parents=True, exist_ok=True)
    return root


def check_upload(upload: UploadedFile, field: str = "reference_data") -> str:
    """The checks a request can afford: size, format and column count. ``csv`` or
    ``parquet``; an ``InvalidInput`` (400) or ``UploadTooLarge`` (413) naming the limit."""
    if upload.size is not None and upload.size > uploads.limit_bytes():
        raise uploads.too_large(upload.size, field)
    try:
        return reference.check_upload(upload, upload.name or "",
                                      max_columns=settings.MODELPORT_REFERENCE_MAX_COLUMNS)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field=field) from None


def keep(upload: UploadedFile, fmt: str) -> str:
    """Store an uploaded reference for the profiling task; its path (the format is its
    suffix). Whoever takes a path off a version deletes the file."""
    target = _root() / f"{uuid.uuid4().hex}.{fmt}"
    upload.seek(0)
    with target.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return str(target)


def pending_fields(path: str, example: dict[str, Any] | None) -> dict[str, Any]:
    """A new version's reference fields: the kept file (or else the input example) waits for
    the profiling task; with neither there is nothing to profile."""
    if path:
        return {"reference_status": ReferenceStatus.PENDING, "reference_file": path,
                "reference_message": "Waiting for a worker to profile reference_data."}
    if example:
        return {"reference_status": ReferenceStatus.PENDING,
                "reference_message": "Waiting for a worker to profile the input example."}
    return {}


def enqueue(version_id: int) -> None:
    queue.task("registry.tasks.compute_reference").delay(version_id)


@transaction.atomic
def replace_reference(*, actor, version: ModelVersion,
                      upload: UploadedFile | None) -> ModelVersion:
    """Keep a new baseline for ``version`` and have a worker profile it: ``pending`` until
    then, the old baseline in use meanwhile (and if the new one cannot be read)."""
    require_team_role(actor, version.model.team, Role.ENGINEER, "replacing reference data")
    if upload is None:
        raise InvalidInput("Attach a CSV or Parquet file as 'file'.", field="file")
    fmt = check_upload(upload, "file")
    path = keep(upload, fmt)
    try:
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        previous = locked.reference_file
        ModelVersion.objects.filter(pk=version.pk).update(
            reference_status=ReferenceStatus.PENDING, reference_file=path,
            reference_message="Waiting for a worker to profile reference_data.")
        version.refresh_from_db()
        audit.record(actor=actor, action="version.reference_replaced", obj=version,
                     team=version.model.team,
                     before={"source": (locked.reference_stats or {}).get("source"),
                             "status": locked.reference_state},
                     after={"source": "reference_data", "file": upload.name, "format": fmt,
                            "status": ReferenceStatus.PENDING})
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    if previous:  # an upload not profiled yet: superseded, its task will find nothing to do
        transaction.on_commit(lambda: Path(previous).unlink(missing_ok=True))
    transaction.on_commit(lambda: enqueue(version.pk))
    return version


def compute_reference(*, version_id: int) -> ModelVersion | None:
    """Profile a version's pending reference (in the worker): the kept file, else the input
    example. ``ready`` with the statistics, or ``failed`` with the reason. Idempotent: a retry,
    or a task whose upload was superseded meanwhile, changes nothing."""
    version = ModelVersion.objects.select_related("model__team").filter(pk=version_id).first()
    if version is None or version.reference_status != ReferenceStatus.PENDING:
        return version
    path = version.reference_file
    limit = settings.MODELPORT_REFERENCE_MAX_COLUMNS
    fields: dict[str, Any]
    stats: dict[str, Any] | None
    try:
        if path:
            frame = reference.frame_from_file(Path(path), Path(path).suffix.lstrip("."),
                                              max_columns=limit)
            stats = reference.compute(frame, source="reference_data")
        else:
            stats = example_stats(version.input_example, limit)
        if stats is None:
            fields = {"reference_status": ReferenceStatus.NONE,
                      "reference_message": "The input example has no rows to profile."}
        else:
            fields = {"reference_status": ReferenceStatus.READY, "reference_stats": stats,
                      "reference_message": f"Profiled {stats['rows']} rows, "
                                           f"{len(stats['features'])} features "
                                           f"({stats['source'].replace('_', ' ')})."}
    except (InvalidInput, FileNotFoundError) as exc:
        reason = exc.message if isinstance(exc, InvalidInput) else (
            "The uploaded reference data is gone (was the data directory cleaned?); upload it "
            "again.")
        fallback = version.reference_stats or example_stats(version.input_example, limit)
        kept = (f" The baseline stays the {fallback['source'].replace('_', ' ')}."
                if fallback else " There is no baseline: drift cannot be computed.")
        fields = {"reference_status": ReferenceStatus.FAILED, "reference_stats": fallback,
                  "reference_message": (reason + kept)[:4000]}
    with transaction.atomic():
        done = ModelVersion.objects.filter(
            pk=version.pk, reference_status=ReferenceStatus.PENDING,
            reference_file=path).update(reference_file="", **fields)
        if done:
            version.refresh_from_db()
            audit.record(actor=None, action=f"version.reference_{version.reference_status}",
                         obj=version, team=version.model.team,
                         after={"status": version.reference_status,
                                "message": version.reference_message[:500]})
    if path and done:
        Path(path).unlink(missing_ok=True)
    return version


def example_stats(example: Any, limit: int) -> dict[str, Any] | None:
    """The input example's statistics: the baseline when there is no reference data."""
    frame = reference.frame_from_request(example) if example else None
    if frame is None or frame.empty or frame.shape[1] > limit:
        return None
    return reference.compute(frame, source="input_example")
