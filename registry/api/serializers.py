from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.rest import StrictTypes, identifier
from teams.models import Team, slug_validator

from .. import progress
from ..models import (
    AliasTransitionRequest,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    VersionEvent,
    name_validator,
)
from ..retries import retryable
from ..services import FORMATS


class AliasSummarySerializer(serializers.ModelSerializer):
    alias = serializers.CharField(source="name")
    version = serializers.IntegerField(source="version.version")

    class Meta:
        model = ModelAlias
        fields = ["alias", "version", "updated_at"]


class RegisteredModelSerializer(serializers.ModelSerializer):
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(slug_field="slug",
                                                                          read_only=True)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True)
    version_count = serializers.IntegerField(read_only=True)
    aliases = AliasSummarySerializer(many=True, read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True,
                                       default=None, allow_null=True)

    class Meta:
        model = RegisteredModel
        fields = ["name", "team", "description", "card", "tags", "latest_version",
                  "version_count", "aliases", "created_by", "created_at", "updated_at"]


def _tags(**kwargs) -> serializers.ListField:
    # Tags are kept as given (not trimmed): the service refuses empty ones, not blank ones.
    return serializers.ListField(child=serializers.CharField(min_length=1, max_length=50,
                                                             trim_whitespace=False), **kwargs)


class RegisteredModelCreateSerializer(StrictTypes, serializers.Serializer):
    name = identifier(name_validator, "model name", max_length=100)
    team = identifier(slug_validator, "team slug", max_length=50,
                      help_text="Slug of the owning team.")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    card = serializers.CharField(required=False, allow_blank=True, default="")
    tags = _tags(required=False, default=list)


class RegisteredModelUpdateSerializer(StrictTypes, serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    card = serializers.CharField(required=False, allow_blank=True)
    tags = _tags(required=False)


class VersionImageSerializer(serializers.Serializer):
    tag = serializers.CharField()
    reused = serializers.BooleanField(allow_null=True)
    build_seconds = serializers.FloatField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)


class ReferenceStateSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["none", "pending", "ready", "failed"],
        help_text="pending: a worker is profiling the uploaded reference data (or the input "
                  "example); ready: reference_stats is the drift baseline; failed: see message "
                  "(the previous baseline stays in use).")
    message = serializers.CharField()
    # A declared field: the metaclass collects it; the stubs see Field.source (str | None).
    source = serializers.CharField(allow_null=True,  # type: ignore[assignment]
                                   help_text="reference_data or input_example: what "
                                             "reference_stats was computed from.")
    rows = serializers.IntegerField(allow_null=True)
    features = serializers.IntegerField(allow_null=True)


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    aliases = serializers.SerializerMethodField()
    reference = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True,
                                       default=None, allow_null=True)
    artifact = serializers.SerializerMethodField()
    log_tail = serializers.SerializerMethodField(
        help_text="The last lines of its validation log (image build, sandbox output); all of "
                  "it, with the steps, is at events/.")
    image = serializers.SerializerMethodField(
        help_text="The serving image validation ran in (its replicas run the same one): tag, "
                  "reused (an image with the same requirements existed), build_seconds (what "
                  "fetching wheels and building took, or checking the cached image), "
                  "size_bytes. Null when validated without Docker.")
    retryable = serializers.SerializerMethodField(
        help_text="Whether POST retry/ can validate this failed version again (an import, or an "
                  "upload kept because validation could not run); false: register it again.")

    class Meta:
        model = ModelVersion
        fields = ["model", "version", "status", "status_message", "progress", "sandboxed",
                  "source_format", "source", "description", "flavor", "signature",
                  "input_example", "requirements", "params", "metrics", "lineage",
                  "reference", "reference_stats", "aliases", "artifact", "image", "retryable",
                  "log_tail", "created_by", "created_at", "validated_at"]

    def to_representation(self, instance: ModelVersion) -> dict:
        """Without the baseline's KS samples (kept for drift, up to 50,000 numbers)."""
        body = super().to_representation(instance)
        stats = body.get("reference_stats")
        if isinstance(stats, dict) and isinstance(stats.get("features"), dict):
            body["reference_stats"] = {**stats, "features": {
                name: {k: v for k, v in f.items() if k != "sample"}
                for name, f in stats["features"].items()}}
        return body

    def get_log_tail(self, version: ModelVersion) -> list[str]:
        return progress.log_tail(version)

    def get_retryable(self, version: ModelVersion) -> bool:
        return retryable(version)

    def get_aliases(self, version: ModelVersion) -> list[str]:
        return sorted(alias.name for alias in version.aliases.all())

    @extend_schema_field(ReferenceStateSerializer)
    def get_reference(self, version: ModelVersion) -> dict:
        stats = version.reference_stats or {}
        return {"status": version.reference_state, "message": version.reference_message,
                "source": stats.get("source"), "rows": stats.get("rows"),
                "features": len(stats["features"]) if "features" in stats else None}

    @extend_schema_field(VersionImageSerializer(allow_null=True))
    def get_image(self, version: ModelVersion) -> dict | None:
        if not version.image_tag:
            return None
        return {"tag": version.image_tag, "reused": version.image_reused,
                "build_seconds": version.image_build_seconds, "size_bytes": version.image_size}

    def get_artifact(self, version: ModelVersion) -> dict | None:
        if not version.artifact_sha256:
            return None
        return {"sha256": version.artifact_sha256, "size": version.artifact_size}


class VersionEventSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(
        choices=VersionEvent.Kind.choices,
        help_text="step: a stage began (progress is the percent reached); log: lines of the "
                  "image build or the sandbox's output, one per line in message; info; ready "
                  "or failed: the outcome (message: the reason).")

    class Meta:
        model = VersionEvent
        fields = ["id", "kind", "progress", "message", "created_at"]


class VersionEventsQuerySerializer(serializers.Serializer):
    since = serializers.IntegerField(required=False, min_value=0,
                                     help_text="Only events with id > since: the last id you "
                                               "saw, to follow a validation.")


class ModelVersionListSerializer(ModelVersionSerializer):
    class Meta(ModelVersionSerializer.Meta):
        fields = ["model", "version", "status", "status_message", "progress", "flavor",
                  "aliases", "metrics", "lineage", "artifact", "created_by", "created_at"]


class VersionUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The model: a .zip or .tar.gz of an MLflow model "
                                           "directory, or a scikit-learn joblib/pickle file.")
    format = serializers.ChoiceField(
        choices=FORMATS, required=False, help_text="Omitted: told from the file (.joblib, .pkl "
        "or .pickle: sklearn; a .zip or .tar.gz: mlflow).", error_messages={
            "invalid_choice": "Unknown format '{input}'; use 'mlflow' (a .zip or .tar.gz of an "
                              "MLflow model directory) or 'sklearn' (a joblib or pickle file)."})
    input_example = serializers.CharField(required=False, allow_blank=True)
    reference_data = serializers.FileField(required=False)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    params = serializers.CharField(required=False, allow_blank=True,
                                   help_text="JSON object of training parameters.")
    metrics = serializers.CharField(required=False, allow_blank=True,
                                    help_text="JSON object of evaluation metrics.")
    git_commit = serializers.CharField(required=False, allow_blank=True, max_length=200)
    dataset_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    dataset_hash = serializers.CharField(required=False, allow_blank=True, max_length=200)


# What registry.mlflow_import.SOURCE_PATTERN accepts, in explicit ASCII classes: the schema's
# pattern must mean the same to ECMA and Python regexes (\w, \d and \s do not).
_NAME_CHAR = r"[^/\x00-\x20\x7f-\x9f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
IMPORT_SOURCE = (r"^(?:runs:/[0-9a-zA-Z]{8,64}/[0-9A-Za-z_./-]+"
                 r"|models:/m-[0-9a-zA-Z]{8,64}"
                 r"|mlflow-artifacts:/\w[0-9A-Za-z_./-]{0,500}"
                 rf"|models:/{_NAME_CHAR}{{1,200}}/(?:[0-9]+|@?[0-9A-Za-z_-]{{1,100}}))\Z")


class VersionImportSerializer(StrictTypes, serializers.Serializer):
    # A declared field: the metaclass collects it; the stubs see Field.source (str | None).
    source = serializers.RegexField(  # type: ignore[assignment]
        IMPORT_SOURCE, max_length=500, trim_whitespace=False,
        error_messages={"invalid": "source must be 'runs:/<run_id>/<artifact path>', "
                                   "'models:/<logged model id>', 'mlflow-artifacts:/<path>' or "
                                   "'models:/<name>/<version>'."},
        help_text="runs:/<run_id>/<artifact path>, models:/m-<logged model id>, "
                  "mlflow-artifacts:/<path> or models:/<name>/<version or alias> (the tracking "
                  "server's own, pre-upgrade registry), fetched from the tracking server.")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class VersionAcceptedSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    status = serializers.CharField()


class ReferenceUploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class AliasSetSerializer(StrictTypes, serializers.Serializer):
    version = serializers.IntegerField(min_value=1)
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class TransitionRequestSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="version.version")
    requested_by = serializers.CharField(source="requested_by.username", default=None,
                                         allow_null=True)
    decided_by = serializers.CharField(source="decided_by.username", default=None,
                                       allow_null=True)

    class Meta:
        model = AliasTransitionRequest
        fields = ["id", "model", "alias", "version", "status", "requested_by", "comment",
                  "decided_by", "decided_at", "created_at"]


class DecisionSerializer(StrictTypes, serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")
