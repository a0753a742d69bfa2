from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from .. import inventory, targets
from ..models import ExecutionTarget
from . import serializers as s


def _fields(data: dict) -> dict:
    values = dict(data)
    capacity = values.pop("capacity", None)
    if capacity:
        values.update(dict(capacity))
    return values


@extend_schema_view(
    list=extend_schema(summary="Execution targets deployments can run on"),
    retrieve=extend_schema(summary="One execution target"),
    create=extend_schema(summary="Register an execution target (platform admins)",
                         request=s.TargetWriteSerializer, responses={201: s.TargetSerializer}),
    partial_update=extend_schema(summary="Change an execution target (platform admins)",
                                 request=s.TargetUpdateSerializer,
                                 responses=s.TargetSerializer),
    destroy=extend_schema(summary="Remove an execution target without deployments "
                                  "(platform admins)"),
)
class TargetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.TargetSerializer
    lookup_field = "name"
    lookup_value_regex = "[a-z0-9-]+"
    queryset = ExecutionTarget.objects.all()
    search_fields = ["name", "endpoint"]
    filterset_fields = ["kind", "enabled"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create(self, request: Request) -> Response:
        body = s.TargetWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        target = targets.create_target(actor=request.user, **_fields(body.validated_data))
        return Response(self.get_serializer(target).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, name: str) -> Response:
        body = s.TargetUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        target = targets.update_target(actor=request.user, target=self.get_object(),
                                         **_fields(body.validated_data))
        return Response(self.get_serializer(target).data)

    def destroy(self, request: Request, name: str) -> Response:
        targets.delete_target(actor=request.user, target=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Reachable or not, nodes, allocatable CPU/memory/GPUs, reserved",
                   responses=s.TargetHealthSerializer)
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def health(self, request: Request, name: str) -> Response:
        target = self.get_object()
        body = dict(targets.target_health(target, fresh=request.query_params.get("fresh") == "1"))
        body["reserved"] = targets.target_reserved(target)
        body["capacity"] = {"cpu": target.cpu, "memory_mb": target.memory_mb,
                            "gpus": target.gpus}
        return Response(s.TargetHealthSerializer(body).data)


class CapacityView(GenericAPIView):
    serializer_class = s.CapacitySerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(summary="Hosts and pools, totals, allocation, GPUs by device",
                   responses=s.CapacitySerializer)
    def get(self, request: Request) -> Response:
        return Response(s.CapacitySerializer(inventory.capacity(request.user)).data)
