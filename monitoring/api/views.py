from __future__ import annotations

from django.conf import settings
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput, NotFound
from core.openapi import api_errors
from core.rest import query
from deployments.models import Deployment
from registry.models import RegisteredModel

from .. import alerts, batch, ingest, overlays, rollups, services
from ..models import Alert, AlertRule, AlertState, ModelMonitoring
from . import serializers as s


def visible_deployment(user, name: str) -> Deployment:
    deployment = (Deployment.objects.visible_to(user).select_related("team", "model", "version")
                  .filter(name=name).first())
    if deployment is None:
        raise NotFound(f"No deployment '{name}'.")
    return deployment


def _range(request: Request, serializer_class=s.MetricsQuerySerializer):
    data = query(serializer_class, request)
    start, end, step = services.time_range(data.get("start"), data.get("end"), data.get("step"))
    return start, end, step, data.get("revision")


class IngestView(APIView):
    """Prediction logs from replicas, authenticated by a deployment-scoped ingest token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []  # the body is read raw and parsed once, with orjson

    @extend_schema(
        operation_id="ingest_predictions",
        request={"application/json": s.IngestBatchSerializer},
        responses={202: s.IngestResultSerializer},
        parameters=[OpenApiParameter("Authorization", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                     required=True,
                                     description="Bearer mpi_… (the deployment's ingest token; "
                                                 "401 when missing, invalid or another "
                                                 "deployment's)")],
    )
    @api_errors(400, 401, 404, 413)
    def post(self, request: Request) -> Response:
        token = ingest.authenticate_ingest(request.META.get("HTTP_AUTHORIZATION", ""))
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.MODELPORT_INGEST_MAX_BYTES:
            raise ingest.BatchTooLarge(f"The batch is {length} bytes; the limit is "
                                       f"{settings.MODELPORT_INGEST_MAX_BYTES}.")
        body = request._request.read(settings.MODELPORT_INGEST_MAX_BYTES + 1)
        result = ingest.ingest_predictions(token=token, body=body)
        return Response(result, status=status.HTTP_202_ACCEPTED)


class DeploymentMonitoringViewSet(viewsets.ViewSet):
    lookup_field = "name"

    @extend_schema(operation_id="deployment_metrics", parameters=[s.MetricsQuerySerializer],
                   responses=s.MetricsSerializer)
    def metrics(self, request: Request, name: str) -> Response:
        deployment = visible_deployment(request.user, name)
        start, end, step, revision = _range(request)
        body = services.metrics_series(deployments=[deployment], start=start, end=end,
                                       step=step, revision=revision)
        body["quality"] = services.quality_series(deployment=deployment, start=start, end=end,
                                                  step=step, revision=revision)
        body |= rollups.replica_series(deployment=deployment, start=start, end=end, step=step,
                                       revision=revision)
        body["markers"] = overlays.revision_markers(deployment=deployment, start=start, end=end)
        body["split"] = (overlays.split_series(deployment=deployment, start=start, end=end,
                                               step=step) if revision is None else [])
        return Response({"deployment": deployment.name, **body})

    @extend_schema(operation_id="deployment_drift", parameters=[s.RangeQuerySerializer],
                   responses=s.DriftSerializer)
    def drift(self, request: Request, name: str) -> Response:
        deployment = visible_deployment(request.user, name)
        start, end, _, revision = _range(request, s.RangeQuerySerializer)
        return Response(services.drift_report(deployment=deployment, start=start, end=end,
                                              revision=revision))

    @extend_schema(operation_id="deployment_feedback",
                   request=s.FeedbackItemSerializer(many=True),
                   responses=s.FeedbackResultSerializer)
    @api_errors(413, without=[409])
    def feedback(self, request: Request, name: str) -> Response:
        deployment = visible_deployment(request.user, name)
        if isinstance(request.data, list) and len(request.data) > services.MAX_FEEDBACK_ITEMS:
            raise ingest.BatchTooLarge(f"{len(request.data)} labels in one request; the "
                                       f"limit is {services.MAX_FEEDBACK_ITEMS}.")
        body = s.FeedbackItemSerializer(data=request.data, many=True)
        body.is_valid(raise_exception=True)
        return Response(services.submit_feedback(actor=request.user, deployment=deployment,
                                                 items=[dict(item) for item in
                                                        body.validated_data]))

    @extend_schema(operation_id="deployment_monitoring_retrieve",
                   responses=s.DeploymentMonitoringSerializer)
    def monitoring_settings(self, request: Request, name: str) -> Response:
        deployment = visible_deployment(request.user, name)
        return Response({"sampling_rate": ingest.sampling_rate_of(deployment)})

    @extend_schema(operation_id="deployment_monitoring_update",
                   request=s.DeploymentMonitoringSerializer,
                   responses=s.DeploymentMonitoringSerializer)
    @api_errors(without=[409])
    def update_monitoring_settings(self, request: Request, name: str) -> Response:
        deployment = visible_deployment(request.user, name)
        body = s.DeploymentMonitoringSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = services.set_sampling_rate(actor=request.user, deployment=deployment,
                                         sampling_rate=body.validated_data["sampling_rate"])
        return Response({"sampling_rate": row.sampling_rate})


class ModelMonitoringViewSet(viewsets.ViewSet):
    def _model(self, name: str) -> RegisteredModel:
        model = RegisteredModel.objects.visible_to(self.request.user).filter(name=name).first()
        if model is None:
            raise NotFound(f"No model '{name}'.")
        return model

    @staticmethod
    def _body(row: ModelMonitoring | None) -> dict:
        return {"psi_threshold": row.psi_threshold if row else 0.2,
                "p_value_threshold": row.p_value_threshold if row else 0.01,
                "task": row.task if row else "auto"}

    @extend_schema(operation_id="model_monitoring_retrieve",
                   responses=s.ModelMonitoringSerializer)
    def retrieve(self, request: Request, model_name: str) -> Response:
        model = self._model(model_name)
        return Response(self._body(ModelMonitoring.objects.filter(model=model).first()))

    @extend_schema(operation_id="model_batch_drift", responses=s.BatchDriftSerializer,
                   parameters=[OpenApiParameter("limit", int, description="jobs (default 20, "
                                                "at most 100)")])
    def batch_drift(self, request: Request, model_name: str) -> Response:
        """Drift of the model's succeeded batch jobs' inputs, newest job first (marked
        ``kind: batch``; live traffic's drift is per deployment)."""
        model = self._model(model_name)
        raw = request.query_params.get("limit", "")
        if raw and not (raw.isdigit() and 0 < int(raw) <= 100):
            raise InvalidInput("limit must be a whole number from 1 to 100.", field="limit")
        limit = int(raw) if raw else batch.RECENT
        rows = batch.batch_drift(user=request.user, model=model, limit=limit)
        return Response({"model": model.name, "results": [batch.as_dict(r) for r in rows]})

    @extend_schema(operation_id="model_monitoring_update", request=s.ModelMonitoringSerializer,
                   responses=s.ModelMonitoringSerializer)
    @api_errors(without=[409])
    def update(self, request: Request, model_name: str) -> Response:
        model = self._model(model_name)
        body = s.ModelMonitoringSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = services.set_model_monitoring(actor=request.user, model=model,
                                            **body.validated_data)
        return Response(self._body(row))


class AlertRuleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                       viewsets.GenericViewSet):
    serializer_class = s.AlertRuleSerializer
    queryset = AlertRule.objects.none()
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        rules = (AlertRule.objects.visible_to(self.request.user)
                 .select_related("deployment", "deployment__team", "silenced_by")
                 .prefetch_related(Prefetch("alerts", queryset=Alert.objects.filter(
                     state=AlertState.FIRING))).order_by("deployment__name", "name"))
        deployment = query(s.AlertRuleQuerySerializer, self.request).get("deployment")
        if deployment:
            rules = rules.filter(deployment__name=deployment)
        return rules

    def get_object(self) -> AlertRule:
        rule = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if rule is None:
            raise NotFound(f"No alert rule {self.kwargs['pk']}.")
        return rule

    @extend_schema(parameters=[s.AlertRuleQuerySerializer])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=s.AlertRuleCreateSerializer, responses={201: s.AlertRuleSerializer})
    @api_errors(404)
    def create(self, request: Request) -> Response:
        body = s.AlertRuleCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        deployment = visible_deployment(request.user, data.pop("deployment"))
        rule = alerts.create_alert_rule(actor=request.user, deployment=deployment, **data)
        return Response(self.get_serializer(self.get_queryset().get(pk=rule.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=s.AlertRuleUpdateSerializer, responses=s.AlertRuleSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        body = s.AlertRuleUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rule = alerts.update_alert_rule(actor=request.user, rule=self.get_object(),
                                        **body.validated_data)
        return Response(self.get_serializer(self.get_queryset().get(pk=rule.pk)).data)

    @api_errors(without=[409])
    def destroy(self, request: Request, pk: str) -> Response:
        alerts.delete_alert_rule(actor=request.user, rule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.SilenceSerializer, responses=s.AlertRuleSerializer)
    @api_errors(without=[409])
    @action(detail=True, methods=["post"])
    def silence(self, request: Request, pk: str) -> Response:
        """No notifications from the rule until ``until`` (null: notify again). Its alerts
        still open and resolve. Engineers and above; audited."""
        body = s.SilenceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rule = alerts.silence_alert_rule(actor=request.user, rule=self.get_object(),
                                         until=body.validated_data["until"])
        return Response(self.get_serializer(self.get_queryset().get(pk=rule.pk)).data)


class AlertViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.AlertSerializer
    queryset = Alert.objects.none()
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        rows = Alert.objects.visible_to(self.request.user).select_related(
            "rule", "rule__deployment", "rule__deployment__team", "acknowledged_by")
        params = query(s.AlertQuerySerializer, self.request)
        if params.get("deployment"):
            rows = rows.filter(rule__deployment__name=params["deployment"])
        if params.get("state"):
            rows = rows.filter(state=params["state"])
        return rows.order_by("-started_at", "-id")

    @extend_schema(parameters=[s.AlertQuerySerializer])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses=s.AlertSerializer)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str) -> Response:
        """Someone is on it: a firing alert is not notified again until it resolves and fires
        anew. 409 when it is not firing or already acknowledged. Engineers and above; audited."""
        alert = self.get_queryset().filter(pk=pk).first()
        if alert is None:
            raise NotFound(f"No alert {pk}.")
        alerts.acknowledge_alert(actor=request.user, alert=alert)
        return Response(self.get_serializer(self.get_queryset().get(pk=alert.pk)).data)
