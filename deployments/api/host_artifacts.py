"""What a host worker downloads its replicas' models from (``deployments/host_models.py`` is
the other end): the stored artifact of a version placed on that host, by its SHA-256.

Authenticated by the host's own token (``core.host_tokens``: derived from the platform's
secret and the host name, compared in constant time), not by a user's API token: a host
worker acts for no user. Least privilege: a host gets only the artifact of a replica placed on
it (any state but removing); anything else is 404, whether or not it exists elsewhere. Reads
are logged, not audited (they change nothing).
"""

from __future__ import annotations

import logging

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from core import host_tokens
from core.errors import DomainError, NotFound
from core.openapi import api_errors
from registry.storage import open_artifact

from .. import host_side

log = logging.getLogger(__name__)


class HostUnauthenticated(DomainError):
    status_code = 401
    code = "not_authenticated"


class HostArtifactView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="host_artifact",
        summary="A model artifact for a host worker",
        description="The stored MLflow model zip of a version that a replica placed on `host` "
                    "runs, by the artifact's SHA-256. For host workers: authenticated by the "
                    "host's token (`Authorization: Bearer mph_…`), not a user's token. The "
                    "host checks the size and SHA-256 it receives against the registry's.",
        parameters=[
            OpenApiParameter("Authorization", OpenApiTypes.STR, OpenApiParameter.HEADER,
                             required=True, description="Bearer mph_… (the host's token; 401 "
                                                        "when missing or another host's)"),
            OpenApiParameter("host", OpenApiTypes.STR, OpenApiParameter.PATH,
                             description="The host's name (MODELPORT_HOST_NAME)"),
            OpenApiParameter("sha256", OpenApiTypes.STR, OpenApiParameter.PATH,
                             description="The artifact's SHA-256 (lowercase hex)"),
        ],
        responses={(200, "application/zip"): OpenApiResponse(
            description="The artifact; headers X-Checksum-SHA256 and X-Artifact-Size carry "
                        "what the registry recorded")},
    )
    @api_errors(401, 404)
    def get(self, request: Request, host: str, sha256: str) -> FileResponse:
        if not host_tokens.verify(host, request.META.get("HTTP_AUTHORIZATION", "")):
            log.warning("artifact request for host %r refused: missing or wrong host token "
                        "(from %s)", host[:80], request.META.get("REMOTE_ADDR"))
            raise HostUnauthenticated("The host's token is required "
                                      "(Authorization: Bearer mph_…).")
        version = host_side.placed_artifact(host=host, sha256=sha256)
        if version is None:
            raise NotFound("No artifact with this SHA-256 is placed on this host.")
        log.info("host %s downloads %s v%s (artifact %s…, %d bytes)", host, version.model.name,
                 version.version, sha256[:12], version.artifact_size)
        response = FileResponse(open_artifact(version.artifact_name),
                                content_type="application/zip")
        response["X-Checksum-SHA256"] = version.artifact_sha256
        response["X-Artifact-Size"] = str(version.artifact_size)
        return response
