"""Business operations of the model registry.

Uploads are checked and staged synchronously (size, archive safety, MLmodel, input example,
reference data) — any refusal leaves nothing behind. Loading the model happens later, in the
sandbox, from the ``validate_version`` task; only then is the artifact stored and the version
marked ``ready`` or ``failed``.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from core import queue, uploads
from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from teams import audit
from teams.access import require_team_role
from teams.models import Team
from teams.roles import Role, at_least, is_platform_admin
from workers.runtimes.images import ImageReport
from workers.runtimes.requirements import RequirementRefused, check_requirements

from . import archives, baselines, formats, mlmodel, progress, reference, sandbox, storage
from .mlflow_import import ImportFailed, check_source, download
from .models import (
    AliasTransitionRequest,
    ModelAlias,
    ModelVersion,
    ReferenceStatus,
    RegisteredModel,
    TransitionStatus,
    VersionStatus,
    alias_validator,
    name_validator,
)
from .signals import alias_moved

log = logging.getLogger(__name__)

MODEL_FIELDS = ["name", "team", "description", "card", "tags"]
FORMATS = formats.FORMATS
LINEAGE_KEYS = ("git_commit", "dataset_name", "dataset_hash", "mlflow_run_id", "training_job")


# --- Registered models ------------------------------------------------------------------------
def _validate_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 50
                                             for t in tags):
        raise InvalidInput("tags must be a list of strings of 1-50 characters.", field="tags")
    return sorted(set(tags))


@transaction.atomic
def create_model(*, actor, team: Team, name: str, description: str = "",
                 card: str = "", tags: list[str] | None = None) -> RegisteredModel:
    require_team_role(actor, team, Role.ENGINEER, "registering models")
    try:
        name_validator(name)
    except ValidationError as exc:
        raise InvalidInput(f"'{name}' is not a valid model name. {exc.messages[0]}",
                           field="name") from None
    tags = _validate_tags(tags)
    if RegisteredModel.objects.filter(name=name).exists():
        raise Conflict(f"A model named '{name}' already exists.", code="name_taken")
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(name=name, team=team, description=description,
                                                   card=card, tags=tags, created_by=actor)
    except IntegrityError:
        raise Conflict(f"A model named '{name}' already exists.", code="name_taken") from None
    audit.record(actor=actor, action="model.created", obj=model, team=team,
                 after=audit.snapshot(model, MODEL_FIELDS))
    return model


@transaction.atomic
def update_model(*, actor, model: RegisteredModel, description: str | None = None,
                 card: str | None = None, tags: list[str] | None = None) -> RegisteredModel:
    require_team_role(actor, model.team, Role.ENGINEER, "editing models")
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
    before = audit.snapshot(model, MODEL_FIELDS)
    if description is not None:
        model.description = description
    if card is not None:
        model.card = card
    if tags is not None:
        model.tags = _validate_tags(tags)
    model.save()
    after = audit.snapshot(model, MODEL_FIELDS)
    if after != before:
        audit.record(actor=actor, action="model.updated", obj=model, team=model.team,
                     before=before, after=after)
    return model


@transaction.atomic
def delete_model(*, actor, model: RegisteredModel) -> None:
    require_team_role(actor, model.team, Role.MAINTAINER, "deleting models")
    deployed = sorted(model.deployments.values_list("name", flat=True))
    if deployed:
        raise Conflict(f"Model '{model.name}' is deployed as {', '.join(deployed)}; delete "
                       "those deployments first.", code="model_deployed")
    audit.record(actor=actor, action="model.deleted", obj=model, team=model.team,
                 before=audit.snapshot(model, MODEL_FIELDS))
    model.aliases.all().delete()
    model.delete()


# --- Registering versions ---------------------------------------------------------------------
def _staging_root() -> Path:
    root = Path(settings.MODELPORT_DATA_DIR) / "staging"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _parse_json_field(raw: Any, field: str) -> Any:
    if raw is None or raw == "":
        return None
    if isinstance(raw, (dict, list)):
        return raw
    if isinstance(raw, UploadedFile):
        raw = raw.read().decode("utf-8", errors="replace")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidInput(f"{field} is not valid JSON: {exc}", field=field) from None


def _check_example(example: Any, signature: dict[str, Any] | None) -> dict[str, Any] | None:
    """Normalise the example to an /invocations body and check it against the signature."""
    if example is None:
        return None
    body = mlmodel.example_to_request(example)
    if body is None:
        raise InvalidInput("input_example must be a JSON object or list of rows "
                           "(e.g. {\"columns\": [...], \"data\": [[...]]}).",
                           field="input_example")
    columns = mlmodel.columns_of(signature)
    frame = reference.frame_from_request(body)
    limit = settings.MODELPORT_REFERENCE_MAX_COLUMNS
    if frame is not None and frame.shape[1] > limit:
        raise InvalidInput(f"input_example has {frame.shape[1]} columns; the limit is {limit} "
                           "(MODELPORT_REFERENCE_MAX_COLUMNS).", field="input_example")
    if columns and frame is not None and not all(isinstance(c, int) for c in frame.columns):
        required = {c["name"] for c in columns if c.get("required", True)}
        missing = sorted(required - {str(c) for c in frame.columns})
        if missing:
            raise InvalidInput(f"input_example does not match the model's signature: missing "
                               f"column(s) {', '.join(repr(m) for m in missing)}.",
                               field="input_example")
    if frame is not None and frame.empty:
        raise InvalidInput("input_example has no rows.", field="input_example")
    return body


def _save_upload(upload: UploadedFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)


def _check_size(upload: UploadedFile, field: str) -> None:
    if upload.size is not None and upload.size > uploads.limit_bytes():
        raise uploads.too_large(upload.size, field)


def authorize_upload(*, actor, model: RegisteredModel, action: str = "registering versions"
                     ) -> None:
    """The role an upload needs (engineer), checked alone: views call it before they read the
    request body, so a viewer's upload is refused without being received.
    ``register_upload`` and ``replace_reference`` check it again."""
    require_team_role(actor, model.team, Role.ENGINEER, action)


def _next_version(model: RegisteredModel) -> int:
    RegisteredModel.objects.select_for_update().filter(pk=model.pk).get()
    current = model.versions.aggregate(top=Max("version"))["top"] or 0
    return current + 1


def _lineage(extra: dict[str, Any] | None) -> dict[str, Any]:
    lineage: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if key in LINEAGE_KEYS and value not in (None, ""):
            lineage[key] = str(value)[:200]
    return lineage


def _numbers(raw: Any, field: str) -> dict[str, Any]:
    value = _parse_json_field(raw, field) or {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object.", field=field)
    return value


def register_upload(*, actor, model: RegisteredModel, upload: UploadedFile | None,
                    fmt: str | None = None, input_example: Any = None,
                    reference_data: UploadedFile | None = None, description: str = "",
                    lineage: dict[str, Any] | None = None, params: Any = None,
                    metrics: Any = None) -> ModelVersion:
    """Check and stage an upload, create version N as ``pending`` and enqueue its validation.
    Without ``fmt`` the format is told from the file (``registry.formats``)."""
    require_team_role(actor, model.team, Role.ENGINEER, "registering versions")
    if fmt and fmt not in FORMATS:
        raise InvalidInput(f"Unknown format '{fmt}'; use 'mlflow' (a .zip or .tar.gz of an "
                           "MLflow model directory) or 'sklearn' (a joblib or pickle file).",
                           field="format")
    if upload is None:
        raise InvalidInput("Attach the model as the 'file' field.", field="file")
    _check_size(upload, "file")
    fmt = fmt or formats.infer_format(upload)
    reference_format = ""
    if reference_data is not None:
        _check_size(reference_data, "reference_data")
        reference_format = baselines.check_upload(reference_data)
    example = _parse_json_field(input_example, "input_example")
    params_value, metrics_value = _numbers(params, "params"), _numbers(metrics, "metrics")

    staging = _staging_root() / uuid.uuid4().hex
    reference_file = ""
    try:
        job_input = staging / "input"
        job_input.mkdir(parents=True)
        signature = None
        baseline: dict[str, Any] | None = None
        requirements: list[str] = []
        run_id = ""
        if fmt == "mlflow":
            archive = staging / "upload"
            _save_upload(upload, archive)
            limits = archives.Limits(max_members=settings.MODELPORT_ARCHIVE_MAX_MEMBERS,
                                     max_bytes=settings.MODELPORT_ARCHIVE_MAX_MB * 1048576,
                                     max_ratio=settings.MODELPORT_ARCHIVE_MAX_RATIO)
            root = archives.extract_model_archive(archive, staging / "extracted", limits)
            metadata = mlmodel.read_metadata(root)
            requirements = _checked_requirements(metadata.requirements)
            shutil.move(str(root), str(job_input / "model"))
            archive.unlink()
            signature, run_id = metadata.signature, metadata.run_id
            flavor = metadata.flavor
            body = baseline = _check_example(example, signature) or metadata.input_example
            if body is None:  # a first request from the signature; not a drift baseline
                body = mlmodel.example_from_signature(signature)
        else:
            if example is None:
                raise InvalidInput("A scikit-learn upload needs an input_example: it gives the "
                                   "model its signature.", field="input_example")
            _save_upload(upload, job_input / "model.pkl")
            flavor = "sklearn"
            body = baseline = _check_example(example, None)
        reference_file = (baselines.keep(reference_data, reference_format)
                          if reference_data is not None else "")
        # The sandbox predicts only a real example: a made-up row could fail a sound model.
        (job_input / "job.json").write_text(json.dumps({"format": fmt,
                                                        "input_example": baseline}))

        lineage_value = _lineage(lineage)
        if run_id:
            lineage_value.setdefault("mlflow_run_id", run_id)
        with transaction.atomic():
            number = _next_version(model)
            version = ModelVersion.objects.create(
                model=model, version=number, source_format=fmt,
                source=getattr(upload, "name", "") or "", description=description,
                flavor=flavor, signature=signature, input_example=body,
                requirements=requirements, params=params_value, metrics=metrics_value,
                lineage=lineage_value, created_by=actor,
                staging_dir=str(staging), status_message="Waiting for a worker to validate.",
                **baselines.pending_fields(reference_file, baseline))
            audit.record(actor=actor, action="version.registered", obj=version, team=model.team,
                         after={"model": model.name, "version": number, "format": fmt,
                                "source": version.source})
            transaction.on_commit(lambda: _enqueue_validation(version.pk))
            if version.reference_status == ReferenceStatus.PENDING:
                transaction.on_commit(lambda: baselines.enqueue(version.pk))
        return version
    except BaseException:
        archives.remove_tree(staging)
        if reference_file:
            Path(reference_file).unlink(missing_ok=True)
        raise


def _checked_requirements(lines: list[str]) -> list[str]:
    """The model's requirements when every line is a plain requirement (name, extras, version,
    marker); else 400 naming each refused line. Direct URLs, VCS links, paths and pip options
    would install code from somewhere the platform did not choose, or build it from source."""
    try:
        return check_requirements(lines)
    except RequirementRefused as exc:
        raise InvalidInput(str(exc), code="requirements_refused") from None


def _enqueue_validation(version_id: int) -> None:
    queue.task("registry.tasks.validate_version").delay(version_id)


def register_from_source(*, actor, model: RegisteredModel, source: str,
                         description: str = "") -> ModelVersion:
    """Import ``runs:/…`` or ``models:/…`` from the tracking server: version N ``pending``;
    the worker downloads it, then validates it like an upload. The MLflow sync calls it as the
    version's creator (``mlflow_services``), so the same role check applies."""
    require_team_role(actor, model.team, Role.ENGINEER, "registering versions")
    source = check_source(source)
    staging = _staging_root() / uuid.uuid4().hex
    (staging / "input").mkdir(parents=True)
    try:
        with transaction.atomic():
            number = _next_version(model)
            version = ModelVersion.objects.create(
                model=model, version=number, source_format="import", source=source,
                description=description, created_by=actor,
                staging_dir=str(staging),
                status_message="Waiting for a worker to download it from MLflow.")
            audit.record(actor=actor, action="version.registered", obj=version,
                         team=model.team, after={"model": model.name, "version": number,
                                                 "format": "import", "source": source})
            transaction.on_commit(lambda: _enqueue_validation(version.pk))
        return version
    except BaseException:
        archives.remove_tree(staging)
        raise


def _download_import(version: ModelVersion, staging: Path, events: progress.VersionLog) -> None:
    """Fetch an imported version's model dir and metadata into its staging folder."""
    events.step(15, f"Downloading {version.source} from MLflow.")
    fetched = download(version.source, staging / "input")
    metadata = mlmodel.read_metadata(fetched.model_dir)
    requirements = _checked_requirements(metadata.requirements)
    body = metadata.input_example
    stats = None
    frame = reference.frame_from_request(body)
    if frame is not None:
        stats = reference.compute(frame, source="input_example")
    (staging / "input" / "job.json").write_text(json.dumps({"format": "mlflow",
                                                           "input_example": body}))
    ModelVersion.objects.filter(pk=version.pk).update(
        flavor=metadata.flavor, signature=metadata.signature, input_example=body,
        requirements=requirements, params=fetched.params, metrics=fetched.metrics,
        lineage=fetched.lineage, reference_stats=stats)
    version.refresh_from_db()


# --- Validation (runs in the Celery worker) ---------------------------------------------------
def validate_version(*, version_id: int) -> ModelVersion:
    """Load the model in the sandbox, smoke-test it, store the artifact: ready or failed.
    Every step and every line of the image build and the sandbox's output is recorded as it
    happens (``progress.VersionLog``): the version page, the API and the CLI follow them."""
    claimed = ModelVersion.objects.filter(
        pk=version_id, status__in=[VersionStatus.PENDING, VersionStatus.VALIDATING]).update(
        status=VersionStatus.VALIDATING)
    version = ModelVersion.objects.select_related("model__team").get(pk=version_id)
    if not claimed:
        return version  # already ready/failed: validation is idempotent
    events = progress.VersionLog(version_id)
    staging = Path(version.staging_dir) if version.staging_dir else None
    try:
        return _validate(version, events)
    except Exception as exc:  # never leave a version validating forever; kept for Retry
        log.exception("validating %s failed unexpectedly", version)
        return _finish(version, ok=False, message=f"Validation could not run: "
                       f"{type(exc).__name__}: {exc}", staging=staging, keep_staging=True,
                       events=events)


def _validate(version: ModelVersion, events: progress.VersionLog) -> ModelVersion:
    """The validation itself, for ``validate_version``: every way out finishes the version."""
    events.start("Preparing the sandbox.")
    staging = Path(version.staging_dir)
    if version.source_format == "import" and not (staging / "input" / "job.json").is_file():
        try:
            _download_import(version, staging, events)
        except (ImportFailed, InvalidInput) as exc:
            message = exc.message if isinstance(exc, InvalidInput) else str(exc)
            return _finish(version, ok=False, message=f"Import failed: {message}",
                           staging=staging, events=events)
    if not (staging / "input" / "job.json").is_file():
        return _finish(version, ok=False, message="The staged upload is gone (was the data "
                       "directory cleaned?); register the version again.", events=events)
    try:
        outcome = sandbox.validate(staging, requirements=version.requirements,
                                   on_log=events, on_step=events.step)
    except sandbox.SandboxError as exc:  # the platform's side: the upload is kept for Retry
        return _finish(version, ok=False, message=f"Validation could not run: {exc}",
                       staging=staging, keep_staging=True, events=events)
    result = outcome.result
    image = _image_fields(outcome.image)
    if not result.get("ok"):
        stage = result.get("stage", "load")
        what = {"convert": "could not be converted to an MLflow model",
                "load": "failed to load", "predict": "failed on the input example"}[stage]
        return _finish(version, ok=False, message=f"The model {what}: {result.get('error')}",
                       staging=staging, sandboxed=outcome.sandboxed, validation=result,
                       extra=image, events=events)
    events.step(80, "Storing the artifact.")
    model_dir = (staging / "output" / "model") if result.get("converted") else \
        (staging / "input" / "model")
    metadata = mlmodel.read_metadata(model_dir)
    try:  # a converted model's requirements were written inside the sandbox: check them too
        requirements = _checked_requirements(metadata.requirements)
    except InvalidInput as exc:
        return _finish(version, ok=False, message=exc.message, staging=staging,
                       sandboxed=outcome.sandboxed, validation=result, extra=image,
                       events=events)
    stored = storage.store_model_dir(model_dir)
    extra: dict[str, Any] = {
        **image, "flavor": metadata.flavor, "signature": metadata.signature,
        "requirements": requirements, "artifact_name": stored.name,
        "artifact_sha256": stored.sha256, "artifact_size": stored.size,
    }
    if version.input_example is None and metadata.input_example is not None:
        extra["input_example"] = metadata.input_example
        if version.reference_stats is None and version.reference_status == ReferenceStatus.NONE:
            frame = reference.frame_from_request(metadata.input_example)
            if frame is not None:
                extra["reference_stats"] = reference.compute(frame, source="input_example")
    message = "Validated in the sandbox." if outcome.sandboxed else \
        "Validated unsandboxed (no Docker here): loaded in a resource-limited subprocess."
    if result.get("sklearn_version") and version.source_format == "sklearn":
        message += f" Made with scikit-learn {result['sklearn_version']}."
    return _finish(version, ok=True, message=message, staging=staging,
                   sandboxed=outcome.sandboxed, validation=result, extra=extra, events=events)


def _image_fields(report: ImageReport | None) -> dict[str, Any]:
    """The version's image fields from the sandbox's image report (none without Docker)."""
    if report is None:
        return {}
    return {"image_tag": report.tag, "image_reused": report.reused,
            "image_build_seconds": report.seconds, "image_size": report.size_bytes}


def _finish(version: ModelVersion, *, ok: bool, message: str, staging: Path | None = None,
            sandboxed: bool | None = None, validation: dict | None = None,
            extra: dict[str, Any] | None = None, keep_staging: bool = False,
            events: progress.VersionLog | None = None) -> ModelVersion:
    """``keep_staging``: validation could not run (the sandbox, an image build): the failed
    version keeps its upload for a while, so that Retry can validate it again
    (``registry/retries.py``). ``events``: the outcome is recorded after the last lines."""
    keep = keep_staging and not ok and staging is not None and staging.is_dir() \
        and settings.MODELPORT_FAILED_UPLOAD_KEEP_DAYS > 0
    if events is not None:  # the outcome after the last lines, for everyone following
        events.finish(ok=ok, message=message[:4000])
    fields = {"status": VersionStatus.READY if ok else VersionStatus.FAILED,
              "status_message": message[:4000], "progress": 100, "sandboxed": sandboxed,
              "validation": {k: v for k, v in (validation or {}).items()},
              "validated_at": timezone.now(), "staging_dir": str(staging) if keep else "",
              **(extra or {})}
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(**fields)
        version.refresh_from_db()
        audit.record(actor=None, action="version.ready" if ok else "version.failed",
                     obj=version, team=version.model.team,
                     after={"status": version.status, "message": version.status_message[:500],
                            "sandboxed": sandboxed, "sha256": version.artifact_sha256})
    if staging is not None and not keep:
        archives.remove_tree(staging)
    return version


# --- Aliases ------------------------------------------------------------------------------------
def _ready_version(model: RegisteredModel, number: Any) -> ModelVersion:
    if isinstance(number, bool) or not isinstance(number, int):
        raise InvalidInput("version must be a version number.", field="version")
    version = model.versions.filter(version=number).first()
    if version is None:
        raise NotFound(f"'{model.name}' has no version {number}.", field="version")
    if not version.is_ready:
        raise Conflict(f"Version {number} is {version.status}; only ready versions can "
                       "carry an alias.", code="version_not_ready", field="version")
    return version


def is_protected(alias: str) -> bool:
    return alias in settings.MODELPORT_PROTECTED_ALIASES


def _can_move_protected(actor, model: RegisteredModel) -> bool:
    return is_platform_admin(actor) or at_least(model.team.role_of(actor), Role.MAINTAINER)


def _move_alias(*, actor, model: RegisteredModel, alias: str,
                version: ModelVersion) -> ModelAlias:
    current = ModelAlias.objects.select_for_update().filter(model=model, name=alias).first()
    before = {"version": current.version.version} if current else None
    if current is None:
        current = ModelAlias.objects.create(model=model, name=alias, version=version,
                                            updated_by=actor)
    else:
        current.version, current.updated_by = version, actor
        current.save()
    audit.record(actor=actor, action="alias.moved", obj=current, team=model.team, before=before,
                 after={"version": version.version})
    # Deployments that follow this alias roll out to the new version (deployments connects
    # to this in its AppConfig.ready(); the registry sits below it and never imports it).
    alias_moved.send(sender=RegisteredModel, actor=actor, model=model, alias=alias)
    return current


@transaction.atomic
def set_alias(*, actor, model: RegisteredModel, alias: str,
              version_number: Any, comment: str = "") -> ModelAlias | AliasTransitionRequest:
    """Point ``alias`` at a ready version; for a protected alias moved by a non-maintainer,
    file a transition request instead (returned, status ``pending``)."""
    require_team_role(actor, model.team, Role.ENGINEER, "moving aliases")
    try:
        alias_validator(alias)
    except ValidationError as exc:
        raise InvalidInput(exc.messages[0], field="alias") from None
    version = _ready_version(model, version_number)
    if is_protected(alias) and not _can_move_protected(actor, model):
        if AliasTransitionRequest.objects.filter(model=model, alias=alias, version=version,
                                                 status=TransitionStatus.PENDING).exists():
            raise Conflict(f"A request to move '{alias}' to version {version.version} is "
                           "already waiting for a maintainer.", code="already_requested")
        request = AliasTransitionRequest.objects.create(model=model, alias=alias,
                                                        version=version, requested_by=actor,
                                                        comment=comment)
        audit.record(actor=actor, action="alias.transition_requested", obj=request,
                     team=model.team, after={"alias": alias, "version": version.version})
        return request
    return _move_alias(actor=actor, model=model, alias=alias, version=version)


@transaction.atomic
def delete_alias(*, actor, model: RegisteredModel, alias: str) -> None:
    minimum = Role.MAINTAINER if is_protected(alias) else Role.ENGINEER
    require_team_role(actor, model.team, minimum, f"removing the alias '{alias}'")
    current = ModelAlias.objects.select_for_update().filter(model=model, name=alias).first()
    if current is None:
        raise NotFound(f"'{model.name}' has no alias '{alias}'.")
    audit.record(actor=actor, action="alias.deleted", obj=current, team=model.team,
                 before={"version": current.version.version})
    current.delete()


@transaction.atomic
def decide_transition(*, actor, request: AliasTransitionRequest, approve: bool,
                      comment: str = "") -> AliasTransitionRequest:
    model = request.model
    if not _can_move_protected(actor, model):
        require_team_role(actor, model.team, Role.VIEWER, "deciding transitions")
        raise PermissionDenied(f"Only maintainers of '{model.team.slug}' approve moves of "
                               f"'{request.alias}'.")
    request = AliasTransitionRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != TransitionStatus.PENDING:
        raise Conflict(f"This request was already {request.status}.", code="already_decided")
    request.status = TransitionStatus.APPROVED if approve else TransitionStatus.REJECTED
    request.decided_by, request.decided_at = actor, timezone.now()
    if comment:
        request.comment = f"{request.comment}\n{comment}".strip()
    request.save()
    audit.record(actor=actor, action=f"alias.transition_{request.status}", obj=request,
                 team=model.team, after={"alias": request.alias,
                                         "version": request.version.version})
    if approve:
        version = _ready_version(model, request.version.version)
        _move_alias(actor=actor, model=model, alias=request.alias, version=version)
    return request
