"""Platform-level endpoints: liveness, readiness and ``GET /api/v1/info/``."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from kombu import Connection
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from workers.runtime_status import describe_runtime


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up. Checks nothing else, so an orchestrator never restarts a busy pod."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported as text
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_broker() -> str | None:
    try:
        with Connection(settings.CELERY_BROKER_URL,
                        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                        connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database and the Celery broker answer."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(error is None for error in checks.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {name: ("ok" if error is None else error) for name, error in checks.items()},
    }
    return JsonResponse(body, status=200 if ready else 503)


@extend_schema(
    summary="What a client or the CLI needs to know about this platform",
    responses=inline_serializer("Info", {
        "version": serializers.CharField(),
        "runtime": serializers.CharField(),
        "mlflow_tracking_uri": serializers.CharField(),
        "broker": serializers.CharField(),
        "limits": serializers.DictField(),
    }),
)
@api_view(["GET"])
@permission_classes([AllowAny])
def info(request: Request) -> Response:
    return Response({
        "version": settings.MODELPORT_VERSION,
        "runtime": describe_runtime(),
        # Stock clients log through the platform's authenticated route, at the address this
        # client reached the API by (MODELPORT_BASE_URL may be an in-cluster name).
        "mlflow_tracking_uri": request.build_absolute_uri("/mlflow"),
        "broker": "embedded" if settings.CELERY_EMBEDDED_BROKER else "redis",
        "limits": {
            "max_upload_mb": settings.MODELPORT_MAX_UPLOAD_MB,
            "max_replicas": settings.MODELPORT_MAX_REPLICAS,
            "token_max_days": settings.MODELPORT_TOKEN_MAX_DAYS,
        },
    })
