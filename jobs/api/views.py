"""``/api/v1/jobs/`` and ``/api/v1/job-schedules/``: thin views over ``jobs.services`` and
``jobs.schedules`` (roles are checked there)."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from core.openapi import api_errors
from core.rest import FilterBackend, query
from teams.access import get_visible_team

from .. import schedules, services
from ..filtersets import JobFilterSet
from ..models import BatchJob, JobSchedule, Trigger
from . import serializers as s


def job_args(data: dict) -> dict:
    """``services.create_job``'s keyword arguments from validated ``JobCreateSerializer``
    data."""
    return {"model": data["model"], "version": data.get("version"),
            "alias": data.get("alias") or None, "input_file": data.get("input"),
            "input_uri": data.get("input_uri") or None,
            "output_format": data.get("output_format") or "parquet",
            "resources": data.get("resources"), "parallelism": data.get("parallelism") or 1,
            "output_columns": data.get("output_columns") or None,
            "chunk_rows": data.get("chunk_rows"), "max_retries": data.get("max_retries"),
            "target": data.get("target") or None}


@extend_schema_view(
    create=extend_schema(request={"multipart/form-data": s.JobCreateSerializer,
                                  "application/json": s.JobCreateSerializer},
                         responses={202: s.JobAcceptedSerializer}),
)
class JobViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.BatchJobSerializer
    filterset_class = JobFilterSet
    filter_backends = [FilterBackend]
    parser_classes = [MultiPartParser, JSONParser]
    queryset = BatchJob.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return (BatchJob.objects.visible_to(self.request.user)
                .select_related("team", "model", "version", "created_by", "target")
                .order_by("-created_at", "-id"))

    def _job(self, pk: str) -> BatchJob:
        return services.get_visible(self.request.user, int(pk))

    def _show(self, job: BatchJob, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data,
                        status=code)

    def retrieve(self, request: Request, pk: str) -> Response:
        return self._show(self._job(pk))

    @api_errors(404, 413)
    def create(self, request: Request) -> Response:
        body = s.JobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        job = schedules.run_job(actor=request.user,
                                team=get_visible_team(request.user, data["team"]),
                                cron=data.get("schedule") or "",
                                schedule_name=data.get("schedule_name") or "", **job_args(data))
        return self._show(job, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.BatchJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Stop a queued or running job: its containers are removed and partial output
        deleted (409 when it already finished)."""
        job = services.cancel_job(actor=request.user, job=self._job(pk))
        return self._show(job, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.BatchJobSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        """Resume a failed job: only the chunks not done run again (409 when it did not
        fail)."""
        job = services.retry_job(actor=request.user, job=self._job(pk))
        return self._show(job, status.HTTP_202_ACCEPTED)

    @extend_schema(responses=s.JobChunkSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def chunks(self, request: Request, pk: str) -> Response:
        job = self._job(pk)
        page = self.paginate_queryset(job.chunks.order_by("index"))
        return self.get_paginated_response(s.JobChunkSerializer(page, many=True).data)

    @extend_schema(responses=s.JobEventSerializer(many=True),
                   parameters=[s.JobEventsQuerySerializer])
    @action(detail=True, methods=["get"], filter_backends=[])
    def events(self, request: Request, pk: str) -> Response:
        job = self._job(pk)
        events = job.events.order_by("-created_at", "-id")
        since = query(s.JobEventsQuerySerializer, request).get("since")
        if since is not None:
            events = events.filter(id__gt=since)
        page = self.paginate_queryset(events)
        return self.get_paginated_response(s.JobEventSerializer(page, many=True).data)

    @extend_schema(responses=s.JobLogsSerializer, parameters=[s.JobLogsQuerySerializer])
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def logs(self, request: Request, pk: str) -> Response:
        """The chunk containers' last log lines (all chunks, or ``?chunk=``)."""
        job = self._job(pk)
        params = query(s.JobLogsQuerySerializer, request)
        text = services.job_logs(actor=request.user, job=job, chunk=params.get("chunk"),
                                 tail=params["tail"])
        return Response({"logs": text})

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(
        description="The output file (Parquet or CSV): one row per input row, in input "
                    "order, predictions in `prediction` (or `prediction_<name>`)")})
    @api_errors(409)
    @action(detail=True, methods=["get"], filter_backends=[])
    def output(self, request: Request, pk: str) -> FileResponse:
        """409 until the job succeeded."""
        handle, filename, content_type = services.open_output(actor=request.user,
                                                              job=self._job(pk))
        return FileResponse(handle, content_type=content_type, as_attachment=True,
                            filename=filename)


@extend_schema_view(
    create=extend_schema(request=s.ScheduleWriteSerializer,
                         responses={201: s.ScheduleSerializer}),
    partial_update=extend_schema(request=s.ScheduleUpdateSerializer,
                                 responses={200: s.ScheduleSerializer}),
)
class JobScheduleViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.ScheduleSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    queryset = JobSchedule.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        qs = (JobSchedule.objects.visible_to(self.request.user)
              .select_related("team", "model", "version", "created_by"))
        team = self.request.query_params.get("team")
        return qs.filter(team__slug=team) if team else qs

    def _schedule(self, pk: str) -> JobSchedule:
        return schedules.get_visible(self.request.user, int(pk))

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self._schedule(pk)).data)

    @api_errors(404)
    def create(self, request: Request) -> Response:
        body = s.ScheduleWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team = get_visible_team(request.user, data.pop("team"))
        if "resources" in data:
            data["resources"] = dict(data["resources"])
        found = schedules.create_schedule(actor=request.user, team=team, **data)
        return Response(self.get_serializer(found).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        body = s.ScheduleUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if "resources" in data:
            data["resources"] = dict(data["resources"])
        found = schedules.update_schedule(actor=request.user, schedule=self._schedule(pk),
                                          **data)
        return Response(self.get_serializer(found).data)

    @extend_schema(responses={204: None})
    @api_errors(without=[409])
    def destroy(self, request: Request, pk: str) -> Response:
        schedules.delete_schedule(actor=request.user, schedule=self._schedule(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: s.BatchJobSerializer})
    @api_errors(400)
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str) -> Response:
        """Start one run now (as you), whatever its cron says."""
        job = schedules.run_schedule(actor=request.user, schedule=self._schedule(pk),
                                     trigger=Trigger.API)
        job = BatchJob.objects.select_related("team", "model", "version",
                                              "created_by").get(pk=job.pk)
        return Response(s.BatchJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
