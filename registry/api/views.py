from __future__ import annotations

from django.db.models import Prefetch
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from core import uploads
from core.errors import NotFound
from core.openapi import api_errors
from core.parsers import JSONParser
from core.rest import FilterBackend, query
from teams.access import get_visible_team

from .. import baselines, progress, retries, services, storage
from ..filtersets import RegisteredModelFilterSet
from ..models import (
    AliasTransitionRequest,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    attach_version_summary,
)
from . import serializers as s


def visible_model(user, name: str) -> RegisteredModel:
    model = (RegisteredModel.objects.visible_to(user).select_related("team")
             .filter(name=name).first())
    if model is None:
        raise NotFound(f"No model '{name}'.")
    return model


def _authorize_upload(request: Request, model: RegisteredModel, action: str) -> None:
    """Before the body is read: the caller's role (403), then the declared size (413). The
    bytes are counted again as they stream in (``core.uploads.LimitedUploadHandler``)."""
    services.authorize_upload(actor=request.user, model=model, action=action)
    uploads.check_declared_length(request.META.get("CONTENT_LENGTH"))


@extend_schema_view(
    create=extend_schema(request=s.RegisteredModelCreateSerializer),
    partial_update=extend_schema(request=s.RegisteredModelUpdateSerializer),
)
class RegisteredModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                             viewsets.GenericViewSet):
    serializer_class = s.RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9._-]+"
    filterset_class = RegisteredModelFilterSet
    filter_backends = [FilterBackend]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    queryset = RegisteredModel.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (RegisteredModel.objects.visible_to(self.request.user)
                .select_related("team", "created_by")
                .prefetch_related(Prefetch("aliases",
                                           queryset=ModelAlias.objects.select_related("version")))
                .order_by("name"))

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None  # this viewset keeps the default pagination class
        attach_version_summary(page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def get_object(self) -> RegisteredModel:
        model = visible_model(self.request.user, self.kwargs["name"])
        return attach_version_summary([self.get_queryset().get(pk=model.pk)])[0]

    @api_errors(404)
    def create(self, request: Request) -> Response:
        body = s.RegisteredModelCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team = get_visible_team(request.user, data.pop("team"))
        model = services.create_model(actor=request.user, team=team, **data)
        return Response(self.get_serializer(attach_version_summary(
            [self.get_queryset().get(pk=model.pk)])[0]).data,
                        status=status.HTTP_201_CREATED)

    @api_errors(without=[409])
    def partial_update(self, request: Request, name: str) -> Response:
        model = visible_model(request.user, name)
        body = s.RegisteredModelUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.update_model(actor=request.user, model=model, **body.validated_data)
        return Response(self.get_serializer(self.get_object()).data)

    def destroy(self, request: Request, name: str) -> Response:
        services.delete_model(actor=request.user, model=visible_model(request.user, name))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    create=extend_schema(request={"multipart/form-data": s.VersionUploadSerializer,
                                  "application/json": s.VersionImportSerializer},
                         responses={202: s.VersionAcceptedSerializer}),
    list=extend_schema(responses=s.ModelVersionListSerializer(many=True)),
)
class ModelVersionViewSet(viewsets.GenericViewSet):
    serializer_class = s.ModelVersionSerializer
    lookup_field = "version"
    lookup_value_regex = r"[0-9]+"
    parser_classes = [MultiPartParser, JSONParser]
    queryset = ModelVersion.objects.none()

    def _model(self) -> RegisteredModel:
        return visible_model(self.request.user, self.kwargs["model_name"])

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (ModelVersion.objects.filter(model=self._model())
                .select_related("model", "created_by").prefetch_related("aliases")
                .order_by("-version"))

    def _version(self) -> ModelVersion:
        version = self.get_queryset().filter(version=self.kwargs["version"]).first()
        if version is None:
            raise NotFound(f"'{self.kwargs['model_name']}' has no version "
                           f"{self.kwargs['version']}.")
        return version

    def list(self, request: Request, model_name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.ModelVersionListSerializer(page, many=True).data)

    def retrieve(self, request: Request, model_name: str, version: str) -> Response:
        return Response(self.get_serializer(self._version()).data)

    @api_errors(413, without=[409])
    def create(self, request: Request, model_name: str) -> Response:
        model = self._model()
        _authorize_upload(request, model, "registering versions")
        if request.content_type.startswith("application/json"):
            source = s.VersionImportSerializer(data=request.data)
            source.is_valid(raise_exception=True)
            version = services.register_from_source(actor=request.user, model=model,
                                                    **source.validated_data)
            return Response({"version": version.version, "status": version.status},
                            status=status.HTTP_202_ACCEPTED)
        body = s.VersionUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        version = services.register_upload(
            actor=request.user, model=model, upload=data.get("file"),
            fmt=data.get("format"), input_example=data.get("input_example"),
            reference_data=data.get("reference_data"), description=data.get("description", ""),
            lineage={key: data.get(key) for key in ("git_commit", "dataset_name",
                                                    "dataset_hash")},
            params=data.get("params"), metrics=data.get("metrics"))
        version.refresh_from_db()
        return Response({"version": version.version, "status": version.status},
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=s.VersionEventSerializer(many=True),
                   parameters=[s.VersionEventsQuerySerializer])
    @action(detail=True, methods=["get"])
    def events(self, request: Request, model_name: str, version: str) -> Response:
        """Steps and log lines of the version's validation (image build, sandbox output),
        oldest first. Follow one with ``?since=<the last id you saw>`` until an event of kind
        ``ready`` or ``failed`` (or the version's status) says it is over."""
        found = self._version()
        since = query(s.VersionEventsQuerySerializer, request).get("since")
        page = self.paginate_queryset(progress.events_of(found, since=since))
        return self.get_paginated_response(s.VersionEventSerializer(page, many=True).data)

    @extend_schema(responses={(200, "application/zip"): OpenApiResponse(
        description="The MLflow model directory as a zip")})
    @action(detail=True, methods=["get"])
    def artifact(self, request: Request, model_name: str, version: str) -> FileResponse:
        found = self._version()
        if not found.artifact_name:
            raise NotFound(f"Version {found.version} has no artifact (status {found.status}).")
        response = FileResponse(storage.open_artifact(found.artifact_name),
                                content_type="application/zip", as_attachment=True,
                                filename=f"{found.model.name}-v{found.version}.zip")
        response["X-Checksum-SHA256"] = found.artifact_sha256
        return response

    @extend_schema(request=None, responses={202: s.ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, model_name: str, version: str) -> Response:
        """Validate a failed version again: a failed import is downloaded again, an upload is
        validated from its kept staging (409 when it is not kept: register it again)."""
        found = retries.retry_version(actor=request.user, version=self._version())
        return Response(self.get_serializer(found).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request={"multipart/form-data": s.ReferenceUploadSerializer},
                   responses={202: s.ModelVersionSerializer})
    @api_errors(413, without=[409])
    @action(detail=True, methods=["put"], parser_classes=[MultiPartParser])
    def reference(self, request: Request, model_name: str, version: str) -> Response:
        found = self._version()
        _authorize_upload(request, found.model, "replacing reference data")
        body = s.ReferenceUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        baselines.replace_reference(actor=request.user, version=found,
                                    upload=body.validated_data["file"])
        found.refresh_from_db()
        return Response(self.get_serializer(found).data, status=status.HTTP_202_ACCEPTED)


class AliasViewSet(viewsets.GenericViewSet):
    serializer_class = s.AliasSummarySerializer
    pagination_class = None
    lookup_field = "alias"
    lookup_value_regex = r"[a-z][a-z0-9_-]*"
    queryset = ModelAlias.objects.none()

    def list(self, request: Request, model_name: str) -> Response:
        model = visible_model(request.user, model_name)
        aliases = model.aliases.select_related("version").order_by("name")
        return Response(self.get_serializer(aliases, many=True).data)

    @extend_schema(request=s.AliasSetSerializer,
                   responses={200: s.AliasSummarySerializer, 202: s.TransitionRequestSerializer})
    def update(self, request: Request, model_name: str, alias: str) -> Response:
        model = visible_model(request.user, model_name)
        body = s.AliasSetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.set_alias(actor=request.user, model=model, alias=alias,
                                    version_number=body.validated_data["version"],
                                    comment=body.validated_data["comment"])
        if isinstance(result, AliasTransitionRequest):
            return Response(s.TransitionRequestSerializer(result).data,
                            status=status.HTTP_202_ACCEPTED)
        return Response(self.get_serializer(result).data)

    @api_errors(without=[409])
    def destroy(self, request: Request, model_name: str, alias: str) -> Response:
        services.delete_alias(actor=request.user, model=visible_model(request.user, model_name),
                              alias=alias)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TransitionRequestViewSet(viewsets.GenericViewSet):
    serializer_class = s.TransitionRequestSerializer
    queryset = AliasTransitionRequest.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        model = visible_model(self.request.user, self.kwargs["model_name"])
        return (model.transition_requests.select_related("model", "version", "requested_by",
                                                         "decided_by").order_by("-created_at"))

    def list(self, request: Request, model_name: str) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def _decide(self, request: Request, pk: str, approve: bool) -> Response:
        found = self.get_queryset().filter(pk=pk).first()
        if found is None:
            raise NotFound("No such transition request.")
        body = s.DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        decided = services.decide_transition(actor=request.user, request=found, approve=approve,
                                             comment=body.validated_data["comment"])
        return Response(self.get_serializer(decided).data)

    @extend_schema(request=s.DecisionSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, model_name: str, pk: str) -> Response:
        return self._decide(request, pk, approve=True)

    @extend_schema(request=s.DecisionSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, model_name: str, pk: str) -> Response:
        return self._decide(request, pk, approve=False)
